"""The roofline rows: only the GEMMs of a step, through SciPy's sgemm/dgemm (the BLAS vgkern
calls) on preallocated arrays, nothing else.

SciPy's BLAS wrappers are Fortran-ordered, so each C-order product C = A @ B is issued as
C^T = B^T A^T on the transposed (Fortran-contiguous) views: no copies, results written in
place (checked once). Arguments are positional: f2py's keyword parsing costs ~1 us a call."""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import scipy.linalg.blas as scipy_blas

from .configs import LstmConfig, MlpConfig

__all__ = ["make_mlp", "make_lstm", "call_overhead_s"]


def _gemm(dtype):
    return scipy_blas.sgemm if np.dtype(dtype) == np.float32 else scipy_blas.dgemm


def _check(pairs, dtype):
    tol = 1e-3 if np.dtype(dtype) == np.float32 else 1e-10
    for got, want, what in pairs:
        scale = max(float(np.abs(want).max()), 1e-30)
        if not np.abs(got - want).max() <= tol * scale:
            raise RuntimeError(f"gemm roofline: the {what} GEMM does not write its result in "
                               "place (SciPy's BLAS wrapper changed?)")


def make_mlp(cfg: MlpConfig, x: np.ndarray,
             weights: Sequence[np.ndarray]) -> tuple[Callable[[], None], int]:
    """(step, calls): the 3 GEMMs per layer (z = h W^T, dW = delta^T h, dx = delta W) of an MLP
    step, and the number of GEMM calls per step. x: (B, W); weights[l]: (out, in).
    The chain is real (z_l feeds layer l+1, dx_l feeds layer l-1) but has no elementwise work;
    every layer gets a dx GEMM, although a step needs none for layer 0 (~1/(3L) in vgkern's
    favour). Batch norm adds no GEMM."""
    gemm = _gemm(x.dtype)
    L, B = cfg.layers, cfg.batch
    W = [np.ascontiguousarray(w) for w in weights]  # (out, in)
    hs = [x.copy()] + [np.empty((B, w.shape[0]), x.dtype) for w in W]  # hs[l+1] = z_l
    dhs = [np.empty((B, w.shape[1]), x.dtype) for w in W]  # dhs[l] = dx_l (B, in)
    dout = np.random.default_rng(1).standard_normal((B, W[-1].shape[0])) / B
    dhs.append(dout.astype(x.dtype))  # dhs[L] = dL/d(out)
    dW = [np.empty_like(w) for w in W]

    def step():
        for l in range(L):
            gemm(1.0, W[l].T, hs[l].T, 0.0, hs[l + 1].T, 1, 0, 1)  # z^T = W h^T
        for l in reversed(range(L)):
            delta = dhs[l + 1]
            gemm(1.0, hs[l].T, delta.T, 0.0, dW[l].T, 0, 1, 1)  # dW^T = h^T delta
            gemm(1.0, W[l].T, delta.T, 0.0, dhs[l].T, 0, 0, 1)  # dx^T = W^T delta^T

    step()
    l = L - 1
    _check([(hs[l + 1], hs[l] @ W[l].T, "forward"), (dW[l], dhs[l + 1].T @ hs[l], "dW"),
            (dhs[l], dhs[l + 1] @ W[l], "dx")], x.dtype)
    return step, 3 * L


def make_lstm(cfg: LstmConfig, x: np.ndarray, weight_ih: np.ndarray, weight_hh: np.ndarray,
              h_prev: np.ndarray) -> tuple[Callable[[], None], int]:
    """(step, calls): the GEMMs vgkern's LSTM driver issues, and their number (2T + 4).
    x: (T, B, I); weight_ih: (4H, I); weight_hh: (4H, H); h_prev: (T, B, H) = h_0 .. h_{T-1}
    of a real forward. Forward: X (T*B, I) W_ih^T once, then h_{t-1} W_hh^T per step (both
    accumulate into the pre-activations); backward: dh = dpre_t W_hh per step, then dW_ih,
    dW_hh and dx over all T*B rows."""
    gemm = _gemm(x.dtype)
    T, B, H, I = cfg.steps, cfg.batch, cfg.hidden, cfg.input
    G = 4 * H
    X = np.ascontiguousarray(x).reshape(T * B, I)
    Wih, Whh = np.ascontiguousarray(weight_ih), np.ascontiguousarray(weight_hh)
    Hp = np.ascontiguousarray(h_prev).reshape(T * B, H)
    hp = [Hp[t * B:(t + 1) * B] for t in range(T)]
    pre = np.zeros((T * B, G), x.dtype)
    pre_t = [pre[t * B:(t + 1) * B] for t in range(T)]
    dpre = (np.random.default_rng(1).standard_normal((T * B, G)) * 1e-2).astype(x.dtype)
    dpre_t = [dpre[t * B:(t + 1) * B] for t in range(T)]
    dh = [np.empty((B, H), x.dtype) for _ in range(2)]  # alternating, as vgkern's buffers
    dWih, dWhh = np.empty_like(Wih), np.empty_like(Whh)
    dx = np.empty((T * B, I), x.dtype)

    def step():
        gemm(1.0, Wih.T, X.T, 1.0, pre.T, 1, 0, 1)  # pre += X W_ih^T
        for t in range(T):
            gemm(1.0, Whh.T, hp[t].T, 1.0, pre_t[t].T, 1, 0, 1)  # pre_t += h_{t-1} W_hh^T
        for t in reversed(range(T)):
            gemm(1.0, Whh.T, dpre_t[t].T, 0.0, dh[t % 2].T, 0, 0, 1)  # dh = dpre_t W_hh
        gemm(1.0, X.T, dpre.T, 0.0, dWih.T, 0, 1, 1)  # dW_ih = dpre^T X
        gemm(1.0, Hp.T, dpre.T, 0.0, dWhh.T, 0, 1, 1)  # dW_hh = dpre^T H_prev
        gemm(1.0, Wih.T, dpre.T, 0.0, dx.T, 0, 0, 1)  # dx = dpre W_ih

    step()
    _check([(pre, X @ Wih.T + Hp @ Whh.T, "forward"), (dh[0], dpre_t[0] @ Whh, "dh"),
            (dWih, dpre.T @ X, "dW_ih"), (dWhh, dpre.T @ Hp, "dW_hh"),
            (dx, dpre @ Wih, "dx")], x.dtype)
    pre[...] = 0  # accumulates (linearly, no overflow) from here on
    return step, 2 * T + 4


def call_overhead_s(dtype: Any) -> float:
    """Seconds per call of a 1x1 GEMM through the same wrapper (Python + f2py + BLAS entry):
    the share of the roofline rows that is call overhead, not GEMM work."""
    gemm = _gemm(dtype)
    a, c = np.ones((1, 1), dtype), np.empty((1, 1), dtype)
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        gemm(1.0, a, a, 0.0, c, 0, 0, 1)
    return (time.perf_counter() - t0) / n
