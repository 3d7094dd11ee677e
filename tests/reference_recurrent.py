"""NumPy oracle for vgkern's recurrent nets (issue 4): LSTM and Elman RNN cells, whole sequences
with backpropagation through time and every SequenceReport field. Written for clarity, not speed.

Everything computes in the dtype of its inputs, like tests/reference.py: float64 arrays give the
float64 oracle, ``np.longdouble`` arrays a higher-precision oracle (to judge vgkern's float64
results) and float32 arrays "a plain NumPy implementation in float32".

Conventions (the vgkern API contract, which follows PyTorch):

* LSTM, gate order i, f, g, o:  pre = x W_ih^T + h_prev W_hh^T + b  (b = bias_ih + bias_hh),
  i = sigmoid(pre[:, 0:H]), f = sigmoid(pre[:, H:2H]), g = tanh(pre[:, 2H:3H]),
  o = sigmoid(pre[:, 3H:4H]); c = f c_prev + i g; h = o tanh(c). ``gates`` = [i, f, g, o] (B, 4H).
* RNN: h = act(x W_ih^T + h_prev W_hh^T + b), act = tanh or relu.
* Sequences are (T, B, features). dL/dh_t in the report is the TOTAL gradient reaching h_t (the
  direct one, grad_h_seq[t], plus what comes back through h_{t+1}); dL/dc_t likewise (through
  c_{t+1} and through h_t = o_t tanh(c_t)).
* Losses: "mse" on the last state, 0.5 * sum((h_T - target)^2) / B (target (B, H));
  "mse_sequence" on every step, 0.5 / B * sum_{t,b,j} (h_t - target_t)^2 (target (T, B, H)).
"""

from __future__ import annotations

import numpy as np

from reference import (Reference, frobenius_norm, relu, safe_log10, sigmoid, sigmoid_derivative,
                       tanh, tanh_derivative)

NONLINEARITIES = ("tanh", "relu")
SEQUENCE_LOSSES = ("mse", "mse_sequence")

# SequenceReport: per-step float64 arrays of length T and scalars.
STEP_NORM_FIELDS = ("h_grad_norm", "c_grad_norm", "x_grad_norm")
STEP_LOG10_FIELDS = tuple("log10_" + f for f in STEP_NORM_FIELDS)
STEP_STAT_FIELDS = ("forget_gate_mean", "saturated_fraction")
STEP_FIELDS = STEP_NORM_FIELDS + STEP_LOG10_FIELDS + STEP_STAT_FIELDS
SCALAR_NORM_FIELDS = ("weight_ih_grad_norm", "weight_hh_grad_norm", "bias_grad_norm")
SCALAR_LOG10_FIELDS = tuple("log10_" + f for f in SCALAR_NORM_FIELDS)
SCALAR_FIELDS = SCALAR_NORM_FIELDS + SCALAR_LOG10_FIELDS

# saturated = derivative below 1% of its maximum
SIGMOID_SATURATED = 0.01 * 0.25
TANH_SATURATED = 0.01 * 1.0


def _check_nonlinearity(name):
    if name not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {name!r}")


# --------------------------------------------------------------------------------------------
# LSTM cell
# --------------------------------------------------------------------------------------------

def lstm_preactivation(x, h_prev, weight_ih, weight_hh, bias):
    """pre = x W_ih^T + h_prev W_hh^T + b, (B, 4H)."""
    return (np.asarray(x) @ np.asarray(weight_ih).T + np.asarray(h_prev) @ np.asarray(weight_hh).T
            + np.asarray(bias))


def split_gates(a):
    """(i, f, g, o) slices of a (B, 4H) array."""
    a = np.asarray(a)
    hidden = a.shape[-1] // 4
    return tuple(a[..., k * hidden:(k + 1) * hidden] for k in range(4))


def lstm_cell_forward(x, h_prev, c_prev, weight_ih, weight_hh, bias):
    """(h, c, gates) with gates = [i, f, g, o] activated (B, 4H)."""
    pre = lstm_preactivation(x, h_prev, weight_ih, weight_hh, bias)
    pi, pf, pg, po = split_gates(pre)
    i, f, g, o = sigmoid(pi), sigmoid(pf), tanh(pg), sigmoid(po)
    c = f * np.asarray(c_prev) + i * g
    h = o * tanh(c)
    return h, c, np.concatenate([i, f, g, o], axis=1)


def lstm_cell_backward(dh, dc, gates, c, c_prev, x, h_prev, weight_ih, weight_hh):
    """(dx, dh_prev, dc_prev, dweight_ih, dweight_hh, dbias) of one LSTM cell.

    dh, dc: dL/dh and the gradient arriving at c from outside the cell (the next step's cell
    state); the total gradient at c is dc + dh * o * tanh'(c). The gate derivatives are taken
    from the activated gates (s (1 - s) for the sigmoids, 1 - g^2 for tanh), like the op."""
    dh, dc = np.asarray(dh), np.asarray(dc)
    i, f, g, o = split_gates(gates)
    dc_total = total_cell_grad(dh, dc, o, c)
    dpre = lstm_preact_grad(dh, dc_total, gates, c, c_prev)
    dx = dpre @ np.asarray(weight_ih)
    dh_prev = dpre @ np.asarray(weight_hh)
    dc_prev = dc_total * f
    dweight_ih = dpre.T @ np.asarray(x)
    dweight_hh = dpre.T @ np.asarray(h_prev)
    dbias = dpre.sum(axis=0)
    return dx, dh_prev, dc_prev, dweight_ih, dweight_hh, dbias


def total_cell_grad(dh, dc, o, c):
    """dL/dc (total) = dc + dh * o * tanh'(c) (tanh' computed from c for full accuracy)."""
    return np.asarray(dc) + np.asarray(dh) * np.asarray(o) * tanh_derivative(c)


def lstm_preact_grad(dh, dc_total, gates, c, c_prev):
    """dL/dpre (B, 4H) from dL/dh, the total dL/dc and the activated gates."""
    i, f, g, o = split_gates(gates)
    dh, dc_total = np.asarray(dh), np.asarray(dc_total)
    di = dc_total * g
    df = dc_total * np.asarray(c_prev)
    dg = dc_total * i
    do = dh * tanh(c)
    return np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g),
                           do * o * (1 - o)], axis=1)


# --------------------------------------------------------------------------------------------
# RNN cell
# --------------------------------------------------------------------------------------------

def rnn_act(z, nonlinearity):
    _check_nonlinearity(nonlinearity)
    return tanh(z) if nonlinearity == "tanh" else relu(z)


def rnn_derivative_from_output(h, nonlinearity):
    """act'(z) from h = act(z): 1 - h^2 (tanh), (h > 0) (relu)."""
    _check_nonlinearity(nonlinearity)
    h = np.asarray(h)
    if nonlinearity == "tanh":
        return 1 - h * h
    return (h > 0).astype(h.dtype)


def rnn_cell_forward(x, h_prev, weight_ih, weight_hh, bias, nonlinearity="tanh"):
    z = (np.asarray(x) @ np.asarray(weight_ih).T + np.asarray(h_prev) @ np.asarray(weight_hh).T
         + np.asarray(bias))
    return rnn_act(z, nonlinearity)


def rnn_cell_backward(dh, h, x, h_prev, weight_ih, weight_hh, nonlinearity="tanh"):
    """(dx, dh_prev, dweight_ih, dweight_hh, dbias); act' from the output h."""
    dz = np.asarray(dh) * rnn_derivative_from_output(h, nonlinearity)
    return (dz @ np.asarray(weight_ih), dz @ np.asarray(weight_hh), dz.T @ np.asarray(x),
            dz.T @ np.asarray(h_prev), dz.sum(axis=0))


# --------------------------------------------------------------------------------------------
# Initialisation (PyTorch style)
# --------------------------------------------------------------------------------------------

def init_params(kind, input_size, hidden_size, seed, forget_bias=0.0):
    """Float64 (weight_ih, weight_hh, bias_ih, bias_hh, bias) as the contract draws them:
    U(-k, k), k = 1/sqrt(H), from numpy.random.default_rng(seed) with ``rng.uniform``, in the
    order weight_ih, weight_hh, bias_ih, bias_hh; bias = bias_ih + bias_hh, and for the LSTM
    forget_bias added to bias[H:2H]."""
    gates = 4 if kind == "lstm" else 1
    k = 1.0 / np.sqrt(hidden_size)
    rng = np.random.default_rng(seed)
    w_ih = rng.uniform(-k, k, (gates * hidden_size, input_size))
    w_hh = rng.uniform(-k, k, (gates * hidden_size, hidden_size))
    b_ih = rng.uniform(-k, k, gates * hidden_size)
    b_hh = rng.uniform(-k, k, gates * hidden_size)
    bias = b_ih + b_hh
    if kind == "lstm":
        bias[hidden_size:2 * hidden_size] += forget_bias
    return w_ih, w_hh, b_ih, b_hh, bias


# --------------------------------------------------------------------------------------------
# Losses on sequences
# --------------------------------------------------------------------------------------------

def sequence_loss(h_seq, target, loss):
    """(loss, grad_h_seq, grad_hT) of a loss on the hidden states (grad_hT is None here: the
    last-state loss goes into grad_h_seq[-1], which is the same thing)."""
    h_seq = np.asarray(h_seq)
    target = np.asarray(target)
    batch = h_seq.shape[1]
    grad = np.zeros_like(h_seq)
    if loss == "mse":
        diff = h_seq[-1] - target
        grad[-1] = diff / batch
        return 0.5 * np.sum(diff * diff) / batch, grad
    if loss == "mse_sequence":
        diff = h_seq - target
        return 0.5 * np.sum(diff * diff) / batch, diff / batch
    raise ValueError(f"unknown loss {loss!r}")


# --------------------------------------------------------------------------------------------
# Whole sequences
# --------------------------------------------------------------------------------------------

def _as(a, dtype):
    return None if a is None else np.asarray(a, dtype=dtype)


def _scalar_report(dW_ih, dW_hh, db):
    report = {}
    for field, a in (("weight_ih_grad_norm", dW_ih), ("weight_hh_grad_norm", dW_hh),
                     ("bias_grad_norm", db)):
        n = frobenius_norm(a)
        report[field] = float(n)
        report["log10_" + field] = float(safe_log10(n))
    return report


def _step_norms(arrays, log=False):
    out = []
    for a in arrays:
        n = frobenius_norm(a)
        out.append(safe_log10(n) if log else n)
    return np.array(out, dtype=np.float64)


def lstm_sequence(x_seq, weight_ih, weight_hh, bias, h0=None, c0=None, *, grad_h_seq=None,
                  grad_hT=None, grad_cT=None, target=None, loss=None, dtype=np.float64):
    """LSTM forward over x_seq (T, B, I) and BPTT.

    The backward pass is driven either by (grad_h_seq, grad_hT, grad_cT) (any may be None) or
    by (target, loss). Returns a Reference with
      h_seq, c_seq (T, B, H), gates (T, B, 4H), pre (T, B, 4H), hT, cT, loss (NaN without one),
      grad_h_seq (the direct dL/dh_t), dh (T, B, H) total dL/dh_t, dc (T, B, H) total dL/dc_t,
      dpre (T, B, 4H), dx (T, B, I), dh0, dc0, dW_ih, dW_hh, db,
      and every SequenceReport field (float64; per-step arrays of length T, scalars as floats)."""
    x_seq = np.asarray(x_seq, dtype=dtype)
    w_ih, w_hh, b = (np.asarray(a, dtype=dtype) for a in (weight_ih, weight_hh, bias))
    steps, batch, _ = x_seq.shape
    hidden = w_hh.shape[1]
    h_prev = np.zeros((batch, hidden), dtype) if h0 is None else np.asarray(h0, dtype=dtype)
    c_prev = np.zeros((batch, hidden), dtype) if c0 is None else np.asarray(c0, dtype=dtype)
    h_init, c_init = h_prev, c_prev

    hs, cs, gs, pres = [], [], [], []
    for t in range(steps):
        pres.append(lstm_preactivation(x_seq[t], h_prev, w_ih, w_hh, b))
        h_prev, c_prev, gates = lstm_cell_forward(x_seq[t], h_prev, c_prev, w_ih, w_hh, b)
        hs.append(h_prev)
        cs.append(c_prev)
        gs.append(gates)
    h_seq, c_seq, gates_seq, pre_seq = (np.stack(a) for a in (hs, cs, gs, pres))

    loss_value = np.nan
    if loss is not None:
        loss_value, grad_h_seq = sequence_loss(h_seq, np.asarray(target, dtype=dtype), loss)
    direct = np.zeros_like(h_seq) if grad_h_seq is None else np.array(grad_h_seq, dtype=dtype)
    if grad_hT is not None:
        direct[-1] = direct[-1] + np.asarray(grad_hT, dtype=dtype)
    dc_next = (np.zeros((batch, hidden), dtype) if grad_cT is None
               else np.asarray(grad_cT, dtype=dtype))

    dh = np.zeros_like(h_seq)
    dc = np.zeros_like(c_seq)
    dpre = np.zeros_like(pre_seq)
    dx = np.zeros_like(x_seq)
    dW_ih = np.zeros_like(w_ih)
    dW_hh = np.zeros_like(w_hh)
    db = np.zeros_like(b)
    dh_next = np.zeros((batch, hidden), dtype)
    for t in reversed(range(steps)):
        dh[t] = direct[t] + dh_next
        c_before = c_seq[t - 1] if t > 0 else c_init
        h_before = h_seq[t - 1] if t > 0 else h_init
        _, _, _, o = split_gates(gates_seq[t])
        dc[t] = total_cell_grad(dh[t], dc_next, o, c_seq[t])
        dpre[t] = lstm_preact_grad(dh[t], dc[t], gates_seq[t], c_seq[t], c_before)
        dx[t] = dpre[t] @ w_ih
        dh_next = dpre[t] @ w_hh
        dc_next = dc[t] * split_gates(gates_seq[t])[1]
        dW_ih += dpre[t].T @ x_seq[t]
        dW_hh += dpre[t].T @ h_before
        db += dpre[t].sum(axis=0)
    dh0, dc0 = dh_next, dc_next

    report = {
        "h_grad_norm": _step_norms(dh), "c_grad_norm": _step_norms(dc),
        "x_grad_norm": _step_norms(dx),
        "log10_h_grad_norm": _step_norms(dh, True), "log10_c_grad_norm": _step_norms(dc, True),
        "log10_x_grad_norm": _step_norms(dx, True),
        "forget_gate_mean": np.array([np.mean(np.asarray(split_gates(g)[1], np.float64))
                                      for g in gates_seq]),
        "saturated_fraction": np.array([np.mean(lstm_saturated_mask(p)) for p in pre_seq]),
    }
    report.update(_scalar_report(dW_ih, dW_hh, db))
    return Reference(h_seq=h_seq, c_seq=c_seq, gates=gates_seq, pre=pre_seq, hT=h_seq[-1],
                     cT=c_seq[-1], loss=float(loss_value), grad_h_seq=direct, dh=dh, dc=dc,
                     dpre=dpre, dx=dx, dh0=dh0, dc0=dc0, dW_ih=dW_ih, dW_hh=dW_hh, db=db,
                     num_steps=steps, report=report, **report)


def lstm_saturated_mask(pre):
    """(B, 4H) mask of saturated gate units from the pre-activations: sigmoid' < 0.0025 for
    i, f, o and tanh' < 0.01 for g (derivatives computed from pre in float64)."""
    pi, pf, pg, po = split_gates(np.asarray(pre, dtype=np.float64))
    return np.concatenate([sigmoid_derivative(pi) < SIGMOID_SATURATED,
                           sigmoid_derivative(pf) < SIGMOID_SATURATED,
                           tanh_derivative(pg) < TANH_SATURATED,
                           sigmoid_derivative(po) < SIGMOID_SATURATED], axis=1)


def rnn_saturated_mask(pre, nonlinearity):
    pre = np.asarray(pre, dtype=np.float64)
    if nonlinearity == "relu":
        return np.zeros(pre.shape, dtype=bool)
    return tanh_derivative(pre) < TANH_SATURATED


def rnn_sequence(x_seq, weight_ih, weight_hh, bias, h0=None, *, nonlinearity="tanh",
                 grad_h_seq=None, grad_hT=None, target=None, loss=None, dtype=np.float64):
    """RNN forward over x_seq (T, B, I) and BPTT; same return value as lstm_sequence (no c_seq,
    dc, dc0 or gates; c_grad_norm and forget_gate_mean are NaN)."""
    _check_nonlinearity(nonlinearity)
    x_seq = np.asarray(x_seq, dtype=dtype)
    w_ih, w_hh, b = (np.asarray(a, dtype=dtype) for a in (weight_ih, weight_hh, bias))
    steps, batch, _ = x_seq.shape
    hidden = w_hh.shape[1]
    h_prev = np.zeros((batch, hidden), dtype) if h0 is None else np.asarray(h0, dtype=dtype)
    h_init = h_prev

    hs, pres = [], []
    for t in range(steps):
        z = x_seq[t] @ w_ih.T + h_prev @ w_hh.T + b
        h_prev = rnn_act(z, nonlinearity)
        pres.append(z)
        hs.append(h_prev)
    h_seq, pre_seq = np.stack(hs), np.stack(pres)

    loss_value = np.nan
    if loss is not None:
        loss_value, grad_h_seq = sequence_loss(h_seq, np.asarray(target, dtype=dtype), loss)
    direct = np.zeros_like(h_seq) if grad_h_seq is None else np.array(grad_h_seq, dtype=dtype)
    if grad_hT is not None:
        direct[-1] = direct[-1] + np.asarray(grad_hT, dtype=dtype)

    dh = np.zeros_like(h_seq)
    dpre = np.zeros_like(pre_seq)
    dx = np.zeros_like(x_seq)
    dW_ih = np.zeros_like(w_ih)
    dW_hh = np.zeros_like(w_hh)
    db = np.zeros_like(b)
    dh_next = np.zeros((batch, hidden), dtype)
    for t in reversed(range(steps)):
        dh[t] = direct[t] + dh_next
        h_before = h_seq[t - 1] if t > 0 else h_init
        if nonlinearity == "tanh":
            dpre[t] = dh[t] * tanh_derivative(pre_seq[t])
        else:
            dpre[t] = dh[t] * (pre_seq[t] > 0)
        dx[t] = dpre[t] @ w_ih
        dh_next = dpre[t] @ w_hh
        dW_ih += dpre[t].T @ x_seq[t]
        dW_hh += dpre[t].T @ h_before
        db += dpre[t].sum(axis=0)

    nan = np.full(steps, np.nan)
    report = {
        "h_grad_norm": _step_norms(dh), "c_grad_norm": nan.copy(),
        "x_grad_norm": _step_norms(dx),
        "log10_h_grad_norm": _step_norms(dh, True), "log10_c_grad_norm": nan.copy(),
        "log10_x_grad_norm": _step_norms(dx, True),
        "forget_gate_mean": nan.copy(),
        "saturated_fraction": np.array([np.mean(rnn_saturated_mask(p, nonlinearity))
                                        for p in pre_seq]),
    }
    report.update(_scalar_report(dW_ih, dW_hh, db))
    return Reference(h_seq=h_seq, pre=pre_seq, hT=h_seq[-1], loss=float(loss_value),
                     grad_h_seq=direct, dh=dh, dpre=dpre, dx=dx, dh0=dh_next, dW_ih=dW_ih,
                     dW_hh=dW_hh, db=db, num_steps=steps, report=report, **report)
