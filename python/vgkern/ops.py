"""Low-level fused ops, numpy in / numpy out, for composing your own nets. All arrays share one
dtype (float32 or float64; never cast silently); non-contiguous inputs are copied on purpose.
Other host arrays (CPU torch tensors, anything with __dlpack__ or __array__) are read as numpy
arrays without a copy where they allow it; outputs are numpy arrays.

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

Devices: every op also runs on CUDA. Ops run where their inputs live: device arrays (anything with __cuda_array_interface__: CuPy, PyTorch, Numba, JAX, and the
vgkern.CudaArray these ops return) give CudaArray outputs on the GPU, which PyTorch and CuPy take
without a copy (torch.from_dlpack, cupy.asarray); labels stay numpy. device="cuda" with numpy
inputs copies them to the GPU and the outputs back (numpy in, numpy out; running statistics
updated in place as on the CPU); device="cpu" refuses device arrays.

Activations: "identity", "sigmoid", "tanh", "relu" (relu'(0) = 0), "elu" (elu'(z) = alpha e^z, z <= 0).

Type hints: the array arguments are ArrayLike (numpy arrays; device arrays too) and the results
np.ndarray of the inputs' dtype (a vgkern.CudaArray where the inputs are device arrays).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _checks, _core, _cuda
from .info import cuda_available

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "elu")  # also MLP's (vgkern.ACTIVATIONS)
RNN_NONLINEARITIES = ("tanh", "relu")  # also RNN's


def _c(a):
    """C-contiguous (copied on purpose if not). 0-d arrays stay 0-d, so that a refusal names the
    shape given; an array of a refused dtype is not copied (the native check refuses it)."""
    if not isinstance(a, np.ndarray) or a.flags.c_contiguous or a.dtype not in _checks.FLOAT_DTYPES:
        return a
    return np.ascontiguousarray(a)


def _host_or_device(a, what):
    """numpy and device arrays as they are; other arrays (CPU torch tensors, anything with
    __dlpack__ or __array__) as numpy arrays, without a copy where they allow it."""
    return _checks.as_array(a, what, keep_device_arrays=True, refuse_others=False)


def _to_host(result):
    if isinstance(result, tuple):
        return tuple(_to_host(r) for r in result)
    cuda_array: Any = getattr(_core, "CudaArray", ())  # () on builds without CUDA
    return result.numpy() if isinstance(result, cuda_array) else result


def _run(op, fn, arrays, names, device, *rest, in_place=()):
    """fn(*arrays, *rest) where the arrays live, or on `device` (see the module's docstring).
    None entries of `arrays` are optional arguments left out; the names in `in_place` are
    updated by the op (never copied on the CPU; copied back after a device="cuda" run)."""
    device = _checks.device(op, device, optional=True)
    arrays = [_host_or_device(a, f"{op}: {n}") for a, n in zip(arrays, names)]
    on_device = [n for a, n in zip(arrays, names) if _checks.is_device_array(a)]
    if device == "cpu" and on_device:
        raise ValueError(f"{op}: device='cpu' but {on_device[0]} is a device array")
    if device == "cuda" or on_device:
        if not cuda_available():
            raise RuntimeError(f"{op}: device 'cuda' requested but no CUDA GPU is available "
                               "(vgkern.cuda_available() is False)")
        _cuda.load_cublas()
    if device == "cuda" and not on_device:  # numpy in, numpy out
        uploaded = [None if a is None else _core.to_device(_c(a), op, n)
                    for a, n in zip(arrays, names)]
        result = _to_host(fn(*uploaded, *rest))
        for a, n, u in zip(arrays, names, uploaded):
            if n in in_place and a is not None and u is not None:
                a[...] = u.numpy()
        return result
    return fn(*[a if n in in_place else _c(a) for a, n in zip(arrays, names)], *rest)


def _act(op, activation, alpha):
    return (_checks.choice(f"{op}: activation", activation, ACTIVATIONS),
            _checks.real(f"{op}: alpha", alpha, finite=False))


def activation_forward(z: ArrayLike, activation: str, alpha: float = 1.0,
                       device: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """z: (N, C) -> (h, dact), h: (N, C) = act(z) and dact: (N, C) = act'(z), saved for
    activation_backward / dense_backward. alpha: the ELU parameter."""
    op = "activation_forward"
    return _run(op, _core.activation_forward, [z], ["z"], device, *_act(op, activation, alpha))


def activation_backward(dh: ArrayLike, z: ArrayLike, activation: str, alpha: float = 1.0,
                        device: Optional[str] = None) -> np.ndarray:
    """dh: (N, C) = dL/dh, z: (N, C) the pre-activation -> dz: (N, C) = dh * act'(z)."""
    op = "activation_backward"
    return _run(op, _core.activation_backward, [dh, z], ["dh", "z"], device,
                *_act(op, activation, alpha))


def dense_forward(x: ArrayLike, w: ArrayLike, b: Optional[ArrayLike],
                  activation: str = "identity", alpha: float = 1.0,
                  device: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """x: (B, in), w: (out, in) as torch.nn.Linear, b: (out,) or None -> (h, dact),
    h: (B, out) = act(x @ w.T + b) and dact: (B, out) = act'(x @ w.T + b)."""
    op = "dense_forward"
    return _run(op, _core.dense_forward, [x, w, b], ["x", "w", "b"], device,
                *_act(op, activation, alpha))


def dense_backward(dh: ArrayLike, dact: ArrayLike, x: ArrayLike, w: ArrayLike,
                   need_dx: bool = True, device: Optional[str] = None
                   ) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """dh: (B, out) = dL/dh, dact: (B, out) from dense_forward, x: (B, in), w: (out, in) ->
    (dx, dw, db) with delta = dh * dact: dx = delta @ w: (B, in) (None unless need_dx),
    dw = delta.T @ x: (out, in), db = delta.sum(0): (out,)."""
    return _run("dense_backward", _core.dense_backward, [dh, dact, x, w],
                ["dh", "dact", "x", "w"], device,
                _checks.flag("dense_backward: need_dx", need_dx))


def mse_loss(out: ArrayLike, target: ArrayLike, device: Optional[str] = None
             ) -> Tuple[float, np.ndarray]:
    """out: (B, C), target: (B, C) -> (loss, dout): loss = 0.5 * sum((out - target)**2) / B and
    dout: (B, C) = dL/d(out)."""
    return _run("mse_loss", _core.mse_loss, [out, target], ["out", "target"], device)


def cross_entropy_loss(logits: ArrayLike, labels: ArrayLike, device: Optional[str] = None
                       ) -> Tuple[float, np.ndarray]:
    """logits: (B, C), labels: (B,) integers in [0, C) -> (loss, dlogits): softmax
    cross-entropy averaged over the batch and dlogits: (B, C)."""
    return _run("cross_entropy_loss", _core.cross_entropy_loss, [logits], ["logits"], device,
                _c(_host_or_device(labels, "cross_entropy_loss: labels")))


def batchnorm_forward(x: ArrayLike, gamma: Optional[ArrayLike], beta: Optional[ArrayLike],
                      running_mean: Optional[ArrayLike], running_var: Optional[ArrayLike],
                      training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
                      device: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As torch.nn.BatchNorm1d: x: (N, C), gamma: (C,) and beta: (C,) or None (affine=False),
    running_mean: (C,) and running_var: (C,), updated in place in training mode, required in
    eval mode (None: not tracked, training mode only) -> (y, mean, rstd), y: (N, C), the
    statistics used mean: (C,) and rstd: (C,) = 1/sqrt(var + eps), saved for the backward."""
    op = "batchnorm_forward"
    # running statistics are updated in place: never copied, so they must be C-contiguous
    return _run(op, _core.batchnorm_forward, [x, gamma, beta, running_mean, running_var],
                ["x", "gamma", "beta", "running_mean", "running_var"], device,
                _checks.flag(f"{op}: training", training),
                _checks.real(f"{op}: momentum", momentum, finite=False),
                _checks.real(f"{op}: eps", eps, finite=False),
                in_place=("running_mean", "running_var") if training else ())


def batchnorm_backward(dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike,
                       gamma: Optional[ArrayLike], training: bool = True,
                       device: Optional[str] = None
                       ) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """dy: (N, C), x: (N, C), mean: (C,) and rstd: (C,) from batchnorm_forward, gamma: (C,) or
    None -> (dx, dgamma, dbeta), dx: (N, C), dgamma: (C,) and dbeta: (C,) (None when gamma is
    None). training=False: the statistics are constants (eval mode)."""
    return _run("batchnorm_backward", _core.batchnorm_backward, [dy, x, mean, rstd, gamma],
                ["dy", "x", "mean", "rstd", "gamma"], device,
                _checks.flag("batchnorm_backward: training", training))


def lstm_cell_forward(x: ArrayLike, h_prev: ArrayLike, c_prev: ArrayLike, weight_ih: ArrayLike,
                      weight_hh: ArrayLike, bias: ArrayLike, device: Optional[str] = None
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One LSTM step, gate order i, f, g, o as PyTorch: x: (B, I), h_prev: (B, H),
    c_prev: (B, H), weight_ih: (4H, I), weight_hh: (4H, H), bias: (4H,) -> (h, c, gates),
    h: (B, H), c: (B, H), gates: (B, 4H) the activated gates (saved for the backward)."""
    return _run("lstm_cell_forward", _core.lstm_cell_forward,
                [x, h_prev, c_prev, weight_ih, weight_hh, bias],
                ["x", "h_prev", "c_prev", "weight_ih", "weight_hh", "bias"], device)


def lstm_cell_backward(dh: ArrayLike, dc: ArrayLike, gates: ArrayLike, c: ArrayLike,
                       c_prev: ArrayLike, x: ArrayLike, h_prev: ArrayLike, weight_ih: ArrayLike,
                       weight_hh: ArrayLike, device: Optional[str] = None
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                  np.ndarray]:
    """Backward of lstm_cell_forward: dh: (B, H), dc: (B, H), gates: (B, 4H), c: (B, H),
    c_prev: (B, H), x: (B, I), h_prev: (B, H), weight_ih: (4H, I), weight_hh: (4H, H) ->
    (dx, dh_prev, dc_prev, dweight_ih, dweight_hh, dbias), dx: (B, I), dh_prev: (B, H),
    dc_prev: (B, H), dweight_ih: (4H, I), dweight_hh: (4H, H), dbias: (4H,)."""
    return _run("lstm_cell_backward", _core.lstm_cell_backward,
                [dh, dc, gates, c, c_prev, x, h_prev, weight_ih, weight_hh],
                ["dh", "dc", "gates", "c", "c_prev", "x", "h_prev", "weight_ih", "weight_hh"],
                device)


def _nonlinearity(op, nonlinearity):
    return _checks.choice(f"{op}: nonlinearity", nonlinearity, RNN_NONLINEARITIES)


def rnn_cell_forward(x: ArrayLike, h_prev: ArrayLike, weight_ih: ArrayLike,
                     weight_hh: ArrayLike, bias: ArrayLike, nonlinearity: str = "tanh",
                     device: Optional[str] = None) -> np.ndarray:
    """One Elman RNN step: x: (B, I), h_prev: (B, H), weight_ih: (H, I), weight_hh: (H, H),
    bias: (H,) -> h: (B, H) = act(x @ weight_ih.T + h_prev @ weight_hh.T + bias)."""
    op = "rnn_cell_forward"
    return _run(op, _core.rnn_cell_forward, [x, h_prev, weight_ih, weight_hh, bias],
                ["x", "h_prev", "weight_ih", "weight_hh", "bias"], device,
                _nonlinearity(op, nonlinearity))


def rnn_cell_backward(dh: ArrayLike, h: ArrayLike, x: ArrayLike, h_prev: ArrayLike,
                      weight_ih: ArrayLike, weight_hh: ArrayLike, nonlinearity: str = "tanh",
                      device: Optional[str] = None
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backward of rnn_cell_forward: dh: (B, H), h: (B, H) its output, x: (B, I),
    h_prev: (B, H), weight_ih: (H, I), weight_hh: (H, H) -> (dx, dh_prev, dweight_ih,
    dweight_hh, dbias), dx: (B, I), dh_prev: (B, H), dweight_ih: (H, I), dweight_hh: (H, H),
    dbias: (H,)."""
    op = "rnn_cell_backward"
    return _run(op, _core.rnn_cell_backward, [dh, h, x, h_prev, weight_ih, weight_hh],
                ["dh", "h", "x", "h_prev", "weight_ih", "weight_hh"], device,
                _nonlinearity(op, nonlinearity))


def sum_squares_norm(a: ArrayLike, device: Optional[str] = None) -> float:
    """The Frobenius norm of a: (any shape) in float64, without under- or overflow."""
    a = _host_or_device(a, "sum_squares_norm: a")
    if isinstance(a, np.ndarray) and a.ndim == 0:
        a = a.reshape(1)  # the norm of a scalar is its absolute value
    return _run("sum_squares_norm", _core.sum_squares_norm, [a], ["a"], device)
