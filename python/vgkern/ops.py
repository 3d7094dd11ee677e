"""Low-level fused ops, numpy in / numpy out, for composing your own nets. All arrays share one
dtype (float32 or float64; never cast silently); non-contiguous inputs are copied on purpose.

activation_forward(z, activation, alpha=1.0) -> (h, dact)
    z (N, C) (2-D) -> h = act(z), dact = act'(z) (N, C)        [dact: saved for backward]
activation_backward(dh, z, activation, alpha=1.0) -> dz = dh * act'(z)
dense_forward(x, w, b, activation="identity", alpha=1.0) -> (h, dact)
    x (B, in), w (out, in) as torch.nn.Linear, b (out,) or None -> h = act(x @ w.T + b) (B, out)
dense_backward(dh, dact, x, w, need_dx=True) -> (dx, dw, db)
    delta = dh * dact; dw = delta.T @ x (out, in); db = delta.sum(0); dx = delta @ w (B, in) or None
mse_loss(out, target) -> (loss, dout)           loss = 0.5 * sum((out - target)**2) / B
cross_entropy_loss(logits, labels) -> (loss, dlogits)   labels: integers (B,) in [0, C)
batchnorm_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
                  eps=1e-5) -> (y, mean, rstd)
    x (N, C); gamma/beta (C,) or None (affine=False); running stats (C,) updated in place in
    training mode (as torch.nn.BatchNorm1d), required in eval mode; rstd = 1/sqrt(var + eps)
batchnorm_backward(dy, x, mean, rstd, gamma, training=True) -> (dx, dgamma, dbeta)
    dgamma/dbeta are None when gamma is None
lstm_cell_forward(x, h_prev, c_prev, weight_ih, weight_hh, bias) -> (h, c, gates)
    x (B, I), h_prev/c_prev (B, H), weight_ih (4H, I), weight_hh (4H, H), bias (4H,);
    gate order i, f, g, o as PyTorch; gates (B, 4H) = activated gates (saved for backward)
lstm_cell_backward(dh, dc, gates, c, c_prev, x, h_prev, weight_ih, weight_hh)
    -> (dx, dh_prev, dc_prev, dweight_ih, dweight_hh, dbias)
rnn_cell_forward(x, h_prev, weight_ih, weight_hh, bias, nonlinearity="tanh") -> h (B, H)
rnn_cell_backward(dh, h, x, h_prev, weight_ih, weight_hh, nonlinearity="tanh")
    -> (dx, dh_prev, dweight_ih, dweight_hh, dbias)
sum_squares_norm(a) -> float                    float64 Frobenius norm without under/overflow

Activations: "identity", "sigmoid", "tanh", "relu" (relu'(0) = 0), "elu" (elu'(z) = alpha e^z, z <= 0).
"""
import numpy as np

from . import _checks, _core

_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "elu")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _c(a):
    """C-contiguous (copied on purpose if not). 0-d arrays stay 0-d, so that a refusal names the
    shape given; an array of a refused dtype is not copied (the native check refuses it)."""
    if not isinstance(a, np.ndarray) or a.flags.c_contiguous or a.dtype not in _FLOATS:
        return a
    return np.ascontiguousarray(a)


def _act(op, activation, alpha):
    return (_checks.choice(f"{op}: activation", activation, _ACTIVATIONS),
            _checks.real(f"{op}: alpha", alpha, finite=False))


def activation_forward(z, activation, alpha=1.0):
    return _core.activation_forward(_c(z), *_act("activation_forward", activation, alpha))


def activation_backward(dh, z, activation, alpha=1.0):
    return _core.activation_backward(_c(dh), _c(z), *_act("activation_backward", activation, alpha))


def dense_forward(x, w, b, activation="identity", alpha=1.0):
    return _core.dense_forward(_c(x), _c(w), None if b is None else _c(b),
                               *_act("dense_forward", activation, alpha))


def dense_backward(dh, dact, x, w, need_dx=True):
    return _core.dense_backward(_c(dh), _c(dact), _c(x), _c(w),
                                _checks.flag("dense_backward: need_dx", need_dx))


def mse_loss(out, target):
    return _core.mse_loss(_c(out), _c(target))


def cross_entropy_loss(logits, labels):
    return _core.cross_entropy_loss(_c(logits), _c(labels))


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1,
                      eps=1e-5):
    op = "batchnorm_forward"
    # running statistics are updated in place: never copied, so they must be C-contiguous
    return _core.batchnorm_forward(_c(x), _c(gamma), _c(beta), running_mean, running_var,
                                   _checks.flag(f"{op}: training", training),
                                   _checks.real(f"{op}: momentum", momentum, finite=False),
                                   _checks.real(f"{op}: eps", eps, finite=False))


def batchnorm_backward(dy, x, mean, rstd, gamma, training=True):
    return _core.batchnorm_backward(_c(dy), _c(x), _c(mean), _c(rstd), _c(gamma),
                                    _checks.flag("batchnorm_backward: training", training))


def lstm_cell_forward(x, h_prev, c_prev, weight_ih, weight_hh, bias):
    return _core.lstm_cell_forward(*map(_c, (x, h_prev, c_prev, weight_ih, weight_hh, bias)))


def lstm_cell_backward(dh, dc, gates, c, c_prev, x, h_prev, weight_ih, weight_hh):
    return _core.lstm_cell_backward(*map(_c, (dh, dc, gates, c, c_prev, x, h_prev, weight_ih,
                                              weight_hh)))


def _nonlinearity(op, nonlinearity):
    return _checks.choice(f"{op}: nonlinearity", nonlinearity, ("tanh", "relu"))


def rnn_cell_forward(x, h_prev, weight_ih, weight_hh, bias, nonlinearity="tanh"):
    return _core.rnn_cell_forward(*map(_c, (x, h_prev, weight_ih, weight_hh, bias)),
                                  _nonlinearity("rnn_cell_forward", nonlinearity))


def rnn_cell_backward(dh, h, x, h_prev, weight_ih, weight_hh, nonlinearity="tanh"):
    return _core.rnn_cell_backward(*map(_c, (dh, h, x, h_prev, weight_ih, weight_hh)),
                                   _nonlinearity("rnn_cell_backward", nonlinearity))


def sum_squares_norm(a):
    if isinstance(a, np.ndarray) and a.ndim == 0:
        a = a.reshape(1)  # the norm of a scalar is its absolute value
    return _core.sum_squares_norm(_c(a))
