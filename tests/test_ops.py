"""vgkern.ops against the NumPy oracle (tests/reference.py), float32 and float64.

Tolerances follow the rule in conftest.py: vgkern's error vs a wider-precision oracle must be at
most twice the error of a plain NumPy implementation in the same precision, plus a few ulps.
The forward activations are additionally held to the accuracy vgkern aims at: <= 4 ulp (float32)
and <= 8 ulp (float64) on sigmoid/tanh/elu away from zero crossings.
"""

import math

import numpy as np
import pytest

import vgkern
from vgkern import ops

import reference as R
from conftest import (ACTIVATION_CONFIGS, ACTIVATION_IDS, DTYPE_IDS, DTYPES, H, KINK_MARGIN,
                      assert_matches_fd, assert_max_ulp, assert_rule, central_difference, eps,
                      oracle_dtype)

MAX_ULP = {np.float32: 4, np.float64: 8}

# (B, in, out): sizes that are not multiples of vector widths, batch 1, a 1x1 layer.
DENSE_SHAPES = [(1, 1, 1), (1, 5, 3), (3, 5, 7), (17, 33, 9), (13, 64, 129), (64, 129, 17),
                (1, 129, 64), (2, 16, 8)]
DENSE_IDS = [f"B{b}_in{i}_out{o}" for b, i, o in DENSE_SHAPES]


def activation_grid(dtype, columns=7):
    """A dense grid over [-100, 100] plus +-30, zero, tiny values and a fine grid near zero,
    rounded to ``dtype`` and shaped (N, columns) with an odd number of columns."""
    tiny = np.logspace(-30, -0.3, 300)
    values = np.concatenate([
        np.linspace(-100.0, 100.0, 40001),
        np.linspace(-1.0, 1.0, 4001),
        np.linspace(-35.0, 35.0, 7001),
        [30.0, -30.0, 0.0, -0.0, 1e-5, -1e-5, 100.0, -100.0],
        tiny, -tiny,
    ]).astype(dtype)
    pad = (-values.size) % columns
    values = np.concatenate([values, np.zeros(pad, dtype)])
    return np.ascontiguousarray(values.reshape(-1, columns))


def oracle_act(z, name, alpha, dtype):
    """(h, dact) of the oracle in the wide precision for ``dtype`` results."""
    zw = np.asarray(z).astype(oracle_dtype(dtype))
    return R.act(zw, name, alpha), R.act_derivative(zw, name, alpha)


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_activation_forward_matches_oracle_on_grid(name, alpha, dtype, device):
    z = activation_grid(dtype)
    z_before = z.copy()
    h, dact = ops.activation_forward(z, name, alpha=alpha, device=device)
    assert np.array_equal(z, z_before), "activation_forward modified its input"
    for a in (h, dact):
        assert isinstance(a, np.ndarray) and a.dtype == np.dtype(dtype) and a.shape == z.shape
    assert np.isfinite(h).all() and np.isfinite(dact).all(), "non-finite output from finite z"
    ref_h, ref_d = oracle_act(z, name, alpha, dtype)
    naive_h, naive_d = R.act(z, name, alpha), R.act_derivative(z, name, alpha)
    assert_rule(h, ref_h, naive_h, dtype, name=f"{name} h")
    assert_rule(dact, ref_d, naive_d, dtype, name=f"{name} dact")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_forward_ulp_error(dtype):
    z = activation_grid(dtype)
    h, _ = ops.activation_forward(z, "sigmoid")
    ref_h, _ = oracle_act(z, "sigmoid", 1.0, dtype)
    assert_max_ulp(h, ref_h, dtype, MAX_ULP[dtype], z=z, name="sigmoid")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_and_derivatives_subnormal_tail(dtype):
    """Where exp(-|z|) is subnormal (float32 |z| in [87, 104], float64 [708, 746]), sigmoid(z),
    sigmoid'(z), tanh'(z/2) and elu'(z) stay within 4 subnormal ulps (e rounded as a subnormal,
    then times 4 q^2 for tanh') plus MAX_ULP of the normal ones of the oracle, and
    sigmoid(-103.7) is the smallest subnormal in float32 (2^-150 itself is not a float)."""
    tiny = np.finfo(dtype).smallest_subnormal
    low, high = (-104.0, -87.0) if dtype == np.float32 else (-746.0, -708.0)
    z = np.linspace(low, high, 20001).astype(dtype).reshape(-1, 1)
    zw = z.astype(oracle_dtype(dtype))
    for name, zz, zzw in (("sigmoid", z, zw), ("tanh", z / 2, zw / 2), ("elu", z, zw)):
        h, d = ops.activation_forward(zz, name)
        for got, ref, what in ((h, R.act(zzw, name, 1.0), "h"),
                               (d, R.act_derivative(zzw, name, 1.0), "dact")):
            if name != "sigmoid" and what == "h":
                continue  # tanh, elu: -1 or -1 + tiny, not subnormal
            excess = np.abs(got.astype(zw.dtype) - ref) - MAX_ULP[dtype] * eps(dtype) * np.abs(ref)
            worst = int(np.argmax(excess))
            assert excess.max() <= 4 * tiny, (
                f"{name} {what} at z={zz.ravel()[worst]!r}: got {got.ravel()[worst]!r}, "
                f"expected {ref.ravel()[worst]!r}")
    if dtype == np.float32:
        h, _ = ops.activation_forward(np.array([[-103.7]], dtype=dtype), "sigmoid")
        assert h[0, 0] == np.float32(np.exp(-103.7)) == tiny


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_forward_ulp_error_away_from_zero(dtype):
    z = activation_grid(dtype)
    h, _ = ops.activation_forward(z, "tanh")
    ref_h, _ = oracle_act(z, "tanh", 1.0, dtype)
    away = np.abs(z) >= 0.5
    assert away.sum() > 40000
    assert_max_ulp(h[away], ref_h[away], dtype, MAX_ULP[dtype], z=z[away], name="tanh")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_relative_error_near_zero(dtype):
    """tanh(z) ~ z near 0: the relative error must stay small (no 1 - 2/(exp(2z)+1) style
    cancellation); tanh(1e-5) correct to 1e-6 relative in float32."""
    rel_bound = 1e-6 if dtype == np.float32 else 16 * eps(np.float64)
    low = -30 if dtype == np.float32 else -300
    mags = np.logspace(low, np.log10(0.5), 701)
    z = np.concatenate([mags, -mags, [1e-5, -1e-5, 1e-3, 0.1]]).astype(dtype).reshape(-1, 1)
    h, _ = ops.activation_forward(z, "tanh")
    ref = np.tanh(z.astype(np.longdouble))
    rel = np.asarray(np.abs(h - ref) / np.abs(ref), dtype=np.float64)
    worst = int(np.argmax(rel))
    assert rel.max() <= rel_bound, (
        f"tanh relative error {rel.max():.3e} at z={z.ravel()[worst]!r}: got "
        f"{h.ravel()[worst]!r}, expected {float(ref.ravel()[worst])!r}")
    assert np.all(np.sign(h) == np.sign(z)), "tanh(z) has the wrong sign"
    z1 = np.array([[1e-5]], dtype=dtype)
    h1, d1 = ops.activation_forward(z1, "tanh")
    assert abs(float(h1[0, 0]) - np.tanh(float(z1[0, 0]))) <= 1e-6 * float(z1[0, 0])
    assert abs(float(d1[0, 0]) - (1.0 - np.tanh(float(z1[0, 0])) ** 2)) <= 2 * eps(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("alpha", [1.0, 0.5, 1.7])
def test_elu_forward_accuracy(alpha, dtype):
    """ELU: exact for z > 0, <= MAX_ULP for z <= -1 (away from the zero crossing), and an
    absolute error of a few eps * alpha on (-1, 0]."""
    z = activation_grid(dtype)
    h, _ = ops.activation_forward(z, "elu", alpha=alpha)
    ref_h, _ = oracle_act(z, "elu", alpha, dtype)
    pos = z > 0
    assert np.array_equal(h[pos], z[pos]), "elu(z) != z for z > 0"
    far = z <= -1
    assert_max_ulp(h[far], ref_h[far], dtype, MAX_ULP[dtype], z=z[far], name=f"elu{alpha}")
    near = (z > -1) & (z <= 0)
    err = np.asarray(np.abs(h[near] - ref_h[near]), dtype=np.float64)
    assert err.max() <= 4 * eps(dtype) * max(alpha, 1.0), (
        f"elu near 0: abs error {err.max():.3e} at z={z[near][np.argmax(err)]!r}")
    assert np.all(h[z < 0] < 0) and np.all(h[z < 0] >= -alpha * (1 + eps(dtype)))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_activation_derivative_exact_values(name, alpha, dtype, device):
    """Values that must be exact: act(0), act'(0) (relu'(0) = 0, elu'(0) = alpha),
    piecewise-linear pieces, the identity."""
    z = np.array([[0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-30, -1e-30]], dtype=dtype)
    h, dact = ops.activation_forward(z, name, alpha=alpha, device=device)
    at0 = {"identity": (0.0, 1.0), "sigmoid": (0.5, 0.25), "tanh": (0.0, 1.0),
           "relu": (0.0, 0.0), "elu": (0.0, alpha)}[name]
    expected_d0 = np.asarray(at0[1], dtype=dtype)
    assert h[0, 0] == at0[0] and h[0, 1] == at0[0], f"{name}(+-0) = {h[0, :2]}"
    assert dact[0, 0] == expected_d0 and dact[0, 1] == expected_d0, f"{name}'(+-0) = {dact[0, :2]}"
    if name == "identity":
        assert np.array_equal(h, z) and np.all(dact == 1)
    if name == "relu":
        assert np.array_equal(h, np.maximum(z, 0)) and np.array_equal(dact, (z > 0).astype(dtype))
    if name == "elu":
        pos = z > 0
        assert np.array_equal(h[pos], z[pos]) and np.all(dact[pos] == 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_activation_forward_at_30_and_100(name, alpha, dtype, device):
    """The saturation regime: the derivative of sigmoid/tanh at +-30 is tiny but must be >= 0,
    finite and (within the rule's absolute tolerance) right; values stay in range."""
    z = np.array([[30.0, -30.0, 100.0, -100.0, 20.0, -20.0, 88.0, -88.0, 710.0, -710.0]],
                 dtype=dtype)
    h, dact = ops.activation_forward(z, name, alpha=alpha, device=device)
    assert np.isfinite(h).all() and np.isfinite(dact).all()
    ref_h, ref_d = oracle_act(z, name, alpha, dtype)
    assert np.all(dact >= 0)
    assert np.all(np.abs(h - ref_h) <= MAX_ULP[dtype] * eps(dtype) * np.abs(ref_h) +
                  np.finfo(dtype).tiny), f"{name}: {h} vs {ref_h}"
    # dact: absolute error at most ~ one ulp of 1 (s*(1-s) style formulas give 0 here)
    assert np.all(np.abs(dact - ref_d) <= eps(dtype) * max(1.0, alpha)), (
        f"{name}: {dact} vs {ref_d}")
    if name == "sigmoid":
        assert np.all((h >= 0) & (h <= 1))
    if name == "tanh":
        assert np.all((h >= -1) & (h <= 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_activation_no_nonfinite_from_huge_finite_inputs(name, alpha, dtype, device):
    fi = np.finfo(dtype)
    z = np.array([[fi.max, -fi.max, 1e4, -1e4, 1e30, -1e30, fi.tiny, -fi.tiny,
                   fi.smallest_subnormal, -fi.smallest_subnormal]], dtype=dtype)
    h, dact = ops.activation_forward(z, name, alpha=alpha, device=device)
    assert np.isfinite(h).all(), f"{name}({z}) = {h}"
    assert np.isfinite(dact).all(), f"{name}'({z}) = {dact}"
    ref_h, ref_d = oracle_act(z, name, alpha, dtype)
    assert np.all(np.abs(h - ref_h) <= MAX_ULP[dtype] * eps(dtype) * np.abs(ref_h) + fi.tiny), (
        f"{h} vs {ref_h}")
    assert np.all(np.abs(dact - ref_d) <= eps(dtype) * max(1.0, alpha)), f"{dact} vs {ref_d}"
    dz = ops.activation_backward(np.ones_like(z), z, name, alpha=alpha, device=device)
    assert np.isfinite(dz).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_activation_nan_and_inf_inputs(name, alpha, dtype, device):
    """NaN propagates through every activation; +-inf gives the limits; no crash."""
    z = np.array([[np.nan, np.inf, -np.inf, 1.0, np.nan, 0.5, -0.5]], dtype=dtype)
    h, dact = ops.activation_forward(z, name, alpha=alpha, device=device)
    assert np.isnan(h[0, 0]) and np.isnan(h[0, 4]), f"{name}(NaN) = {h[0, [0, 4]]}"
    limits = {"identity": (np.inf, -np.inf), "sigmoid": (1.0, 0.0), "tanh": (1.0, -1.0),
              "relu": (np.inf, 0.0), "elu": (np.inf, -alpha)}[name]
    assert h[0, 1] == limits[0] and np.isclose(h[0, 2], limits[1], rtol=2 * eps(dtype), atol=0), (
        f"{name}(+-inf) = {h[0, 1:3]}, expected {limits}")
    dlimits = {"identity": (1.0, 1.0), "sigmoid": (0.0, 0.0), "tanh": (0.0, 0.0),
               "relu": (1.0, 0.0), "elu": (1.0, 0.0)}[name]
    assert np.allclose(dact[0, 1:3], dlimits, rtol=0, atol=1e-30), (
        f"{name}'(+-inf) = {dact[0, 1:3]}")
    # finite entries next to non-finite ones are unaffected
    ref_h, ref_d = oracle_act(z[:, 3:4], name, alpha, dtype)
    assert abs(float(h[0, 3]) - float(ref_h[0, 0])) <= 2 * eps(dtype)
    if name in ("sigmoid", "tanh"):
        assert np.isnan(dact[0, 0]), f"{name}'(NaN) = {dact[0, 0]}"
        dz = ops.activation_backward(np.ones_like(z), z, name, alpha=alpha, device=device)
        assert np.isnan(dz[0, 0]) and np.isfinite(dz[0, 1:4]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_activation_backward_matches_oracle(name, alpha, dtype, rng, device):
    z = activation_grid(dtype)
    dh = rng.standard_normal(z.shape).astype(dtype)
    z_before, dh_before = z.copy(), dh.copy()
    dz = ops.activation_backward(dh, z, name, alpha=alpha, device=device)
    assert np.array_equal(z, z_before) and np.array_equal(dh, dh_before), "inputs modified"
    assert dz.dtype == np.dtype(dtype) and dz.shape == z.shape
    wide = oracle_dtype(dtype)
    ref = R.activation_backward(dh.astype(wide), z.astype(wide), name, alpha)
    naive = R.activation_backward(dh, z, name, alpha)
    assert_rule(dz, ref, naive, dtype, name=f"{name} dz")
    # consistent with the forward's saved derivative
    _, dact = ops.activation_forward(z, name, alpha=alpha, device=device)
    assert_rule(dz, ref, dh * dact, dtype, name=f"{name} dz vs dh*dact")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 33), (64, 129), (1, 129), (129, 1)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_activation_shapes(name, alpha, shape, dtype, rng):
    z = (3 * rng.standard_normal(shape)).astype(dtype)
    h, dact = ops.activation_forward(z, name, alpha=alpha)
    assert h.shape == shape and dact.shape == shape
    ref_h, ref_d = oracle_act(z, name, alpha, dtype)
    assert_rule(h, ref_h, R.act(z, name, alpha), dtype, name="h")
    assert_rule(dact, ref_d, R.act_derivative(z, name, alpha), dtype, name="dact")
    dh = rng.standard_normal(shape).astype(dtype)
    dz = ops.activation_backward(dh, z, name, alpha=alpha)
    wide = oracle_dtype(dtype)
    assert_rule(dz, R.activation_backward(dh.astype(wide), z.astype(wide), name, alpha),
                R.activation_backward(dh, z, name, alpha), dtype, name="dz")


# --------------------------------------------------------------------------------------------
# Dense
# --------------------------------------------------------------------------------------------

def dense_inputs(rng, shape, dtype, with_bias=True):
    batch, fan_in, fan_out = shape
    x = rng.standard_normal((batch, fan_in)).astype(dtype)
    w = (rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)).astype(dtype)
    b = (0.5 * rng.standard_normal(fan_out)).astype(dtype) if with_bias else None
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=DENSE_IDS)
@pytest.mark.parametrize("name,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_dense_forward_matches_oracle(name, alpha, shape, with_bias, dtype, rng, device):
    x, w, b = dense_inputs(rng, shape, dtype, with_bias)
    inputs = [a for a in (x, w, b) if a is not None]
    copies = [a.copy() for a in inputs]
    h, dact = ops.dense_forward(x, w, b, activation=name, alpha=alpha, device=device)
    assert all(np.array_equal(a, c) for a, c in zip(inputs, copies)), "inputs modified"
    batch, _, fan_out = shape
    for a in (h, dact):
        assert a.dtype == np.dtype(dtype) and a.shape == (batch, fan_out)
    wide = oracle_dtype(dtype)
    ref_h, ref_d = R.dense_forward(x.astype(wide), w.astype(wide),
                                   None if b is None else b.astype(wide), name, alpha)
    naive_h, naive_d = R.dense_forward(x, w, b, name, alpha)
    assert_rule(h, ref_h, naive_h, dtype, name="h")
    assert_rule(dact, ref_d, naive_d, dtype, name="dact")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dense_forward_default_activation_is_identity(dtype, rng):
    x, w, b = dense_inputs(rng, (5, 7, 3), dtype)
    h, dact = ops.dense_forward(x, w, b)
    wide = oracle_dtype(dtype)
    ref = R.dense_preactivation(x.astype(wide), w.astype(wide), b.astype(wide))
    assert_rule(h, ref, R.dense_preactivation(x, w, b), dtype)
    assert np.all(dact == 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=DENSE_IDS)
@pytest.mark.parametrize("name,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_dense_backward_matches_oracle(name, alpha, shape, need_dx, dtype, rng, device):
    x, w, b = dense_inputs(rng, shape, dtype)
    _, dact = R.dense_forward(x, w, b, name, alpha)  # a realistic saved derivative, in dtype
    dact = np.ascontiguousarray(dact, dtype=dtype)
    dh = rng.standard_normal((shape[0], shape[2])).astype(dtype)
    copies = [a.copy() for a in (dh, dact, x, w)]
    dx, dw, db = ops.dense_backward(dh, dact, x, w, need_dx=need_dx, device=device)
    assert all(np.array_equal(a, c) for a, c in zip((dh, dact, x, w), copies)), "inputs modified"
    wide = oracle_dtype(dtype)
    ref_dx, ref_dw, ref_db = R.dense_backward(dh.astype(wide), dact.astype(wide),
                                              x.astype(wide), w.astype(wide))
    naive_dx, naive_dw, naive_db = R.dense_backward(dh, dact, x, w)
    assert dw.shape == w.shape and db.shape == (shape[2],)
    assert_rule(dw, ref_dw, naive_dw, dtype, name="dw")
    assert_rule(db, ref_db, naive_db, dtype, name="db")
    if need_dx:
        assert dx.shape == x.shape
        assert_rule(dx, ref_dx, naive_dx, dtype, name="dx")
    else:
        assert dx is None


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dense_backward_default_returns_dx(dtype, rng):
    x, w, _ = dense_inputs(rng, (4, 6, 5), dtype)
    dh = rng.standard_normal((4, 5)).astype(dtype)
    dact = np.ones((4, 5), dtype)
    dx, _, _ = ops.dense_backward(dh, dact, x, w)
    assert dx is not None and dx.shape == x.shape
    wide = oracle_dtype(dtype)
    assert_rule(dx, dh.astype(wide) @ w.astype(wide), dh @ w, dtype)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

LOSS_SHAPES = [(1, 1), (1, 5), (3, 5), (13, 9), (17, 33), (64, 129)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_mse_loss_matches_oracle(shape, dtype, rng, device):
    out = rng.standard_normal(shape).astype(dtype)
    target = rng.standard_normal(shape).astype(dtype)
    loss, dout = ops.mse_loss(out, target, device=device)
    assert isinstance(loss, float)
    assert dout.dtype == np.dtype(dtype) and dout.shape == shape
    wide = oracle_dtype(dtype)
    ref_loss, ref_dout = R.mse_loss(out.astype(wide), target.astype(wide))
    naive_loss, naive_dout = R.mse_loss(out, target)
    assert_rule(dout, ref_dout, naive_dout, dtype, name="dout")
    # the loss is a reduction over B*C terms: NumPy sums pairwise, so allow sqrt(B*C) ulps
    assert_rule(np.float64(loss), ref_loss, naive_loss, dtype, name="loss",
                atol_ulps=max(4.0, math.sqrt(out.size)))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_mse_loss_known_value(dtype, device):
    out = np.array([[1.0, 2.0], [3.0, 5.0]], dtype=dtype)
    target = np.array([[0.0, 2.0], [1.0, 1.0]], dtype=dtype)
    loss, dout = ops.mse_loss(out, target, device=device)
    # 0.5 * (1 + 0 + 4 + 16) / 2
    assert loss == 5.25
    assert np.array_equal(dout, np.array([[0.5, 0.0], [1.0, 2.0]], dtype=dtype))


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (3, 5), (13, 9), (17, 33), (64, 129)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_cross_entropy_loss_matches_oracle(shape, dtype, label_dtype, rng, device):
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0]).astype(label_dtype)
    loss, dlogits = ops.cross_entropy_loss(logits, labels, device=device)
    assert isinstance(loss, float)
    assert dlogits.dtype == np.dtype(dtype) and dlogits.shape == shape
    wide = oracle_dtype(dtype)
    ref_loss, ref_d = R.cross_entropy_loss(logits.astype(wide), labels)
    naive_loss, naive_d = R.cross_entropy_loss(logits, labels)
    assert_rule(dlogits, ref_d, naive_d, dtype, name="dlogits")
    assert_rule(np.float64(loss), ref_loss, naive_loss, dtype, name="loss",
                atol_ulps=max(4.0, math.sqrt(logits.size)))
    # rows of dlogits sum to 0
    assert np.all(np.abs(dlogits.astype(np.float64).sum(axis=1)) <= 8 * eps(dtype) / shape[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cross_entropy_loss_extreme_logits(dtype, device):
    """Stable log-softmax: logits of +-1e4 (and float64 +-1e300) give finite, exact results."""
    big = 1e4
    logits = np.array([[big, -big, 0.0], [-big, big, 3.0], [0.0, 0.0, 0.0], [big, big, -big]],
                      dtype=dtype)
    labels = np.array([0, 0, 2, 1], dtype=np.int64)
    loss, d = ops.cross_entropy_loss(logits, labels, device=device)
    assert np.isfinite(loss) and np.isfinite(d).all()
    wide = oracle_dtype(dtype)
    ref_loss, ref_d = R.cross_entropy_loss(logits.astype(wide), labels)
    assert abs(loss - float(ref_loss)) <= 4 * eps(dtype) * abs(float(ref_loss))
    assert np.all(np.abs(d - ref_d) <= 4 * eps(dtype))
    if dtype == np.float64:
        logits = np.array([[1e300, -1e300], [-1e300, 1e300]])
        loss, d = ops.cross_entropy_loss(logits, np.array([0, 0]), device=device)
        assert np.isfinite(d).all()
        assert loss == pytest.approx(1e300, rel=1e-12)


# --------------------------------------------------------------------------------------------
# sum_squares_norm
# --------------------------------------------------------------------------------------------

NORM_RTOL = {np.float32: 1e-6, np.float64: 1e-13}


def check_norm(a, rtol):
    got = ops.sum_squares_norm(a)
    assert isinstance(got, float)
    ref = float(R.frobenius_norm(a.astype(np.longdouble)))
    if ref == 0:
        assert got == 0.0
    else:
        assert abs(got - ref) <= rtol * ref, f"sum_squares_norm {got!r} != {ref!r}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(1,), (7,), (1, 1), (3, 5), (17, 33), (64, 129), (3, 4, 5)],
                         ids=str)
def test_sum_squares_norm_matches_numpy(shape, dtype, rng, device):
    a = rng.standard_normal(shape).astype(dtype)
    got = ops.sum_squares_norm(a, device=device)
    ref = np.linalg.norm(a.astype(np.float64).ravel())
    assert abs(got - ref) <= NORM_RTOL[dtype] * ref
    check_norm(a, NORM_RTOL[dtype])


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e-40, 3e38, 1e38, 1e20],
                         ids=lambda s: f"{s:.0e}")
@pytest.mark.parametrize("shape", [(1,), (17, 33), (64, 129)], ids=str)
def test_sum_squares_norm_float32_no_underflow_or_overflow(scale, shape, rng, device):
    """Squares of 1e-30 underflow and squares of 3e38 overflow in float32: the float64 norm
    must still be right (1e-40 entries are float32 subnormals)."""
    a = (scale * rng.uniform(0.5, 1.0, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
    assert np.all(a != 0) and np.isfinite(a).all()
    check_norm(a, NORM_RTOL[np.float32] if scale > 1e-38 else 1e-5)
    got = ops.sum_squares_norm(a, device=device)
    assert np.isfinite(got) and got > 0


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-310, 1e300, 1e200, 1e150],
                         ids=lambda s: f"{s:.0e}")
@pytest.mark.parametrize("shape", [(1,), (17, 33), (64, 129)], ids=str)
def test_sum_squares_norm_float64_no_underflow_or_overflow(scale, shape, rng, device):
    a = scale * rng.uniform(0.5, 1.0, shape) * rng.choice([-1, 1], shape)
    assert np.all(a != 0) and np.isfinite(a).all()
    check_norm(a, NORM_RTOL[np.float64] if scale > 1e-300 else 1e-10)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sum_squares_norm_mixed_magnitudes(dtype, device):
    fi = np.finfo(dtype)
    big = fi.max / 2
    a = np.full((9, 11), 1.0, dtype=dtype)
    a[4, 5] = big
    check_norm(a, NORM_RTOL[dtype])
    a = np.zeros((9, 11), dtype=dtype)
    a[0, 0] = fi.tiny
    a[8, 10] = -fi.tiny
    check_norm(a, NORM_RTOL[dtype])
    assert ops.sum_squares_norm(np.zeros((5, 3), dtype=dtype), device=device) == 0.0
    a = np.full(1000, fi.max, dtype=dtype)
    got = ops.sum_squares_norm(a, device=device)
    if dtype == np.float32:
        assert abs(got - float(fi.max) * math.sqrt(1000)) <= NORM_RTOL[dtype] * got
    else:
        assert got == np.inf  # sqrt(1000) * float64 max is not representable


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sum_squares_norm_nonfinite(dtype, device):
    a = np.ones((3, 5), dtype=dtype)
    a[1, 2] = np.inf
    assert ops.sum_squares_norm(a, device=device) == np.inf
    a[2, 2] = np.nan
    assert np.isnan(ops.sum_squares_norm(a, device=device))


# --------------------------------------------------------------------------------------------
# Finite differences (float64): dense_backward, activation_backward and the two losses
# --------------------------------------------------------------------------------------------



@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_dense_backward_matches_finite_differences(activation, alpha, with_bias, rng):
    batch, fan_in, fan_out = 3, 4, 5
    for _ in range(200):
        x = rng.standard_normal((batch, fan_in))
        w = rng.standard_normal((fan_out, fan_in)) / 2
        b = rng.standard_normal(fan_out) / 2
        z = x @ w.T + (b if with_bias else 0)
        if np.abs(z).min() > KINK_MARGIN:
            break
    else:
        raise AssertionError("no kink-free input")
    g = rng.standard_normal((batch, fan_out))
    bias = b if with_bias else None

    def f():
        h, _ = ops.dense_forward(x, w, bias, activation=activation, alpha=alpha)
        return float(np.sum(h * g))

    _, dact = ops.dense_forward(x, w, bias, activation=activation, alpha=alpha)
    dx, dw, db = ops.dense_backward(g, dact, x, w)
    arrays = [x, w] + ([b] if with_bias else [])
    f0 = f()
    numeric = central_difference(f, arrays)
    scale = max(1e-3, max(float(np.abs(n).max()) for n in numeric))
    assert_matches_fd(dx, numeric[0], "dx", scale, f0)
    assert_matches_fd(dw, numeric[1], "dw", scale, f0)
    if with_bias:
        assert_matches_fd(db, numeric[2], "db", scale, f0)
    else:
        # without a bias, db is still delta.sum(0) = d f / d (a bias added to z)
        shift = np.zeros(fan_out)

        def f_shift():
            h, _ = ops.dense_forward(x, w, shift, activation=activation, alpha=alpha)
            return float(np.sum(h * g))

        assert_matches_fd(db, central_difference(f_shift, [shift])[0], "db", scale, f0)


@pytest.mark.parametrize("activation,alpha", ACTIVATION_CONFIGS, ids=ACTIVATION_IDS)
def test_activation_backward_matches_finite_differences(activation, alpha, rng):
    z = rng.uniform(-8, 8, (6, 7))
    z[np.abs(z) < 0.05] = 0.5  # away from the kink at 0
    g = rng.standard_normal(z.shape)
    dz = ops.activation_backward(g, z, activation, alpha=alpha)
    # the activation is elementwise: perturbing all entries at once gives every partial
    h_plus, _ = ops.activation_forward(z + H, activation, alpha=alpha)
    h_minus, _ = ops.activation_forward(z - H, activation, alpha=alpha)
    numeric = g * (h_plus - h_minus) / (2 * H)
    assert_matches_fd(dz, numeric, "dz", max(1e-3, float(np.abs(numeric).max())))
    _, dact = ops.activation_forward(z, activation, alpha=alpha)
    assert_matches_fd(dact, (h_plus - h_minus) / (2 * H), "dact", 1.0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 5)], ids=str)
def test_mse_loss_gradient_matches_finite_differences(shape, rng):
    out = rng.standard_normal(shape)
    target = rng.standard_normal(shape)
    loss, dout = ops.mse_loss(out, target)
    assert loss == pytest.approx(R.mse_loss(out, target)[0], rel=1e-14)
    numeric = central_difference(lambda: ops.mse_loss(out, target)[0], [out])[0]
    assert_matches_fd(dout, numeric, "dout", max(1e-3, float(np.abs(numeric).max())))


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 5), (4, 2)], ids=str)
def test_cross_entropy_gradient_matches_finite_differences(shape, rng):
    logits = 2 * rng.standard_normal(shape)
    labels = rng.integers(0, shape[1], shape[0])
    loss, dlogits = ops.cross_entropy_loss(logits, labels)
    assert loss == pytest.approx(R.cross_entropy_loss(logits, labels)[0], rel=1e-14, abs=1e-300)
    numeric = central_difference(lambda: ops.cross_entropy_loss(logits, labels)[0], [logits])[0]
    assert_matches_fd(dlogits, numeric, "dlogits", max(1e-3, float(np.abs(numeric).max())))


# --------------------------------------------------------------------------------------------
# Errors: wrong dtype -> TypeError, wrong shape/rank -> ValueError, never a silent cast
# --------------------------------------------------------------------------------------------

def test_activation_forward_rejects_bad_input():
    z32 = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError):
        ops.activation_forward(z32.astype(np.int32), "tanh")
    with pytest.raises(TypeError):
        ops.activation_forward(z32.astype(np.float16), "tanh")
    with pytest.raises(ValueError, match="softplus"):
        ops.activation_forward(z32, "softplus")


@pytest.mark.parametrize("shape", [(), (4,), (2, 3, 4)], ids=["rank0", "rank1", "rank3"])
def test_activation_ops_reject_non_2d_input(shape):
    """The contract: z is 2-D (N, C); a wrong rank is a ValueError."""
    z = np.zeros(shape, np.float32)
    with pytest.raises(ValueError):
        ops.activation_forward(z, "tanh")
    with pytest.raises(ValueError):
        ops.activation_backward(z, z, "tanh")


def test_activation_backward_rejects_bad_input():
    z32 = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError):
        ops.activation_backward(z32.astype(np.float64), z32, "tanh")
    with pytest.raises(TypeError):
        ops.activation_backward(z32, z32.astype(np.float64), "tanh")
    with pytest.raises(ValueError):
        ops.activation_backward(np.zeros((3, 5), np.float32), z32, "tanh")
    with pytest.raises(ValueError):
        ops.activation_backward(z32, z32, "swish")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dense_forward_rejects_bad_input(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    x = np.zeros((4, 5), dtype)
    w = np.zeros((3, 5), dtype)
    b = np.zeros(3, dtype)
    with pytest.raises(TypeError):
        ops.dense_forward(x, w.astype(other), b)
    with pytest.raises(TypeError):
        ops.dense_forward(x.astype(other), w, b)
    with pytest.raises(TypeError):
        ops.dense_forward(x, w, b.astype(other))
    with pytest.raises(ValueError):
        ops.dense_forward(x, np.zeros((3, 6), dtype), b)  # in mismatch
    with pytest.raises(ValueError):
        ops.dense_forward(x, w, np.zeros(4, dtype))  # bias length
    with pytest.raises(ValueError):
        ops.dense_forward(x[0], w, b)  # rank 1 x
    with pytest.raises(ValueError):
        ops.dense_forward(x, w, b, activation="gelu")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dense_backward_rejects_bad_input(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    x = np.zeros((4, 5), dtype)
    w = np.zeros((3, 5), dtype)
    dh = np.zeros((4, 3), dtype)
    with pytest.raises(TypeError):
        ops.dense_backward(dh.astype(other), dh, x, w)
    with pytest.raises(TypeError):
        ops.dense_backward(dh, dh, x, w.astype(other))
    with pytest.raises(ValueError):
        ops.dense_backward(dh, np.zeros((4, 2), dtype), x, w)  # dact shape
    with pytest.raises(ValueError):
        ops.dense_backward(np.zeros((5, 3), dtype), np.zeros((5, 3), dtype), x, w)  # batch
    with pytest.raises(ValueError):
        ops.dense_backward(dh, dh, x, np.zeros((3, 6), dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_losses_reject_bad_input(dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    out = np.zeros((4, 3), dtype)
    with pytest.raises(TypeError):
        ops.mse_loss(out, out.astype(other))
    with pytest.raises(ValueError):
        ops.mse_loss(out, np.zeros((4, 2), dtype))
    bad = out.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError):
        ops.mse_loss(out, bad)
    bad[1, 1] = np.inf
    with pytest.raises(ValueError):
        ops.mse_loss(out, bad)
    with pytest.raises(ValueError):
        ops.cross_entropy_loss(out, np.array([0, 1, 3, 0]))  # label == C
    with pytest.raises(ValueError):
        ops.cross_entropy_loss(out, np.array([0, 1, -1, 0]))
    with pytest.raises(ValueError):
        ops.cross_entropy_loss(out, np.array([0, 1, 2]))  # wrong batch
    with pytest.raises(TypeError):
        ops.cross_entropy_loss(out, np.array([0.0, 1.0, 2.0, 0.0]))  # float labels


def test_sum_squares_norm_rejects_integer_arrays():
    with pytest.raises(TypeError):
        ops.sum_squares_norm(np.ones((3, 3), dtype=np.int64))


def test_error_messages_name_the_argument():
    with pytest.raises(TypeError) as info:
        ops.dense_forward(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float64), None)
    msg = str(info.value)
    assert "float32" in msg and "float64" in msg, msg
    with pytest.raises(ValueError) as info:
        ops.activation_forward(np.zeros((2, 3), np.float32), "softsign")
    assert "softsign" in str(info.value)


def test_build_info_and_cuda_flag():
    info = vgkern.build_info()
    assert isinstance(info, dict) and info
    assert isinstance(vgkern.cuda_available(), bool)
