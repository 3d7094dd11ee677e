"""vgkern's own rows: one MLP, LSTM or RNN training step with every statistic, and the form
of its result the baselines are checked against."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .compare import to_numpy
from .configs import LstmConfig, MlpConfig

__all__ = ["BN_EPS", "BN_MOMENTUM", "make_mlp", "mlp_reference", "make_recurrent"]

# batch norm as torch.nn.BatchNorm1d in train mode: eps, momentum of the running statistics
BN_EPS, BN_MOMENTUM = 1e-5, 0.1


def make_mlp(vgkern: Any, cfg: MlpConfig, x: np.ndarray,
             target: np.ndarray) -> tuple[Any, Callable[[], tuple]]:
    """(net, step): step() runs net.step(x, target, loss="mse") and returns (loss, ||dW_l||,
    ||db_l||, ||dL/dz_l||[, ||dgamma_l||, ||dbeta_l||]). x, target: (B, W)."""
    net = vgkern.MLP(cfg.sizes, activation=cfg.activation, dtype=str(x.dtype), seed=0,
                     batch_norm=cfg.batch_norm, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM)

    def step():
        rep = net.step(x, target, loss="mse")
        out = (rep.loss, rep.weight_grad_norm, rep.bias_grad_norm, rep.preact_grad_norm)
        return out + ((rep.gamma_grad_norm, rep.beta_grad_norm) if cfg.batch_norm else ())

    return net, step


def mlp_reference(cfg: MlpConfig, result: Sequence[Any]) -> tuple:
    """vgkern's result as the baselines return theirs. With batch norm vgkern reports NaN for
    parameters a layer does not have (the BN layers' bias, the last layer's gamma and beta);
    the baselines return only the existing ones."""
    loss, *norms = to_numpy(result)
    if cfg.batch_norm:
        H = cfg.layers - 1
        wn, bn, pn, gn, betan = norms
        norms = [wn, bn[H:], pn, gn[:H], betan[:H]]
    return (loss, *norms)


def make_recurrent(vgkern: Any, cfg: LstmConfig, x: np.ndarray, target: np.ndarray,
                   kind: str = "lstm") -> tuple[Any, Callable[[], tuple]]:
    """(net, step) of vgkern.LSTM (kind "lstm") or vgkern.RNN tanh ("rnn"): step() returns
    (loss, (||dW_ih||, ||dW_hh||, ||db||), ||dL/dh_t||, ||dL/dc_t||, ||dL/dx_t||) with the
    per-step norms (T,). x: (T, B, I), target: (B, H)."""
    if kind == "lstm":
        net = vgkern.LSTM(cfg.input, cfg.hidden, dtype=str(x.dtype), seed=0)
    else:
        net = vgkern.RNN(cfg.input, cfg.hidden, nonlinearity="tanh", dtype=str(x.dtype), seed=0)

    def step():
        rep = net.step(x, target, loss="mse")
        return (rep.loss, (rep.weight_ih_grad_norm, rep.weight_hh_grad_norm, rep.bias_grad_norm),
                rep.h_grad_norm, rep.c_grad_norm, rep.x_grad_norm)

    return net, step
