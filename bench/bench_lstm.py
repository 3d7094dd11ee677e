#!/usr/bin/env python
"""Benchmark one LSTM training step of vgkern against PyTorch eager and the bare GEMMs.

One step = forward over T steps + MSE loss on the last hidden state + backpropagation through
time + gradient statistics. Every implementation runs in this one process on the same shapes,
dtype, weights, inputs and thread count:

  vgkern            vgkern.LSTM(I, H).step(x_seq, target, loss="mse"); per-step statistics on
                    (||dL/dh_t||, ||dL/dc_t||, ||dL/dx_t||, forget-gate mean, saturation) and the
                    weight-gradient norms
  vgkern stats off  the same net with net.stats = False
  torch LSTMCell    a Python loop over t of h, c = cell(x_t, (h, c)); tensor hooks on every h_t
                    and c_t record ||dL/dh_t||, ||dL/dc_t|| (float64) during backward; x_seq
                    requires grad, ||dL/dx_t|| of every step from x_seq.grad in one call;
                    weight-gradient norms via torch._foreach_norm (no compile)
  torch nn.LSTM     torch.nn.LSTM(I, H) forward + the same loss + backward (x_seq requires grad,
                    so dx is computed as by vgkern); weight-gradient norms only, no per-step ones
  gemm roofline     only the GEMMs vgkern's driver (csrc/nets/recurrent.cpp) issues, through
                    SciPy's sgemm/dgemm (the BLAS vgkern uses) on preallocated arrays:
                    forward  X (T*B, I) W_ih^T (one call), then h_{t-1} (B, H) W_hh^T per step;
                    backward dpre_t (B, 4H) W_hh per step (dh), then dW_ih = dpre^T X,
                    dW_hh = dpre^T H_prev over all T*B rows, dx = dpre W_ih
  vgkern RNN tanh   for reference: vgkern.RNN(I, H, nonlinearity="tanh").step(...), the same statistics
                    (a quarter of the LSTM's GEMM work; its GFLOP/s use its own count)

Timing as in bench_mlp.py (helpers in bench/_timing.py): after warm-up, each repetition runs
one step of every implementation in a rotating order, each step after an untimed wait until
the process's thread pools stop spinning; reported numbers are medians, ratio = other median /
vgkern median, roofline fraction = gemm median / vgkern median. Other processes' CPU use
during a repetition is measured; repetitions under load are dropped and rerun.

Run:  python bench/bench_lstm.py                     # H=128 and H=512, B=64, T=50, 2 threads
      python bench/bench_lstm.py --quick             # smoke run
      python bench/bench_lstm.py --configs 128x64x50 --reps 50 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg.blas as scipy_blas
import torch
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import (cpu_model, gemm_call_overhead_s, max_rel_diff,  # noqa: E402
                     run_interleaved, stats_overhead_fields, to_numpy, with_stats,
                     add_timing_arguments, targets_line)

# --------------------------------------------------------------------------------------------
# Configurations and targets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    hidden: int  # H
    batch: int  # B
    steps: int  # T
    input: int  # I (default H)

    @property
    def name(self) -> str:
        base = f"{self.hidden}x{self.batch}x{self.steps}"
        return base if self.input == self.hidden else f"{base}x{self.input}"

    @property
    def key(self) -> tuple[int, int, int, int]:
        return self.hidden, self.batch, self.steps, self.input

    def flops(self, gates: int) -> float:
        # G = gates * H output columns. Forward: X W_ih^T (T*B x I x G) and h W_hh^T
        # (T * B x H x G); backward: dh (T * B x G x H), dW_ih, dW_hh, dx: 3 GEMMs per weight,
        # 2 flops per multiply-add.
        g = gates * self.hidden
        return 6.0 * self.steps * self.batch * g * (self.input + self.hidden)


DEFAULT_CONFIGS = [Config(128, 64, 50, 128), Config(512, 64, 50, 512)]

# Targets from the issue: "ratio": other / vgkern >= value; "roofline": gemm / vgkern >= value.
TARGETS = {
    (128, 64, 50, 128): {"ratio": {"torch_cell": 3.0, "torch_lstm": 1.5}},
    (512, 64, 50, 512): {"ratio": {"torch_cell": 1.5}, "roofline": 0.85},
}

IMPL_LABELS = {
    "vgkern": "vgkern LSTM",
    "vgkern_nostats": "vgkern stats off",
    "torch_cell": "torch LSTMCell",
    "torch_lstm": "torch nn.LSTM",
    "gemm": "gemm roofline",
    "vgkern_rnn": "vgkern RNN tanh",
}
GATES = {n: (1 if n == "vgkern_rnn" else 4) for n in IMPL_LABELS}  # flop count of each row


def parse_configs(text: str | None) -> list[Config]:
    """'HxBxT' (input size I = H) or 'HxBxTxI', comma separated."""
    if not text:
        return list(DEFAULT_CONFIGS)
    configs = []
    for item in text.split(","):
        item = item.strip()
        try:
            v = [int(s) for s in item.lower().split("x")]
            if len(v) == 3:
                v.append(v[0])
            h, b, t, i = v
        except ValueError:
            raise SystemExit(f"--configs: expected HxBxT or HxBxTxI, got {item!r}")
        if min(h, b, t, i) < 1:
            raise SystemExit(f"--configs: sizes must be positive, got {item!r}")
        configs.append(Config(h, b, t, i))
    return configs


# --------------------------------------------------------------------------------------------
# Implementations. Each make_* returns a zero-argument step function; one call runs one complete
# step and returns (loss, weight_norms[, h_norms, c_norms, x_norms]) in its own types
# (converted by to_numpy() for the correctness check, outside the timed region).
# weight_norms = (||dW_ih||, ||dW_hh||, ||db||) with b = bias_ih + bias_hh: torch's two bias
# gradients are both dL/db, so ||dL/dbias_ih|| is compared.
# Shapes: x (T, B, I), target (B, H), weights as torch: weight_ih (4H, I), weight_hh (4H, H).
# --------------------------------------------------------------------------------------------


def make_vgkern(vgkern, cfg: Config, x, target, kind: str = "lstm"):
    dtype = str(x.dtype)
    if kind == "lstm":
        net = vgkern.LSTM(cfg.input, cfg.hidden, dtype=dtype, seed=0)
    else:
        net = vgkern.RNN(cfg.input, cfg.hidden, nonlinearity="tanh", dtype=dtype, seed=0)

    def step():
        rep = net.step(x, target, loss="mse")
        return (rep.loss, (rep.weight_ih_grad_norm, rep.weight_hh_grad_norm, rep.bias_grad_norm),
                rep.h_grad_norm, rep.c_grad_norm, rep.x_grad_norm)

    return net, step


def _torch_params(module, suffix, weight_ih, weight_hh, bias):
    """Copies vgkern's weights into a torch cell/layer: bias_ih = bias, bias_hh = 0."""
    with torch.no_grad():
        getattr(module, "weight_ih" + suffix).copy_(torch.from_numpy(weight_ih))
        getattr(module, "weight_hh" + suffix).copy_(torch.from_numpy(weight_hh))
        getattr(module, "bias_ih" + suffix).copy_(torch.from_numpy(bias))
        getattr(module, "bias_hh" + suffix).zero_()
    return [getattr(module, n + suffix) for n in ("weight_ih", "weight_hh", "bias_ih")]


def make_torch_cell(cfg: Config, x, target, weight_ih, weight_hh, bias):
    T, B, H = cfg.steps, cfg.batch, cfg.hidden
    dtype = getattr(torch, str(x.dtype))
    cell = torch.nn.LSTMCell(cfg.input, H, dtype=dtype)
    params = _torch_params(cell, "", weight_ih, weight_hh, bias)
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


def make_torch_lstm(cfg: Config, x, target, weight_ih, weight_hh, bias):
    B = cfg.batch
    dtype = getattr(torch, str(x.dtype))
    lstm = torch.nn.LSTM(cfg.input, cfg.hidden, dtype=dtype)  # (T, B, I) layout, one layer
    params = _torch_params(lstm, "_l0", weight_ih, weight_hh, bias)
    xt = torch.from_numpy(x).requires_grad_(True)  # dx as vgkern computes it
    tt = torch.from_numpy(target)

    def step():
        lstm.zero_grad(set_to_none=True)
        xt.grad = None
        _, (h_n, _) = lstm(xt)
        loss = torch.nn.functional.mse_loss(h_n[0], tt, reduction="sum") * (0.5 / B)
        loss.backward()
        wn = torch._foreach_norm([p.grad for p in params], 2, dtype=torch.float64)
        return loss.item(), wn

    def x_grad_norms():  # for the check only (untimed): ||dL/dx_t|| from the last step
        return torch.linalg.vector_norm(xt.grad, dim=(1, 2), dtype=torch.float64).numpy()

    return step, x_grad_norms


def check_torch_rnn(cfg: Config, x, target, rnn_net) -> float:
    """Untimed check of the vgkern RNN row against torch.nn.RNN (tanh): loss, weight-gradient
    norms and ||dL/dx_t|| of every step; returns the maximum relative difference."""
    B = cfg.batch
    dtype = getattr(torch, str(x.dtype))
    rnn = torch.nn.RNN(cfg.input, cfg.hidden, nonlinearity="tanh", dtype=dtype)
    params = _torch_params(rnn, "_l0", rnn_net.weight_ih, rnn_net.weight_hh, rnn_net.bias)
    xt = torch.from_numpy(x).requires_grad_(True)
    _, h_n = rnn(xt)
    loss = torch.nn.functional.mse_loss(h_n[0], torch.from_numpy(target), reduction="sum") * (0.5 / B)
    loss.backward()
    wn = torch._foreach_norm([p.grad for p in params], 2, dtype=torch.float64)
    xn = torch.linalg.vector_norm(xt.grad, dim=(1, 2), dtype=torch.float64)
    return loss.item(), wn, xn


def make_gemm_roofline(cfg: Config, x, weight_ih, weight_hh, h_prev):
    """The GEMMs of vgkern's LSTM step and nothing else, on preallocated C-contiguous arrays.

    h_prev (T, B, H) = h_0 .. h_{T-1} of a real forward (the per-step and dW_hh operands).
    As in bench_mlp.py, each C-order product C = A @ B is issued as C^T = B^T A^T on the
    transposed (Fortran-contiguous) views: no copies, results written in place (checked below),
    positional arguments. The forward GEMMs accumulate into the pre-activations (beta = 1, as
    vgkern adds them to the bias it copied in first); the backward ones overwrite (beta = 0).
    There is no elementwise work, so the operands of later calls are fixed arrays.
    """
    gemm = scipy_blas.sgemm if x.dtype == np.float32 else scipy_blas.dgemm
    T, B, H, I = cfg.steps, cfg.batch, cfg.hidden, cfg.input
    G = 4 * H
    X = np.ascontiguousarray(x).reshape(T * B, I)
    Wih, Whh = np.ascontiguousarray(weight_ih), np.ascontiguousarray(weight_hh)  # (G, I), (G, H)
    Hp = np.ascontiguousarray(h_prev).reshape(T * B, H)
    hp = [Hp[t * B:(t + 1) * B] for t in range(T)]  # (B, H) views
    pre = np.zeros((T * B, G), x.dtype)
    pre_t = [pre[t * B:(t + 1) * B] for t in range(T)]
    dpre = (np.random.default_rng(1).standard_normal((T * B, G)) * 1e-2).astype(x.dtype)
    dpre_t = [dpre[t * B:(t + 1) * B] for t in range(T)]
    dh = [np.empty((B, H), x.dtype) for _ in range(2)]  # alternating, as vgkern's dh_next/spare
    dWih, dWhh = np.empty_like(Wih), np.empty_like(Whh)
    dx = np.empty((T * B, I), x.dtype)

    def step():
        # pre += X @ W_ih^T : (T*B, I) x (I, G)                 [pre^T += W_ih X^T]
        gemm(1.0, Wih.T, X.T, 1.0, pre.T, 1, 0, 1)
        for t in range(T):
            # pre_t += h_{t-1} @ W_hh^T : (B, H) x (H, G)
            gemm(1.0, Whh.T, hp[t].T, 1.0, pre_t[t].T, 1, 0, 1)
        for t in reversed(range(T)):
            # dh_{t-1} = dpre_t @ W_hh : (B, G) x (G, H)         [dh^T = W_hh^T dpre_t^T]
            gemm(1.0, Whh.T, dpre_t[t].T, 0.0, dh[t % 2].T, 0, 0, 1)
        # dW_ih = dpre^T @ X : (G, T*B) x (T*B, I)               [dW^T = X^T dpre]
        gemm(1.0, X.T, dpre.T, 0.0, dWih.T, 0, 1, 1)
        # dW_hh = dpre^T @ H_prev : (G, T*B) x (T*B, H)
        gemm(1.0, Hp.T, dpre.T, 0.0, dWhh.T, 0, 1, 1)
        # dx = dpre @ W_ih : (T*B, G) x (G, I)
        gemm(1.0, Wih.T, dpre.T, 0.0, dx.T, 0, 0, 1)
        return None

    # Check once that the wrappers write in place and compute the right products.
    pre[...] = 0
    step()
    tol = 1e-3 if x.dtype == np.float32 else 1e-10
    for got, want, what in [(pre, X @ Wih.T + Hp @ Whh.T, "forward"),
                            (dh[0], dpre_t[0] @ Whh, "dh"),
                            (dWih, dpre.T @ X, "dW_ih"), (dWhh, dpre.T @ Hp, "dW_hh"),
                            (dx, dpre @ Wih, "dx")]:
        scale = max(np.abs(want).max(), 1e-30)
        if not np.abs(got - want).max() <= tol * scale:
            raise RuntimeError(f"gemm roofline: {what} GEMM does not write its result in place")
    pre[...] = 0  # accumulates (linearly, no overflow) from here on
    return step, 2 * T + 4  # number of GEMM calls per step


# --------------------------------------------------------------------------------------------
# Correctness check (untimed)
# --------------------------------------------------------------------------------------------


def flat(result):
    """(loss, (3 weight norms), per-step norms...) -> (loss, array, array, ...), copied."""
    loss, *norms = to_numpy(result)
    return (loss, *(np.array(a, dtype=np.float64, copy=True).ravel() for a in norms))


def check_against(result, reference) -> float:
    """max relative difference of loss and norms of result vs. the same-length prefix of
    reference (nn.LSTM returns only loss and weight norms)."""
    result = flat(result)
    return max_rel_diff(result, reference[:len(result)])


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def import_vgkern():
    try:
        import vgkern
        vgkern.LSTM  # noqa: B018  (a half-built package may import without it)
        vgkern.RNN  # noqa: B018
        return vgkern
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"vgkern with LSTM/RNN is not importable ({e}); install it first "
                         "(pip install --no-build-isolation -e .)")


def git_state() -> dict:
    """Commit and locally modified native/Python sources of the checkout (vgkern is an
    editable install, so a rebuild between runs changes what is measured)."""
    import subprocess
    root = Path(__file__).resolve().parent.parent
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True,
                                        text=True, timeout=10).stdout.rstrip("\n")
        return {"commit": run("rev-parse", "HEAD").strip(),
                "modified": run("status", "--porcelain", "--", "csrc", "python").splitlines()}
    except (OSError, subprocess.SubprocessError):
        return {}


def versions(vgkern) -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "vgkern": getattr(vgkern, "__version__", None),
        "vgkern_build_info": vgkern.build_info(),
    }


def bench_config(cfg, args, vgkern, dtype, wanted):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((cfg.steps, cfg.batch, cfg.input)).astype(dtype)
    target = rng.standard_normal((cfg.batch, cfg.hidden)).astype(dtype)

    steps = {}
    net, step = make_vgkern(vgkern, cfg, x, target)
    steps["vgkern"] = with_stats(net, step, True)
    if "vgkern_nostats" in wanted:
        steps["vgkern_nostats"] = with_stats(net, step, False)
    # The torch baselines start from vgkern's initial weights (copies), so results can be checked.
    w_ih, w_hh, b = (np.array(a, dtype=dtype, copy=True)
                     for a in (net.weight_ih, net.weight_hh, net.bias))
    lstm_x_norms = None
    if "torch_cell" in wanted:
        steps["torch_cell"] = make_torch_cell(cfg, x, target, w_ih, w_hh, b)
    if "torch_lstm" in wanted:
        steps["torch_lstm"], lstm_x_norms = make_torch_lstm(cfg, x, target, w_ih, w_hh, b)
    gemm_calls = 0
    if "gemm" in wanted:
        h_seq, _ = net.forward(x)  # real hidden states for the h_{t-1} operands
        h_prev = np.concatenate([np.zeros((1, cfg.batch, cfg.hidden), dtype), h_seq[:-1]])
        steps["gemm"], gemm_calls = make_gemm_roofline(cfg, x, w_ih, w_hh, h_prev)
    if "vgkern_rnn" in wanted:
        rnn_net, steps["vgkern_rnn"] = make_vgkern(vgkern, cfg, x, target, kind="rnn")

    # First touch outside the timing, then check results against vgkern (fields: loss,
    # weight norms, h_t norms, c_t norms, x_t norms).
    ref = flat(steps["vgkern"]())
    check = {}
    if "vgkern_nostats" in steps:
        # Its report holds no norms (NaN): compare its loss and the norms of its gradients.
        loss_off = steps["vgkern_nostats"]()[0]
        grads_off = [np.linalg.norm(np.asarray(g, dtype=np.float64))
                     for g in (net.weight_ih_grad, net.weight_hh_grad, net.bias_grad)]
        check["vgkern_nostats"] = max_rel_diff((loss_off, grads_off), ref[:2])
    if "torch_cell" in steps:
        check["torch_cell"] = check_against(steps["torch_cell"](), ref)
    if "torch_lstm" in steps:
        loss, wn = steps["torch_lstm"]()
        check["torch_lstm"] = max_rel_diff(flat((loss, wn)) + (lstm_x_norms(),),
                                           (ref[0], ref[1], ref[4]))
    if "vgkern_rnn" in steps:
        r = flat(steps["vgkern_rnn"]())
        check["vgkern_rnn"] = max_rel_diff(flat(check_torch_rnn(cfg, x, target, rnn_net)),
                                           (r[0], r[1], r[4]))

    t = run_interleaved(steps, args.reps, args.warmup, args.gap_ms / 1e3,
                        args.max_settle_ms / 1e3, args.max_foreign_load)

    med = {n: float(np.median(s)) for n, s in t.samples.items()}
    v = med["vgkern"]
    impls = {}
    for n, s in t.samples.items():
        s = np.asarray(s)
        paired = s / np.asarray(t.samples["vgkern"])
        impls[n] = {
            "label": IMPL_LABELS[n],
            "median_ms": med[n] * 1e3,
            "p25_ms": float(np.percentile(s, 25)) * 1e3,
            "p75_ms": float(np.percentile(s, 75)) * 1e3,
            "min_ms": float(s.min()) * 1e3,
            "n": int(s.size),
            "gflops": cfg.flops(GATES[n]) / med[n] / 1e9,  # RNN row: the RNN's own GEMM flops
            "ratio_vs_vgkern": med[n] / v,  # other median / vgkern median
            "ratio_paired_median": float(np.median(paired)),  # median of per-rep ratios
            "settle_after_ms": float(np.median(t.settle[n])) * 1e3 if t.settle[n] else None,
        }
        if "gemm" in med and n.startswith("torch"):
            # the ratio vgkern would reach running at 100 % of the GEMM roofline
            impls[n]["ratio_ceiling_at_roofline"] = med[n] / med["gemm"]
        if n in check:
            impls[n]["max_rel_diff"] = check[n]
            impls[n]["checked_against"] = "torch.nn.RNN" if n == "vgkern_rnn" else "vgkern LSTM"

    res = {
        "config": {"name": cfg.name, "hidden": cfg.hidden, "batch": cfg.batch,
                   "steps": cfg.steps, "input": cfg.input, "loss": "mse (last hidden state)",
                   "dtype": np.dtype(dtype).name, "gflop_per_step": cfg.flops(4) / 1e9,
                   "rnn_gflop_per_step": cfg.flops(1) / 1e9},
        "impls": impls,
        "reps_under_foreign_load": t.loaded,
        "reps_dropped_foreign_load": t.dropped,
        "foreign_load_cores": float(np.mean(t.foreign)) if t.foreign else None,
    }
    if "gemm" in med:
        overhead_s = gemm_call_overhead_s(dtype) * gemm_calls
        res["roofline_fraction"] = med["gemm"] / v
        res["roofline_fraction_minus_call_overhead"] = (med["gemm"] - overhead_s) / v
        res["gemm_calls_per_step"] = gemm_calls
        res["gemm_call_overhead_ms"] = overhead_s * 1e3
    if "vgkern_nostats" in med:
        res.update(stats_overhead_fields(steps["vgkern"], steps["vgkern_nostats"],
                                         v / med["vgkern_nostats"] - 1.0))
    res["targets"] = evaluate_targets(cfg, res)
    return res


def evaluate_targets(cfg, res) -> dict:
    out = {}
    t = TARGETS.get(cfg.key, {})
    for name, goal in t.get("ratio", {}).items():
        if name in res["impls"]:
            r = res["impls"][name]["ratio_vs_vgkern"]
            out[name] = {"target": f">= {goal:g}x", "measured": r, "met": r >= goal}
    if "roofline" in t and "roofline_fraction" in res:
        f = res["roofline_fraction"]
        out["roofline"] = {"target": f">= {t['roofline']:.0%}", "measured": f,
                           "met": f >= t["roofline"]}
    return out


def format_config(res, threads, reps) -> str:
    c = res["config"]
    lines = [f"\n== {c['name']}  H={c['hidden']} B={c['batch']} T={c['steps']} I={c['input']} "
             f"{c['dtype']} mse on h_T, {threads} threads, {c['gflop_per_step']:.3f} GFLOP/step "
             "(GEMMs only)",
             f"   {'implementation':<17}{'median ms':>10}{'p25-p75 ms':>20}{'vs vgkern':>11}"
             f"{'GFLOP/s':>9}  {'target':<30}{'check':>9}{'spin ms':>9}"]
    tg = res["targets"]
    for n, r in res["impls"].items():
        if n == "vgkern_nostats":
            target = f"stats cost {res['stats_overhead']:+.1%} (paired)"
        elif n == "gemm":
            target = f"roofline {res['roofline_fraction']:.1%}"
            if "roofline" in tg:
                t = tg["roofline"]
                target += f" ({t['target']}) {'ok' if t['met'] else 'MISS'}"
        elif n in tg:
            t = tg[n]
            target = f"{t['target']} {'ok' if t['met'] else 'MISS'}"
        elif n == "vgkern_rnn":
            target = "(reference; own GFLOP count)"
        else:
            target = ""
        check = r.get("max_rel_diff")
        check = f"{check:9.1e}" if check is not None else ""
        spread = f"{r['p25_ms']:.2f}-{r['p75_ms']:.2f}"
        spin = r.get("settle_after_ms")
        spin = f"{spin:9.1f}" if spin is not None else ""
        lines.append(f"   {r['label']:<17}{r['median_ms']:>10.2f}{spread:>20}"
                     f"{r['ratio_vs_vgkern']:>10.2f}x{r['gflops']:>9.1f}  {target:<30}{check:>9}"
                     f"{spin}")
    note = ("check = max relative difference of loss and norms vs vgkern LSTM (RNN row: vs "
            "torch.nn.RNN); spin = median wait for the process to go idle after that step")
    ceil = [f"{IMPL_LABELS[n]} {r['ratio_ceiling_at_roofline']:.2f}x"
            for n, r in res["impls"].items() if "ratio_ceiling_at_roofline" in r]
    if ceil:
        note = ("ratio vgkern would reach at 100 % of the roofline: " + ", ".join(ceil) + "; "
                + note)
    if "roofline_fraction" in res:
        note = (f"roofline without the {res['gemm_call_overhead_ms']:.3f} ms of "
                f"{res['gemm_calls_per_step']} Python->BLAS calls: "
                f"{res['roofline_fraction_minus_call_overhead']:.1%}; " + note)
    lines.append(f"   ({note})")
    if res["reps_dropped_foreign_load"]:
        lines.append(f"   ({res['reps_dropped_foreign_load']} repetitions dropped and rerun: "
                     "other processes used the CPU meanwhile)")
    if res["reps_under_foreign_load"]:
        lines.append(f"   WARNING: {res['reps_under_foreign_load']} of {reps} repetitions ran "
                     "while other processes used the CPU; the numbers are not reliable")
    return "\n".join(lines)


def format_summary(results) -> str:
    names = [n for n in IMPL_LABELS if any(n in r["impls"] for r in results)]
    short = {"vgkern": "vgkern", "vgkern_nostats": "stats off", "torch_cell": "cell loop",
             "torch_lstm": "nn.LSTM", "gemm": "gemm", "vgkern_rnn": "vg RNN"}
    head = f"{'config':<14}" + "".join(f"{short[n] + ' ms':>14}" for n in names)
    head += f"{'x cell':>8}{'x nn.LSTM':>10}{'roofline':>10}{'stats':>8}{'vg GF/s':>9}"
    lines = ["\n== summary (medians; x = other / vgkern; roofline = gemm / vgkern; "
             "stats = on vs off)", head]
    for r in results:
        im = r["impls"]
        row = f"{r['config']['name']:<14}"
        row += "".join(f"{im[n]['median_ms']:>14.2f}" if n in im else f"{'-':>14}" for n in names)
        for n, w in (("torch_cell", 8), ("torch_lstm", 10)):
            row += f"{im[n]['ratio_vs_vgkern']:>{w - 1}.2f}x" if n in im else f"{'-':>{w}}"
        row += f"{r['roofline_fraction']:>10.1%}" if "roofline_fraction" in r else f"{'-':>10}"
        row += f"{r['stats_overhead']:>+8.1%}" if "stats_overhead" in r else f"{'-':>8}"
        row += f"{im['vgkern']['gflops']:>9.1f}"
        lines.append(row)
    lines.append(targets_line(results))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", help="comma-separated HxBxT (I = H) or HxBxTxI "
                   "(default: " + ",".join(c.name for c in DEFAULT_CONFIGS) + ")")
    add_timing_arguments(p)
    p.add_argument("--impls", help="comma-separated subset of: " + ",".join(
        n for n in IMPL_LABELS if n != "vgkern") + " (vgkern always runs)")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 reps, 2 warm-up")
    p.add_argument("--json", default=str(Path(__file__).resolve().parent / "results_lstm.json"),
                   help="output JSON path (default bench/results_lstm.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.warmup = 5, 2
    elif args.reps < 20:
        print(f"warning: --reps {args.reps} < 20; medians will be noisy", file=sys.stderr)

    configs = parse_configs(args.configs)
    wanted = set(IMPL_LABELS) if not args.impls else {"vgkern", *args.impls.split(",")}
    if wanted - set(IMPL_LABELS):
        raise SystemExit(f"--impls: unknown {sorted(wanted - set(IMPL_LABELS))}")
    dtype = np.dtype(args.dtype).type

    vgkern = import_vgkern()
    # Threads: torch's own pool, then every BLAS / OpenMP runtime loaded in this process.
    torch.set_num_threads(args.threads)
    limiter = threadpool_limits(limits=args.threads)  # noqa: F841  (kept for the whole run)

    meta = {
        "argv": sys.argv[1:] if argv is None else list(argv),
        "threads": args.threads, "reps": args.reps, "warmup": args.warmup,
        "gap_ms": args.gap_ms, "max_settle_ms": args.max_settle_ms,
        "max_foreign_load": args.max_foreign_load, "dtype": args.dtype,
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "versions": versions(vgkern),
        "git": git_state(),
        "threadpools": [{k: i.get(k) for k in ("internal_api", "prefix", "version",
                                               "num_threads", "filepath")}
                        for i in threadpool_info()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"vgkern LSTM step benchmark: {args.threads} threads, {args.dtype}, {args.reps} reps "
          f"(+{args.warmup} warm-up), interleaved, medians; cpu: {meta['cpu']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()
                                   if k != "vgkern_build_info"))

    results = []
    for cfg in configs:
        res = bench_config(cfg, args, vgkern, dtype, wanted)
        results.append(res)
        print(format_config(res, args.threads, args.reps), flush=True)
    print(format_summary(results))

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
