"""vgkern.MLP's gradients against two independent oracles: central finite differences (float64)
and PyTorch autograd (torch==2.13.0, CPU). The NumPy oracle of the same nets is in
test_mlp_reference.py; batch norm's and the recurrent nets' counterparts are in test_batchnorm.py
and test_recurrent.py.

Finite differences: d loss / d W and d loss / d b from ``net.step`` are compared with
(L(p + h) - L(p - h)) / (2 h), where L is evaluated with ``net.forward`` and the loss written in
NumPy (tests/reference.py). Inputs are chosen so that every pre-activation stays at least 1e-3
away from 0 (the kinks of relu and of elu with alpha != 1), which is far more than the
perturbation moves it.

PyTorch: torch is imported unconditionally on purpose: CI installs it, and a missing torch must
fail the suite instead of silently skipping the only independent oracle.

For every configuration the same parameters (copied out of ``net.weights`` / ``net.biases``)
go into an ``nn.Sequential`` of ``nn.Linear`` + activation modules. Hooks capture dL/dz (the
pre-activation gradient) and dL/dh (the gradient of each layer's output) per layer, and the test
compares outputs, loss, every weight/bias gradient, every reported norm and every forward
statistic with what those torch tensors give in float64.

Tolerances (norm-relative: ``||a - b|| <= rtol * ||b|| + atol``):
- float64: rtol 1e-10.
- float32: rtol 1e-4 up to depth 7 and 1e-3 at depth 30. Measured torch-float32 vs
  torch-float64 errors for exactly these configurations are <= 2e-6 (depth <= 7) and <= 3e-5
  (depth 30), so two float32 implementations agree with a margin of ~30x.
Counting statistics (zero/dead/saturated fractions) cannot be compared with a relative tolerance:
an entry sitting right at a threshold may fall either way in float32. They are checked against a
[lower, upper] bracket: lower counts entries that satisfy the condition everywhere in a window
``z +- tol`` around torch's z, upper counts entries that satisfy it somewhere in that window.
"""
import math

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn as nn
import torch.nn.functional as F

import vgkern

import reference as R
from conftest import (ACTIVATION_CONFIGS, ACTIVATION_IDS, INITS, KINK_MARGIN, LOSSES,
                      assert_close_norm, assert_matches_fd, assert_scalar_rel, central_difference)

# Largest derivative of each activation (saturated = derivative below 1% of this).
MAX_DERIVATIVE = {"sigmoid": 0.25, "tanh": 1.0}

# Per-activation init that gives a non-trivial but not chaotic regime (some saturation, some
# dead ReLU units, non-zero pre-activation means) and stays well conditioned at depth 30.
INIT = {
    "sigmoid": dict(sigma_w=4.0, sigma_b=0.3),
    "tanh": dict(sigma_w=1.2, sigma_b=0.3),
    "relu": dict(sigma_w=math.sqrt(2.0), sigma_b=0.2),
    "elu": dict(sigma_w=1.5, sigma_b=0.3),
}

# (sizes, batch): depths 1, 2, 3, 7, 30; widths that are not multiples of 8/16 (13, 37, 100, 17,
# 7) and 64; batch sizes 1, 5, 64. The last entry is the number of outputs / classes. The
# depth-3 net's first two layers cut their GEMMs in column halves (csrc/ops/layer_plan.h).
SHAPES = [
    ([13, 7], 5),
    ([64, 64], 1),
    ([37, 100, 13], 64),
    ([100, 13, 37], 1),
    ([13, 64, 37, 100, 17, 64, 64, 10], 5),
    ([64] * 7 + [10], 64),
    ([37] * 30 + [7], 5),
    ([64] * 30 + [10], 64),
    ([100] * 30 + [13], 1),
    ([600, 700, 650, 10], 256),
]
SHAPE_IDS = [f"L{len(s) - 1}-w{max(s[1:-1] or s[:1])}-in{s[0]}-out{s[-1]}-B{b}" for s, b in SHAPES]

NP_DTYPE = {"float32": np.float32, "float64": np.float64}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}

REPORT_FIELDS = [
    "weight_grad_norm", "bias_grad_norm", "preact_grad_norm", "act_grad_norm",
    "log10_weight_grad_norm", "log10_bias_grad_norm", "log10_preact_grad_norm",
    "log10_act_grad_norm", "preact_mean", "preact_std", "saturated_fraction", "zero_fraction",
    "dead_fraction", "grad_log2_scale",
]


def rtol_for(dtype, depth):
    if dtype == "float64":
        return 1e-10
    return 1e-4 if depth <= 7 else 1e-3


# --------------------------------------------------------------------------------------------
# torch reference
# --------------------------------------------------------------------------------------------

def torch_activation(name, alpha):
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name == "relu":
        return nn.ReLU()
    if name == "elu":
        return nn.ELU(alpha=alpha)
    raise AssertionError(name)


def torch_reference(weights, biases, x, *, activation, alpha=1.0, output_activation="identity",
                    target=None, loss=None, grad_out=None):
    """Run the torch twin of an MLP; returns float64 numpy copies of everything the test needs.

    Exactly one of (target, loss) or grad_out drives the backward pass.
    """
    num_layers = len(weights)
    dtype = torch.from_numpy(np.asarray(x)).dtype
    modules, act_names = [], []
    for l in range(num_layers):
        out_features, in_features = weights[l].shape
        lin = nn.Linear(in_features, out_features, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.array(weights[l])))
            lin.bias.copy_(torch.from_numpy(np.array(biases[l])))
        modules.append(lin)
        act = activation if l < num_layers - 1 else output_activation
        act_names.append(act)
        if act != "identity":
            modules.append(torch_activation(act, alpha))
    model = nn.Sequential(*modules)

    z, h, dz, dh = ([None] * num_layers for _ in range(4))

    def save_grad(store, l):
        def hook(grad):
            store[l] = grad.detach().clone()
        return hook

    def linear_hook(l):
        def hook(module, inputs, output):
            z[l] = output
            output.register_hook(save_grad(dz, l))
        return hook

    def activation_hook(l):
        def hook(module, inputs, output):
            h[l] = output
            output.register_hook(save_grad(dh, l))
        return hook

    layer = 0
    for module in modules:
        if isinstance(module, nn.Linear):
            module.register_forward_hook(linear_hook(layer))
            layer += 1
        else:
            module.register_forward_hook(activation_hook(layer - 1))

    xt = torch.from_numpy(np.array(x))
    out = model(xt)
    out.retain_grad()
    for l in range(num_layers):
        if act_names[l] == "identity":
            h[l] = z[l]
    batch = x.shape[0]
    loss_value = float("nan")
    if grad_out is not None:
        out.backward(torch.from_numpy(np.array(grad_out)))
    elif loss == "mse":
        lt = 0.5 * ((out - torch.from_numpy(np.array(target))) ** 2).sum() / batch
        lt.backward()
        loss_value = float(lt.detach().double())
    elif loss == "cross_entropy":
        lt = F.cross_entropy(out, torch.from_numpy(np.asarray(target, dtype=np.int64)))
        lt.backward()
        loss_value = float(lt.detach().double())
    else:
        raise AssertionError(loss)
    for l in range(num_layers):
        if act_names[l] == "identity":
            dh[l] = dz[l]

    def np64(t):
        return t.detach().to(torch.float64).numpy().copy()

    lins = [m for m in modules if isinstance(m, nn.Linear)]
    return dict(
        out=np64(out),
        out_native=out.detach().numpy().copy(),
        dout_native=out.grad.detach().numpy().copy(),
        loss=loss_value,
        z=[np64(t) for t in z],
        h=[np64(t) for t in h],
        h_native=[t.detach().numpy().copy() for t in h],
        dz=[np64(t) for t in dz],
        dh=[np64(t) for t in dh],
        dw=[np64(m.weight.grad) for m in lins],
        db=[np64(m.bias.grad) for m in lins],
        act_names=act_names,
    )


# --------------------------------------------------------------------------------------------
# comparison helpers
# --------------------------------------------------------------------------------------------



def derivative64(z, act, alpha):
    """act'(z) in float64 (relu'(0) = 0, elu'(z) = alpha*exp(z) for z <= 0, as in torch)."""
    if act == "identity":
        return np.ones_like(z)
    if act == "sigmoid":
        s = scipy.special.expit(z)
        return s * (1.0 - s)
    if act == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if act == "relu":
        return (z > 0).astype(np.float64)
    if act == "elu":
        return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))
    raise AssertionError(act)


def saturated_mask(z, act, alpha):
    if act in ("identity", "relu"):
        return np.zeros(z.shape, dtype=bool)
    peak = max(1.0, alpha) if act == "elu" else MAX_DERIVATIVE[act]
    return derivative64(z, act, alpha) < 0.01 * peak


def bracket_masks(predicate, z, tol):
    """(surely, possibly): predicate holds at z, z-tol and z+tol / at any of them."""
    samples = [predicate(z), predicate(z - tol), predicate(z + tol)]
    return samples[0] & samples[1] & samples[2], samples[0] | samples[1] | samples[2]


def expected_forward_stats(ref, l, alpha, z_rtol):
    """Brackets for the counting statistics of layer l, from torch's z and h."""
    z = ref["z"][l]
    act = ref["act_names"][l]
    tol = z_rtol * (np.abs(z) + z.std()) + 1e-300
    sat_lo, sat_hi = bracket_masks(lambda t: saturated_mask(t, act, alpha), z, tol)
    if act == "relu":
        zero_lo, zero_hi = bracket_masks(lambda t: t <= 0, z, tol)
    else:
        # h == 0 exactly: only at z == 0 (tanh, elu, identity) or on sigmoid underflow, none of
        # which is near a rounding boundary in these tests; take torch's h as is.
        zero_lo = zero_hi = ref["h_native"][l] == 0
    return dict(
        saturated_fraction=(sat_lo.mean(), sat_hi.mean()),
        zero_fraction=(zero_lo.mean(), zero_hi.mean()),
        dead_fraction=(zero_lo.all(axis=0).mean(), zero_hi.all(axis=0).mean()),
    )


def check_report_shape(rep, num_layers):
    assert rep.num_layers == num_layers
    for name in REPORT_FIELDS:
        arr = getattr(rep, name)
        assert isinstance(arr, np.ndarray), name
        assert arr.dtype == np.float64, f"{name}: dtype {arr.dtype}"
        assert arr.shape == (num_layers,), f"{name}: shape {arr.shape}"


def check_against_torch(net, rep, ref, *, rtol, alpha, check_forward_stats=True):
    num_layers = len(ref["dw"])
    check_report_shape(rep, num_layers)
    np.testing.assert_array_equal(rep.grad_log2_scale, np.zeros(num_layers))
    for l in range(num_layers):
        # gradients stored in the net
        assert_close_norm(net.weight_grads[l], ref["dw"][l], rtol, f"weight_grads[{l}]")
        assert_close_norm(net.bias_grads[l], ref["db"][l], rtol, f"bias_grads[{l}]")
        # reported norms vs torch's tensors in float64
        assert_scalar_rel(rep.weight_grad_norm[l], np.linalg.norm(ref["dw"][l]), rtol,
                          f"weight_grad_norm[{l}]")
        assert_scalar_rel(rep.bias_grad_norm[l], np.linalg.norm(ref["db"][l]), rtol,
                          f"bias_grad_norm[{l}]")
        assert_scalar_rel(rep.preact_grad_norm[l], np.linalg.norm(ref["dz"][l]), rtol,
                          f"preact_grad_norm[{l}]")
        assert_scalar_rel(rep.act_grad_norm[l], np.linalg.norm(ref["dh"][l]), rtol,
                          f"act_grad_norm[{l}]")
        # the reported norm of vgkern's own stored gradient is (almost) exact
        own = 1e-6 if net.weight_grads[l].dtype == np.float32 else 1e-12
        assert_scalar_rel(rep.weight_grad_norm[l],
                          np.linalg.norm(net.weight_grads[l].astype(np.float64)), own,
                          f"weight_grad_norm[{l}] vs ||net.weight_grads[{l}]||")
        assert_scalar_rel(rep.bias_grad_norm[l],
                          np.linalg.norm(net.bias_grads[l].astype(np.float64)), own,
                          f"bias_grad_norm[{l}] vs ||net.bias_grads[{l}]||")
    with np.errstate(divide="ignore"):
        for name in ["weight_grad_norm", "bias_grad_norm", "preact_grad_norm", "act_grad_norm"]:
            np.testing.assert_allclose(getattr(rep, "log10_" + name),
                                       np.log10(getattr(rep, name)), rtol=0, atol=1e-12,
                                       err_msg="log10_" + name)
    # dL/d(out) is the last layer's act_grad
    assert_scalar_rel(rep.act_grad_norm[-1], np.linalg.norm(ref["dout_native"].astype(np.float64)),
                      rtol, "act_grad_norm[-1] vs ||dL/dout||")
    if not check_forward_stats:
        return
    z_rtol = 1e-9 if rtol <= 1e-10 else rtol
    for l in range(num_layers):
        z = ref["z"][l]
        mean, std = z.mean(), z.std()
        assert_scalar_rel(rep.preact_mean[l], mean, 0.0, f"preact_mean[{l}]",
                          atol=rtol * (std + abs(mean)) + 1e-300)
        assert_scalar_rel(rep.preact_std[l], std, rtol, f"preact_std[{l}]")
        for name, (lo, hi) in expected_forward_stats(ref, l, alpha, z_rtol).items():
            value = getattr(rep, name)[l]
            assert lo - 1e-12 <= value <= hi + 1e-12, (
                f"{name}[{l}] = {value!r}, torch bracket [{lo!r}, {hi!r}] "
                f"(activation {ref['act_names'][l]})")


def make_data(sizes, batch, dtype, loss, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(NP_DTYPE[dtype])
    if loss == "mse":
        target = rng.standard_normal((batch, sizes[-1])).astype(NP_DTYPE[dtype])
    else:
        target = rng.integers(0, sizes[-1], size=batch).astype(np.int64)
    return x, target


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "elu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_matches_torch(dtype, activation, loss, shape, device):
    sizes, batch = shape
    if device != "cpu" and shape is SHAPES[-1]:
        pytest.skip("column halves are a CPU plan (and slow under CUDA emulation)")
    depth = len(sizes) - 1
    seed = 1000 + 17 * depth + batch
    net = vgkern.MLP(sizes, activation=activation, init="scaled_normal", dtype=dtype, seed=seed,
                     **INIT[activation], device=device)
    x, target = make_data(sizes, batch, dtype, loss, seed + 1)
    weights = [np.array(w) for w in net.weights]
    biases = [np.array(b) for b in net.biases]
    for w, b, d_in, d_out in zip(weights, biases, sizes[:-1], sizes[1:]):
        assert w.shape == (d_out, d_in) and b.shape == (d_out,)
        assert w.dtype == NP_DTYPE[dtype] and b.dtype == NP_DTYPE[dtype]
    ref = torch_reference(weights, biases, x, activation=activation, target=target, loss=loss)
    rtol = rtol_for(dtype, depth)

    out = net.forward(x)
    assert out.dtype == NP_DTYPE[dtype] and out.shape == (batch, sizes[-1])
    assert_close_norm(out, ref["out"], rtol, "forward output")

    rep = net.step(x, target, loss=loss)
    assert_scalar_rel(rep.loss, ref["loss"], rtol, "loss")
    check_against_torch(net, rep, ref, rtol=rtol, alpha=1.0)
    # step must not change the parameters
    for l in range(depth):
        np.testing.assert_array_equal(net.weights[l], weights[l])
        np.testing.assert_array_equal(net.biases[l], biases[l])


@pytest.mark.parametrize("shape", [SHAPES[2], SHAPES[4], SHAPES[6]],
                         ids=[SHAPE_IDS[2], SHAPE_IDS[4], SHAPE_IDS[6]])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "elu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_backward_matches_torch(dtype, activation, shape, device):
    """forward + backward(grad_out) with an arbitrary upstream gradient (no loss)."""
    sizes, batch = shape
    depth = len(sizes) - 1
    seed = 7 + depth
    net = vgkern.MLP(sizes, activation=activation, init="scaled_normal", dtype=dtype, seed=seed,
                     **INIT[activation], device=device)
    rng = np.random.default_rng(seed + 3)
    x = rng.standard_normal((batch, sizes[0])).astype(NP_DTYPE[dtype])
    grad_out = rng.standard_normal((batch, sizes[-1])).astype(NP_DTYPE[dtype])
    ref = torch_reference(list(net.weights), list(net.biases), x, activation=activation,
                          grad_out=grad_out)
    rtol = rtol_for(dtype, depth)
    out = net.forward(x)
    assert_close_norm(out, ref["out"], rtol, "forward output")
    rep = net.backward(grad_out)
    assert math.isnan(rep.loss)
    assert_scalar_rel(rep.act_grad_norm[-1], np.linalg.norm(grad_out.astype(np.float64)),
                      1e-6 if dtype == "float32" else 1e-13, "act_grad_norm[-1] vs ||grad_out||")
    check_against_torch(net, rep, ref, rtol=rtol, alpha=1.0)


# Strongly saturating / dead-unit regimes at small depth, where the counting statistics are large
# enough that a wrong threshold, a wrong maximum derivative or a wrong denominator shows.
# (activation, alpha, output_activation, init kwargs, input scale,
#  {(statistic, layer): minimum value torch's tensors must give, so the case tests something})
SATURATION_CASES = [
    ("sigmoid", 1.0, "identity", dict(sigma_w=10.0, sigma_b=1.0), 2.0,
     {("saturated_fraction", 0): 0.2, ("saturated_fraction", 1): 0.2}),
    ("tanh", 1.0, "identity", dict(sigma_w=4.0, sigma_b=1.0), 2.0,
     {("saturated_fraction", 0): 0.2, ("saturated_fraction", 1): 0.2}),
    ("tanh", 1.0, "tanh", dict(sigma_w=4.0, sigma_b=1.0), 2.0,
     {("saturated_fraction", 2): 0.2}),
    ("relu", 1.0, "sigmoid", dict(sigma_w=1.0, sigma_b=3.0), 0.5,
     {("zero_fraction", 0): 0.3, ("dead_fraction", 0): 0.1, ("dead_fraction", 1): 0.1,
      ("saturated_fraction", 2): 0.01}),
    ("elu", 1.0, "identity", dict(sigma_w=6.0, sigma_b=2.0), 2.0,
     {("saturated_fraction", 0): 0.1}),
    ("elu", 0.5, "identity", dict(sigma_w=6.0, sigma_b=2.0), 2.0,
     {("saturated_fraction", 0): 0.1}),
    ("elu", 2.0, "identity", dict(sigma_w=6.0, sigma_b=2.0), 2.0,
     {("saturated_fraction", 0): 0.1}),
    ("elu", 2.0, "sigmoid", dict(sigma_w=3.0, sigma_b=1.0), 1.0,
     {("saturated_fraction", 0): 0.02, ("saturated_fraction", 2): 0.1}),
]


@pytest.mark.parametrize("case", SATURATION_CASES,
                         ids=[f"{c[0]}-a{c[1]}-out_{c[2]}" for c in SATURATION_CASES])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturation_and_dead_units_match_torch(dtype, case, device):
    activation, alpha, output_activation, init, x_scale, minimums = case
    sizes, batch = [19, 45, 33, 9], 40
    net = vgkern.MLP(sizes, activation=activation, init="scaled_normal", dtype=dtype, seed=5,
                     alpha=alpha, output_activation=output_activation, **init, device=device)
    x, target = make_data(sizes, batch, dtype, "mse", 6)
    x *= x_scale
    ref = torch_reference(list(net.weights), list(net.biases), x, activation=activation,
                          alpha=alpha, output_activation=output_activation, target=target,
                          loss="mse")
    # the regime really is what the test is about (otherwise it proves nothing)
    for (name, layer), minimum in minimums.items():
        lo, _ = expected_forward_stats(ref, layer, alpha, 1e-6)[name]
        assert lo >= minimum, f"test setup: torch {name}[{layer}] = {lo} < {minimum}"
    rtol = rtol_for(dtype, 3)
    rep = net.step(x, target, loss="mse")
    assert_scalar_rel(rep.loss, ref["loss"], rtol, "loss")
    check_against_torch(net, rep, ref, rtol=rtol, alpha=alpha)
    if activation == "relu":
        assert np.all(rep.saturated_fraction[:-1] == 0.0)
    if output_activation == "identity":
        assert rep.saturated_fraction[-1] == 0.0
        assert rep.zero_fraction[-1] == 0.0
        assert rep.dead_fraction[-1] == 0.0


def test_default_tanh_xavier_matches_torch():
    """The default constructor (tanh, xavier_normal, float32) end to end."""
    sizes, batch = [29, 64, 64, 64, 5], 16
    net = vgkern.MLP(sizes)
    assert net.weights[0].dtype == np.float32
    x, target = make_data(sizes, batch, "float32", "cross_entropy", 11)
    ref = torch_reference(list(net.weights), list(net.biases), x, activation="tanh",
                          target=target, loss="cross_entropy")
    rep = net.step(x, target, loss="cross_entropy")
    assert_scalar_rel(rep.loss, ref["loss"], 1e-5, "loss")
    check_against_torch(net, rep, ref, rtol=1e-4, alpha=1.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_int32_labels_match_int64(dtype):
    sizes, batch = [13, 37, 7], 5
    net = vgkern.MLP(sizes, activation="elu", dtype=dtype, seed=3)
    x, labels = make_data(sizes, batch, dtype, "cross_entropy", 4)
    rep64 = net.step(x, labels, loss="cross_entropy")
    g64 = [g.copy() for g in net.weight_grads]
    rep32 = net.step(x, labels.astype(np.int32), loss="cross_entropy")
    assert rep32.loss == rep64.loss
    for a, b in zip(net.weight_grads, g64):
        np.testing.assert_array_equal(a, b)
    ref = torch_reference(list(net.weights), list(net.biases), x, activation="elu",
                          target=labels, loss="cross_entropy")
    assert_scalar_rel(rep32.loss, ref["loss"], rtol_for(dtype, 2), "loss")


# --------------------------------------------------------------------------------------------
# finite differences (float64)
# --------------------------------------------------------------------------------------------



def min_abs_preactivation(ws, bs, x, activation, output_activation, alpha):
    _, zs, _ = R.mlp_forward(ws, bs, x, activation, output_activation, alpha)
    return min(float(np.abs(z).min()) for z in zs)


def kink_free_input(rng, ws, bs, batch, activation, output_activation, alpha):
    """An input whose pre-activations all stay KINK_MARGIN away from 0 (deterministic search)."""
    for _ in range(200):
        x = rng.standard_normal((batch, ws[0].shape[1]))
        if min_abs_preactivation(ws, bs, x, activation, output_activation, alpha) > KINK_MARGIN:
            return x
    raise AssertionError("no kink-free input found; change the seed")


def numpy_loss(out, target, loss):
    return float(R.loss_and_grad(np.asarray(out, np.float64), target, loss)[0])


def net_central_difference(net, f):
    """central_difference over every weight and bias of `net` (weights first): on the CPU
    perturbed in place through the views; on CUDA in host copies, written to the device before
    every evaluation."""
    if net.device == "cpu":
        return central_difference(f, list(net.weights) + list(net.biases))
    num_layers = net.num_layers
    params = [np.array(a) for a in list(net.weights) + list(net.biases)]

    def write_then_f():
        net.weights, net.biases = params[:num_layers], params[num_layers:]
        return f()

    return central_difference(write_then_f, params)


def check_mlp_against_fd(net, x, target, loss):
    rep = net.step(x, target, loss=loss)
    analytic_w = [np.array(g) for g in net.weight_grads]
    analytic_b = [np.array(g) for g in net.bias_grads]
    loss0 = numpy_loss(net.forward(x), target, loss)
    assert rep.loss == pytest.approx(loss0, rel=1e-12, abs=1e-300)

    num_layers = len(analytic_w)
    numeric = net_central_difference(net, lambda: numpy_loss(net.forward(x), target, loss))
    scale = max(1e-3, max(float(np.abs(g).max()) for g in numeric))
    for l in range(num_layers):
        assert_matches_fd(analytic_w[l], numeric[l], f"dW[{l}]", scale, loss0)
        assert_matches_fd(analytic_b[l], numeric[num_layers + l], f"db[{l}]", scale, loss0)
    # the gradient is not trivially zero (the comparison would then prove little)
    assert scale > 1e-3


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_mlp_step_gradients_match_finite_differences(activation, alpha, init, loss, rng, device):
    sizes = [3, 4, 2]
    kw = ({"sigma_w": 1.2, "sigma_b": 0.5} if init == "scaled_normal" else {"bias_init": 0.1})
    net = vgkern.MLP(sizes, activation=activation, init=init, dtype="float64", alpha=alpha,
                     seed=21, device=device, **kw)
    ws = [np.array(w) for w in net.weights]
    bs = [np.array(b) for b in net.biases]
    x = kink_free_input(rng, ws, bs, 3, activation, "identity", alpha)
    target = make_target(rng, ws, bs, x, activation, "identity", alpha, loss)
    check_mlp_against_fd(net, x, target, loss)


def make_target(rng, ws, bs, x, activation, output_activation, alpha, loss):
    """mse: a random target; cross-entropy: the least likely class of each example, so that
    the gradient is never negligible."""
    if loss == "mse":
        return rng.standard_normal((x.shape[0], ws[-1].shape[0]))
    out, _, _ = R.mlp_forward(ws, bs, x, activation, output_activation, alpha)
    return np.argmin(out, axis=1)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_deeper_mlp_gradients_match_finite_differences(activation, alpha, loss, rng, device):
    """Depth 5 with a non-identity output activation: the chain rule across many layers."""
    sizes = [2, 3, 3, 3, 3, 3]
    output_activation = "sigmoid" if activation != "sigmoid" else "tanh"
    net = vgkern.MLP(sizes, activation=activation, init="xavier_normal", dtype="float64",
                     output_activation=output_activation, alpha=alpha, seed=5, gain=1.3,
                     device=device)
    ws, bs = random_params(rng, sizes)
    for l in range(len(ws)):
        net.weights[l] = ws[l]
        net.biases[l] = bs[l]
    x = kink_free_input(rng, ws, bs, 2, activation, output_activation, alpha)
    target = make_target(rng, ws, bs, x, activation, output_activation, alpha, loss)
    check_mlp_against_fd(net, x, target, loss)


def random_params(rng, sizes):
    ws = [rng.standard_normal((o, i)) * 1.3 / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [0.3 * rng.standard_normal(o) for o in sizes[1:]]
    return ws, bs


@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_mlp_backward_with_grad_out_matches_finite_differences(activation, alpha, rng, device):
    """backward(grad_out) is the vector-Jacobian product: d <out, G> / d params."""
    sizes = [3, 5, 4, 2]
    net = vgkern.MLP(sizes, activation=activation, init="he_normal", dtype="float64",
                     alpha=alpha, seed=2, bias_init=-0.05, device=device)
    ws = [np.array(w) for w in net.weights]
    bs = [np.array(b) for b in net.biases]
    x = kink_free_input(rng, ws, bs, 4, activation, "identity", alpha)
    grad_out = rng.standard_normal((4, 2))
    net.forward(x)
    net.backward(grad_out)
    analytic = [np.array(g) for g in net.weight_grads] + [np.array(g) for g in net.bias_grads]

    def f():
        return float(np.sum(net.forward(x) * grad_out))

    f0 = f()
    numeric = net_central_difference(net, f)
    scale = max(1e-3, max(float(np.abs(g).max()) for g in numeric))
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        assert_matches_fd(a, n, f"param {i}", scale, f0)
