#!/usr/bin/env python
"""What the statistics cost in the regimes this tool exists to study, vgkern only.

bench_mlp.py measures the statistics on healthy nets. The nets a user studies are often not:
signals vanish forward (small weights), gradients vanish backward (sigmoid) or underflow to
exactly 0, relu layers die. Each of these once made the statistics many times slower than the
step itself (subnormal squares, fallbacks that recompute z, float64 passes over zeros; see
bench/README.md, "2026-11-30 (2)"). This script is the check that it stays fixed: per regime,
one 50-layer net of width 64, batch 256 (--batch), float32, 2 threads (--threads), timed with
statistics on and off in paired blocks (vgkern.benchmark.timing.paired_overhead), for the
forward alone and for the whole step.

Run:  python bench/bench_stats_regimes.py              # about 1 minute
      python bench/bench_stats_regimes.py --rounds 24  # tighter quartiles
      python bench/bench_stats_regimes.py --threads 1 --batch 128 --regimes 1  # issue 18, pt 5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vgkern  # noqa: E402
from vgkern.benchmark.timing import paired_overhead, with_stats  # noqa: E402

WIDTH, DEPTH = 64, 50


def dead_layer(net):
    """Layer 10 of a relu net dies (bias -1e3): every layer above sees z = 0 exactly."""
    biases = [b.copy() for b in net.biases]
    biases[10][...] = -1e3
    net.biases = biases


# name, MLP arguments, net edit, upstream gradient scale (None: the step's MSE gradient)
REGIMES = [
    ("tanh, xavier (healthy)", dict(activation="tanh"), None, None),
    ("tanh, sigma_w 0.5: z vanishes to 1e-16", dict(activation="tanh", init="scaled_normal",
                                                   sigma_w=0.5), None, None),
    ("relu, sigma_w 0.5: z vanishes to 1e-23", dict(activation="relu", init="scaled_normal",
                                                   sigma_w=0.5), None, None),
    ("relu, layer 10 dead: z = 0 above", dict(activation="relu", init="he_normal"),
     dead_layer, None),
    ("sigmoid, xavier: gradients to 1e-28", dict(activation="sigmoid"), None, None),
    ("tanh, zero upstream gradient", dict(activation="tanh"), None, 0.0),
]


def measure(args, kwargs, edit, grad_scale):
    batch = args.batch
    net = vgkern.MLP([WIDTH] * (DEPTH + 1), dtype="float32", seed=0, **kwargs)
    if edit:
        edit(net)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, WIDTH)).astype(np.float32)
    target = rng.standard_normal((batch, WIDTH)).astype(np.float32)

    def switched(run):  # (statistics on, statistics off) of one net
        return with_stats(net, run, True), with_stats(net, run, False)

    def step():
        if grad_scale is None:
            return net.step(x, target, loss="mse")
        net.forward(x)
        return net.backward(np.full((batch, WIDTH), grad_scale, dtype=np.float32))

    forward = paired_overhead(*switched(lambda: net.forward(x)), rounds=args.rounds,
                              block_s=args.block_s)
    whole = paired_overhead(*switched(step), rounds=args.rounds, block_s=args.block_s)
    net.stats = True
    return forward, whole, step()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=12, help="paired blocks per measurement")
    p.add_argument("--block-s", type=float, default=0.2, help="seconds per block")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--regimes", type=int, default=len(REGIMES),
                   help=f"measure the first N regimes only (1: the healthy tanh net; {len(REGIMES)})")
    args = p.parse_args()
    print(f"statistics on vs off, {DEPTH} layers x {WIDTH} wide, batch {args.batch}, float32, "
          f"{args.threads} threads; median [quartiles] over {args.rounds} paired blocks")
    print(f"{'regime':42s} {'forward':>22s} {'whole step':>22s}   top-layer std(z), "
          f"log10 |dW_0|")
    with threadpool_limits(args.threads):
        for name, kwargs, edit, grad_scale in REGIMES[:args.regimes]:
            forward, whole, rep = measure(args, kwargs, edit, grad_scale)
            cells = [f"{100 * r['overhead']:+6.1f}% [{100 * r['p25']:+.1f}, {100 * r['p75']:+.1f}]"
                     for r in (forward, whole)]
            print(f"{name:42s} {cells[0]:>22s} {cells[1]:>22s}   "
                  f"{rep.preact_std[-1]:.1e}, {rep.log10_weight_grad_norm[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
