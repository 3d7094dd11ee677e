"""backward(log_scale=True): the backward signal is renormalised by powers of two at every
layer and the scales are carried separately, so log10 norms stay exact where plain float
gradients underflow to 0.

* where nothing underflows (depth 10) the log10 norms equal those of the plain mode and the
  stored gradients times 2**grad_log2_scale equal the plain gradients;
* at depth 1000 (sigmoid, width 16, xavier_normal) the plain norms underflow to 0 in float32
  and in float64, while the log-scale log10 norms are finite and agree with an independent
  float64 NumPy computation (written below, not shared with vgkern or tests/reference.py) that
  renormalises the backward signal by its norm at every layer and sums the logs.
"""

import math

import numpy as np
import pytest

import vgkern

from conftest import DTYPE_IDS, DTYPES, eps

LOG10_FIELDS = ("log10_weight_grad_norm", "log10_bias_grad_norm", "log10_preact_grad_norm",
                "log10_act_grad_norm")
FORWARD_FIELDS = ("preact_mean", "preact_std", "saturated_fraction", "zero_fraction",
                  "dead_fraction")


def grads_of(net):
    return [np.array(g) for g in net.weight_grads], [np.array(g) for g in net.bias_grads]


# --------------------------------------------------------------------------------------------
# Depth 10: log-scale mode == plain mode
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "elu", "identity"])
def test_log_scale_equals_plain_where_nothing_underflows(activation, dtype, rng, device):
    sizes = [7] + [12] * 9 + [3]  # depth 10
    net = vgkern.MLP(sizes, activation=activation, init="he_normal", dtype=np.dtype(dtype).name,
                     seed=31, bias_init=0.01, alpha=0.7, device=device)
    x = rng.standard_normal((5, 7)).astype(dtype)
    grad_out = rng.standard_normal((5, 3)).astype(dtype)

    net.forward(x)
    plain = net.backward(grad_out)
    plain_w, plain_b = grads_of(net)
    assert np.array_equal(plain.grad_log2_scale, np.zeros(10))
    assert np.all(plain.weight_grad_norm > 0) and np.all(np.isfinite(plain.weight_grad_norm))

    net.forward(x)
    logrep = net.backward(grad_out, log_scale=True)
    log_w, log_b = grads_of(net)
    scale = logrep.grad_log2_scale
    assert scale.dtype == np.float64 and scale.shape == (10,)
    assert np.all(np.isfinite(scale))
    assert np.array_equal(scale, np.round(scale)), f"not powers of two: {scale}"

    tol = 16 * eps(dtype) / math.log(10)
    for field in LOG10_FIELDS:
        np.testing.assert_allclose(getattr(logrep, field), getattr(plain, field), rtol=0,
                                   atol=tol, err_msg=field)
    # linear norms are the true norms when they are representable
    for field in ("weight_grad_norm", "bias_grad_norm", "preact_grad_norm", "act_grad_norm"):
        np.testing.assert_allclose(getattr(logrep, field), getattr(plain, field),
                                   rtol=16 * eps(dtype), err_msg=field)
    for field in FORWARD_FIELDS:
        np.testing.assert_array_equal(getattr(logrep, field), getattr(plain, field), err_msg=field)

    # stored grads are the true gradient times 2**(-grad_log2_scale[l])
    for l in range(10):
        for stored, true, kind in ((log_w[l], plain_w[l], "dW"), (log_b[l], plain_b[l], "db")):
            rebuilt = stored.astype(np.float64) * 2.0 ** scale[l]
            atol = 4 * eps(dtype) * float(np.abs(true).max())
            np.testing.assert_allclose(rebuilt, true, rtol=0, atol=atol,
                                       err_msg=f"{kind}[{l}] * 2**scale != plain gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_scale_step_matches_plain_step(dtype, rng, device):
    sizes = [6] + [10] * 9 + [4]
    x = rng.standard_normal((8, 6)).astype(dtype)
    labels = rng.integers(0, 4, 8)
    a, b = (vgkern.MLP(sizes, activation="tanh", init="orthogonal", dtype=np.dtype(dtype).name,
                       seed=2, device=device) for _ in range(2))
    rep_a = a.step(x, labels, loss="cross_entropy")
    rep_b = b.step(x, labels, loss="cross_entropy", log_scale=True)
    assert rep_a.loss == rep_b.loss
    for field in LOG10_FIELDS:
        np.testing.assert_allclose(getattr(rep_b, field), getattr(rep_a, field), rtol=0,
                                   atol=16 * eps(dtype) / math.log(10), err_msg=field)
    for l in range(10):
        rebuilt = np.asarray(b.weight_grads[l], np.float64) * 2.0 ** rep_b.grad_log2_scale[l]
        np.testing.assert_allclose(rebuilt, a.weight_grads[l], rtol=0,
                                   atol=4 * eps(dtype) * float(np.abs(a.weight_grads[l]).max()))


# --------------------------------------------------------------------------------------------
# Depth 1000: plain underflows, log-scale stays exact
# --------------------------------------------------------------------------------------------

def independent_log10_norms(weights, biases, x, grad_out):
    """log10 of ||dW_l||, ||db_l||, ||dz_l||, ||dh_l|| for a sigmoid MLP with identity output,
    in float64. The backward signal is divided by its norm after every layer and the log10 of
    the norms removed is accumulated, so nothing underflows however deep the net is."""
    num_layers = len(weights)
    h = np.asarray(x, np.float64)
    inputs, preacts = [], []
    for l in range(num_layers):
        w = np.asarray(weights[l], np.float64)
        b = np.asarray(biases[l], np.float64)
        inputs.append(h)
        z = h @ w.T + b
        preacts.append(z)
        h = 1.0 / (1.0 + np.exp(-z)) if l < num_layers - 1 else z

    result = {name: np.empty(num_layers) for name in LOG10_FIELDS}
    g = np.asarray(grad_out, np.float64)
    removed = 0.0  # log10 of the factor divided out of g so far
    for l in reversed(range(num_layers)):
        if l < num_layers - 1:
            e = np.exp(-np.abs(preacts[l]))
            delta = g * (e / (1.0 + e) ** 2)  # sigmoid'(z)
        else:
            delta = g
        result["log10_act_grad_norm"][l] = math.log10(np.linalg.norm(g)) + removed
        result["log10_preact_grad_norm"][l] = math.log10(np.linalg.norm(delta)) + removed
        result["log10_weight_grad_norm"][l] = (
            math.log10(np.linalg.norm(delta.T @ inputs[l])) + removed)
        result["log10_bias_grad_norm"][l] = math.log10(np.linalg.norm(delta.sum(axis=0))) + removed
        g = delta @ np.asarray(weights[l], np.float64)
        n = np.linalg.norm(g)
        g = g / n
        removed += math.log10(n)
    return result


DEEP_TOL = {np.float32: 5e-3, np.float64: 1e-3}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_depth_1000_sigmoid_log_scale_is_exact_where_plain_underflows(dtype, rng, device):
    depth, width, batch = 1000, 16, 4
    sizes = [width] * (depth + 1)
    net = vgkern.MLP(sizes, activation="sigmoid", init="xavier_normal",
                     dtype=np.dtype(dtype).name, seed=1000, device=device)
    x = rng.standard_normal((batch, width)).astype(dtype)
    grad_out = rng.standard_normal((batch, width)).astype(dtype)
    weights = [np.array(w) for w in net.weights]
    biases = [np.array(b) for b in net.biases]
    expected = independent_log10_norms(weights, biases, x, grad_out)
    # the configuration is meaningful: the bottom gradients are far below even float64's range
    assert expected["log10_weight_grad_norm"][0] < -330

    net.forward(x)
    plain = net.backward(grad_out)
    assert plain.weight_grad_norm[0] == 0 and plain.preact_grad_norm[0] == 0
    assert np.isneginf(plain.log10_weight_grad_norm[0])
    assert np.all(np.asarray(net.weight_grads[0]) == 0)

    net.forward(x)
    rep = net.backward(grad_out, log_scale=True)
    for field in LOG10_FIELDS:
        got = getattr(rep, field)
        bad_layers = np.nonzero(~np.isfinite(got))[0][:10]
        assert np.all(np.isfinite(got)), f"{field}: non-finite at layers {bad_layers}"
        err = np.abs(got - expected[field])
        worst = int(np.argmax(err))
        assert err.max() <= DEEP_TOL[dtype], (
            f"{field}: layer {worst}: got {got[worst]}, expected {expected[field][worst]} "
            f"(max abs log10 error {err.max():.2e})")
    # the layers where nothing underflows agree with the plain mode
    top = plain.weight_grad_norm > 1e3 * np.finfo(dtype).tiny
    assert top.sum() >= 10
    np.testing.assert_allclose(rep.log10_weight_grad_norm[top], plain.log10_weight_grad_norm[top],
                               rtol=4 * eps(np.float64), atol=16 * eps(dtype) / math.log(10))

    # stored (rescaled) gradients are normal numbers, and carry the reported norm
    scale = rep.grad_log2_scale
    assert np.array_equal(scale, np.round(scale)) and np.all(np.isfinite(scale))
    assert scale[0] < -1000  # 2**scale[0] ~ 1e-300 or less
    for l in (0, 1, depth // 2, depth - 2, depth - 1):
        stored = np.asarray(net.weight_grads[l], np.float64)
        assert np.isfinite(stored).all() and np.any(stored != 0), f"stored dW[{l}] is 0"
        implied = math.log10(np.linalg.norm(stored)) + scale[l] * math.log10(2)
        assert implied == pytest.approx(rep.log10_weight_grad_norm[l], abs=1e-5), l
        stored_b = np.asarray(net.bias_grads[l], np.float64)
        implied_b = math.log10(np.linalg.norm(stored_b)) + scale[l] * math.log10(2)
        assert implied_b == pytest.approx(rep.log10_bias_grad_norm[l], abs=1e-5), l

    # linear norms are either the true norm (where representable) or 0
    for field in ("weight_grad_norm", "bias_grad_norm", "preact_grad_norm", "act_grad_norm"):
        lin = getattr(rep, field)
        logs = getattr(rep, "log10_" + field)
        assert np.all(lin >= 0) and np.all(np.isfinite(lin)), field
        normal = lin >= np.finfo(np.float64).tiny  # float64 subnormals carry fewer digits
        np.testing.assert_allclose(np.log10(lin[normal]), logs[normal], rtol=0, atol=1e-6,
                                   err_msg=field)
        assert np.all(logs[lin == 0] < -300), field
    # forward statistics are unaffected by the mode
    for field in FORWARD_FIELDS:
        np.testing.assert_array_equal(getattr(rep, field), getattr(plain, field), err_msg=field)
