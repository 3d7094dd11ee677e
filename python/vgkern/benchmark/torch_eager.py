"""PyTorch eager baselines (no compile), computing the same statistics as vgkern's step where
hooks can reach them:

  MLP        nn.Sequential(Linear, [BatchNorm1d], act) * L; a tensor hook on every Linear
             output records ||dL/dz_l|| (float64); torch._foreach_norm over the parameter grads
  LSTMCell   a Python loop h, c = cell(x_t, (h, c)); hooks on every h_t and c_t record
             ||dL/dh_t||, ||dL/dc_t||; ||dL/dx_t|| from x.grad; weight-gradient norms
  nn.LSTM    the fused layer (oneDNN on CPU): weight-gradient norms only, no per-step ones

Weights are copied from vgkern's net, so the results can be checked against it."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .configs import LstmConfig, MlpConfig
from .vgkern_steps import BN_EPS, BN_MOMENTUM

__all__ = ["make_mlp", "make_lstm_cell_loop", "make_lstm", "record_preact_grad_norms",
           "rnn_result"]


def record_preact_grad_norms(torch: Any, linears: Sequence[Any]) -> list:
    """Hooks that record ||dL/dz_l|| (float64) of each Linear's output z_l: (B, out) during
    backward: a forward hook on each Linear registers a tensor hook on z_l (before any BN).
    Returns the list they fill, one 0-d tensor per layer (None before the first backward)."""
    norms: list = [None] * len(linears)

    def attach(l: int) -> Callable:
        def grad_hook(g: Any) -> None:
            norms[l] = torch.linalg.vector_norm(g, dtype=torch.float64)

        def forward_hook(module: Any, inputs: Any, z: Any) -> None:
            z.register_hook(grad_hook)

        return forward_hook

    for l, lin in enumerate(linears):
        lin.register_forward_hook(attach(l))
    return norms


def make_mlp(torch: Any, cfg: MlpConfig, x: np.ndarray, target: np.ndarray,
             weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
             gammas: Sequence[np.ndarray] = (), betas: Sequence[np.ndarray] = ()
             ) -> Callable[[], tuple]:
    """step() -> (loss, ||dW_l||, ||db_l||, ||dL/dz_l||[, ||dgamma_l||, ||dbeta_l||]) as
    numpy_loop.make_mlp; x, target: (B, W); weights[l]: (out, in); biases[l]: (out,)."""
    L, B = cfg.layers, cfg.batch
    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid,
            "elu": torch.nn.ELU, "identity": torch.nn.Identity}
    dtype = getattr(torch, str(x.dtype))
    linears, bn_layers, modules = [], [], []
    for l in range(L):
        out_f, in_f = weights[l].shape
        with_bn = cfg.batch_norm and l < L - 1  # Linear(bias=False) -> BatchNorm1d -> act
        lin = torch.nn.Linear(in_f, out_f, bias=not with_bn, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(weights[l]))
            if not with_bn:
                lin.bias.copy_(torch.from_numpy(biases[l]))
        linears.append(lin)
        modules.append(lin)
        if with_bn:
            norm = torch.nn.BatchNorm1d(out_f, eps=BN_EPS, momentum=BN_MOMENTUM, dtype=dtype)
            with torch.no_grad():
                norm.weight.copy_(torch.from_numpy(gammas[l]))
                norm.bias.copy_(torch.from_numpy(betas[l]))
            bn_layers.append(norm)
            modules.append(norm)
        if l < L - 1:
            modules.append(acts[cfg.activation]())
    model = torch.nn.Sequential(*modules)  # train mode: BN uses and updates batch statistics

    preact_norms = record_preact_grad_norms(torch, linears)

    xt, tt = torch.from_numpy(x), torch.from_numpy(target)
    groups = [[lin.weight for lin in linears],
              [lin.bias for lin in linears if lin.bias is not None],
              [norm.weight for norm in bn_layers], [norm.bias for norm in bn_layers]]

    def step():
        model.zero_grad(set_to_none=True)
        out = model(xt)  # (B, W)
        loss = torch.nn.functional.mse_loss(out, tt, reduction="sum") * (0.5 / B)
        loss.backward()
        wn, bn, gn, betan = (torch._foreach_norm([p.grad for p in g], 2, dtype=torch.float64)
                             if g else None for g in groups)
        if not bn_layers:
            return loss.item(), wn, bn, list(preact_norms)
        return loss.item(), wn, bn, list(preact_norms), gn, betan

    return step


def _copy_lstm_params(torch, module, suffix, weight_ih, weight_hh, bias):
    """vgkern's weights into a torch cell/layer: bias_ih = bias, bias_hh = 0."""
    with torch.no_grad():
        getattr(module, "weight_ih" + suffix).copy_(torch.from_numpy(weight_ih))
        getattr(module, "weight_hh" + suffix).copy_(torch.from_numpy(weight_hh))
        getattr(module, "bias_ih" + suffix).copy_(torch.from_numpy(bias))
        getattr(module, "bias_hh" + suffix).zero_()
    return [getattr(module, n + suffix) for n in ("weight_ih", "weight_hh", "bias_ih")]


def make_lstm_cell_loop(torch: Any, cfg: LstmConfig, x: np.ndarray, target: np.ndarray,
                        weight_ih: np.ndarray, weight_hh: np.ndarray,
                        bias: np.ndarray) -> Callable[[], tuple]:
    """step() -> (loss, (||dW_ih||, ||dW_hh||, ||db||), ||dL/dh_t|| (T,), ||dL/dc_t|| (T,),
    ||dL/dx_t|| (T,)). x: (T, B, I); target: (B, H); weight_ih: (4H, I); weight_hh: (4H, H);
    bias: (4H,)."""
    T, B, H = cfg.steps, cfg.batch, cfg.hidden
    dtype = getattr(torch, str(x.dtype))
    cell = torch.nn.LSTMCell(cfg.input, H, dtype=dtype)
    params = _copy_lstm_params(torch, cell, "", weight_ih, weight_hh, bias)
    xt = torch.from_numpy(x).requires_grad_(True)  # leaf (T, B, I): dL/dx_t lands in xt.grad
    tt = torch.from_numpy(target)
    zeros = torch.zeros(B, H, dtype=dtype)
    h_norms, c_norms = [None] * T, [None] * T

    # Hooks on h_t and c_t fire once with the total gradient (from the loss and from step t+1).
    def recorder(store, t):
        def hook(g):
            store[t] = torch.linalg.vector_norm(g, dtype=torch.float64)
        return hook

    h_hooks = [recorder(h_norms, t) for t in range(T)]
    c_hooks = [recorder(c_norms, t) for t in range(T)]

    def step():
        cell.zero_grad(set_to_none=True)
        xt.grad = None
        h, c = zeros, zeros
        for t, x_t in enumerate(xt.unbind(0)):
            h, c = cell(x_t, (h, c))
            h.register_hook(h_hooks[t])
            c.register_hook(c_hooks[t])
        loss = torch.nn.functional.mse_loss(h, tt, reduction="sum") * (0.5 / B)
        loss.backward()
        wn = torch._foreach_norm([p.grad for p in params], 2, dtype=torch.float64)
        xn = torch.linalg.vector_norm(xt.grad, dim=(1, 2), dtype=torch.float64)  # (T,)
        return loss.item(), wn, list(h_norms), list(c_norms), xn

    return step


def make_lstm(torch: Any, cfg: LstmConfig, x: np.ndarray, target: np.ndarray,
              weight_ih: np.ndarray, weight_hh: np.ndarray,
              bias: np.ndarray) -> tuple[Callable[[], tuple], Callable[[], np.ndarray]]:
    """(step, x_grad_norms): step() -> (loss, (||dW_ih||, ||dW_hh||, ||db||)) of torch.nn.LSTM
    with x requiring grad (dx computed, as by vgkern); x_grad_norms() -> ||dL/dx_t|| (T,) of
    the last step, for the untimed check. Shapes as make_lstm_cell_loop."""
    B = cfg.batch
    dtype = getattr(torch, str(x.dtype))
    lstm = torch.nn.LSTM(cfg.input, cfg.hidden, dtype=dtype)  # (T, B, I) layout, one layer
    params = _copy_lstm_params(torch, lstm, "_l0", weight_ih, weight_hh, bias)
    xt = torch.from_numpy(x).requires_grad_(True)
    tt = torch.from_numpy(target)

    def step():
        lstm.zero_grad(set_to_none=True)
        xt.grad = None
        _, (h_n, _) = lstm(xt)
        loss = torch.nn.functional.mse_loss(h_n[0], tt, reduction="sum") * (0.5 / B)
        loss.backward()
        wn = torch._foreach_norm([p.grad for p in params], 2, dtype=torch.float64)
        return loss.item(), wn

    def x_grad_norms():
        return torch.linalg.vector_norm(xt.grad, dim=(1, 2), dtype=torch.float64).numpy()

    return step, x_grad_norms


def rnn_result(torch: Any, cfg: LstmConfig, x: np.ndarray, target: np.ndarray,
               weight_ih: np.ndarray, weight_hh: np.ndarray, bias: np.ndarray) -> tuple:
    """One step of torch.nn.RNN (tanh) from vgkern.RNN's weights, for the untimed check of the
    vgkern RNN row: (loss, (||dW_ih||, ||dW_hh||, ||db||), ||dL/dx_t|| (T,)). weight_ih:
    (H, I); weight_hh: (H, H); bias: (H,)."""
    dtype = getattr(torch, str(x.dtype))
    rnn = torch.nn.RNN(cfg.input, cfg.hidden, nonlinearity="tanh", dtype=dtype)
    params = _copy_lstm_params(torch, rnn, "_l0", weight_ih, weight_hh, bias)
    xt = torch.from_numpy(x).requires_grad_(True)
    _, h_n = rnn(xt)
    loss = torch.nn.functional.mse_loss(h_n[0], torch.from_numpy(target), reduction="sum")
    (loss * (0.5 / cfg.batch)).backward()
    wn = torch._foreach_norm([p.grad for p in params], 2, dtype=torch.float64)
    xn = torch.linalg.vector_norm(xt.grad, dim=(1, 2), dtype=torch.float64)
    return float(loss) * (0.5 / cfg.batch), wn, np.asarray(xn)
