"""The obvious NumPy baseline of an MLP step: a Python loop over layers, NumPy GEMMs and
float64 norms of ||dW_l||, ||db_l||, ||dL/dz_l|| (and ||dgamma_l||, ||dbeta_l|| with batch norm,
forward and two-reduction backward by hand, as torch.nn.BatchNorm1d in train mode)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .configs import MlpConfig
from .vgkern_steps import BN_EPS, BN_MOMENTUM

__all__ = ["make_mlp"]


def _activation(name):
    """f(z) -> (h, dact) with dact = act'(z), or None for the identity."""
    if name == "tanh":
        def f(z):
            h = np.tanh(z)
            return h, 1 - h * h
    elif name == "relu":
        def f(z):
            return np.maximum(z, 0), (z > 0).astype(z.dtype)
    elif name == "sigmoid":
        def f(z):
            h = 1 / (1 + np.exp(-z))
            return h, h * (1 - h)
    elif name == "elu":  # alpha = 1, vgkern's default
        def f(z):
            negative = np.minimum(z, 0)
            return (np.where(z > 0, z, np.expm1(negative)),
                    np.where(z > 0, 1, np.exp(negative)).astype(z.dtype))
    else:
        def f(z):
            return z, None
    return f


def _norm64(a):
    return np.linalg.norm(a.astype(np.float64))


def make_mlp(cfg: MlpConfig, x: np.ndarray, target: np.ndarray,
             weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
             gammas: Sequence[np.ndarray] = (), betas: Sequence[np.ndarray] = ()
             ) -> Callable[[], tuple]:
    """step() -> (loss, ||dW_l|| (L,), ||db_l|| (L,), ||dL/dz_l|| (L,)) [+ (||dgamma_l||,
    ||dbeta_l||) (L-1,) each with batch norm, and then ||db|| of the last layer only].
    x, target: (B, W); weights[l]: (out, in) as nn.Linear; biases[l]: (out,) (empty on BN
    layers); gammas[l], betas[l]: (out,)."""
    if cfg.batch_norm:
        return _make_mlp_bn(cfg, x, target, weights, biases, gammas, betas)
    act = _activation(cfg.activation)
    L, B = cfg.layers, cfg.batch

    def step():
        # forward: h_{l+1} = act(h_l @ W_l^T + b_l)    (B, in) x (in, out) -> (B, out)
        hs, dacts = [x], []
        for l in range(L):
            z = hs[-1] @ weights[l].T + biases[l]
            h, dact = act(z) if l < L - 1 else (z, None)  # last layer: identity
            hs.append(h)
            dacts.append(dact)
        # mse: 0.5 * sum((out - target)^2) / B, dout = (out - target) / B
        diff = hs[-1] - target
        loss = 0.5 * float(np.sum(np.square(diff, dtype=np.float64))) / B
        dh = diff * np.asarray(1.0 / B, dtype=x.dtype)
        wn, bn, pn = np.empty(L), np.empty(L), np.empty(L)
        for l in reversed(range(L)):
            delta = dh * dacts[l] if dacts[l] is not None else dh  # dL/dz_l (B, out)
            dw = delta.T @ hs[l]  # (out, B) x (B, in) -> (out, in)
            db = delta.sum(axis=0)  # (out,)
            if l > 0:  # the input needs no gradient
                dh = delta @ weights[l]  # (B, out) x (out, in) -> (B, in)
            wn[l], bn[l], pn[l] = _norm64(dw), _norm64(db), _norm64(delta)
        return loss, wn, bn, pn

    return step


def _make_mlp_bn(cfg: MlpConfig, x: np.ndarray, target: np.ndarray,
                 weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
                 gammas: Sequence[np.ndarray], betas: Sequence[np.ndarray]
                 ) -> Callable[[], tuple]:
    act = _activation(cfg.activation)
    L, B = cfg.layers, cfg.batch
    H = L - 1  # hidden (BN) layers
    running_means = [np.zeros_like(g) for g in gammas[:H]]
    running_vars = [np.ones_like(g) for g in gammas[:H]]

    def step():
        # forward, hidden layers: z = h W^T, y = gamma * (z - mu) * rstd + beta, h = act(y)
        hs, saved = [x], []
        for l in range(H):
            z = hs[-1] @ weights[l].T  # (B, in) x (in, out) -> (B, out)
            mu = z.mean(axis=0)
            zc = z - mu
            var = np.mean(zc * zc, axis=0)  # biased, for normalising
            rstd = 1 / np.sqrt(var + BN_EPS)
            xhat = zc * rstd
            h, dact = act(gammas[l] * xhat + betas[l])
            running_means[l] *= 1 - BN_MOMENTUM
            running_means[l] += BN_MOMENTUM * mu
            running_vars[l] *= 1 - BN_MOMENTUM
            running_vars[l] += (BN_MOMENTUM * B / (B - 1)) * var  # unbiased
            hs.append(h)
            saved.append((xhat, rstd, dact))
        out = hs[-1] @ weights[H].T + biases[H]  # last layer: Linear with bias, identity
        diff = out - target
        loss = 0.5 * float(np.sum(np.square(diff, dtype=np.float64))) / B
        delta = diff * np.asarray(1.0 / B, dtype=x.dtype)  # dL/dz of the last layer
        wn, pn = np.empty(L), np.empty(L)
        gn, betan = np.empty(H), np.empty(H)
        wn[H] = _norm64(delta.T @ hs[H])
        bn = [_norm64(delta.sum(axis=0))]  # the only bias
        pn[H] = _norm64(delta)
        dh = delta @ weights[H]
        # two-reduction BN backward: dbeta = sum dy, dgamma = sum dy * xhat,
        # dz = gamma * rstd / B * (B dy - dbeta - xhat dgamma)
        for l in reversed(range(H)):
            xhat, rstd, dact = saved[l]
            dy = dh * dact if dact is not None else dh
            dbeta = dy.sum(axis=0)
            dgamma = (dy * xhat).sum(axis=0)
            delta = (gammas[l] * rstd / B) * (B * dy - dbeta - xhat * dgamma)  # dL/dz_l
            dw = delta.T @ hs[l]
            if l > 0:
                dh = delta @ weights[l]
            wn[l], pn[l] = _norm64(dw), _norm64(delta)
            gn[l], betan[l] = _norm64(dgamma), _norm64(dbeta)
        return loss, wn, bn, pn, gn, betan

    return step
