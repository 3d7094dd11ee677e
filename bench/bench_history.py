"""What following a training run costs: vgkern.History.record vs rep.to_pandas() every step.

The setup of issue 19: a 20-layer, 64-wide tanh MLP on sklearn's digits (vgkern.datasets,
training split), batch 128, float32, plain SGD (vgkern.optim.SGD, which also computes the
update statistics), STEPS steps per block. Three loops, timed in blocks of STEPS steps,
interleaved in a rotating order, each block after a short pause (BLAS limited to --threads):

    train       rep = net.step(x, y); opt.step(rep)
    history     the same + hist.record(step, rep)              (hist = vgkern.History(net))
    to_pandas   the same + frames.append(rep.to_pandas())      (what README used to suggest)

Reports the median time per step of each and the overhead of recording over training alone
(the target: History under 5 %), and the cost of one hist.record call timed alone (the
difference of two loops is within the noise of a shared machine). The machine may be shared: compare only the ratios of one run.

    python bench/bench_history.py                 # 15 blocks of 200 steps
    python bench/bench_history.py --blocks 5 --steps 100 --json /tmp/h.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import vgkern


def _loops(steps, batch):
    x, y = vgkern.datasets.digits("train")
    batches = [(np.ascontiguousarray(x[i:i + batch]), y[i:i + batch])
               for i in range(0, len(x) - batch + 1, batch)]
    net = vgkern.MLP([64] + [64] * 19 + [10], activation="tanh", seed=0)
    opt = vgkern.optim.SGD(net, lr=0.01)

    def train(record):
        for s in range(steps):
            xb, yb = batches[s % len(batches)]
            rep = net.step(xb, yb, loss="cross_entropy")
            opt.step(rep)
            record(s, rep)

    def plain():
        train(lambda s, rep: None)

    def history():
        hist = vgkern.History(net)
        train(hist.record)
        return hist

    def per_step_pandas():
        frames = []
        train(lambda s, rep: frames.append(rep.to_pandas()))
        return frames

    return {"train": plain, "history": history, "to_pandas": per_step_pandas}, net, batches[0]


def record_cost(net, batch, calls=20000):
    """Seconds per hist.record of one report, alone (the difference of two loops is noisy on a
    shared machine; this is what record adds to a step)."""
    rep = net.step(*batch, loss="cross_entropy")
    vgkern.optim.SGD(net, lr=0.0).step(rep)  # the update statistics too
    best = float("inf")
    for _ in range(5):
        hist = vgkern.History(net)
        t0 = time.perf_counter()
        for s in range(calls):
            hist.record(s, rep)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds before each block")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    loops, net, batch = _loops(args.steps, args.batch)
    names = list(loops)
    times = {n: [] for n in names}
    with vgkern.blas_threads(args.threads):
        for f in loops.values():  # warm-up: allocations, caches
            f()
        for b in range(args.blocks):
            for n in names[b % len(names):] + names[:b % len(names)]:
                time.sleep(args.pause)
                t0 = time.perf_counter()
                loops[n]()
                times[n].append((time.perf_counter() - t0) / args.steps)
        record = record_cost(net, batch)
    median = {n: statistics.median(v) for n, v in times.items()}
    base = median["train"]
    print(f"20-layer 64-wide tanh MLP, digits, batch {args.batch}, {args.steps} steps per block, "
          f"{args.blocks} blocks, BLAS threads {args.threads}, "
          f"simd {vgkern.build_info().get('simd_selected')}")
    for n in names:
        extra = "" if n == "train" else f"   overhead {100 * (median[n] / base - 1):+.1f} %"
        print(f"  {n:<10} {1e6 * median[n]:9.1f} us/step{extra}")
    print(f"  record alone: {1e6 * record:.2f} us per call = {100 * record / base:.2f} % of a "
          "training step (best of 5 x 20000 calls)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"median_s_per_step": median, "record_s": record, "samples": times,
                       "args": vars(args)}, f,
                      indent=2)


if __name__ == "__main__":
    main()
