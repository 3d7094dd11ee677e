"""Shared fixtures and tolerance helpers for the vgkern tests.

Tolerance rule (the one flash-attention uses): a vgkern result computed in precision P is
compared with an oracle computed in a wider precision, and its error must be at most twice the
error that a plain NumPy implementation in the same precision P makes, plus a small atol:

    max|vgkern - oracle| <= 2 * max|numpy_P - oracle| + atol

* for float32 results the oracle is tests/reference.py in float64 and "numpy_P" is the same
  reference code run on float32 arrays;
* for float64 results the oracle is tests/reference.py in long double (80-bit, 64-bit mantissa
  on x86-64) and "numpy_P" is the float64 reference.

The atol is a few ulps of the largest magnitude of the oracle tensor, so that an exact plain
NumPy result (e.g. a 1x1 product) does not demand bit-exactness from vgkern.
"""

from __future__ import annotations

import math
import os
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import reference as R  # noqa: E402

DTYPES = (np.float32, np.float64)
DTYPE_IDS = ("float32", "float64")

# Activation configurations: (name, alpha). ELU is exercised with three alphas.
ACTIVATION_CONFIGS = (
    ("identity", 1.0),
    ("sigmoid", 1.0),
    ("tanh", 1.0),
    ("relu", 1.0),
    ("elu", 1.0),
    ("elu", 0.5),
    ("elu", 1.7),
)
ACTIVATION_IDS = tuple(f"{n}" if n != "elu" else f"elu{a}" for n, a in ACTIVATION_CONFIGS)

INITS = ("xavier_normal", "xavier_uniform", "he_normal", "he_uniform", "lecun_normal",
         "orthogonal", "scaled_normal")
LOSSES = ("mse", "cross_entropy")


# --------------------------------------------------------------------------------------------
# Devices: a test that takes a `device` argument runs on "cpu" and on "cuda"; the CUDA case
# skips unless a GPU is visible or the build emulates CUDA (VGKERN_CUDA=EMULATE: CI runs the
# whole suite against such a build, with ASan and UBSan, in .ci/sanitize.sh).
# --------------------------------------------------------------------------------------------

def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        import vgkern
        cuda = pytest.param("cuda", marks=pytest.mark.skipif(
            not vgkern.cuda_available(), reason="no CUDA GPU visible (and no emulated build)"))
        metafunc.parametrize("device", ["cpu", cuda])


# --------------------------------------------------------------------------------------------
# Randomness
# --------------------------------------------------------------------------------------------

@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's node id: deterministic, different per test."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# Precision helpers
# --------------------------------------------------------------------------------------------

def dtype_name(dtype):
    return np.dtype(dtype).name


def eps(dtype):
    return float(np.finfo(dtype).eps)


def oracle_dtype(dtype):
    """The precision the oracle runs in to judge a result of precision ``dtype``."""
    return np.float64 if np.dtype(dtype) == np.float32 else np.longdouble


def _as_wide(a):
    a = np.asarray(a)
    if a.dtype == np.longdouble:
        return a
    if a.dtype.kind in "iub":
        return a.astype(np.float64)
    return a.astype(np.longdouble)


def max_abs_error(got, ref):
    """max|got - ref| in long double; NaN where one has NaN and the other not -> inf."""
    got = _as_wide(got)
    ref = _as_wide(ref)
    assert got.shape == ref.shape, f"shape {got.shape} != expected {ref.shape}"
    if got.size == 0:
        return 0.0
    nan_mismatch = np.isnan(got) != np.isnan(ref)
    if nan_mismatch.any():
        return np.inf
    both = ~np.isnan(ref)
    inf_mismatch = np.isinf(ref[both]) | np.isinf(got[both])
    if inf_mismatch.any():
        g, r = got[both][inf_mismatch], ref[both][inf_mismatch]
        if not np.array_equal(g, r):
            return np.inf
    diff = np.abs(got[both] - ref[both])
    diff = diff[np.isfinite(diff)]
    return float(diff.max()) if diff.size else 0.0


def max_abs(a):
    a = _as_wide(a)
    a = a[np.isfinite(a)]
    return float(np.abs(a).max()) if a.size else 0.0


def assert_rule(got, ref, naive, dtype, *, atol_ulps=4.0, atol=0.0, name=""):
    """max|got - ref| <= 2 * max|naive - ref| + atol_ulps * eps(dtype) * max|ref| + atol.

    ``ref`` is the oracle in the wider precision, ``naive`` a plain NumPy result in ``dtype``.
    ``got`` must also have dtype ``dtype`` when it is an array."""
    got_arr = np.asarray(got)
    if got_arr.dtype.kind == "f" and not np.isscalar(got):
        assert got_arr.dtype == np.dtype(dtype), (
            f"{name}: dtype {got_arr.dtype}, expected {np.dtype(dtype)}")
    err = max_abs_error(got, ref)
    base = max_abs_error(naive, ref)
    bound = 2.0 * base + atol_ulps * eps(dtype) * max_abs(ref) + atol + np.finfo(dtype).tiny
    assert err <= bound, (
        f"{name}: max abs error {err:.3e} > bound {bound:.3e} "
        f"(plain NumPy {dtype_name(dtype)} error {base:.3e}, max|ref| {max_abs(ref):.3e})")


def assert_rel_rule(got, ref, naive, dtype, *, rtol_ulps=16.0, rtol=0.0, name=""):
    """Elementwise relative version, for per-layer statistics whose magnitudes differ a lot
    between layers (norms): |got - ref| <= 2 |naive - ref| + (rtol_ulps * eps(dtype) + rtol) |ref|.
    ``rtol`` may be an array (one value per element), e.g. for the float64 accumulation error of
    a reduction over many entries."""
    got = _as_wide(got)
    ref = _as_wide(ref)
    naive = _as_wide(naive)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    assert np.array_equal(np.isnan(got), np.isnan(ref)), f"{name}: NaN pattern {got} vs {ref}"
    finite = np.isfinite(ref)
    assert np.array_equal(got[~finite], ref[~finite]), f"{name}: {got} vs {ref}"
    g, r, n = got[finite], ref[finite], naive[finite]
    extra = np.broadcast_to(np.asarray(rtol, dtype=np.float64), ref.shape)[finite]
    err = np.abs(g - r)
    bound = (2 * np.abs(n - r) + (rtol_ulps * eps(dtype) + extra) * np.abs(r)
             + np.finfo(np.float64).tiny)
    bad = err > bound
    assert not bad.any(), (
        f"{name}: got {np.asarray(g[bad], np.float64)} expected {np.asarray(r[bad], np.float64)} "
        f"(rel err {np.asarray(err[bad] / np.abs(r[bad]), np.float64)}, "
        f"bound {np.asarray(bound[bad] / np.abs(r[bad]), np.float64)}) at {np.nonzero(bad)[0]}")


def reduction_rtol(sizes):
    """Relative float64 accumulation slack of a reduction (sum, norm, mean, std) over n
    entries: 4 sqrt(n) float64 eps (the typical error of a sequential float64 sum is ~sqrt(n) eps;
    NumPy's pairwise sums are more accurate than that)."""
    return 4 * np.sqrt(np.asarray(sizes, dtype=np.float64)) * np.finfo(np.float64).eps


def ulp_error(got, ref, dtype):
    """|got - ref| in units of the last place of ``ref`` rounded to ``dtype``. Subnormal results
    are measured in units of the smallest normal number, so flushing a subnormal to 0 costs
    less than one "ulp"."""
    dtype = np.dtype(dtype)
    ref_w = _as_wide(ref)
    ref_d = np.asarray(ref_w, dtype=dtype)
    unit = np.maximum(np.spacing(np.abs(ref_d)), np.finfo(dtype).tiny)
    return np.asarray(np.abs(_as_wide(got) - ref_w) / _as_wide(unit), dtype=np.float64)


def assert_max_ulp(got, ref, dtype, max_ulp, z=None, name=""):
    ulps = ulp_error(got, ref, dtype)
    worst = int(np.argmax(ulps))
    where = f" at z={np.asarray(z).ravel()[worst]!r}" if z is not None else ""
    assert ulps.max() <= max_ulp, (
        f"{name}: {ulps.max():.2f} ulp > {max_ulp}{where}: got "
        f"{np.asarray(got).ravel()[worst]!r}, expected "
        f"{np.asarray(ref, dtype=np.float64).ravel()[worst]!r}")


# --------------------------------------------------------------------------------------------
# Forward-statistics brackets
# --------------------------------------------------------------------------------------------

def fraction_bounds(zs, activation, output_activation, alpha, rel=1e-4, abs_scale=1e-5):
    """Bounds [lo, hi] for saturated_fraction, zero_fraction and dead_fraction that tolerate
    entries whose classification could flip through rounding of z in low precision.

    Each z is perturbed by +-d with d = rel * |z| + abs_scale * rms(z_l) (d = 0 for z == 0); an
    entry is "uncertain" when its classification differs between z - d, z and z + d, or, for
    activations that are zero only at z == 0, when [z - d, z + d] holds 0. lo counts
    entries certainly in the class, hi adds the uncertain ones. With generic random data nothing is
    uncertain and lo == hi, i.e. the comparison is exact."""
    num_layers = len(zs)
    out = {k: (np.zeros(num_layers), np.zeros(num_layers))
           for k in ("saturated_fraction", "zero_fraction", "dead_fraction")}
    for l in range(num_layers):
        name = R.layer_activation(l, num_layers, activation, output_activation)
        z = np.asarray(zs[l], dtype=np.float64)
        d = rel * np.abs(z) + abs_scale * np.sqrt(np.mean(z * z))
        d[z == 0] = 0  # an exact 0 (a zeroed unit: zero weights and bias) is exact in any precision
        variants = (z - d, z, z + d)

        sat = [R.saturated_mask(R.act_derivative(v, name, alpha), name, alpha) for v in variants]
        sat_lo = sat[0] & sat[1] & sat[2]
        sat_hi = sat[0] | sat[1] | sat[2]
        zero = [R.act(v, name, alpha) == 0 for v in variants]
        if name == "identity":
            zero = [z == 0] * 3
        zero_lo = zero[0] & zero[1] & zero[2]
        zero_hi = zero[0] | zero[1] | zero[2]
        if name in ("identity", "tanh", "elu"):
            # zero only at z == 0, which a low-precision z within d of 0 may round to exactly
            # (seen: z = 3.7e-8 from a float32 sum of 300 terms of magnitude ~1)
            zero_hi |= (z - d <= 0) & (z + d >= 0)
        out["saturated_fraction"][0][l] = sat_lo.mean()
        out["saturated_fraction"][1][l] = sat_hi.mean()
        out["zero_fraction"][0][l] = zero_lo.mean()
        out["zero_fraction"][1][l] = zero_hi.mean()
        out["dead_fraction"][0][l] = np.all(zero_lo, axis=0).mean()
        out["dead_fraction"][1][l] = np.all(zero_hi, axis=0).mean()
    return out


def assert_preact_stats(rep, ref, naive, dtype):
    """preact_mean / preact_std against the float64 oracle ``ref``: within twice the error of the
    naive computation in ``dtype`` plus float64 reduction slack (16 eps of dtype for the mean)."""
    z_rms = np.array([math.sqrt(float(np.mean(np.asarray(z, np.float64) ** 2))) for z in ref.zs])
    z_rtol = reduction_rtol([z.size for z in ref.zs])
    err = np.abs(rep.preact_mean - ref.preact_mean)
    bound = (2 * np.abs(naive.preact_mean - ref.preact_mean) + (16 * eps(dtype) + z_rtol) * z_rms
             + 1e-300)
    assert np.all(err <= bound), f"preact_mean {rep.preact_mean} vs {ref.preact_mean}"
    assert_rel_rule(rep.preact_std, ref.preact_std, naive.preact_std, dtype, rtol=z_rtol,
                    name="preact_std")


def assert_fractions_within(report, bounds, name=""):
    for field, (lo, hi) in bounds.items():
        got = np.asarray(getattr(report, field), dtype=np.float64)
        assert got.shape == lo.shape, f"{name}{field}: shape {got.shape} != {lo.shape}"
        # 1e-12: the fraction is a count divided by the number of entries.
        ok = (got >= lo - 1e-12) & (got <= hi + 1e-12)
        assert ok.all(), f"{name}{field}: got {got}, expected within [{lo}, {hi}]"


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------

@pytest.fixture
def torch_single_thread():
    """torch's own thread pool would fight with vgkern's BLAS; the references need no speed.
    Used with pytestmark = pytest.mark.usefixtures("torch_single_thread")."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def central_difference(f, arrays, h=1e-6):
    """d f / d a for every entry of every array in ``arrays`` (modified in place and restored),
    by central differences in float64."""
    grads = []
    for a in arrays:
        g = np.zeros(a.shape, dtype=np.float64)
        for idx in np.ndindex(a.shape):
            orig = a[idx]
            a[idx] = orig + h
            f_plus = f()
            a[idx] = orig - h
            f_minus = f()
            a[idx] = orig
            g[idx] = (f_plus - f_minus) / (2 * h)
        grads.append(g)
    return grads


# Finite differences (float64): the bound an analytic gradient must meet.
H = 1e-6          # finite-difference step (parameters are O(1))
RTOL = 1e-5       # relative agreement of analytic and numerical derivatives
KINK_MARGIN = 1e-3


def assert_matches_fd(analytic, numeric, name, scale, f_scale=1.0, rtol=RTOL):
    """|analytic - numeric| <= rtol * |numeric| + 1e-8 * scale + noise, with scale the largest
    gradient entry (at least 1e-3) and noise = 10 eps max(|f|, 1) / H the rounding noise of the
    central difference of a function of magnitude f_scale."""
    analytic = np.asarray(analytic, dtype=np.float64)
    assert analytic.shape == numeric.shape, (name, analytic.shape, numeric.shape)
    noise = 10 * np.finfo(np.float64).eps * max(abs(f_scale), 1.0) / H
    bound = rtol * np.abs(numeric) + 1e-8 * scale + noise
    bad = np.abs(analytic - numeric) > bound
    assert not bad.any(), (
        f"{name}: analytic {analytic[bad]} vs finite differences {numeric[bad]} at "
        f"{np.argwhere(bad)[:5].tolist()}")


# Cross-checks against PyTorch: relative agreement in float64.
def assert_close_norm(actual, expected, rtol, what, atol=1e-300):
    """||actual - expected|| <= rtol * ||expected|| + atol, computed in float64."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert np.all(np.isfinite(a)), f"{what}: non-finite values in vgkern result"
    err = np.linalg.norm(a - b)
    ref = np.linalg.norm(b)
    assert err <= rtol * ref + atol, (
        f"{what}: ||vgkern - torch|| = {err:.3e} > {rtol:.1e} * ||torch|| ({ref:.3e})")


def assert_scalar_rel(actual, expected, rtol, what, atol=1e-300):
    actual, expected = float(actual), float(expected)
    assert math.isfinite(actual), f"{what}: vgkern gave {actual}"
    assert abs(actual - expected) <= rtol * abs(expected) + atol, (
        f"{what}: vgkern {actual!r} vs torch {expected!r} (rtol {rtol:.1e})")


# One MLP step and everything it produces, compared bit for bit (determinism, threads).
STAT_FIELDS = [
    "weight_grad_norm", "bias_grad_norm", "preact_grad_norm", "act_grad_norm",
    "log10_weight_grad_norm", "log10_bias_grad_norm", "log10_preact_grad_norm",
    "log10_act_grad_norm", "preact_mean", "preact_std", "saturated_fraction", "zero_fraction",
    "dead_fraction", "grad_log2_scale",
]


def make_case(width, depth=10, batch=128, activation="tanh", dtype="float32", seed=0,
              loss="mse", **kwargs):
    import vgkern

    sizes = [width] * depth + [10]
    net = vgkern.MLP(sizes, activation=activation, dtype=dtype, seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 100)
    x = rng.standard_normal((batch, width)).astype(dtype)
    if loss == "mse":
        target = rng.standard_normal((batch, 10)).astype(dtype)
    else:
        target = rng.integers(0, 10, size=batch).astype(np.int64)
    return net, x, target


def result_of(net, rep, out=None):
    """Everything a step produces, copied (the net's gradient buffers are overwritten later)."""
    return dict(
        out=None if out is None else out.copy(),
        loss=rep.loss,
        stats={name: np.array(getattr(rep, name), copy=True) for name in STAT_FIELDS},
        weight_grads=[g.copy() for g in net.weight_grads],
        bias_grads=[g.copy() for g in net.bias_grads],
    )


def run_step(net, x, target, loss="mse"):
    out = net.forward(x)
    rep = net.step(x, target, loss=loss)
    return result_of(net, rep, out)


def assert_bitwise_equal(a, b, what=""):
    if a["out"] is not None and b["out"] is not None:
        assert a["out"].tobytes() == b["out"].tobytes(), f"{what}: forward output differs"
    assert np.array(a["loss"]).tobytes() == np.array(b["loss"]).tobytes(), f"{what}: loss"
    for name in STAT_FIELDS:
        assert a["stats"][name].tobytes() == b["stats"][name].tobytes(), (
            f"{what}: {name} differs:\n{a['stats'][name]!r}\n{b['stats'][name]!r}")
    for kind in ("weight_grads", "bias_grads"):
        for l, (ga, gb) in enumerate(zip(a[kind], b[kind])):
            assert ga.dtype == gb.dtype and ga.shape == gb.shape
            assert ga.tobytes() == gb.tobytes(), (
                f"{what}: {kind}[{l}] differs in {np.count_nonzero(ga != gb)} entries, "
                f"max |diff| {np.max(np.abs(ga.astype(np.float64) - gb)):.3e}")


def random_weights(rng, sizes, dtype, scale=None):
    """Weights (out, in) ~ N(0, scale^2), scale = 1/sqrt(fan_in) by default; biases ~ N(0, 0.1^2)."""
    ws, bs = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        s = 1.0 / np.sqrt(fan_in) if scale is None else scale
        ws.append((s * rng.standard_normal((fan_out, fan_in))).astype(dtype))
        bs.append((0.1 * rng.standard_normal(fan_out)).astype(dtype))
    return ws, bs


def as_list(arrays):
    return [np.array(a, copy=True) for a in arrays]
