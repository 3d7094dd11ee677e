#!/usr/bin/env python
"""Benchmark vgkern.optim's opt.step(rep) (issue 19, point 8) in steady state.

Rows (same shapes, dtype, parameters and gradients; one process):

  vgkern opt.step   vgkern.optim.Adam: opt.step(rep) with every update statistic (per layer, in
                    float64: ||dW||, ||dW|| / ||W||, ||W||, ||W - W0|| / ||W0||, the same for b)
  torch Adam+norms  torch.optim.Adam(foreach=True) over the same W_l, b_l (their .grad set), then
                    torch._foreach_norm of the updates (W after - W before, from a copy taken
                    before the step) and of the weights: less than vgkern computes
  vgkern net.step   one training step of a net of the same shape (forward + loss + backward +
                    statistics), to state the optimizer's cost relative to it (target: <= 5 %)

Timing (steady state, what a training loop sees): blocks of --block back-to-back steps per row,
each block after an untimed settle (thread pools idle) and --warmup untimed steps, rows rotated
from block to block; per-step time = block time / --block; medians and quartiles over --blocks
blocks. Ratios are of medians measured in this one process.

Run:  python bench/bench_optim.py                        # W=256 B=256 L=50, float32, CPU
      python bench/bench_optim.py --quick                # smoke run
      python bench/bench_optim.py --device cuda          # vgkern CUDA vs torch CUDA
      python bench/bench_optim.py --json /tmp/optim.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import vgkern
from vgkern.benchmark.timing import settle


def make_rows(width, batch, depth, dtype, device):
    """{row name: step()} on one net and a torch copy of its parameters and gradients."""
    sizes = [width] * (depth + 1)
    net = vgkern.MLP(sizes, activation="tanh", dtype=dtype, seed=0, device=device)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, width)).astype(dtype)
    target = rng.standard_normal((batch, width)).astype(dtype)
    rep = net.step(x, target)
    opt = vgkern.optim.Adam(net, lr=1e-4)

    tdev = torch.device(device)
    weights = [torch.tensor(np.array(w), device=tdev) for w in net.weights]
    biases = [torch.tensor(np.array(b), device=tdev) for b in net.biases]
    params = [p for pair in zip(weights, biases) for p in pair]
    for p, g in zip(params, [t for pair in zip(net.weight_grads, net.bias_grads) for t in pair]):
        p.requires_grad_(True)
        p.grad = torch.tensor(np.array(g), device=tdev)
    topt = torch.optim.Adam(params, lr=1e-4, foreach=True)

    def torch_step():
        with torch.no_grad():
            before = torch._foreach_mul(params, 1.0)  # copies of W before the step
            topt.step()
            updates = torch._foreach_sub(params, before)
            return torch._foreach_norm(updates), torch._foreach_norm(params)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    twin = vgkern.MLP(sizes, activation="tanh", dtype=dtype, seed=0, device=device)  # net.step
    rows = {  # (on its own net: opt.step needs its net's last report to stay the last)
        "vgkern opt.step": lambda: opt.step(rep),
        "torch Adam+norms": torch_step,
        "vgkern net.step": lambda: twin.step(x, target),
    }
    return rows, sync, net


def time_blocks(rows, sync, block, blocks, warmup, max_settle_s):
    """{row: per-step seconds of each block}: rows rotated block by block."""
    names = list(rows)
    samples = {n: [] for n in names}
    for b in range(blocks):
        for name in names[b % len(names):] + names[:b % len(names)]:
            step = rows[name]
            settle(0.0, max_settle_s)
            for _ in range(warmup):
                step()
            sync()
            t0 = time.perf_counter()
            for _ in range(block):
                step()
            sync()
            samples[name].append((time.perf_counter() - t0) / block)
    return samples


def summary(samples):
    return {n: {"median_s": float(np.median(s)), "q1_s": float(np.percentile(s, 25)),
                "q3_s": float(np.percentile(s, 75)), "blocks": len(s)} for n, s in samples.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--block", type=int, default=10, help="back-to-back steps per block")
    p.add_argument("--blocks", type=int, default=15, help="timed blocks per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each block")
    p.add_argument("--max-settle", type=float, default=0.5, help="longest idle wait (s)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 blocks of 3 steps")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.block, args.blocks = 3, 3
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        rows, sync, net = make_rows(args.width, args.batch, args.depth, args.dtype, args.device)
        samples = time_blocks(rows, sync, args.block, args.blocks, args.warmup, args.max_settle)
    stats = summary(samples)
    med = {n: s["median_s"] for n, s in stats.items()}
    ratios = {"torch / vgkern opt.step": med["torch Adam+norms"] / med["vgkern opt.step"],
              "opt.step / net.step": med["vgkern opt.step"] / med["vgkern net.step"]}
    info = vgkern.build_info()
    print(f"W={args.width} B={args.batch} L={args.depth} {args.dtype} {args.device}, "
          f"{args.threads} threads, {net.params.size} parameters, simd "
          f"{info.get('simd_selected')}; blocks of {args.block} steps x {args.blocks}")
    for name, s in stats.items():
        print(f"  {name:<18} median {s['median_s'] * 1e3:9.3f} ms  "
              f"[q1 {s['q1_s'] * 1e3:.3f}, q3 {s['q3_s'] * 1e3:.3f}]")
    for name, value in ratios.items():
        print(f"  {name:<26} {value:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"config": vars(args) | {"json": str(args.json)},
                                         "rows": stats, "ratios": ratios,
                                         "simd_selected": info.get("simd_selected")}, indent=1))


if __name__ == "__main__":
    main()
