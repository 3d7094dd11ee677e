"""Reported norms stay right when the gradients are tiny or huge.

A naive sum of squares in the compute dtype underflows to 0 for float32 entries of 1e-30
((1e-30)^2 = 1e-60 < 1.2e-38) and overflows to inf for entries of 1e38; in float64 the same
happens at 1e-300 / 1e300. The design requires scaled accumulation (as BLAS nrm2), so every norm
is compared against ``np.linalg.norm`` of the float64 copy of the data (exact for these sizes),
or against a closed form.
"""
import math

import numpy as np
import pytest

import vgkern
from vgkern import ops

NORM_FIELDS = ["weight_grad_norm", "bias_grad_norm", "preact_grad_norm", "act_grad_norm"]


def norm64(a):
    """Frobenius norm in float64 with explicit scaling (independent of vgkern)."""
    a = np.abs(np.asarray(a, dtype=np.float64)).ravel()
    if a.size == 0:
        return 0.0
    scale = a.max()
    if scale == 0 or not np.isfinite(scale):
        return float(scale)
    return float(scale * np.sqrt(np.sum((a / scale) ** 2)))


def assert_rel(actual, expected, rtol, what):
    actual, expected = float(actual), float(expected)
    assert math.isfinite(expected) and expected > 0, f"test setup: {what} expected {expected}"
    assert abs(actual - expected) <= rtol * expected, (
        f"{what}: vgkern {actual!r}, expected {expected!r} (rel err "
        f"{abs(actual - expected) / expected:.2e} > {rtol:.0e})")


def identity_net(n_in, n_out, dtype, seed=0, device="cpu"):
    return vgkern.MLP([n_in, n_out], activation="identity", dtype=dtype, seed=seed, device=device)


# value, dtype, batch: every entry of grad_out equals `value`; the norm sqrt(n)*value is far from
# the representable range of value**2 (tiny) or of the compute dtype itself (huge).
EXTREMES = [
    (1e-30, "float32", 5),
    (1e-37, "float32", 5),
    (1e38, "float32", 1),
    (3e38, "float32", 1),
    (1e-300, "float64", 5),
    (1e-306, "float64", 5),
    (1e300, "float64", 1),
    (5e306, "float64", 1),
]


@pytest.mark.parametrize("value,dtype,batch", EXTREMES,
                         ids=[f"{v:g}-{d}-B{b}" for v, d, b in EXTREMES])
def test_constant_grad_out_norms(value, dtype, batch, device):
    n_in, n_out = 9, 40
    net = identity_net(n_in, n_out, dtype, device=device)
    x = np.ones((batch, n_in), dtype=dtype)
    grad_out = np.full((batch, n_out), value, dtype=dtype)
    v = float(grad_out[0, 0])                       # the value as stored in the dtype
    assert v != 0 and math.isfinite(v)
    net.forward(x)
    rep = net.backward(grad_out)
    rtol = 1e-6 if dtype == "float32" else 1e-12

    # identity: dz = dh = grad_out; closed form sqrt(B*n_out) * v
    expected = math.sqrt(batch * n_out) * v
    assert expected == pytest.approx(norm64(grad_out), rel=1e-14)
    if dtype == "float32":   # float64 has the range for a plain norm of float32 data
        assert expected == pytest.approx(np.linalg.norm(grad_out.astype(np.float64)), rel=1e-14)
    assert_rel(rep.act_grad_norm[-1], expected, rtol, "act_grad_norm[-1]")
    assert_rel(rep.preact_grad_norm[0], expected, rtol, "preact_grad_norm[0]")
    # the norm itself may not fit in the compute dtype; it must be reported in float64 anyway
    if dtype == "float32" and value > 1e37:
        assert expected > float(np.finfo(np.float32).max)
        assert float(rep.act_grad_norm[-1]) > float(np.finfo(np.float32).max)

    # db = sum over the batch of grad_out (x = 1), dW = grad_out^T x = B*v in every entry
    db, dw = net.bias_grads[0], net.weight_grads[0]
    assert np.all(np.isfinite(db)) and np.all(np.isfinite(dw))
    np.testing.assert_allclose(db.astype(np.float64), batch * v, rtol=rtol)
    np.testing.assert_allclose(dw.astype(np.float64), batch * v, rtol=rtol)
    assert_rel(rep.bias_grad_norm[0], norm64(db), rtol,
               "bias_grad_norm[0]")
    assert_rel(rep.weight_grad_norm[0], norm64(dw), rtol,
               "weight_grad_norm[0]")
    with np.errstate(divide="ignore"):
        for field in NORM_FIELDS:
            np.testing.assert_allclose(getattr(rep, "log10_" + field),
                                       np.log10(getattr(rep, field)), rtol=0, atol=1e-9,
                                       err_msg="log10_" + field)
    assert rep.log10_act_grad_norm[-1] == pytest.approx(math.log10(expected), abs=1e-6)


@pytest.mark.parametrize("dtype,lo,hi", [("float32", -37, 37), ("float64", -300, 300)])
def test_mixed_magnitudes(dtype, lo, hi, device):
    """Entries spread over the whole exponent range, random signs: no overflow, no underflow."""
    rng = np.random.default_rng(21)
    batch, n_out = 7, 33
    grad_out = (rng.choice([-1.0, 1.0], size=(batch, n_out))
                * 10.0 ** rng.uniform(lo, hi, size=(batch, n_out))).astype(dtype)
    net = identity_net(5, n_out, dtype, device=device)
    net.forward(np.ones((batch, 5), dtype=dtype))
    rep = net.backward(grad_out)
    expected = norm64(grad_out)
    if dtype == "float32":
        assert expected == pytest.approx(np.linalg.norm(grad_out.astype(np.float64)), rel=1e-14)
    rtol = 1e-6 if dtype == "float32" else 1e-12
    assert_rel(rep.act_grad_norm[0], expected, rtol, "act_grad_norm[0]")
    assert_rel(rep.preact_grad_norm[0], expected, rtol, "preact_grad_norm[0]")


@pytest.mark.parametrize("big", [1e-20, 1e10, 3e38])
def test_tiny_gradients_with_one_unsampled_large_entry(big, device):
    """float32 gradients too small to square in float (a 32-entry sample's largest below 2^-45)
    are squared times 2^k, k from that sample. One entry the sample misses, far larger than the
    rest: its scaled square either fits (1e-20) or overflows, and then the pass is summed again
    in float64. The norms stay exact either way; also in a sigmoid layer (delta = dh * s')."""
    rng = np.random.default_rng(3)
    batch, n_out = 64, 64  # two row blocks of 2048 entries, sampled every 64th
    grad_out = (rng.choice([-1.0, 1.0], size=(batch, n_out))
                * 10.0 ** rng.uniform(-31, -30, size=(batch, n_out)))
    grad_out.flat[77] = big  # not a multiple of 64: not sampled
    grad_out = grad_out.astype(np.float32)
    x = np.random.default_rng(4).standard_normal((batch, 5)).astype(np.float32)
    net = identity_net(5, n_out, "float32", device=device)
    net.forward(x)
    rep = net.backward(grad_out)
    assert_rel(rep.act_grad_norm[0], norm64(grad_out), 1e-6, "act_grad_norm[0]")
    assert_rel(rep.preact_grad_norm[0], norm64(grad_out), 1e-6, "preact_grad_norm[0]")
    sig = vgkern.MLP([5, n_out], activation="identity", output_activation="sigmoid",
                     dtype="float32", seed=0, device=device)
    h = sig.forward(x).astype(np.float64)
    rep = sig.backward(grad_out)
    delta = grad_out.astype(np.float64) * h * (1.0 - h)
    assert_rel(rep.act_grad_norm[0], norm64(grad_out), 1e-6, "sigmoid act_grad_norm[0]")
    assert_rel(rep.preact_grad_norm[0], norm64(delta), 1e-6, "sigmoid preact_grad_norm[0]")


@pytest.mark.parametrize("dtype,x_scale,g_scale", [
    ("float32", 1e-12, 1e-13),       # dW entries ~1e-25: dW**2 ~1e-50 underflows float32
    ("float32", 1e-19, 1e-19),       # dW entries ~1e-38: near the float32 normal minimum
    ("float32", 1e18, 1e19),         # dW entries ~1e37: dW**2 overflows float32
    ("float64", 1e-150, 1e-160),     # dW entries ~1e-310: dW**2 underflows float64
    ("float64", 1e150, 1e150),       # dW entries ~1e300
])
def test_weight_grad_norm_of_tiny_or_huge_products(dtype, x_scale, g_scale, device):
    rng = np.random.default_rng(3)
    batch, n_in, n_out = 4, 23, 17
    x = (rng.uniform(0.5, 1.5, size=(batch, n_in)) * x_scale).astype(dtype)
    grad_out = (rng.uniform(0.5, 1.5, size=(batch, n_out)) * g_scale).astype(dtype)
    net = identity_net(n_in, n_out, dtype, device=device)
    net.forward(x)
    rep = net.backward(grad_out)
    # the true dW in float64 (all products positive: no cancellation)
    dw_true = grad_out.astype(np.float64).T @ x.astype(np.float64)
    dw = net.weight_grads[0].astype(np.float64)
    assert np.all(dw > 0), "stored weight gradient flushed to zero"
    rtol_grad = 1e-5 if dtype == "float32" else 1e-12
    if x.min() * grad_out.min() < np.finfo(dtype).tiny:   # subnormal products lose precision
        rtol_grad = 1e-2
    np.testing.assert_allclose(dw, dw_true, rtol=rtol_grad)
    rtol = 1e-6 if dtype == "float32" else 1e-12
    assert_rel(rep.weight_grad_norm[0], norm64(dw), rtol, "weight_grad_norm[0]")
    assert_rel(rep.bias_grad_norm[0], norm64(net.bias_grads[0]), rtol, "bias_grad_norm[0]")
    assert_rel(rep.act_grad_norm[0], norm64(grad_out), rtol, "act_grad_norm[0]")


@pytest.mark.parametrize("dtype,value", [("float32", 1e-30), ("float64", 1e-280)])
def test_hidden_layer_norms_tiny(dtype, value, device):
    """A 4-layer identity net carries a tiny gradient down: every layer's norm is exact."""
    sizes, batch = [12, 31, 20, 31, 9], 6
    net = vgkern.MLP(sizes, activation="identity", init="orthogonal", dtype=dtype, seed=4,
                     device=device)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    grad_out = (rng.standard_normal((batch, sizes[-1])) * value).astype(dtype)
    net.forward(x)
    rep = net.backward(grad_out)
    # float64 reference from the net's own parameters
    w = [np.asarray(a, dtype=np.float64) for a in net.weights]
    b = [np.asarray(a, dtype=np.float64) for a in net.biases]
    h = [x.astype(np.float64)]
    for l in range(len(w)):
        h.append(h[-1] @ w[l].T + b[l])
    dh = grad_out.astype(np.float64)
    rtol_grad = 1e-4 if dtype == "float32" else 1e-10
    rtol = 1e-4 if dtype == "float32" else 1e-10
    for l in reversed(range(len(w))):
        assert_rel(rep.act_grad_norm[l], norm64(dh), rtol, f"act_grad_norm[{l}]")
        assert_rel(rep.preact_grad_norm[l], norm64(dh), rtol, f"preact_grad_norm[{l}]")
        dw = dh.T @ h[l]
        got = net.weight_grads[l].astype(np.float64)
        assert np.linalg.norm(got - dw) <= rtol_grad * np.linalg.norm(dw), f"weight_grads[{l}]"
        assert_rel(rep.weight_grad_norm[l], norm64(dw), rtol, f"weight_grad_norm[{l}]")
        assert_rel(rep.bias_grad_norm[l], norm64(dh.sum(0)), rtol, f"bias_grad_norm[{l}]")
        assert_rel(rep.weight_grad_norm[l], norm64(got), 1e-6 if dtype == "float32" else 1e-12,
                   f"weight_grad_norm[{l}] vs its stored gradient")
        dh = dh @ w[l]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_gradient_norms_are_exact_zero(dtype, device):
    net = vgkern.MLP([6, 8, 3], activation="tanh", dtype=dtype, device=device)
    net.forward(np.ones((4, 6), dtype=dtype))
    rep = net.backward(np.zeros((4, 3), dtype=dtype))
    for field in NORM_FIELDS:
        np.testing.assert_array_equal(getattr(rep, field), 0.0, err_msg=field)
        assert np.all(np.isneginf(getattr(rep, "log10_" + field))), "log10_" + field


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_infinite_gradient_norm_is_inf_not_nan(dtype, device):
    net = identity_net(3, 4, dtype, device=device)
    net.forward(np.ones((2, 3), dtype=dtype))
    grad_out = np.ones((2, 4), dtype=dtype)
    grad_out[1, 2] = np.inf
    rep = net.backward(grad_out)
    assert rep.act_grad_norm[0] == np.inf
    assert rep.preact_grad_norm[0] == np.inf
    assert rep.bias_grad_norm[0] == np.inf
    assert rep.weight_grad_norm[0] == np.inf
    grad_out[0, 0] = -np.inf
    rep = net.backward(grad_out)
    assert rep.act_grad_norm[0] == np.inf
    grad_out[0, 1] = np.nan
    rep = net.backward(grad_out)
    assert np.isnan(rep.act_grad_norm[0])


# --------------------------------------------------------------------------------------------
# forward statistics of tiny or huge pre-activations (float64 statistics, like the norms)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,scale", [("float32", 1e-30), ("float32", 1e30),
                                         ("float64", 1e-150), ("float64", 1e150),
                                         ("float64", 1e-200), ("float64", 1e200)])
def test_preact_mean_std_of_tiny_or_huge_preactivations(dtype, scale, device):
    """z = x W^T with |z| ~ scale: mean and population std must scale with it (z**2 under- or
    overflows float64 at 1e-200 / 1e200, which must not turn the std into 0)."""
    net = identity_net(6, 9, dtype, seed=2, device=device)
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((5, 6)) * scale).astype(dtype)
    rep = net.step(x, np.zeros((5, 9), dtype=dtype), loss="mse")
    z = (x.astype(np.float64) / scale) @ net.weights[0].astype(np.float64).T   # z / scale
    rtol = 1e-5 if dtype == "float32" else 1e-10
    mean = rep.preact_mean[0] / scale
    assert abs(mean - z.mean()) <= rtol * (z.std() + abs(z.mean())), (
        f"preact_mean[0] = {rep.preact_mean[0]!r}, expected {z.mean() * scale!r}")
    assert_rel(rep.preact_std[0], z.std() * scale, rtol, "preact_std[0]")


def assert_moments(rep, l, z, rtol, what):
    """preact_mean/std of layer l against the float64 z (mean relative to std + |mean|)."""
    mean, std = float(z.mean()), float(z.std())
    assert abs(rep.preact_mean[l] - mean) <= rtol * (std + abs(mean)), (
        f"{what}: preact_mean[{l}] = {rep.preact_mean[l]!r}, expected {mean!r}")
    assert_rel(rep.preact_std[l], std, rtol, f"{what}: preact_std[{l}]")


@pytest.mark.parametrize("activation", ["identity", "sigmoid", "tanh", "relu", "elu"])
@pytest.mark.parametrize("big", [None, 1e-20, 1e10, 3e38])
def test_tiny_preactivations_with_one_unsampled_large_entry(activation, big, device):
    """float32 pre-activations too small to square in float (32 sampled |z - z[0]| below 2^-30)
    get their moments from (z - z[0]) * 2^k. One entry the sample misses, far larger than the
    rest: its scaled square either fits (1e-20) or overflows (the moments are then recomputed in
    scaled float64). Either way mean and std match float64, for every activation."""
    n = 64  # z = x: identity weights, zero bias; two row blocks of 2048 entries
    net = vgkern.MLP([n, n], activation="identity", output_activation=activation,
                     dtype="float32", seed=0, device=device)
    net.weights = [np.eye(n, dtype=np.float32)]  # whole lists: also on CUDA
    net.biases = [np.zeros(n, dtype=np.float32)]
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((64, n)) * 1e-25).astype(np.float32)
    if big is not None:
        x.flat[77] = big  # not a multiple of 64: not sampled
    rep = net.step(x, np.zeros((64, n), dtype=np.float32), loss="mse")
    assert_moments(rep, 0, x.astype(np.float64), 1e-5, f"{activation}, big={big}")


def test_vanishing_forward_signal_moments(device):
    """A 40-layer float32 tanh net with small weights (sigma_w = 0.3): the forward signal
    shrinks ~0.3x per layer, to ~1e-20 at the top. Every layer's preact_mean/std must match a
    float64 forward through the same weights."""
    depth, width = 40, 64
    net = vgkern.MLP([width] * (depth + 1), activation="tanh", init="scaled_normal",
                     sigma_w=0.3, sigma_b=0.0, dtype="float32", seed=1, device=device)
    x = np.random.default_rng(6).standard_normal((128, width)).astype(np.float32)
    rep = net.step(x, np.zeros((128, width), dtype=np.float32), loss="mse")
    h = x.astype(np.float64)
    for l in range(depth):
        z = h @ net.weights[l].astype(np.float64).T + net.biases[l].astype(np.float64)
        assert_moments(rep, l, z, 1e-4, "sigma_w=0.3")
        h = np.tanh(z) if l < depth - 1 else z
    assert rep.preact_std[depth - 1] < 1e-15, "test setup: the signal must vanish"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [0.0, 0.25])
def test_preact_moments_above_a_dead_layer(dtype, bias, device):
    """Layer 0 of a relu net is dead (bias -1e3), so layer 1 sees z = its bias exactly: std 0,
    mean = bias (the fast sums are all 0 there and the moments are recomputed). Layer 2 sees a
    per-unit constant; its moments match float64."""
    net = vgkern.MLP([16, 64, 64, 64, 4], activation="relu", dtype=dtype, seed=3, device=device)
    biases = [b.copy() for b in net.biases]  # whole lists: also on CUDA
    biases[0][...] = -1e3
    biases[1][...] = bias
    net.biases = biases
    x = np.random.default_rng(7).standard_normal((128, 16)).astype(dtype)
    rep = net.step(x, np.zeros((128, 4), dtype=dtype), loss="mse")
    assert rep.zero_fraction[0] == 1 and rep.dead_fraction[0] == 1
    assert rep.preact_std[1] == 0 and rep.preact_mean[1] == np.float64(np.asarray(bias, dtype))
    h1 = np.full((128, 64), max(np.asarray(bias, dtype), 0), dtype=np.float64)
    z2 = h1 @ net.weights[2].astype(np.float64).T + net.biases[2].astype(np.float64)
    if bias > 0:
        assert_moments(rep, 2, z2, 1e-5 if dtype == "float32" else 1e-12, "layer 2")
    else:
        assert rep.preact_std[2] == 0 and rep.preact_mean[2] == 0
    # a NaN weight above the dead layer: z = 0 * NaN + bias is NaN, not the bias
    weights = [w.copy() for w in net.weights]
    weights[1][3, 5] = np.nan
    net.weights = weights
    rep = net.step(x, np.zeros((128, 4), dtype=dtype), loss="mse")
    assert math.isnan(rep.preact_mean[1]) and math.isnan(rep.preact_std[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_preact_moments_of_infinite_preactivations(dtype, device):
    """An infinite pre-activation gives mean +-inf (or NaN) and std NaN, as np.mean/np.std."""
    net = identity_net(3, 5, dtype, device=device)
    net.weights = [np.abs(net.weights[0]) + np.asarray(0.5, dtype)]
    x = np.ones((4, 3), dtype=dtype)
    x[1, 2] = np.inf
    rep = net.step(x, np.zeros((4, 5), dtype=dtype), loss="mse")
    z = x.astype(np.float64) @ net.weights[0].astype(np.float64).T
    assert rep.preact_mean[0] == np.inf == z.mean()
    assert math.isnan(rep.preact_std[0])
    x[2, 0] = -np.inf
    rep = net.step(x, np.zeros((4, 5), dtype=dtype), loss="mse")
    assert math.isnan(rep.preact_mean[0]) and math.isnan(rep.preact_std[0])


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("dtype,big", [("float32", 1e20), ("float64", 1e200)])
def test_preact_moments_of_zero_rows_then_huge_values(dtype, big, batch_norm, device):
    """z = x (identity weights): 8 rows of exact zeros (512 entries: whole zero blocks, which
    the float64 sums may skip) then rows of values near `big`, whose squares overflow the
    dtype, so the moments come from the scaled float64 fallback. The zeros still count in the
    centred sum of squares: skipping them there made preact_std 17 % low in the case first
    reported, 56 % here."""
    n = 64
    net = vgkern.MLP([n, n] + ([1] if batch_norm else []), activation="identity",
                     batch_norm=batch_norm, dtype=dtype, seed=0, device=device)
    weights = list(net.weights)
    weights[0] = np.eye(n, dtype=dtype)  # whole lists: also on CUDA
    net.weights = weights
    if not batch_norm:  # (a batch-norm layer has no bias)
        biases = list(net.biases)
        biases[0] = np.zeros(n, dtype=dtype)
        net.biases = biases
    rng = np.random.default_rng(8)
    x = (big * (1 + 0.1 * rng.standard_normal((64, n)))).astype(dtype)
    x[:8] = 0
    rep = net.step(x, np.zeros((64, net.sizes[-1]), dtype=dtype), loss="mse")
    z = x.astype(np.float64) / big  # the float64 reference, scaled: z**2 must not overflow
    rtol = 1e-5 if dtype == "float32" else 1e-12
    assert abs(rep.preact_mean[0] / big - z.mean()) <= rtol * (z.std() + abs(z.mean())), (
        f"preact_mean[0] = {rep.preact_mean[0]!r}, expected {z.mean() * big!r}")
    assert_rel(rep.preact_std[0] / big, z.std(), rtol, "preact_std[0] / big")


def test_zero_blocks_before_tiny_values():
    """Zeros (gradients that underflowed to 0) fail the fast sums' checks, and the float64
    sums that follow skip leading zero blocks: values after them, tiny or NaN, still count."""
    a = np.zeros(5000, dtype=np.float32)
    assert ops.sum_squares_norm(a) == 0.0
    a[4999] = 3e-30
    assert_rel(ops.sum_squares_norm(a), norm64(a), 1e-12, "one tiny value after zeros")
    a[300] = -4e-30
    assert_rel(ops.sum_squares_norm(a), norm64(a), 1e-12, "two tiny values after zeros")
    a[2048] = np.nan
    assert math.isnan(ops.sum_squares_norm(a))


# --------------------------------------------------------------------------------------------
# ops.sum_squares_norm
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,dtype", [(1e-30, "float32"), (1e-40, "float32"),
                                         (1e38, "float32"), (1e-300, "float64"),
                                         (4e-320, "float64"), (1e300, "float64"),
                                         (1.0, "float32"), (1.0, "float64")])
@pytest.mark.parametrize("shape", [(1,), (1000,), (37, 13), (3, 5, 7)])
def test_sum_squares_norm_extremes(value, dtype, shape):
    a = np.full(shape, value, dtype=dtype)
    a.ravel()[::3] *= -1
    v = abs(float(a.ravel()[0]))
    assert v != 0
    expected = math.sqrt(a.size) * v
    got = ops.sum_squares_norm(a)
    assert isinstance(got, float)
    assert_rel(got, expected, 1e-12, f"sum_squares_norm({value:g} x {shape})")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sum_squares_norm_special_values(dtype):
    assert ops.sum_squares_norm(np.zeros(0, dtype=dtype)) == 0.0
    assert ops.sum_squares_norm(np.zeros((4, 5), dtype=dtype)) == 0.0
    assert ops.sum_squares_norm(np.array([3.0, -4.0], dtype=dtype)) == 5.0
    assert ops.sum_squares_norm(np.array([1.0, np.inf, 2.0], dtype=dtype)) == np.inf
    assert ops.sum_squares_norm(np.array([1.0, -np.inf], dtype=dtype)) == np.inf
    assert math.isnan(ops.sum_squares_norm(np.array([1.0, np.nan, 2.0], dtype=dtype)))
    assert math.isnan(ops.sum_squares_norm(np.array([np.inf, np.nan], dtype=dtype)))
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 100)).astype(dtype)
    assert_rel(ops.sum_squares_norm(a), norm64(a), 1e-12, "sum_squares_norm(random)")
    # a non-contiguous view: its own values, not the parent's memory layout
    assert_rel(ops.sum_squares_norm(a[:, ::3]), norm64(a[:, ::3]), 1e-12,
               "sum_squares_norm(strided)")


# --------------------------------------------------------------------------------------------
# vgkern must not change the floating-point environment of the caller
# --------------------------------------------------------------------------------------------

def test_no_flush_to_zero_in_calling_thread():
    """A library built with -ffast-math may enable flush-to-zero/denormals-are-zero for the
    whole process; numpy results then change after `import vgkern`. Subnormals must survive."""
    tiny32 = np.finfo(np.float32).smallest_subnormal
    tiny64 = np.finfo(np.float64).smallest_subnormal
    net = vgkern.MLP([4, 8, 3], activation="tanh", dtype="float32")
    net.step(np.ones((2, 4), dtype=np.float32), np.zeros((2, 3), dtype=np.float32))
    assert np.float32(tiny32) * np.float32(2) == np.float32(2 * tiny32) > 0
    assert np.float64(tiny64) * 3.0 > 0
    assert np.array([1e-39], dtype=np.float32)[0] * np.float32(1) != 0
    # and vgkern itself keeps subnormal gradients of an identity layer (float32 1e-40)
    small = identity_net(3, 2, "float32")
    small.forward(np.ones((1, 3), dtype=np.float32))
    rep = small.backward(np.full((1, 2), 1e-40, dtype=np.float32))
    assert rep.act_grad_norm[0] == pytest.approx(math.sqrt(2) * float(np.float32(1e-40)),
                                                 rel=1e-6)


@pytest.mark.parametrize("flush", [False, True])
@pytest.mark.parametrize("exponent", [-66, -56, -52, -50, -47, -40])
def test_float32_block_sums_near_the_underflow_limit(exponent, flush, device):
    """float32 squares are summed in float per block of 256 entries; a block whose float sum
    cannot be trusted (some squares lost to underflow) is summed again in float64. Entries of
    magnitude 2^(exponent-2) .. 2^exponent put the blocks below, around and above that limit;
    one block is all zeros and the last one is ragged. act_grad_norm (of dh) and
    preact_grad_norm (of dh * tanh') match float64 within 1e-6, also with flush-to-zero on."""
    rng = np.random.default_rng(5)
    batch, n_out = 37, 100                      # 3700 entries: 14 whole blocks and a tail
    grad_out = (rng.choice([-1.0, 1.0], size=batch * n_out)
                * 2.0 ** rng.uniform(exponent - 2, exponent, size=batch * n_out))
    grad_out[1024:1280] = 0.0
    grad_out = grad_out.astype(np.float32).reshape(batch, n_out)
    net = vgkern.MLP([6, n_out], activation="identity", output_activation="tanh",
                     dtype="float32", seed=0, device=device)
    x = (0.3 * np.random.default_rng(6).standard_normal((batch, 6))).astype(np.float32)
    previous = vgkern.flush_denormal()
    vgkern.set_flush_denormal(flush)
    try:
        h = net.forward(x)
        rep = net.backward(grad_out)
    finally:
        vgkern.set_flush_denormal(previous)
    g = grad_out.astype(np.float64)
    delta = g * (1.0 - h.astype(np.float64) ** 2)  # tanh'(z) from h = tanh(z), |z| small
    assert_rel(rep.act_grad_norm[0], norm64(g), 1e-6, "act_grad_norm[0]")
    assert_rel(rep.preact_grad_norm[0], norm64(delta), 1e-6, "preact_grad_norm[0]")
