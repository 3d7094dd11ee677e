#!/usr/bin/env python
"""Benchmark a vgkern MLP wrapped as a torch module (vgkern.torch.Module) inside a torch training
loop against the same model in pure torch with the same per-layer gradient norms.

One step, for both, is what a torch user's loop does: optimizer.zero_grad(), forward, loss
(0.5 * summed squared error / B, vgkern's "mse"), loss.backward(), optimizer.step() (SGD with
momentum), loss.item(). Both start from the same weights (net.to_torch()) and see the same
batches (a fixed set of pre-built (x, y) tensors, cycled: no DataLoader cost on either side).

  vgkern module   vgkern.torch.Module(net): the autograd Function, tensor <-> numpy views, the
                  native forward and backward (all statistics on: GradReport in last_report)
  torch hooks     nn.Sequential(Linear, act) * L with a forward hook on every Linear that puts
                  a tensor hook on its output z_l recording ||dL/dz_l|| (float64), and
                  torch._foreach_norm over the weight and bias gradients after backward

Norms per layer l in both: ||dL/dW_l||, ||dL/db_l||, ||dL/dz_l|| (float64). vgkern computes
more in the same step (activation-gradient norms, forward statistics). All interop overhead is
inside the vgkern time (Function.apply, views, report construction, the optimizer on views).

Timing (self-contained): warm-up, then `--rounds` rounds; in
each, every implementation runs a block of back-to-back steps (about --block-s seconds), the
order rotating between rounds so that each follows the other equally often. A block's time per
step is its median step; the report gives the median and quartiles over rounds, and the ratio
torch / vgkern per round (median, quartiles). Other processes' CPU use is printed: figures taken
on a loaded machine mean nothing.

Run:  python bench/bench_torch_module.py                      # W=64, B=256, L=50, 2 threads
      python bench/bench_torch_module.py --quick              # smoke run
      python bench/bench_torch_module.py --profile 200        # cProfile of 200 vgkern steps
"""
import argparse
import copy
import cProfile
import gc
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - depends on the environment
    threadpool_limits = None


def import_vgkern():
    try:
        import vgkern
        return vgkern, vgkern.torch
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"vgkern (with torch) is not importable ({e}); install it first")


def mse(out, y):
    return torch.nn.functional.mse_loss(out, y, reduction="sum") * (0.5 / out.shape[0])


def make_batches(args, dtype, count=8):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(args.batch, args.width, generator=g, dtype=dtype),
             torch.randn(args.batch, args.width, generator=g, dtype=dtype)) for _ in range(count)]


def make_vgkern_step(vgkern, net, batches, lr, momentum):
    module = vgkern.torch.Module(net)
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
    state = {"i": 0}

    def step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        opt.zero_grad()
        loss = mse(module(x), y)
        loss.backward()
        opt.step()
        rep = module.last_report
        return loss.item(), rep.weight_grad_norm, rep.bias_grad_norm, rep.preact_grad_norm

    return module, step


def make_torch_step(model, batches, lr, momentum):
    from vgkern.benchmark.torch_eager import record_preact_grad_norms  # after import_vgkern()

    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    preact_norms = record_preact_grad_norms(torch, linears)
    weights = [lin.weight for lin in linears]
    biases = [lin.bias for lin in linears]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    state = {"i": 0}

    def step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        opt.zero_grad()
        loss = mse(model(x), y)
        loss.backward()
        wn = torch._foreach_norm([p.grad for p in weights], 2, dtype=torch.float64)
        bn = torch._foreach_norm([p.grad for p in biases], 2, dtype=torch.float64)
        opt.step()
        return loss.item(), wn, bn, list(preact_norms)

    return step


def as_float64(values):
    return np.array([float(v) for v in values], dtype=np.float64)


def check_agreement(vgkern_step, torch_step, steps, rtol):
    """Both loops from the same weights: losses and norms agree for `steps` steps."""
    worst = 0.0
    for _ in range(steps):
        a, b = vgkern_step(), torch_step()
        worst = max(worst, abs(a[0] - b[0]) / abs(b[0]))
        for va, vb in zip(a[1:], b[1:]):
            va, vb = as_float64(va), as_float64(vb)
            worst = max(worst, float(np.max(np.abs(va - vb) / np.maximum(np.abs(vb), 1e-300))))
    if not worst <= rtol:
        raise SystemExit(f"vgkern module and torch disagree: max relative difference {worst:.2e} "
                         f"> {rtol:.0e}")
    return worst


def busy_cores_s():
    """CPU seconds all processes used so far (Linux /proc/stat), or None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def time_blocks(steps, rounds, block_s, warmup_s):
    """{name: [median seconds per step of each round's block]} and other processes' load."""
    names = list(steps)
    per_step = {}
    for name, step in steps.items():  # warm-up, and how many steps make a block
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < warmup_s or n < 3:
            step()
            n += 1
        per_step[name] = (time.perf_counter() - t0) / n
    block = {n: max(5, int(block_s / per_step[n])) for n in names}
    samples = {n: [] for n in names}
    foreign = []
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                step, times = steps[name], []
                busy0, own0, wall0 = busy_cores_s(), time.process_time(), time.perf_counter()
                for _ in range(block[name]):
                    t0 = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t0)
                wall = time.perf_counter() - wall0
                busy1 = busy_cores_s()
                if busy0 is not None and busy1 is not None:
                    foreign.append(max(0.0, (busy1 - busy0 - (time.process_time() - own0)) / wall))
                samples[name].append(float(np.median(times)))
    finally:
        gc.enable()
    return samples, block, foreign


def quartiles(values):
    return [float(np.percentile(values, q)) for q in (25, 50, 75)]


def profile_vgkern(step, steps, top):
    """cProfile of `steps` vgkern steps: the functions with the most own time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--layers", type=int, default=50)
    p.add_argument("--activation", default="tanh")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=2, help="threads for torch and the BLAS")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds (blocks per impl.)")
    p.add_argument("--block-s", type=float, default=0.5, help="seconds per block (about)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="untimed seconds per impl. first")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 rounds of short blocks")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="also print a cProfile of this many vgkern module steps")
    p.add_argument("--json", help="write the results here (default: print only)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.block_s, args.warmup_s = 3, 0.1, 0.2

    vgkern, _ = import_vgkern()
    torch.set_num_threads(args.threads)
    limiter = threadpool_limits(limits=args.threads) if threadpool_limits else None  # noqa: F841
    tdtype = getattr(torch, args.dtype)
    sizes = [args.width] * (args.layers + 1)
    net = vgkern.MLP(sizes, activation=args.activation, init="xavier_normal", dtype=args.dtype,
                     seed=0)
    batches = make_batches(args, tdtype)
    lr, momentum = 1e-3, 0.9
    rtol = 1e-3 if args.dtype == "float32" else 1e-9

    # agreement first, on copies (the timed loops then train their own models)
    _, check_v = make_vgkern_step(vgkern, copy.deepcopy(net), batches, lr, momentum)
    check_t = make_torch_step(net.to_torch(), batches, lr, momentum)
    worst = check_agreement(check_v, check_t, 3, rtol)

    _, vgkern_step = make_vgkern_step(vgkern, net, batches, lr, momentum)
    torch_step = make_torch_step(net.to_torch(), batches, lr, momentum)
    steps = {"vgkern module": vgkern_step, "torch hooks": torch_step}
    samples, block, foreign = time_blocks(steps, args.rounds, args.block_s, args.warmup_s)
    ratios = np.asarray(samples["torch hooks"]) / np.asarray(samples["vgkern module"])

    print(f"vgkern.torch.Module in a torch loop: W={args.width} B={args.batch} L={args.layers} "
          f"{args.activation} {args.dtype}, {args.threads} threads, {args.rounds} rounds of "
          f"back-to-back blocks ({', '.join(f'{n}: {b} steps' for n, b in block.items())}); "
          f"agreement: max rel. diff {worst:.1e}")
    for name, values in samples.items():
        q25, q50, q75 = quartiles(values)
        print(f"  {name:<14} {q50 * 1e3:8.3f} ms/step  (quartiles {q25 * 1e3:.3f} .. "
              f"{q75 * 1e3:.3f})")
    r25, r50, r75 = quartiles(ratios)
    print(f"  speed-up torch / vgkern: {r50:.2f}x (quartiles {r25:.2f} .. {r75:.2f})")
    if foreign:
        print(f"  other processes' load during the blocks: median {np.median(foreign):.2f} "
              f"cores, max {max(foreign):.2f}" + ("  (loaded machine: figures are not "
                                                  "meaningful)" if max(foreign) > 0.2 else ""))
    if args.profile:
        print(profile_vgkern(vgkern_step, args.profile, 25))
    if args.json:
        out = Path(args.json)
        out.write_text(json.dumps({
            "argv": sys.argv[1:] if argv is None else list(argv), "block_steps": block,
            "seconds_per_step": samples, "ratio_torch_over_vgkern": ratios.tolist(),
            "foreign_load_cores": foreign, "max_rel_diff": worst,
            "versions": {"torch": torch.__version__, "vgkern": vgkern.__version__},
        }, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
