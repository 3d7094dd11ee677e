"""LSTM and RNN (issue 4): vgkern.ops.lstm_cell_* / rnn_cell_*, vgkern.LSTM, vgkern.RNN and the
SequenceReport.

* The four cell ops against the NumPy oracle (tests/reference_recurrent.py: float64 oracle for
  float32 results, long double for float64 results), against torch.nn.LSTMCell / RNNCell autograd
  and against central finite differences in float64.
* Whole sequences (T in {1, 5, 40}, float32 and float64) against the oracle and against
  torch.nn.LSTM / torch.nn.RNN with copied weights (bias_ih = bias_hh = bias / 2, exact in
  binary, so both torch bias gradients must equal vgkern's bias gradient): outputs, every gradient
  (weight_ih, weight_hh, bias, x, h0, c0) and every SequenceReport field. The per-step TOTAL
  gradients dL/dh_t and dL/dc_t come from an unrolled torch.nn.LSTMCell / RNNCell loop with
  retain_grad on every h_t and c_t. Drivers: forward with and without h0/c0, backward with
  grad_h_seq, grad_hT, grad_cT (each alone and together), step with loss="mse" (last state) and
  loss="mse_sequence".
* Central finite differences in float64 of whole sequences (every entry of every parameter, of
  x, h0 and c0, on tiny shapes), for backward and for both step losses.
* PyTorch-style init (same seed -> same weights; U(-1/sqrt(H), 1/sqrt(H)) drawn from
  numpy.random.default_rng(seed) in the order weight_ih, weight_hh, bias_ih, bias_hh;
  forget_bias added to bias[H:2H]); writable weight views; params / grads flat buffers.
* The claim of the issue on fixed seeds: over T = 100 steps with the default init and a loss on
  the last state, x_grad_norm[0] / x_grad_norm[-1] of the tanh RNN is ~20 orders of magnitude
  smaller than that of an LSTM with forget_bias = 1.0 (measured with the oracle over 12 seeds /
  sizes I = H = 32..64, B = 16..32: RNN ratio 1e-30 .. 1e-36, LSTM(forget_bias=1) 1e-8 .. 1e-9.5,
  LSTM(forget_bias=0) 1e-20 .. 1e-22). The asserted margins are given next to the test.
* Bad input: wrong ranks / shapes / dtypes, T = 0, mismatched h0 / c0, unknown names.

Tolerances are norm-relative, ``||a - b|| <= rtol ||b||`` for arrays and ``|a - b| <= rtol |b|``
per entry for the per-step norms (which span orders of magnitude along a sequence):
float64 1e-13 (T <= 5) and 1e-12 (T > 5); float32 3e-5 (T <= 5) and 2e-4 (T > 5); single cell
ops 1e-5 / 1e-13. Measured deviations of float32 NumPy and torch from the float64 oracle on
these configurations are <= 3e-7 (T <= 5) and <= 1.4e-6 (T = 40), float64 ones <= 2e-15, so
the margins are >= 100x; vgkern itself measured <= 3e-7 / 1.4e-6 (float32) and <= 1.5e-15
(float64) when this file was written. Hard-saturated inputs (x ~ 100 N(0,1)) use 1e-4 / 1e-11.
Counting statistics (saturated_fraction) are compared with a bracket, as in
test_mlp_crosscheck.py: lower counts units saturated everywhere in ``pre +- tol``, upper those
saturated somewhere in it (tol = z_rtol (|pre| + std(pre))).
"""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

import vgkern
from vgkern import ops

import reference_recurrent as RR
from conftest import central_difference, oracle_dtype

NP_DTYPE = {"float32": np.float32, "float64": np.float64}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}
DTYPE_NAMES = ("float32", "float64")
KINDS = ("lstm", "rnn_tanh", "rnn_relu")

# (B, I, H) per sequence length; widths not multiples of 8, 4H = 28 / 64 / 96.
SEQ_SHAPES = {1: (3, 5, 7), 5: (4, 13, 16), 40: (8, 10, 24)}
STEPS = (1, 5, 40)


pytestmark = pytest.mark.usefixtures("torch_single_thread")


# --------------------------------------------------------------------------------------------
# tolerances and comparison helpers
# --------------------------------------------------------------------------------------------

def rtol_for(dtype, steps):
    if dtype == "float64":
        return 1e-13 if steps <= 5 else 1e-12
    return 3e-5 if steps <= 5 else 2e-4


def z_rtol_for(dtype, steps):
    """Relative uncertainty of a pre-activation, for the saturated-fraction bracket."""
    if dtype == "float64":
        return 1e-9
    return 1e-4 if steps <= 5 else 1e-3


def f64(a):
    return np.asarray(a, dtype=np.float64)


def assert_close_norm(actual, expected, rtol, what):
    """||actual - expected|| <= rtol ||expected|| (float64); exact zeros must be exact."""
    a, b = f64(actual), f64(expected)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != expected {b.shape}"
    assert np.all(np.isfinite(a)), f"{what}: non-finite values {a[~np.isfinite(a)][:5]}"
    err = np.linalg.norm(a - b)
    ref = np.linalg.norm(b)
    assert err <= rtol * ref + 1e-300, (
        f"{what}: ||vgkern - expected|| = {err:.3e} > {rtol:.1e} * ||expected|| ({ref:.3e}); "
        f"worst entry {np.unravel_index(np.argmax(np.abs(a - b)), a.shape)}")


def assert_rel_each(actual, expected, rtol, what):
    """Per entry |actual - expected| <= rtol |expected|; NaN / inf patterns must agree."""
    a, b = f64(actual), f64(expected)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != expected {b.shape}"
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"{what}: NaN pattern {a} vs {b}"
    fin = np.isfinite(b)
    assert np.array_equal(a[~fin & ~np.isnan(b)], b[~fin & ~np.isnan(b)]), f"{what}: {a} vs {b}"
    assert np.all(np.isfinite(a[fin])), f"{what}: {a} vs {b}"
    bad = np.abs(a[fin] - b[fin]) > rtol * np.abs(b[fin]) + 1e-300
    assert not bad.any(), (
        f"{what}: vgkern {a[fin][bad]} vs expected {b[fin][bad]} (rel err "
        f"{np.abs(a[fin][bad] - b[fin][bad]) / np.abs(b[fin][bad])}, rtol {rtol:.1e}) at steps "
        f"{np.nonzero(fin)[0][bad]}")


def assert_scalar_rel(actual, expected, rtol, what):
    actual, expected = float(actual), float(expected)
    if math.isnan(expected):
        assert math.isnan(actual), f"{what}: vgkern {actual!r}, expected NaN"
        return
    assert math.isfinite(actual) or actual == expected, f"{what}: vgkern {actual!r}"
    assert abs(actual - expected) <= rtol * abs(expected) + 1e-300, (
        f"{what}: vgkern {actual!r} vs expected {expected!r} (rtol {rtol:.1e})")


def log10_or_ninf(x):
    with np.errstate(divide="ignore"):
        return np.log10(f64(x))


# --------------------------------------------------------------------------------------------
# nets and data
# --------------------------------------------------------------------------------------------

def is_lstm(kind):
    return kind == "lstm"


def nonlinearity_of(kind):
    return kind.split("_")[1] if kind.startswith("rnn") else None


def make_net(kind, input_size, hidden_size, dtype, seed=0, forget_bias=0.0, **kw):
    if is_lstm(kind):
        return vgkern.LSTM(input_size, hidden_size, dtype=dtype, seed=seed,
                           forget_bias=forget_bias, **kw)
    return vgkern.RNN(input_size, hidden_size, nonlinearity=nonlinearity_of(kind), dtype=dtype,
                      seed=seed, **kw)


def net_params(net):
    return np.array(net.weight_ih), np.array(net.weight_hh), np.array(net.bias)


def seq_data(steps, batch, input_size, hidden_size, dtype, seed, x_scale=1.0):
    rng = np.random.default_rng(seed)
    dt = NP_DTYPE[dtype]
    return dict(
        x=(x_scale * rng.standard_normal((steps, batch, input_size))).astype(dt),
        h0=(0.5 * rng.standard_normal((batch, hidden_size))).astype(dt),
        c0=(0.5 * rng.standard_normal((batch, hidden_size))).astype(dt),
        g=rng.standard_normal((steps, batch, hidden_size)).astype(dt),
        ghT=rng.standard_normal((batch, hidden_size)).astype(dt),
        gcT=rng.standard_normal((batch, hidden_size)).astype(dt),
        target_last=rng.standard_normal((batch, hidden_size)).astype(dt),
        target_seq=rng.standard_normal((steps, batch, hidden_size)).astype(dt),
    )


# The ways a sequence's backward pass is driven. Each is (uses_h0_c0, grad_h_seq, grad_hT,
# grad_cT, loss); loss != None means net.step (zero initial state).
MODES = {
    "all_grads_h0c0": (True, True, True, True, None),
    "grad_h_seq_zero_init": (False, True, False, False, None),
    "grad_hT_only": (True, False, True, False, None),
    "grad_cT_only": (True, False, False, True, None),  # LSTM only
    "step_mse": (False, False, False, False, "mse"),
    "step_mse_sequence": (False, False, False, False, "mse_sequence"),
}


def mode_inputs(mode, kind, d):
    use_init, use_g, use_ghT, use_gcT, loss = MODES[mode]
    lstm = is_lstm(kind)
    return dict(
        h0=d["h0"] if use_init else None,
        c0=d["c0"] if (use_init and lstm) else None,
        grad_h_seq=d["g"] if use_g else None,
        grad_hT=d["ghT"] if use_ghT else None,
        grad_cT=d["gcT"] if (use_gcT and lstm) else None,
        loss=loss,
        target=None if loss is None else (d["target_last"] if loss == "mse" else d["target_seq"]),
    )


def oracle(kind, params, x, inp, dtype):
    """Oracle in ``dtype``; returns the expectation dict used by check_sequence."""
    w_ih, w_hh, b = params
    if is_lstm(kind):
        ref = RR.lstm_sequence(x, w_ih, w_hh, b, inp["h0"], inp["c0"],
                               grad_h_seq=inp["grad_h_seq"], grad_hT=inp["grad_hT"],
                               grad_cT=inp["grad_cT"], target=inp["target"], loss=inp["loss"],
                               dtype=dtype)
    else:
        ref = RR.rnn_sequence(x, w_ih, w_hh, b, inp["h0"], nonlinearity=nonlinearity_of(kind),
                              grad_h_seq=inp["grad_h_seq"], grad_hT=inp["grad_hT"],
                              target=inp["target"], loss=inp["loss"], dtype=dtype)
    exp = dict(h_seq=ref.h_seq, hT=ref.hT, dx=ref.dx, dh0=ref.dh0, dW_ih=ref.dW_ih,
               dW_hh=ref.dW_hh, db=ref.db, dh=ref.dh, pre=ref.pre, loss=ref.loss)
    if is_lstm(kind):
        exp.update(cT=ref.cT, dc=ref.dc, dc0=ref.dc0)
    return {k: (f64(v) if isinstance(v, np.ndarray) else v) for k, v in exp.items()}


def run_vgkern(net, kind, x, inp):
    """forward + backward (or step) on the vgkern net. Returns (forward outputs or None, rep)."""
    if inp["loss"] is not None:
        return None, net.step(x, inp["target"], loss=inp["loss"])
    if is_lstm(kind):
        h_seq, (h_T, c_T) = net.forward(x, h0=inp["h0"], c0=inp["c0"])
        outs = dict(h_seq=np.array(h_seq), hT=np.array(h_T), cT=np.array(c_T))
        rep = net.backward(inp["grad_h_seq"], grad_hT=inp["grad_hT"], grad_cT=inp["grad_cT"])
    else:
        h_seq, h_T = net.forward(x, h0=inp["h0"])
        outs = dict(h_seq=np.array(h_seq), hT=np.array(h_T))
        rep = net.backward(inp["grad_h_seq"], grad_hT=inp["grad_hT"])
    return outs, rep


def check_forward(outs, exp, kind, dtype, shape, rtol, what):
    steps, batch, hidden = shape
    for key in ("h_seq", "hT") + (("cT",) if is_lstm(kind) else ()):
        got = outs[key]
        assert got.dtype == NP_DTYPE[dtype], f"{what}{key}: dtype {got.dtype}"
        assert_close_norm(got, exp[key], rtol, f"{what}{key}")
    assert outs["h_seq"].shape == (steps, batch, hidden)
    np.testing.assert_array_equal(outs["hT"], outs["h_seq"][-1], err_msg=f"{what}h_T != h_seq[-1]")


def saturation_bracket(pre, kind, z_rtol):
    """[lo, hi] per step for saturated_fraction from float64 pre-activations (T, B, G)."""
    pre = f64(pre)
    lo, hi = [], []
    for p in pre:
        tol = z_rtol * (np.abs(p) + p.std()) + 1e-300
        if is_lstm(kind):
            masks = [RR.lstm_saturated_mask(v) for v in (p, p - tol, p + tol)]
        else:
            masks = [RR.rnn_saturated_mask(v, nonlinearity_of(kind)) for v in (p, p - tol, p + tol)]
        lo.append(np.mean(masks[0] & masks[1] & masks[2]))
        hi.append(np.mean(masks[0] | masks[1] | masks[2]))
    return np.array(lo), np.array(hi)


def check_sequence(net, rep, exp, kind, dtype, *, rtol, z_rtol, what=""):
    """Every gradient stored in the net and every SequenceReport field against ``exp``."""
    steps, batch, hidden = exp["dh"].shape
    input_size = exp["dx"].shape[2]
    dt = NP_DTYPE[dtype]
    lstm = is_lstm(kind)
    gates = 4 if lstm else 1

    # gradients stored in the net
    grads = [("weight_ih_grad", "dW_ih", (gates * hidden, input_size)),
             ("weight_hh_grad", "dW_hh", (gates * hidden, hidden)),
             ("bias_grad", "db", (gates * hidden,)),
             ("input_grad", "dx", (steps, batch, input_size)),
             ("h0_grad", "dh0", (batch, hidden))]
    if lstm:
        grads.append(("c0_grad", "dc0", (batch, hidden)))
    for attr, key, shape in grads:
        got = np.asarray(getattr(net, attr))
        assert got.dtype == dt, f"{what}{attr}: dtype {got.dtype}"
        assert got.shape == shape, f"{what}{attr}: shape {got.shape} != {shape}"
        assert_close_norm(got, exp[key], rtol, f"{what}{attr}")

    # report layout
    assert rep.num_steps == steps, f"{what}num_steps {rep.num_steps} != {steps}"
    for field in RR.STEP_FIELDS:
        arr = getattr(rep, field)
        assert isinstance(arr, np.ndarray), f"{what}{field}: {type(arr)}"
        assert arr.dtype == np.float64, f"{what}{field}: dtype {arr.dtype}"
        assert arr.shape == (steps,), f"{what}{field}: shape {arr.shape}"
    for field in RR.SCALAR_FIELDS:
        assert isinstance(getattr(rep, field), float), f"{what}{field}: {type(getattr(rep, field))}"

    # per-step norms from the expected tensors
    def step_norms(a):
        return np.array([np.linalg.norm(f64(a[t])) for t in range(steps)])

    expected = {"h_grad_norm": step_norms(exp["dh"]), "x_grad_norm": step_norms(exp["dx"]),
                "c_grad_norm": step_norms(exp["dc"]) if lstm else np.full(steps, np.nan)}
    for field, value in expected.items():
        assert_rel_each(getattr(rep, field), value, rtol, f"{what}{field}")
        got_log = f64(getattr(rep, "log10_" + field))
        exp_log = log10_or_ninf(value)
        assert np.array_equal(np.isnan(got_log), np.isnan(exp_log)), (
            f"{what}log10_{field}: {got_log} vs {exp_log}")
        fin = np.isfinite(exp_log)
        np.testing.assert_array_equal(got_log[~fin & ~np.isnan(exp_log)],
                                      exp_log[~fin & ~np.isnan(exp_log)],
                                      err_msg=f"{what}log10_{field}")
        np.testing.assert_allclose(got_log[fin], exp_log[fin], rtol=0, atol=rtol,
                                   err_msg=f"{what}log10_{field}")
        # and log10_ is the log10 of the reported norm
        np.testing.assert_allclose(got_log, log10_or_ninf(getattr(rep, field)), rtol=0,
                                   atol=1e-12, err_msg=f"{what}log10_{field} vs {field}")

    # the reported norms are those of vgkern's own gradients (almost exactly)
    own = 1e-6 if dtype == "float32" else 1e-12
    assert_rel_each(rep.x_grad_norm, step_norms(np.asarray(net.input_grad)), own,
                    f"{what}x_grad_norm vs ||net.input_grad[t]||")

    # forward statistics
    pre = exp["pre"]
    if lstm:
        fmean = np.array([np.mean(RR.sigmoid(pre[t][:, hidden:2 * hidden])) for t in range(steps)])
        assert_rel_each(rep.forget_gate_mean, fmean, rtol, f"{what}forget_gate_mean")
    else:
        assert np.all(np.isnan(rep.forget_gate_mean)), (
            f"{what}forget_gate_mean {rep.forget_gate_mean}")
        assert np.all(np.isnan(rep.c_grad_norm)) and np.all(np.isnan(rep.log10_c_grad_norm))
    lo, hi = saturation_bracket(pre, kind, z_rtol)
    sat = f64(rep.saturated_fraction)
    assert np.all((sat >= lo - 1e-12) & (sat <= hi + 1e-12)), (
        f"{what}saturated_fraction {sat}, expected within [{lo}, {hi}]")
    if kind == "rnn_relu":
        np.testing.assert_array_equal(sat, np.zeros(steps))

    # scalar norms
    for field, key, attr in (("weight_ih_grad_norm", "dW_ih", "weight_ih_grad"),
                             ("weight_hh_grad_norm", "dW_hh", "weight_hh_grad"),
                             ("bias_grad_norm", "db", "bias_grad")):
        value = np.linalg.norm(exp[key])
        assert_scalar_rel(getattr(rep, field), value, rtol, f"{what}{field}")
        got_log, exp_log = getattr(rep, "log10_" + field), float(log10_or_ninf(value))
        if math.isfinite(exp_log):
            assert abs(got_log - exp_log) <= rtol, (
                f"{what}log10_{field}: vgkern {got_log!r} vs expected {exp_log!r}")
        else:
            assert got_log == exp_log, f"{what}log10_{field}: vgkern {got_log!r}, expected -inf"
        assert_scalar_rel(getattr(rep, field), np.linalg.norm(f64(getattr(net, attr))), own,
                          f"{what}{field} vs ||net.{attr}||")

    # loss
    if math.isnan(exp["loss"]):
        assert math.isnan(rep.loss), f"{what}loss {rep.loss!r} after a plain backward"
    else:
        assert_scalar_rel(rep.loss, exp["loss"], rtol, f"{what}loss")


# --------------------------------------------------------------------------------------------
# Cell ops: oracle
# --------------------------------------------------------------------------------------------

CELL_SHAPES = [(1, 1, 1), (3, 5, 7), (16, 33, 20)]  # (B, I, H)
CELL_IDS = [f"B{b}-I{i}-H{h}" for b, i, h in CELL_SHAPES]


def cell_data(kind, shape, dtype, seed, w_scale=1.0):
    batch, input_size, hidden = shape
    gates = 4 if is_lstm(kind) else 1
    rng = np.random.default_rng(seed)
    dt = NP_DTYPE[dtype]
    k = w_scale / math.sqrt(hidden)
    return dict(
        x=rng.standard_normal((batch, input_size)).astype(dt),
        h_prev=(0.7 * rng.standard_normal((batch, hidden))).astype(dt),
        c_prev=rng.standard_normal((batch, hidden)).astype(dt),
        w_ih=rng.uniform(-k, k, (gates * hidden, input_size)).astype(dt),
        w_hh=rng.uniform(-k, k, (gates * hidden, hidden)).astype(dt),
        b=rng.uniform(-k, k, gates * hidden).astype(dt),
        dh=rng.standard_normal((batch, hidden)).astype(dt),
        dc=rng.standard_normal((batch, hidden)).astype(dt),
    )


def cell_rtol(dtype):
    # a cell is one GEMM and a few elementwise ops: measured float32 errors <= 4e-7 relative
    # (saturating weights x6), float64 <= 2e-15
    return 1e-5 if dtype == "float32" else 1e-13


def wide(d, dtype):
    """float32 -> float64 oracle, float64 -> long double oracle."""
    od = oracle_dtype(NP_DTYPE[dtype])
    return {k: np.asarray(v, dtype=od) for k, v in d.items()}


@pytest.mark.parametrize("shape", CELL_SHAPES, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("w_scale", [1.0, 6.0], ids=["init", "saturating"])
def test_lstm_cell_ops_match_oracle(dtype, shape, w_scale, device):
    d = cell_data("lstm", shape, dtype, seed=11 + shape[0], w_scale=w_scale)
    dt = NP_DTYPE[dtype]
    rtol = cell_rtol(dtype)
    h, c, gates = ops.lstm_cell_forward(d["x"], d["h_prev"], d["c_prev"], d["w_ih"], d["w_hh"],
                                        d["b"], device=device)
    batch, _, hidden = shape
    for name, a, s in (("h", h, (batch, hidden)), ("c", c, (batch, hidden)),
                       ("gates", gates, (batch, 4 * hidden))):
        assert isinstance(a, np.ndarray) and a.dtype == dt and a.shape == s, (
            f"{name}: {type(a)} {getattr(a, 'dtype', None)} {getattr(a, 'shape', None)}")
    w = wide(d, dtype)
    rh, rc, rg = RR.lstm_cell_forward(w["x"], w["h_prev"], w["c_prev"], w["w_ih"], w["w_hh"],
                                      w["b"])
    assert_close_norm(h, rh, rtol, "h")
    assert_close_norm(c, rc, rtol, "c")
    for k, name in enumerate("ifgo"):
        assert_close_norm(gates[:, k * hidden:(k + 1) * hidden], rg[:, k * hidden:(k + 1) * hidden],
                          rtol, f"gates[{name}]")
    if w_scale > 1 and shape[0] * shape[2] > 1:
        assert np.mean(RR.lstm_saturated_mask(
            RR.lstm_preactivation(w["x"], w["h_prev"], w["w_ih"], w["w_hh"], w["b"]))) > 0.05

    # backward, fed with the oracle's forward buffers rounded to dtype (independent of vgkern's)
    g_in = np.asarray(rg, dtype=dt)
    c_in = np.asarray(rc, dtype=dt)
    got = ops.lstm_cell_backward(d["dh"], d["dc"], g_in, c_in, d["c_prev"], d["x"], d["h_prev"],
                                 d["w_ih"], d["w_hh"], device=device)
    assert len(got) == 6
    exp = RR.lstm_cell_backward(w["dh"], w["dc"], np.asarray(g_in, w["x"].dtype),
                                np.asarray(c_in, w["x"].dtype), w["c_prev"], w["x"], w["h_prev"],
                                w["w_ih"], w["w_hh"])
    names = ("dx", "dh_prev", "dc_prev", "dweight_ih", "dweight_hh", "dbias")
    shapes = ((batch, shape[1]), (batch, hidden), (batch, hidden), d["w_ih"].shape,
              d["w_hh"].shape, d["b"].shape)
    for name, a, e, s in zip(names, got, exp, shapes):
        assert a.dtype == dt and a.shape == s, f"{name}: {a.dtype} {a.shape}"
        assert_close_norm(a, e, rtol, name)
    # also with vgkern's own forward buffers (the normal use)
    got2 = ops.lstm_cell_backward(d["dh"], d["dc"], gates, c, d["c_prev"], d["x"], d["h_prev"],
                                  d["w_ih"], d["w_hh"], device=device)
    for name, a, e in zip(names, got2, exp):
        assert_close_norm(a, e, 10 * rtol, name + " (vgkern forward buffers)")


@pytest.mark.parametrize("shape", CELL_SHAPES, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("w_scale", [1.0, 6.0], ids=["init", "saturating"])
def test_rnn_cell_ops_match_oracle(dtype, shape, nonlinearity, w_scale, device):
    kind = "rnn_" + nonlinearity
    d = cell_data(kind, shape, dtype, seed=23 + shape[0], w_scale=w_scale)
    dt = NP_DTYPE[dtype]
    rtol = cell_rtol(dtype)
    batch, input_size, hidden = shape
    h = ops.rnn_cell_forward(d["x"], d["h_prev"], d["w_ih"], d["w_hh"], d["b"],
                             nonlinearity=nonlinearity, device=device)
    assert isinstance(h, np.ndarray) and h.dtype == dt and h.shape == (batch, hidden)
    w = wide(d, dtype)
    rh = RR.rnn_cell_forward(w["x"], w["h_prev"], w["w_ih"], w["w_hh"], w["b"], nonlinearity)
    assert_close_norm(h, rh, rtol, "h")
    h_in = np.asarray(rh, dtype=dt)
    got = ops.rnn_cell_backward(d["dh"], h_in, d["x"], d["h_prev"], d["w_ih"], d["w_hh"],
                                nonlinearity=nonlinearity, device=device)
    assert len(got) == 5
    exp = RR.rnn_cell_backward(w["dh"], np.asarray(h_in, w["x"].dtype), w["x"], w["h_prev"],
                               w["w_ih"], w["w_hh"], nonlinearity)
    names = ("dx", "dh_prev", "dweight_ih", "dweight_hh", "dbias")
    shapes = ((batch, input_size), (batch, hidden), d["w_ih"].shape, d["w_hh"].shape,
              d["b"].shape)
    for name, a, e, s in zip(names, got, exp, shapes):
        assert a.dtype == dt and a.shape == s, f"{name}: {a.dtype} {a.shape}"
        assert_close_norm(a, e, rtol, name)


def test_rnn_cell_backward_uses_the_output_for_the_derivative():
    """act' is taken from h as documented: 1 - h^2 (tanh), h > 0 (relu). Passing a made-up h
    (not the forward's) shows which formula is used."""
    d = cell_data("rnn_tanh", (3, 4, 5), "float64", seed=3)
    h_fake = np.linspace(-0.9, 0.9, 15).reshape(3, 5)
    dz = d["dh"] * (1 - h_fake ** 2)
    dx, dh_prev, dw_ih, dw_hh, db = ops.rnn_cell_backward(
        d["dh"], h_fake, d["x"], d["h_prev"], d["w_ih"], d["w_hh"], nonlinearity="tanh")
    assert_close_norm(dx, dz @ d["w_ih"], 1e-14, "dx")
    assert_close_norm(dh_prev, dz @ d["w_hh"], 1e-14, "dh_prev")
    assert_close_norm(dw_ih, dz.T @ d["x"], 1e-14, "dweight_ih")
    assert_close_norm(dw_hh, dz.T @ d["h_prev"], 1e-14, "dweight_hh")
    assert_close_norm(db, dz.sum(0), 1e-14, "dbias")
    h_relu = np.where(h_fake > 0, h_fake, 0.0)
    dz = d["dh"] * (h_relu > 0)
    dx, _, _, _, db = ops.rnn_cell_backward(d["dh"], h_relu, d["x"], d["h_prev"], d["w_ih"],
                                            d["w_hh"], nonlinearity="relu")
    assert_close_norm(dx, dz @ d["w_ih"], 1e-14, "relu dx")
    assert_close_norm(db, dz.sum(0), 1e-14, "relu dbias")


def test_lstm_cell_backward_uses_the_given_buffers():
    """lstm_cell_backward takes the gates and c it is given (it does not recompute them)."""
    d = cell_data("lstm", (2, 3, 4), "float64", seed=5)
    rng = np.random.default_rng(6)
    gates = np.concatenate([rng.uniform(0.05, 0.95, (2, 8)), rng.uniform(-0.9, 0.9, (2, 4)),
                            rng.uniform(0.05, 0.95, (2, 4))], axis=1)
    c = rng.standard_normal((2, 4))
    got = ops.lstm_cell_backward(d["dh"], d["dc"], gates, c, d["c_prev"], d["x"], d["h_prev"],
                                 d["w_ih"], d["w_hh"])
    exp = RR.lstm_cell_backward(d["dh"], d["dc"], gates, c, d["c_prev"], d["x"], d["h_prev"],
                                d["w_ih"], d["w_hh"])
    for name, a, e in zip(("dx", "dh_prev", "dc_prev", "dweight_ih", "dweight_hh", "dbias"),
                          got, exp):
        assert_close_norm(a, e, 1e-13, name)


# --------------------------------------------------------------------------------------------
# Cell ops: torch
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_cell_ops_match_torch_cells(dtype, kind, device):
    shape = (6, 9, 11)
    d = cell_data(kind, shape, dtype, seed=31)
    tdt = TORCH_DTYPE[dtype]
    rtol = 1e-5 if dtype == "float32" else 1e-13
    batch, input_size, hidden = shape
    if is_lstm(kind):
        cell = nn.LSTMCell(input_size, hidden, dtype=tdt)
    else:
        cell = nn.RNNCell(input_size, hidden, nonlinearity=nonlinearity_of(kind), dtype=tdt)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.from_numpy(d["w_ih"]))
        cell.weight_hh.copy_(torch.from_numpy(d["w_hh"]))
        cell.bias_ih.copy_(torch.from_numpy(d["b"] / 2))
        cell.bias_hh.copy_(torch.from_numpy(d["b"] / 2))
    x = torch.from_numpy(d["x"].copy()).requires_grad_()
    hp = torch.from_numpy(d["h_prev"].copy()).requires_grad_()
    cp = torch.from_numpy(d["c_prev"].copy()).requires_grad_()
    if is_lstm(kind):
        th, tc = cell(x, (hp, cp))
        ((th * torch.from_numpy(d["dh"])).sum() + (tc * torch.from_numpy(d["dc"])).sum()).backward()
        h, c, gates = ops.lstm_cell_forward(d["x"], d["h_prev"], d["c_prev"], d["w_ih"],
                                            d["w_hh"], d["b"], device=device)
        assert_close_norm(h, th.detach(), rtol, "h vs LSTMCell")
        assert_close_norm(c, tc.detach(), rtol, "c vs LSTMCell")
        dx, dhp, dcp, dwi, dwh, db = ops.lstm_cell_backward(
            d["dh"], d["dc"], gates, c, d["c_prev"], d["x"], d["h_prev"], d["w_ih"], d["w_hh"], device=device)
        assert_close_norm(dcp, cp.grad, rtol, "dc_prev vs LSTMCell")
    else:
        th = cell(x, hp)
        (th * torch.from_numpy(d["dh"])).sum().backward()
        h = ops.rnn_cell_forward(d["x"], d["h_prev"], d["w_ih"], d["w_hh"], d["b"],
                                 nonlinearity=nonlinearity_of(kind), device=device)
        assert_close_norm(h, th.detach(), rtol, "h vs RNNCell")
        dx, dhp, dwi, dwh, db = ops.rnn_cell_backward(
            d["dh"], h, d["x"], d["h_prev"], d["w_ih"], d["w_hh"],
            nonlinearity=nonlinearity_of(kind), device=device)
    assert_close_norm(dx, x.grad, rtol, "dx")
    assert_close_norm(dhp, hp.grad, rtol, "dh_prev")
    assert_close_norm(dwi, cell.weight_ih.grad, rtol, "dweight_ih")
    assert_close_norm(dwh, cell.weight_hh.grad, rtol, "dweight_hh")
    assert_close_norm(db, cell.bias_ih.grad, rtol, "dbias vs bias_ih.grad")
    assert_close_norm(db, cell.bias_hh.grad, rtol, "dbias vs bias_hh.grad")


# --------------------------------------------------------------------------------------------
# Cell ops: finite differences (float64)
# --------------------------------------------------------------------------------------------

FD_STEP = 1e-6
FD_RTOL = 1e-6


def assert_matches_fd(analytic, numeric, name, f_scale=1.0):
    analytic = f64(analytic)
    assert analytic.shape == numeric.shape, (name, analytic.shape, numeric.shape)
    scale = max(float(np.abs(numeric).max()), 1e-3)
    noise = 10 * np.finfo(np.float64).eps * max(abs(f_scale), 1.0) / FD_STEP
    bound = FD_RTOL * np.abs(numeric) + 1e-8 * scale + noise
    bad = np.abs(analytic - numeric) > bound
    assert not bad.any(), (
        f"{name}: analytic {analytic[bad][:5]} vs finite differences {numeric[bad][:5]} at "
        f"{np.argwhere(bad)[:5].tolist()}")


@pytest.mark.parametrize("kind", KINDS)
def test_cell_ops_finite_differences(kind, device):
    d = cell_data(kind, (3, 4, 5), "float64", seed=41, w_scale=2.0)
    x, hp, cp, wi, wh, b = (d[k].copy() for k in ("x", "h_prev", "c_prev", "w_ih", "w_hh", "b"))
    dh, dc = d["dh"], d["dc"]
    if is_lstm(kind):
        def f():
            h, c, _ = ops.lstm_cell_forward(x, hp, cp, wi, wh, b, device=device)
            return float(np.sum(dh * h) + np.sum(dc * c))
        h, c, gates = ops.lstm_cell_forward(x, hp, cp, wi, wh, b, device=device)
        analytic = ops.lstm_cell_backward(dh, dc, gates, c, cp, x, hp, wi, wh, device=device)
        arrays = (x, hp, cp, wi, wh, b)
        names = ("dx", "dh_prev", "dc_prev", "dweight_ih", "dweight_hh", "dbias")
    else:
        nl = nonlinearity_of(kind)
        z = x @ wi.T + hp @ wh.T + b
        assert np.abs(z).min() > 1e-3, "test setup: a pre-activation is too close to the kink"

        def f():
            return float(np.sum(dh * ops.rnn_cell_forward(x, hp, wi, wh, b, nonlinearity=nl, device=device)))
        h = ops.rnn_cell_forward(x, hp, wi, wh, b, nonlinearity=nl, device=device)
        analytic = ops.rnn_cell_backward(dh, h, x, hp, wi, wh, nonlinearity=nl, device=device)
        arrays = (x, hp, wi, wh, b)
        names = ("dx", "dh_prev", "dweight_ih", "dweight_hh", "dbias")
    numeric = central_difference(f, arrays)
    for name, a, n in zip(names, analytic, numeric):
        assert np.abs(n).max() > 1e-3, f"test setup: {name} is ~0"
        assert_matches_fd(a, n, name, f_scale=f())


# --------------------------------------------------------------------------------------------
# Whole sequences: oracle
# --------------------------------------------------------------------------------------------

def mode_ids():
    return list(MODES)


# every (kind, mode) pair that exists: an RNN has no cell state, so no "grad_cT_only"
KIND_MODES = [(k, m) for k in KINDS for m in mode_ids() if is_lstm(k) or m != "grad_cT_only"]


@pytest.mark.parametrize("steps", STEPS, ids=[f"T{t}" for t in STEPS])
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind,mode", KIND_MODES, ids=[f"{k}-{m}" for k, m in KIND_MODES])
def test_sequence_matches_oracle(kind, dtype, steps, mode, device):
    batch, input_size, hidden = SEQ_SHAPES[steps]
    forget_bias = {1: 0.5, 5: 0.0, 40: 1.0}[steps]
    seed = 100 + steps
    net = make_net(kind, input_size, hidden, dtype, seed=seed, forget_bias=forget_bias,
                   device=device)
    params = net_params(net)
    d = seq_data(steps, batch, input_size, hidden, dtype, seed + 1)
    inp = mode_inputs(mode, kind, d)
    exp = oracle(kind, params, d["x"], inp, oracle_dtype(NP_DTYPE[dtype]))
    rtol = rtol_for(dtype, steps)
    outs, rep = run_vgkern(net, kind, d["x"], inp)
    if outs is not None:
        check_forward(outs, exp, kind, dtype, (steps, batch, hidden), rtol, "")
    check_sequence(net, rep, exp, kind, dtype, rtol=rtol, z_rtol=z_rtol_for(dtype, steps))
    # nothing here may change the parameters
    for a, b in zip(net_params(net), params):
        np.testing.assert_array_equal(a, b)
    if mode == "grad_cT_only":
        # no gradient reaches h_{T-1}: its total gradient is exactly 0
        assert rep.h_grad_norm[-1] == 0.0 and rep.log10_h_grad_norm[-1] == -np.inf


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_saturating_weights_match_oracle(kind, dtype, device):
    """Weights written x3 through the writable views (also tests that writes take effect):
    saturating gates / units, saturated_fraction well above 0, forget gates far from 0.5."""
    steps, batch, input_size, hidden = 12, 6, 9, 16
    net = make_net(kind, input_size, hidden, dtype, seed=7, forget_bias=0.5, device=device)
    net.weight_ih, net.weight_hh, net.bias = 3 * net.weight_ih, 3 * net.weight_hh, 3 * net.bias
    params = net_params(net)
    d = seq_data(steps, batch, input_size, hidden, dtype, 8, x_scale=2.0)
    inp = mode_inputs("all_grads_h0c0", kind, d)
    exp = oracle(kind, params, d["x"], inp, oracle_dtype(NP_DTYPE[dtype]))
    min_sat = {"lstm": 0.03, "rnn_tanh": 0.1, "rnn_relu": 0.0}[kind]
    if kind != "rnn_relu":
        lo, _ = saturation_bracket(exp["pre"], kind, 1e-6)
        assert lo[1:].min() > min_sat, f"test setup: saturated fractions {lo}"
    rtol = rtol_for(dtype, steps)
    outs, rep = run_vgkern(net, kind, d["x"], inp)
    check_forward(outs, exp, kind, dtype, (steps, batch, hidden), rtol, "")
    check_sequence(net, rep, exp, kind, dtype, rtol=rtol, z_rtol=z_rtol_for(dtype, 40))
    if kind != "rnn_relu":
        assert np.all(rep.saturated_fraction[1:] > min_sat)
    # and against torch (same data, same written weights)
    texp = torch_reference(kind, params, d["x"], inp)
    check_sequence(net, rep, texp, kind, dtype, rtol=rtol, z_rtol=z_rtol_for(dtype, 40),
                   what="torch: ")


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_h0_c0_defaults_are_zeros(kind, dtype, device):
    batch, input_size, hidden = SEQ_SHAPES[5]
    net = make_net(kind, input_size, hidden, dtype, seed=3, forget_bias=1.0, device=device)
    d = seq_data(5, batch, input_size, hidden, dtype, 4)
    zeros = np.zeros((batch, hidden), NP_DTYPE[dtype])
    if is_lstm(kind):
        a, (ah, ac) = net.forward(d["x"])
        a, ah, ac = np.array(a), np.array(ah), np.array(ac)
        b, (bh, bc) = net.forward(d["x"], h0=zeros, c0=zeros)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ac, bc)
        # h0 alone: c0 defaults to zeros; c0 alone: h0 defaults to zeros
        e, (_, ec) = net.forward(d["x"], h0=d["h0"], c0=zeros)
        e, ec = np.array(e), np.array(ec)
        f, (_, fc) = net.forward(d["x"], h0=d["h0"])
        np.testing.assert_array_equal(np.array(f), e)
        np.testing.assert_array_equal(np.array(fc), ec)
        e, _ = net.forward(d["x"], h0=zeros, c0=d["c0"])
        e = np.array(e)
        f, _ = net.forward(d["x"], c0=d["c0"])
        np.testing.assert_array_equal(np.array(f), e)
    else:
        a, _ = net.forward(d["x"])
        a = np.array(a)
        b, _ = net.forward(d["x"], h0=zeros)
        np.testing.assert_array_equal(a, b)
    # and a non-zero h0 does matter
    c, _ = net.forward(d["x"], h0=d["h0"])
    assert not np.array_equal(np.array(c)[0], a[0])


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_are_overwritten_not_accumulated(kind, device):
    steps, (batch, input_size, hidden) = 5, SEQ_SHAPES[5]
    net = make_net(kind, input_size, hidden, "float64", seed=9, device=device)
    d = seq_data(steps, batch, input_size, hidden, "float64", 10)
    inp = mode_inputs("all_grads_h0c0", kind, d)
    _, rep1 = run_vgkern(net, kind, d["x"], inp)
    first = {a: np.array(getattr(net, a)) for a in grad_attrs(kind)}
    _, rep2 = run_vgkern(net, kind, d["x"], inp)
    for a in grad_attrs(kind):
        np.testing.assert_array_equal(getattr(net, a), first[a], err_msg=a)
    np.testing.assert_array_equal(rep1.x_grad_norm, rep2.x_grad_norm)
    # a second, different backward after one forward overwrites everything
    net.forward(d["x"], h0=inp["h0"], **({"c0": inp["c0"]} if is_lstm(kind) else {}))
    rep3 = net.backward(2 * d["g"])
    inp2 = dict(inp, grad_h_seq=2 * d["g"], grad_hT=None, grad_cT=None)
    exp = oracle(kind, net_params(net), d["x"], inp2, np.longdouble)
    check_sequence(net, rep3, exp, kind, "float64", rtol=1e-13, z_rtol=1e-9)


def grad_attrs(kind):
    base = ["weight_ih_grad", "weight_hh_grad", "bias_grad", "input_grad", "h0_grad"]
    return base + (["c0_grad"] if is_lstm(kind) else [])


def check_modes_against_oracle(net, kind, dtype, d):
    """All gradients with h0/c0, and the step with the mse loss, against the float64 oracle."""
    steps, batch, _ = d["x"].shape
    hidden = net.hidden_size
    rtol = rtol_for(dtype, steps)
    for mode in ("all_grads_h0c0", "step_mse"):
        inp = mode_inputs(mode, kind, d)
        exp = oracle(kind, net_params(net), d["x"], inp, oracle_dtype(NP_DTYPE[dtype]))
        outs, rep = run_vgkern(net, kind, d["x"], inp)
        if outs is not None:
            check_forward(outs, exp, kind, dtype, (steps, batch, hidden), rtol, f"{mode}: ")
        check_sequence(net, rep, exp, kind, dtype, rtol=rtol, z_rtol=z_rtol_for(dtype, steps),
                       what=f"{mode}: ")


EDGE_SHAPES = [(7, 1, 1, 1), (4, 33, 70, 96)]  # (T, B, I, H): minimal, and wide (4H = 384)


@pytest.mark.parametrize("shape", EDGE_SHAPES,
                         ids=[f"T{t}-B{b}-I{i}-H{h}" for t, b, i, h in EDGE_SHAPES])
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_edge_shapes_match_oracle(kind, dtype, shape, device):
    steps, batch, input_size, hidden = shape
    net = make_net(kind, input_size, hidden, dtype, seed=17, forget_bias=1.0, device=device)
    d = seq_data(steps, batch, input_size, hidden, dtype, 18)
    check_modes_against_oracle(net, kind, dtype, d)


# (T, B, I, H) whose per-step GEMM (B x H x G) is above the row split of ops/layer_plan.h:
# the time loop keeps the whole batch, each step's GEMM in two halves of W_hh's panels (float32
# on AVX2/AVX-512, nets/recurrent.cpp step_halves), the GEMMs over all steps in row blocks.
WHOLE_BATCH_SHAPES = {"lstm": (3, 160, 20, 256), "rnn_tanh": (2, 3, 8, 3400)}


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", sorted(WHOLE_BATCH_SHAPES))
def test_whole_batch_recurrence_matches_oracle(kind, dtype):
    steps, batch, input_size, hidden = WHOLE_BATCH_SHAPES[kind]
    gates = 4 * hidden if is_lstm(kind) else hidden
    assert batch * hidden * gates > 2 ** 25 and batch < gates  # not split by rows
    net = make_net(kind, input_size, hidden, dtype, seed=23, forget_bias=1.0, device="cpu")
    d = seq_data(steps, batch, input_size, hidden, dtype, 24)
    check_modes_against_oracle(net, kind, dtype, d)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_huge_inputs_stay_finite_and_correct(kind, dtype, device):
    """x ~ 100 N(0, 1): every gate / unit saturates hard (sigmoid(-100) underflows in float32's
    exp if computed naively); outputs and gradients stay finite and match the oracle."""
    steps, batch, input_size, hidden = 6, 5, 8, 12
    net = make_net(kind, input_size, hidden, dtype, seed=19, forget_bias=1.0, device=device)
    d = seq_data(steps, batch, input_size, hidden, dtype, 20, x_scale=100.0)
    inp = mode_inputs("all_grads_h0c0", kind, d)
    exp = oracle(kind, net_params(net), d["x"], inp, oracle_dtype(NP_DTYPE[dtype]))
    outs, rep = run_vgkern(net, kind, d["x"], inp)
    for key, a in outs.items():
        assert np.all(np.isfinite(a)), key
    for a in grad_attrs(kind):
        assert np.all(np.isfinite(getattr(net, a))), a
    rtol = rtol_for(dtype, steps)
    check_forward(outs, exp, kind, dtype, (steps, batch, hidden), rtol, "")
    # gradients through hard-saturated gates are dominated by the sigmoid' / tanh' tails: their
    # relative accuracy is that of exp() of a large argument, i.e. ~|pre| ulps.
    loose = 1e-4 if dtype == "float32" else 1e-11
    check_sequence(net, rep, exp, kind, dtype, rtol=loose, z_rtol=z_rtol_for(dtype, 40))
    if kind != "rnn_relu":
        assert np.all(rep.saturated_fraction > 0.5), rep.saturated_fraction


@pytest.mark.parametrize("kind", KINDS)
def test_refused_forward_leaves_the_last_forward_usable_or_refuses_backward(kind):
    """After a valid forward, a refused forward (bad h0 / x) must not leave half-written state:
    a backward then either refers to the last valid forward exactly or raises RuntimeError."""
    steps, batch, input_size, hidden = 5, 4, 6, 7
    net = make_net(kind, input_size, hidden, "float64", seed=27)
    d = seq_data(steps, batch, input_size, hidden, "float64", 28)
    inp = mode_inputs("all_grads_h0c0", kind, d)
    exp = oracle(kind, net_params(net), d["x"], inp, np.longdouble)
    bad_calls = [
        # same shapes as the valid forward, another x, refused target: a backward that used the
        # refused call's x would be silently wrong
        ("step(5 x, target (B, H+1))",
         lambda: net.step(5 * d["x"], np.zeros((batch, hidden + 1)), loss="mse")),
        ("step(5 x, float32 target)",
         lambda: net.step(5 * d["x"], np.zeros((batch, hidden), np.float32), loss="mse")),
        ("step(5 x, (B, H) target, mse_sequence)",
         lambda: net.step(5 * d["x"], d["target_last"], loss="mse_sequence")),
        ("step(other T and B, bad target)",
         lambda: net.step(np.zeros((steps + 3, batch + 2, input_size)),
                          np.zeros((batch + 1, hidden)), loss="mse")),
        ("forward(other T and B, bad h0)",
         lambda: forward(net, kind, np.zeros((steps + 3, batch + 2, input_size)),
                         h0=np.zeros((batch + 1, hidden)))),
        ("forward(bad I)",
         lambda: forward(net, kind, np.zeros((steps + 3, batch + 2, input_size + 1)))),
        ("forward(float32 x)",
         lambda: forward(net, kind, np.zeros((steps + 3, batch + 2, input_size), np.float32))),
    ]
    for what, bad in bad_calls:
        forward(net, kind, d["x"], h0=inp["h0"], c0=inp["c0"])
        with pytest.raises((ValueError, TypeError)):
            bad()
        try:
            if is_lstm(kind):
                rep = net.backward(d["g"], grad_hT=d["ghT"], grad_cT=d["gcT"])
            else:
                rep = net.backward(d["g"], grad_hT=d["ghT"])
        except RuntimeError:
            continue
        except ValueError as exc:
            pytest.fail(f"after the refused {what}, a backward matching the last valid forward "
                        f"raised ValueError: {exc}")
        check_sequence(net, rep, exp, kind, "float64", rtol=1e-13, z_rtol=1e-9,
                       what=f"after the refused {what}: ")


def correct_or_refused(call, reference_snapshot, snapshot, what):
    try:
        result = call()
    except (ValueError, TypeError):
        return
    assert snapshot(result) == reference_snapshot, f"{what}: differs from the contiguous result"


@pytest.mark.parametrize("kind", KINDS)
def test_non_contiguous_and_read_only_inputs(kind):
    """x_seq may be any layout (copied); the other arrays are used correctly or refused."""
    steps, batch, input_size, hidden = 5, 4, 6, 7
    net = make_net(kind, input_size, hidden, "float64", seed=29)
    d = seq_data(steps, batch, input_size, hidden, "float64", 30)
    lstm = is_lstm(kind)

    def snap(rep):
        return ([np.asarray(getattr(net, a)).tobytes() for a in grad_attrs(kind)]
                + [np.asarray(getattr(rep, f)).tobytes() for f in RR.STEP_FIELDS])

    def run(x=d["x"], h0=d["h0"], c0=d["c0"], g=d["g"], ghT=d["ghT"], gcT=d["gcT"]):
        forward(net, kind, x, h0=h0, c0=c0 if lstm else None)
        if lstm:
            return net.backward(g, grad_hT=ghT, grad_cT=gcT)
        return net.backward(g, grad_hT=ghT)

    ref = snap(run())

    def strided(a):  # same values, not C-contiguous
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]

    def fortran(a):
        return np.asfortranarray(a)

    def read_only(a):
        b = a.copy()
        b.setflags(write=False)
        return b

    # x_seq: always accepted
    for name, view in (("strided", strided(d["x"])), ("fortran", fortran(d["x"])),
                       ("read-only", read_only(d["x"]))):
        assert snap(run(x=view)) == ref, f"x_seq {name}"
    step_ref = snap(net.step(d["x"], d["target_seq"], loss="mse_sequence"))
    assert snap(net.step(strided(d["x"]), d["target_seq"], loss="mse_sequence")) == step_ref
    assert snap(net.step(read_only(d["x"]), read_only(d["target_seq"]),
                         loss="mse_sequence")) == step_ref
    # the others: correct or refused
    for name, fn in (("strided", strided), ("fortran", fortran), ("read-only", read_only)):
        correct_or_refused(lambda: run(h0=fn(d["h0"])), ref, snap, f"h0 {name}")
        correct_or_refused(lambda: run(g=fn(d["g"])), ref, snap, f"grad_h_seq {name}")
        correct_or_refused(lambda: run(ghT=fn(d["ghT"])), ref, snap, f"grad_hT {name}")
        if lstm:
            correct_or_refused(lambda: run(c0=fn(d["c0"])), ref, snap, f"c0 {name}")
            correct_or_refused(lambda: run(gcT=fn(d["gcT"])), ref, snap, f"grad_cT {name}")
        correct_or_refused(lambda: net.step(d["x"], fn(d["target_seq"]), loss="mse_sequence"),
                           step_ref, snap, f"target {name}")
    # the inputs were not modified
    np.testing.assert_array_equal(d["x"], seq_data(steps, batch, input_size, hidden, "float64",
                                                   30)["x"])


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_cell_ops_non_contiguous_correct_or_refused(dtype):
    d = cell_data("lstm", (4, 5, 6), dtype, seed=2)
    ref = ops.lstm_cell_forward(d["x"], d["h_prev"], d["c_prev"], d["w_ih"], d["w_hh"], d["b"])
    for name in ("x", "h_prev", "c_prev", "w_ih", "w_hh"):
        args = dict(d)
        args[name] = np.asfortranarray(d[name])
        try:
            got = ops.lstm_cell_forward(args["x"], args["h_prev"], args["c_prev"], args["w_ih"],
                                        args["w_hh"], args["b"])
        except (ValueError, TypeError):
            continue
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r, err_msg=name)
    r = cell_data("rnn_tanh", (4, 5, 6), dtype, seed=3)
    ref = ops.rnn_cell_forward(r["x"], r["h_prev"], r["w_ih"], r["w_hh"], r["b"])
    for name in ("x", "h_prev", "w_ih", "w_hh"):
        args = dict(r)
        args[name] = np.asfortranarray(r[name])
        try:
            got = ops.rnn_cell_forward(args["x"], args["h_prev"], args["w_ih"], args["w_hh"],
                                       args["b"])
        except (ValueError, TypeError):
            continue
        np.testing.assert_array_equal(got, ref, err_msg=name)


# --------------------------------------------------------------------------------------------
# Whole sequences: torch
# --------------------------------------------------------------------------------------------

def torch_objective(inp, out, h_t, c_t, batch):
    if inp["loss"] == "mse":
        return 0.5 * ((h_t - torch.from_numpy(inp["target"])) ** 2).sum() / batch
    if inp["loss"] == "mse_sequence":
        return 0.5 * ((out - torch.from_numpy(inp["target"])) ** 2).sum() / batch
    total = out.sum() * 0
    if inp["grad_h_seq"] is not None:
        total = total + (out * torch.from_numpy(inp["grad_h_seq"])).sum()
    if inp["grad_hT"] is not None:
        total = total + (h_t * torch.from_numpy(inp["grad_hT"])).sum()
    if inp["grad_cT"] is not None:
        total = total + (c_t * torch.from_numpy(inp["grad_cT"])).sum()
    return total


def torch_reference(kind, params, x, inp):
    """float64 numpy copies of what torch gives: outputs, parameter / input gradients from
    torch.nn.LSTM / nn.RNN, per-step total gradients (dh, dc) and pre-activations from an
    unrolled LSTMCell / RNNCell loop."""
    w_ih, w_hh, b = params
    steps, batch, input_size = x.shape
    hidden = w_hh.shape[1]
    tdt = torch.from_numpy(x).dtype
    lstm = is_lstm(kind)
    zeros = np.zeros((batch, hidden), x.dtype)
    h0 = zeros if inp["h0"] is None else inp["h0"]
    c0 = zeros if inp["c0"] is None else inp["c0"]

    def load(m, suffix=""):
        with torch.no_grad():
            getattr(m, "weight_ih" + suffix).copy_(torch.from_numpy(w_ih))
            getattr(m, "weight_hh" + suffix).copy_(torch.from_numpy(w_hh))
            getattr(m, "bias_ih" + suffix).copy_(torch.from_numpy(b / 2))
            getattr(m, "bias_hh" + suffix).copy_(torch.from_numpy(b / 2))

    # (1) the library module
    if lstm:
        mod = nn.LSTM(input_size, hidden, dtype=tdt)
    else:
        mod = nn.RNN(input_size, hidden, nonlinearity=nonlinearity_of(kind), dtype=tdt)
    load(mod, "_l0")
    xt = torch.from_numpy(x.copy()).requires_grad_()
    h0t = torch.from_numpy(h0.copy()).requires_grad_()
    c0t = torch.from_numpy(c0.copy()).requires_grad_()
    if lstm:
        out, (hn, cn) = mod(xt, (h0t[None], c0t[None]))
        cT = cn[0]
    else:
        out, hn = mod(xt, h0t[None])
        cT = None
    loss = torch_objective(inp, out, hn[0], cT, batch)
    loss.backward()
    res = dict(h_seq=out, hT=hn[0], dx=xt.grad, dh0=h0t.grad, dW_ih=mod.weight_ih_l0.grad,
               dW_hh=mod.weight_hh_l0.grad, db=mod.bias_ih_l0.grad, db_hh=mod.bias_hh_l0.grad)
    if lstm:
        res.update(cT=cT, dc0=c0t.grad)

    # (2) unrolled cells, retain_grad on every h_t and c_t
    if lstm:
        cell = nn.LSTMCell(input_size, hidden, dtype=tdt)
    else:
        cell = nn.RNNCell(input_size, hidden, nonlinearity=nonlinearity_of(kind), dtype=tdt)
    load(cell)
    h = torch.from_numpy(h0.copy())
    c = torch.from_numpy(c0.copy())
    hs, cs, pres = [], [], []
    for t in range(steps):
        xt_t = torch.from_numpy(x[t])
        with torch.no_grad():
            pres.append(xt_t @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T
                        + cell.bias_hh)
        if lstm:
            h, c = cell(xt_t, (h, c))
            c.retain_grad()
            cs.append(c)
        else:
            h = cell(xt_t, h)
        h.retain_grad()
        hs.append(h)
    out2 = torch.stack(hs)
    loss2 = torch_objective(inp, out2, hs[-1], cs[-1] if lstm else None, batch)
    loss2.backward()
    res["dh"] = torch.stack([t.grad for t in hs])
    if lstm:
        res["dc"] = torch.stack([t.grad for t in cs])
    res["pre"] = torch.stack(pres)
    res["cell_h_seq"] = out2
    res["cell_dW_hh"] = cell.weight_hh.grad
    exp = {k: v.detach().to(torch.float64).numpy().copy() for k, v in res.items()}
    exp["loss"] = float(loss.detach().double()) if inp["loss"] is not None else float("nan")
    return exp


TORCH_MODES = ["all_grads_h0c0", "grad_h_seq_zero_init", "step_mse", "step_mse_sequence"]


@pytest.mark.parametrize("steps", STEPS, ids=[f"T{t}" for t in STEPS])
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_matches_torch(kind, dtype, steps, device):
    batch, input_size, hidden = SEQ_SHAPES[steps]
    rtol = rtol_for(dtype, steps)
    for k, mode in enumerate(TORCH_MODES):
        seed = 200 + 10 * steps + k
        net = make_net(kind, input_size, hidden, dtype, seed=seed, forget_bias=1.0,
                       device=device)
        params = net_params(net)
        d = seq_data(steps, batch, input_size, hidden, dtype, seed + 1)
        inp = mode_inputs(mode, kind, d)
        exp = torch_reference(kind, params, d["x"], inp)
        # the two torch computations agree (the unrolled loop is a faithful twin)
        assert_close_norm(exp["cell_h_seq"], exp["h_seq"], rtol, f"{mode}: torch cells vs module")
        assert_close_norm(exp["cell_dW_hh"], exp["dW_hh"], rtol, f"{mode}: torch cells vs module")
        assert_close_norm(exp["db_hh"], exp["db"], rtol, f"{mode}: torch bias_hh vs bias_ih grad")
        outs, rep = run_vgkern(net, kind, d["x"], inp)
        if outs is not None:
            check_forward(outs, exp, kind, dtype, (steps, batch, hidden), rtol, f"{mode}: ")
        check_sequence(net, rep, exp, kind, dtype, rtol=rtol, z_rtol=z_rtol_for(dtype, steps),
                       what=f"{mode}: ")
        # the bias gradient equals torch's bias_hh gradient as well
        assert_close_norm(net.bias_grad, exp["db_hh"], rtol, f"{mode}: bias_grad vs bias_hh.grad")


def test_lstm_default_float32_with_batch_of_one_matches_torch():
    """Defaults (float32, seed 0, forget_bias 0) and B = 1, T = 40, H = 32."""
    net = vgkern.LSTM(7, 32)
    assert net.weight_ih.dtype == np.float32
    d = seq_data(40, 1, 7, 32, "float32", 5)
    inp = mode_inputs("step_mse_sequence", "lstm", d)
    exp = torch_reference("lstm", net_params(net), d["x"], inp)
    rep = net.step(d["x"], inp["target"], loss="mse_sequence")
    check_sequence(net, rep, exp, "lstm", "float32", rtol=rtol_for("float32", 40),
                   z_rtol=z_rtol_for("float32", 40))


# --------------------------------------------------------------------------------------------
# Whole sequences: finite differences (float64)
# --------------------------------------------------------------------------------------------

FD_SEQ = [("lstm", 3, 2, 3, 4), ("rnn_tanh", 4, 2, 3, 4), ("rnn_relu", 4, 3, 2, 3)]


def fd_net_and_data(kind, steps, batch, input_size, hidden, device="cpu"):
    net = make_net(kind, input_size, hidden, "float64", seed=13, forget_bias=0.7, device=device)
    # larger weights than the init: non-trivial recurrence
    net.weight_ih, net.weight_hh = 2 * net.weight_ih, 2 * net.weight_hh
    d = seq_data(steps, batch, input_size, hidden, "float64", 14)
    if kind == "rnn_relu":
        exp = oracle(kind, net_params(net), d["x"], mode_inputs("all_grads_h0c0", kind, d),
                     np.float64)
        assert np.abs(exp["pre"]).min() > 1e-3, "test setup: pre-activation at the relu kink"
        assert (exp["pre"] > 0).mean() > 0.3
    return net, d


def perturbable_params(net, f):
    """{grad name: parameter array} for central_difference, and the function to differentiate:
    the net's views on the CPU; on CUDA host copies, written to the device before each f()."""
    if net.device == "cpu":
        return {"weight_ih_grad": net.weight_ih, "weight_hh_grad": net.weight_hh,
                "bias_grad": net.bias}, f
    params = {"weight_ih_grad": np.array(net.weight_ih), "weight_hh_grad": np.array(net.weight_hh),
              "bias_grad": np.array(net.bias)}

    def write_then_f():
        net.weight_ih, net.weight_hh, net.bias = params.values()
        return f()

    return params, write_then_f


@pytest.mark.parametrize("case", FD_SEQ, ids=[c[0] for c in FD_SEQ])
def test_sequence_backward_finite_differences(case, device):
    kind, steps, batch, input_size, hidden = case
    net, d = fd_net_and_data(kind, steps, batch, input_size, hidden, device)
    lstm = is_lstm(kind)
    x, h0, c0 = d["x"].copy(), d["h0"].copy(), d["c0"].copy()
    g, ghT, gcT = d["g"], d["ghT"], d["gcT"]

    def f():
        if lstm:
            h_seq, (h_t, c_t) = net.forward(x, h0=h0, c0=c0)
            return float(np.sum(g * h_seq) + np.sum(ghT * h_t) + np.sum(gcT * c_t))
        h_seq, h_t = net.forward(x, h0=h0)
        return float(np.sum(g * h_seq) + np.sum(ghT * h_t))

    f0 = f()
    if lstm:
        net.forward(x, h0=h0, c0=c0)
        net.backward(g, grad_hT=ghT, grad_cT=gcT)
    else:
        net.forward(x, h0=h0)
        net.backward(g, grad_hT=ghT)
    analytic = {a: np.array(getattr(net, a)) for a in grad_attrs(kind)}
    params, f = perturbable_params(net, f)
    arrays = {**params, "input_grad": x, "h0_grad": h0}
    if lstm:
        arrays["c0_grad"] = c0
    numeric = central_difference(f, list(arrays.values()))
    for (name, _), n in zip(arrays.items(), numeric):
        assert np.abs(n).max() > 1e-3, f"test setup: {name} ~ 0"
        assert_matches_fd(analytic[name], n, name, f_scale=f0)


@pytest.mark.parametrize("loss", ["mse", "mse_sequence"])
@pytest.mark.parametrize("case", FD_SEQ, ids=[c[0] for c in FD_SEQ])
def test_sequence_step_finite_differences(case, loss, device):
    kind, steps, batch, input_size, hidden = case
    net, d = fd_net_and_data(kind, steps, batch, input_size, hidden, device)
    x = d["x"].copy()
    target = d["target_last"] if loss == "mse" else d["target_seq"]

    def f():
        out = net.forward(x)
        h_seq = np.asarray(out[0])
        if loss == "mse":
            return 0.5 * float(np.sum((h_seq[-1] - target) ** 2)) / batch
        return 0.5 * float(np.sum((h_seq - target) ** 2)) / batch

    f0 = f()
    rep = net.step(x, target, loss=loss)
    assert abs(rep.loss - f0) <= 1e-14 * abs(f0)
    analytic = {a: np.array(getattr(net, a))
                for a in ("weight_ih_grad", "weight_hh_grad", "bias_grad", "input_grad")}
    params, f = perturbable_params(net, f)
    numeric = central_difference(f, list({**params, "input_grad": x}.values()))
    arrays = {**params, "input_grad": x}
    for (name, _), n in zip(arrays.items(), numeric):
        assert np.abs(n).max() > 1e-4, f"test setup: {name} ~ 0"
        assert_matches_fd(analytic[name], n, name, f_scale=f0)


# --------------------------------------------------------------------------------------------
# Init, parameter views
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_init_is_pytorch_style_and_seeded(kind, dtype):
    input_size, hidden = 24, 40
    fb = 1.0 if is_lstm(kind) else 0.0
    net = make_net(kind, input_size, hidden, dtype, seed=5, forget_bias=fb)
    dt = NP_DTYPE[dtype]
    gates = 4 if is_lstm(kind) else 1
    w_ih, w_hh, b = net.weight_ih, net.weight_hh, net.bias
    for name, a, s in (("weight_ih", w_ih, (gates * hidden, input_size)),
                       ("weight_hh", w_hh, (gates * hidden, hidden)),
                       ("bias", b, (gates * hidden,))):
        assert isinstance(a, np.ndarray), name
        assert a.dtype == dt and a.shape == s, f"{name}: {a.dtype} {a.shape}"
    # same seed -> bitwise the same weights; another seed -> other weights
    same = make_net(kind, input_size, hidden, dtype, seed=5, forget_bias=fb)
    other = make_net(kind, input_size, hidden, dtype, seed=6, forget_bias=fb)
    for a, s, o in zip(net_params(net), net_params(same), net_params(other)):
        assert a.tobytes() == s.tobytes()
        assert not np.array_equal(a, o)
    # U(-k, k), k = 1/sqrt(H), drawn from default_rng(seed) in the documented order
    k = 1 / math.sqrt(hidden)
    ref_ih, ref_hh, _, _, ref_b = RR.init_params("lstm" if is_lstm(kind) else "rnn",
                                                 input_size, hidden, 5, forget_bias=fb)
    ulp = 4 * np.finfo(dt).eps
    np.testing.assert_allclose(f64(w_ih), ref_ih, rtol=0, atol=ulp * k, err_msg="weight_ih")
    np.testing.assert_allclose(f64(w_hh), ref_hh, rtol=0, atol=ulp * k, err_msg="weight_hh")
    np.testing.assert_allclose(f64(b), ref_b, rtol=0, atol=ulp * (2 * k + fb), err_msg="bias")
    for name, a in (("weight_ih", w_ih), ("weight_hh", w_hh)):
        a = f64(a)
        assert np.abs(a).max() <= k and np.abs(a).max() > 0.98 * k, name
        assert abs(a.mean()) < 0.05 * k, name
        assert abs(a.std() - k / math.sqrt(3)) < 0.05 * k, name
    base = f64(b).copy()
    if is_lstm(kind):
        base[hidden:2 * hidden] -= fb
    assert np.abs(base).max() <= 2 * k * (1 + 1e-6)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_forget_bias_is_added_to_the_forget_slice(dtype):
    input_size, hidden = 6, 10
    plain = vgkern.LSTM(input_size, hidden, dtype=dtype, seed=2)
    for fb in (1.0, -0.5, 3.0):
        net = vgkern.LSTM(input_size, hidden, dtype=dtype, seed=2, forget_bias=fb)
        np.testing.assert_array_equal(net.weight_ih, plain.weight_ih)
        np.testing.assert_array_equal(net.weight_hh, plain.weight_hh)
        diff = f64(net.bias) - f64(plain.bias)
        expected = np.zeros(4 * hidden)
        expected[hidden:2 * hidden] = fb
        np.testing.assert_allclose(diff, expected, rtol=0,
                                   atol=8 * np.finfo(NP_DTYPE[dtype]).eps * (1 + abs(fb)))
    # forget_bias moves the forget gate: mean f of a forward near sigmoid(fb)
    net = vgkern.LSTM(input_size, hidden, dtype=dtype, seed=2, forget_bias=3.0)
    x = np.zeros((2, 4, input_size), NP_DTYPE[dtype])
    net.forward(x)
    rep = net.backward(np.ones((2, 4, hidden), NP_DTYPE[dtype]))
    assert np.all(rep.forget_gate_mean > 0.9)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_parameter_views_and_writes_take_effect(kind, dtype):
    input_size, hidden, steps, batch = 5, 6, 4, 3
    net = make_net(kind, input_size, hidden, dtype, seed=1)
    gates = 4 if is_lstm(kind) else 1
    n = gates * hidden * (input_size + hidden + 1)
    assert net.params.shape == (n,) and net.params.dtype == NP_DTYPE[dtype]
    assert net.grads.shape == (n,) and net.grads.dtype == NP_DTYPE[dtype]
    for name in ("weight_ih", "weight_hh", "bias"):
        assert np.shares_memory(getattr(net, name), net.params), name
        assert getattr(net, name).flags.writeable, name
    d = seq_data(steps, batch, input_size, hidden, dtype, 2)
    inp = mode_inputs("all_grads_h0c0", kind, d)
    _, rep = run_vgkern(net, kind, d["x"], inp)
    for name in ("weight_ih_grad", "weight_hh_grad", "bias_grad"):
        assert np.shares_memory(getattr(net, name), net.grads), name
    total = np.linalg.norm(f64(net.grads))
    reported = math.sqrt(rep.weight_ih_grad_norm ** 2 + rep.weight_hh_grad_norm ** 2
                         + rep.bias_grad_norm ** 2)
    assert abs(total - reported) <= 1e-5 * total, (total, reported)

    # in-place writes through the views take effect
    rng = np.random.default_rng(4)
    new = [rng.uniform(-0.5, 0.5, a.shape).astype(NP_DTYPE[dtype]) for a in net_params(net)]
    net.weight_ih[...] = new[0]
    net.weight_hh[...] = new[1]
    net.bias[...] = new[2]
    for a, b in zip(net_params(net), new):
        np.testing.assert_array_equal(a, b)
    exp = oracle(kind, new, d["x"], inp, oracle_dtype(NP_DTYPE[dtype]))
    outs, rep = run_vgkern(net, kind, d["x"], inp)
    rtol = rtol_for(dtype, steps)
    check_forward(outs, exp, kind, dtype, (steps, batch, hidden), rtol, "after writes: ")
    check_sequence(net, rep, exp, kind, dtype, rtol=rtol, z_rtol=z_rtol_for(dtype, steps),
                   what="after writes: ")
    # writes through params (an SGD step) take effect too
    net.params[...] -= NP_DTYPE[dtype](0.1) * net.grads
    moved = net_params(net)
    assert not np.array_equal(moved[0], new[0])
    exp = oracle(kind, moved, d["x"], inp, oracle_dtype(NP_DTYPE[dtype]))
    outs, _ = run_vgkern(net, kind, d["x"], inp)
    check_forward(outs, exp, kind, dtype, (steps, batch, hidden), rtol, "after SGD: ")
    # an all-zero net gives exactly zero states
    net.params[...] = 0
    outs, _ = run_vgkern(net, kind, d["x"], dict(inp, h0=None, c0=None))
    np.testing.assert_array_equal(outs["h_seq"], np.zeros_like(outs["h_seq"]))


# --------------------------------------------------------------------------------------------
# The claim: vanishing gradients through time, tanh RNN vs LSTM(forget_bias=1)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("seed", [0, 3])
def test_rnn_gradients_vanish_through_time_lstm_forget_bias_keeps_them(dtype, seed, device):
    """T = 100, I = H = 32, B = 16, default (PyTorch-style) init, loss "mse" on the last state.

    log10(x_grad_norm[0] / x_grad_norm[-1]) on exactly these data (seeds 0 / 3, float32 and
    float64 alike; the float64 oracle agrees): tanh RNN -33.9 / -31.2; LSTM forget_bias=1:
    -8.9 / -9.0; LSTM forget_bias=0: -21.4 / -21.2.
    Asserted: RNN < -25, LSTM(1) > -11, LSTM(1) - RNN > 15 orders of magnitude, and the forget
    bias alone is worth > 8 orders (LSTM(1) - LSTM(0))."""
    steps, batch, size = 100, 16, 32
    rng = np.random.default_rng(1000 + seed)
    x = rng.standard_normal((steps, batch, size)).astype(NP_DTYPE[dtype])
    target = rng.standard_normal((batch, size)).astype(NP_DTYPE[dtype])
    rnn = vgkern.RNN(size, size, nonlinearity="tanh", dtype=dtype, seed=seed, device=device)
    lstm1 = vgkern.LSTM(size, size, dtype=dtype, seed=seed, forget_bias=1.0, device=device)
    lstm0 = vgkern.LSTM(size, size, dtype=dtype, seed=seed, forget_bias=0.0, device=device)
    k = 1 / math.sqrt(size)
    for net in (rnn, lstm1, lstm0):
        assert np.abs(f64(net.weight_hh)).max() <= k
    reps = {name: net.step(x, target, loss="mse")
            for name, net in (("rnn", rnn), ("lstm1", lstm1), ("lstm0", lstm0))}
    ratio = {name: float(rep.log10_x_grad_norm[0] - rep.log10_x_grad_norm[-1])
             for name, rep in reps.items()}
    msg = f"log10 x_grad_norm[0]/x_grad_norm[-1]: {ratio}"
    assert ratio["rnn"] < -25, msg
    assert -11 < ratio["lstm1"] < -5, msg
    assert ratio["lstm1"] - ratio["rnn"] > 15, msg
    assert ratio["lstm1"] - ratio["lstm0"] > 8, msg
    assert np.all(np.isfinite(reps["lstm1"].log10_x_grad_norm))
    fgm = reps["lstm1"].forget_gate_mean
    assert np.all(np.abs(fgm - 0.72) < 0.05), fgm
    assert np.all(np.abs(reps["lstm0"].forget_gate_mean - 0.5) < 0.05)
    # the curves decay (roughly) monotonically from the loss backwards
    for name in ("rnn", "lstm1"):
        curve = reps[name].log10_x_grad_norm
        assert curve[0] < curve[50] < curve[-1], (name, curve)
    # and they are the true curves (float64: against the oracle, per step)
    if dtype == "float64":
        for name, net in (("rnn", rnn), ("lstm1", lstm1)):
            params = net_params(net)
            if name == "rnn":
                ref = RR.rnn_sequence(x, *params, target=target, loss="mse")
            else:
                ref = RR.lstm_sequence(x, *params, target=target, loss="mse")
            assert_rel_each(reps[name].x_grad_norm, ref.x_grad_norm, 1e-10, f"{name} x_grad_norm")
            assert_rel_each(reps[name].h_grad_norm, ref.h_grad_norm, 1e-10, f"{name} h_grad_norm")


# --------------------------------------------------------------------------------------------
# SequenceReport API, stats switch, determinism
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lstm", "rnn_tanh"])
def test_report_as_dict_and_to_pandas(kind):
    steps, (batch, input_size, hidden) = 5, SEQ_SHAPES[5]
    net = make_net(kind, input_size, hidden, "float64", seed=21)
    d = seq_data(steps, batch, input_size, hidden, "float64", 22)
    rep = net.step(d["x"], d["target_seq"], loss="mse_sequence")
    assert math.isfinite(rep.loss) and rep.loss > 0
    dct = rep.as_dict()
    for field in RR.STEP_FIELDS:
        assert field in dct, field
        np.testing.assert_array_equal(dct[field], getattr(rep, field), err_msg=field)
    for field in RR.SCALAR_FIELDS:
        assert field in dct, field
        np.testing.assert_array_equal(dct[field], getattr(rep, field), err_msg=field)
    df = rep.to_pandas()
    assert len(df) == steps
    np.testing.assert_array_equal(df["step"].to_numpy(), np.arange(steps))
    for field in RR.STEP_FIELDS:
        np.testing.assert_array_equal(df[field].to_numpy(dtype=np.float64), getattr(rep, field),
                                      err_msg=field)
    for field in RR.SCALAR_FIELDS:
        np.testing.assert_array_equal(df[field].to_numpy(dtype=np.float64),
                                      np.full(steps, getattr(rep, field)), err_msg=field)
    if "loss" in df:
        np.testing.assert_array_equal(df["loss"].to_numpy(dtype=np.float64),
                                      np.full(steps, rep.loss))


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_stats_false_same_gradients_nan_statistics(kind, dtype, device):
    steps, (batch, input_size, hidden) = 5, SEQ_SHAPES[5]
    on = make_net(kind, input_size, hidden, dtype, seed=8, device=device)
    off = make_net(kind, input_size, hidden, dtype, seed=8, stats=False, device=device)
    assert on.stats is True and off.stats is False
    d = seq_data(steps, batch, input_size, hidden, dtype, 9)
    rep_on = on.step(d["x"], d["target_seq"], loss="mse_sequence")
    rep_off = off.step(d["x"], d["target_seq"], loss="mse_sequence")
    for a in grad_attrs(kind):
        assert np.asarray(getattr(on, a)).tobytes() == np.asarray(getattr(off, a)).tobytes(), a
    assert rep_on.loss == rep_off.loss
    for field in RR.STEP_FIELDS:
        assert np.all(np.isnan(getattr(rep_off, field))), field
    for field in RR.SCALAR_FIELDS:
        assert math.isnan(getattr(rep_off, field)), field
    off.stats = True
    rep = off.step(d["x"], d["target_seq"], loss="mse_sequence")
    for field in RR.STEP_FIELDS:
        np.testing.assert_array_equal(getattr(rep, field), getattr(rep_on, field), err_msg=field)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_repeatable_bitwise_and_non_contiguous_x(kind, dtype, device):
    steps, (batch, input_size, hidden) = 40, SEQ_SHAPES[40]
    net = make_net(kind, input_size, hidden, dtype, seed=30, device=device)
    d = seq_data(steps, batch, input_size, hidden, dtype, 31)

    def snapshot(rep):
        return ([np.asarray(getattr(net, a)).tobytes() for a in grad_attrs(kind)]
                + [np.asarray(getattr(rep, f)).tobytes() for f in RR.STEP_FIELDS]
                + [repr(getattr(rep, f)) for f in RR.SCALAR_FIELDS] + [repr(rep.loss)])

    first = snapshot(net.step(d["x"], d["target_last"], loss="mse"))
    assert snapshot(net.step(d["x"], d["target_last"], loss="mse")) == first
    # a (B, T, I) array viewed as (T, B, I): not C-contiguous, same result
    x_bti = np.ascontiguousarray(np.swapaxes(d["x"], 0, 1))
    view = np.swapaxes(x_bti, 0, 1)
    assert not view.flags.c_contiguous
    assert snapshot(net.step(view, d["target_last"], loss="mse")) == first
    h_a = np.array(net.forward(d["x"])[0])
    h_b = np.array(net.forward(view)[0])
    np.testing.assert_array_equal(h_a, h_b)
    # another net instance with the same seed gives the same bits
    twin = make_net(kind, input_size, hidden, dtype, seed=30, device=device)
    rep = twin.step(d["x"], d["target_last"], loss="mse")
    assert [np.asarray(getattr(rep, f)).tobytes() for f in RR.STEP_FIELDS] == \
        first[len(grad_attrs(kind)):len(grad_attrs(kind)) + len(RR.STEP_FIELDS)]


def test_forward_outputs_are_not_overwritten_by_the_next_forward():
    net = vgkern.LSTM(3, 4, dtype="float64", seed=1)
    rng = np.random.default_rng(2)
    x1 = rng.standard_normal((5, 2, 3))
    h1, (hT1, cT1) = net.forward(x1)
    saved = [np.array(a) for a in (h1, hT1, cT1)]
    net.forward(rng.standard_normal((5, 2, 3)))
    for a, s in zip((h1, hT1, cT1), saved):
        np.testing.assert_array_equal(a, s)


# --------------------------------------------------------------------------------------------
# LSTM gate saturation threshold; statistics of a call depend on that call only
# --------------------------------------------------------------------------------------------

# |pre| where a gate's derivative is 1% of its largest: sigmoid'(z) = 1 / (4 cosh^2(z / 2)) is
# 0.0025 at 2 acosh(10) = 5.987, tanh'(z) = 1 / cosh^2(z) is 0.01 at acosh(10) = 2.993.
SIGMOID_EDGE = 2 * math.acosh(10.0)
TANH_EDGE = math.acosh(10.0)


def saturated_by_definition(pre, edge_kind):
    """act'(pre) < 1% of act's largest derivative, in float64 from the definition."""
    pre = np.asarray(pre, dtype=np.float64)
    if edge_kind == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-pre))
        return s * (1.0 - s) < 0.01 * 0.25
    return 1.0 - np.tanh(pre) ** 2 < 0.01


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_lstm_gate_saturation_threshold_is_one_percent_of_the_largest_derivative(dtype, device):
    """Pre-activations set through the bias alone (W_ih = W_hh = 0): each gate gets values
    0.05 % inside and outside its threshold in |pre|, on both signs, and far from it.
    saturated_fraction must count exactly the gate units the definition counts (i, f, o:
    sigmoid' < 0.0025; g: tanh' < 0.01): moving a derivative threshold by 1 % of itself (|pre|
    by about 0.2 %), or using one gate's threshold for another, changes the count."""
    factors = [0.9995, 1.0005, -0.9995, -1.0005, 0.5, 3.0, 0.0, -2.0]  # times the gate's edge
    hidden = len(factors)
    edges = {"i": SIGMOID_EDGE, "f": SIGMOID_EDGE, "g": TANH_EDGE, "o": SIGMOID_EDGE}
    # the g gate also gets the sigmoid edge's values and the sigmoid gates the tanh edge's,
    # in a second net: a swapped threshold shows in one of the two
    for swap in (False, True):
        bias = []
        for gate, edge in edges.items():
            if swap:
                edge = SIGMOID_EDGE if gate == "g" else TANH_EDGE
            bias.append(np.array(factors) * edge)
        bias = np.concatenate(bias).astype(NP_DTYPE[dtype])
        expected = np.concatenate([
            saturated_by_definition(bias[k * hidden:(k + 1) * hidden],
                                    "tanh" if gate == "g" else "sigmoid")
            for k, gate in enumerate(edges)])
        if not swap:  # the values really straddle the thresholds
            assert expected.reshape(4, hidden)[:, :4].tolist() == [[False, True] * 2] * 4
        net = vgkern.LSTM(3, hidden, dtype=dtype, seed=0, device=device)
        net.weight_ih = np.zeros_like(net.weight_ih)
        net.weight_hh = np.zeros_like(net.weight_hh)
        net.bias = bias
        steps, batch = 2, 3
        x = np.random.default_rng(1).standard_normal((steps, batch, 3)).astype(NP_DTYPE[dtype])
        rep = net.step(x, np.zeros((batch, hidden), NP_DTYPE[dtype]), loss="mse")
        np.testing.assert_array_equal(rep.saturated_fraction, np.full(steps, expected.mean()),
                                      err_msg=f"swap={swap}: expected {expected.sum()} of "
                                              f"{expected.size} gate units per row")


def seq_report_and_grads(net, rep):
    return dict(rep.as_dict(), grads=np.array(net.grads, copy=True))


@pytest.mark.parametrize("kind", KINDS)
def test_reports_of_a_call_sequence_equal_fresh_nets(kind, device):
    """One net run through 12 calls (other sequence lengths and batch sizes, so that the
    per-block buffers of the time loop change shape; saturating and mild inputs; both losses;
    statistics switched off and on) reports, bit for bit, what a fresh net with the same
    parameters reports for each call alone."""
    input_size, hidden, dtype = 5, 6, "float64"
    rng = np.random.default_rng(11)
    net = make_net(kind, input_size, hidden, dtype, seed=4, device=device)
    shapes = [(3, 4), (1, 1), (6, 7), (2, 2), (5, 16), (4, 3), (1, 2), (7, 5), (2, 9), (3, 1),
              (6, 4), (2, 6)]
    for i, (steps, batch) in enumerate(shapes):
        x = (rng.choice([0.5, 5.0]) * rng.standard_normal((steps, batch, input_size)))
        loss = "mse" if i % 2 else "mse_sequence"
        target = rng.standard_normal((batch, hidden) if loss == "mse" else (steps, batch, hidden))
        stats = i % 5 != 3
        net.stats = stats
        got = seq_report_and_grads(net, net.step(x, target, loss=loss))
        alone = make_net(kind, input_size, hidden, dtype, seed=4, stats=stats, device=device)
        want = seq_report_and_grads(alone, alone.step(x, target, loss=loss))
        for name in want:
            np.testing.assert_array_equal(got[name], want[name],
                                          err_msg=f"call {i} (T={steps}, B={batch}): {name}")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

def all_of(*fragments):
    return "(?s)" + "".join(f"(?=.*(?:{f}))" for f in fragments)


def shape_re(*dims):
    return r"\D{1,3}".join(str(d) for d in dims) + r"(?!\d)"


def lit(text):
    return re.escape(text)


def other(dtype):
    return "float64" if dtype == "float32" else "float32"


ERR_B, ERR_I, ERR_H, ERR_T = 3, 5, 4, 6


@pytest.fixture(params=DTYPE_NAMES)
def dtype(request):
    return request.param


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


def err_net(kind, dtype):
    return make_net(kind, ERR_I, ERR_H, dtype, seed=0)


def err_x(dtype, steps=ERR_T, batch=ERR_B, input_size=ERR_I):
    return np.random.default_rng(0).standard_normal((steps, batch, input_size)).astype(dtype)


def forward(net, kind, x, h0=None, c0=None):
    if is_lstm(kind):
        return net.forward(x, h0=h0, c0=c0)
    assert c0 is None
    return net.forward(x, h0=h0)


def test_forward_wrong_rank(kind, dtype):
    net = err_net(kind, dtype)
    x = err_x(dtype)
    with pytest.raises(ValueError, match=all_of("x_seq", r"\b3\b|\(T, ?B, ?I\)|T, B, I")):
        forward(net, kind, x[0])
    with pytest.raises(ValueError, match="x_seq"):
        forward(net, kind, x[None])
    with pytest.raises(ValueError, match="x_seq"):
        forward(net, kind, x.ravel())


def test_forward_wrong_input_size(kind, dtype):
    net = err_net(kind, dtype)
    with pytest.raises(ValueError, match=all_of("x_seq", r"\b5\b", r"\b7\b")):
        forward(net, kind, err_x(dtype, input_size=7))


def test_forward_wrong_dtype(kind, dtype):
    net = err_net(kind, dtype)
    x = err_x(dtype)
    with pytest.raises(TypeError, match=all_of("x_seq", dtype, other(dtype))):
        forward(net, kind, x.astype(other(dtype)))
    with pytest.raises(TypeError, match=all_of("x_seq", "int32")):
        forward(net, kind, x.astype(np.int32))
    with pytest.raises(TypeError, match="x_seq"):
        forward(net, kind, x.tolist())
    forward(net, kind, x)  # still works


def test_zero_steps(kind, dtype):
    net = err_net(kind, dtype)
    x = err_x(dtype, steps=0)
    with pytest.raises(ValueError, match=all_of("x_seq|T|steps", r"\b0\b")):
        forward(net, kind, x)
    with pytest.raises(ValueError, match=r"\b0\b"):
        net.step(x, np.zeros((ERR_B, ERR_H), dtype), loss="mse")
    with pytest.raises(ValueError, match=r"\b0\b"):
        net.step(x, np.zeros((0, ERR_B, ERR_H), dtype), loss="mse_sequence")


def test_h0_c0_wrong_shape_or_dtype(kind, dtype):
    net = err_net(kind, dtype)
    x = err_x(dtype)
    good = np.zeros((ERR_B, ERR_H), dtype)
    with pytest.raises(ValueError, match=all_of("h0", shape_re(ERR_B + 1, ERR_H))):
        forward(net, kind, x, h0=np.zeros((ERR_B + 1, ERR_H), dtype))
    with pytest.raises(ValueError, match=all_of("h0", shape_re(ERR_B, ERR_H + 2))):
        forward(net, kind, x, h0=np.zeros((ERR_B, ERR_H + 2), dtype))
    with pytest.raises(ValueError, match="h0"):  # torch's (num_layers, B, H) layout
        forward(net, kind, x, h0=np.zeros((1, ERR_B, ERR_H), dtype))
    with pytest.raises(TypeError, match=all_of("h0", dtype, other(dtype))):
        forward(net, kind, x, h0=good.astype(other(dtype)))
    if is_lstm(kind):
        with pytest.raises(ValueError, match=all_of("c0", shape_re(ERR_B + 1, ERR_H))):
            forward(net, kind, x, h0=good, c0=np.zeros((ERR_B + 1, ERR_H), dtype))
        with pytest.raises(ValueError, match=all_of("c0", shape_re(ERR_B, ERR_H - 1))):
            forward(net, kind, x, c0=np.zeros((ERR_B, ERR_H - 1), dtype))
        with pytest.raises(TypeError, match=all_of("c0", dtype, other(dtype))):
            forward(net, kind, x, h0=good, c0=good.astype(other(dtype)))
        # mismatched h0 / c0 batch sizes (both differ from x's batch in a different way)
        with pytest.raises(ValueError, match="h0|c0"):
            forward(net, kind, x, h0=np.zeros((ERR_B + 1, ERR_H), dtype),
                    c0=np.zeros((ERR_B + 2, ERR_H), dtype))
    # a valid call still works afterwards
    forward(net, kind, x, h0=good, c0=good if is_lstm(kind) else None)


def test_backward_before_forward(kind, dtype):
    net = err_net(kind, dtype)
    with pytest.raises(RuntimeError, match="forward"):
        net.backward(np.zeros((ERR_T, ERR_B, ERR_H), dtype))


def test_backward_shape_mismatch_with_forward(kind, dtype):
    net = err_net(kind, dtype)
    forward(net, kind, err_x(dtype))
    for bad in ((ERR_T - 1, ERR_B, ERR_H), (ERR_T, ERR_B + 1, ERR_H), (ERR_T, ERR_B, ERR_H + 1),
                (ERR_B, ERR_H), (ERR_T * ERR_B * ERR_H,)):
        with pytest.raises((RuntimeError, ValueError), match="grad_h_seq"):
            net.backward(np.zeros(bad, dtype))
    with pytest.raises(TypeError, match=all_of("grad_h_seq", dtype, other(dtype))):
        net.backward(np.zeros((ERR_T, ERR_B, ERR_H), other(dtype)))
    with pytest.raises((RuntimeError, ValueError), match="grad_hT"):
        net.backward(None, grad_hT=np.zeros((ERR_B + 1, ERR_H), dtype))
    with pytest.raises(TypeError, match="grad_hT"):
        net.backward(None, grad_hT=np.zeros((ERR_B, ERR_H), other(dtype)))
    if is_lstm(kind):
        with pytest.raises((RuntimeError, ValueError), match="grad_cT"):
            net.backward(None, grad_cT=np.zeros((ERR_B, ERR_H + 1), dtype))
        with pytest.raises(TypeError, match="grad_cT"):
            net.backward(None, grad_cT=np.zeros((ERR_B, ERR_H), other(dtype)))
    # a matching call still works
    rep = net.backward(np.ones((ERR_T, ERR_B, ERR_H), dtype))
    assert np.all(np.isfinite(rep.x_grad_norm)) and rep.num_steps == ERR_T


def test_step_bad_target_and_loss(kind, dtype):
    net = err_net(kind, dtype)
    x = err_x(dtype)
    last = np.zeros((ERR_B, ERR_H), dtype)
    seq = np.zeros((ERR_T, ERR_B, ERR_H), dtype)
    with pytest.raises(ValueError, match=all_of("loss", "mse_typo")):
        net.step(x, last, loss="mse_typo")
    with pytest.raises(ValueError, match=all_of("loss", "cross_entropy")):
        net.step(x, last, loss="cross_entropy")
    with pytest.raises(ValueError, match="target"):
        net.step(x, seq, loss="mse")
    with pytest.raises(ValueError, match="target"):
        net.step(x, last, loss="mse_sequence")
    with pytest.raises(ValueError, match=all_of("target", shape_re(ERR_T - 1, ERR_B, ERR_H))):
        net.step(x, seq[1:], loss="mse_sequence")
    with pytest.raises(ValueError, match=all_of("target", shape_re(ERR_B, ERR_H + 1))):
        net.step(x, np.zeros((ERR_B, ERR_H + 1), dtype), loss="mse")
    with pytest.raises(TypeError, match=all_of("target", dtype, other(dtype))):
        net.step(x, last.astype(other(dtype)), loss="mse")
    with pytest.raises(TypeError, match="x_seq"):
        net.step(x.astype(other(dtype)), last, loss="mse")
    assert net.step(x, last, loss="mse").num_steps == ERR_T


@pytest.mark.parametrize("arg,bad,valid", [("nonlinearity", "sigmoid", "relu"),
                                           ("dtype", "float16", "float32")])
def test_rnn_constructor_unknown_names(arg, bad, valid):
    with pytest.raises(ValueError, match=all_of(lit(arg), lit(bad), lit(valid))):
        vgkern.RNN(3, 4, **{arg: bad})


@pytest.mark.parametrize("cls", ["LSTM", "RNN"])
def test_constructor_sizes_must_be_positive(cls):
    with pytest.raises(ValueError, match="input_size"):
        getattr(vgkern, cls)(0, 4)
    with pytest.raises(ValueError, match="hidden_size"):
        getattr(vgkern, cls)(3, 0)


def test_lstm_constructor_unknown_dtype():
    with pytest.raises(ValueError, match=all_of("dtype", "float16")):
        vgkern.LSTM(3, 4, dtype="float16")


def test_ops_errors(dtype):
    d = cell_data("lstm", (2, 3, 4), dtype, seed=0)
    o = other(dtype)
    x, hp, cp, wi, wh, b = d["x"], d["h_prev"], d["c_prev"], d["w_ih"], d["w_hh"], d["b"]
    ops.lstm_cell_forward(x, hp, cp, wi, wh, b)
    with pytest.raises(TypeError, match=all_of(dtype, o)):
        ops.lstm_cell_forward(x.astype(o), hp, cp, wi, wh, b)
    with pytest.raises(TypeError, match=all_of("c_prev", dtype, o)):
        ops.lstm_cell_forward(x, hp, cp.astype(o), wi, wh, b)
    with pytest.raises(ValueError, match=all_of("weight_ih", shape_re(16, 3))):
        ops.lstm_cell_forward(x, hp, cp, wi[:12], wh, b)
    with pytest.raises(ValueError, match="weight_hh"):
        ops.lstm_cell_forward(x, hp, cp, wi, wh[:, :3], b)
    with pytest.raises(ValueError, match="bias"):
        ops.lstm_cell_forward(x, hp, cp, wi, wh, b[:4])
    with pytest.raises(ValueError, match=r"h_prev|\bx\b"):
        ops.lstm_cell_forward(x, hp[:1], cp, wi, wh, b)
    with pytest.raises(ValueError, match=r"\bx\b"):
        ops.lstm_cell_forward(x[None], hp, cp, wi, wh, b)
    h, c, gates = ops.lstm_cell_forward(x, hp, cp, wi, wh, b)
    with pytest.raises(ValueError, match="gates"):
        ops.lstm_cell_backward(d["dh"], d["dc"], gates[:, :12], c, cp, x, hp, wi, wh)
    with pytest.raises(TypeError, match=all_of(dtype, o)):
        ops.lstm_cell_backward(d["dh"].astype(o), d["dc"], gates, c, cp, x, hp, wi, wh)
    with pytest.raises(TypeError, match=all_of("weight_hh", dtype, o)):
        ops.lstm_cell_backward(d["dh"], d["dc"], gates, c, cp, x, hp, wi, wh.astype(o))
    with pytest.raises(ValueError, match=r"\bdc\b"):
        ops.lstm_cell_backward(d["dh"], d["dc"][:, :3], gates, c, cp, x, hp, wi, wh)
    r = cell_data("rnn_tanh", (2, 3, 4), dtype, seed=0)
    ops.rnn_cell_forward(r["x"], r["h_prev"], r["w_ih"], r["w_hh"], r["b"])
    with pytest.raises(ValueError, match=all_of("nonlinearity", "sigmoid")):
        ops.rnn_cell_forward(r["x"], r["h_prev"], r["w_ih"], r["w_hh"], r["b"],
                             nonlinearity="sigmoid")
    with pytest.raises(TypeError, match="weight_hh"):
        ops.rnn_cell_forward(r["x"], r["h_prev"], r["w_ih"], r["w_hh"].astype(o), r["b"])
    with pytest.raises(ValueError, match="weight_ih"):
        ops.rnn_cell_forward(r["x"], r["h_prev"], r["w_ih"].T.copy(), r["w_hh"], r["b"])
    h = ops.rnn_cell_forward(r["x"], r["h_prev"], r["w_ih"], r["w_hh"], r["b"])
    with pytest.raises(ValueError, match=all_of("nonlinearity", "elu")):
        ops.rnn_cell_backward(r["dh"], h, r["x"], r["h_prev"], r["w_ih"], r["w_hh"],
                              nonlinearity="elu")
    with pytest.raises(ValueError, match=r"\bh\b|\bdh\b"):
        ops.rnn_cell_backward(r["dh"], h[:1], r["x"], r["h_prev"], r["w_ih"], r["w_hh"])
    with pytest.raises(TypeError, match=all_of(r"\bh\b", dtype, o)):
        ops.rnn_cell_backward(r["dh"], h.astype(o), r["x"], r["h_prev"], r["w_ih"], r["w_hh"])
