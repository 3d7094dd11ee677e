#!/usr/bin/env python
"""Two builds of vgkern, side by side: the step time of each on the same configurations.

Two builds cannot share one process (their _core modules register the same C++ types), so each
round runs one short process per build, in alternating order, with the same method: a block of
back-to-back steps after warm-up steps, its median per-step time. The ratio new / old is taken
per round (both builds then met the same load) and reported as a median with quartiles.

    pip install . --target /tmp/old --no-deps    # on the old commit (or copy python/vgkern)
    python bench/compare_builds.py /tmp/old /path/to/new/python --rounds 8

Configurations: MLP "WxBxL:activation[:bn]" and LSTM "lstm:HxBxT" (fp32, statistics on).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

DEFAULT = "64x256x50:tanh,256x256x50:tanh,1024x64x10:relu,64x256x50:tanh:bn,lstm:128x64x50"

# Runs in a child process whose PYTHONPATH is one build: prints {config: median step seconds}.
CHILD = r"""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
import vgkern
threadpool_limits(int(sys.argv[2]))
out = {}
for name in sys.argv[1].split(","):
    parts = name.split(":")
    rng = np.random.default_rng(0)
    if parts[0] == "lstm":
        H, B, T = map(int, parts[1].split("x"))
        net = vgkern.LSTM(H, H, seed=0)
        x = rng.standard_normal((T, B, H), dtype=np.float32)
        y = rng.standard_normal((B, H), dtype=np.float32)
    else:
        W, B, L = map(int, parts[0].split("x"))
        net = vgkern.MLP([W] * (L + 1), activation=parts[1], seed=0, batch_norm="bn" in parts)
        x = rng.standard_normal((B, W), dtype=np.float32)
        y = rng.standard_normal((B, W), dtype=np.float32)
    step = lambda: net.step(x, y, loss="mse")
    for _ in range(5):
        step()
    t0 = time.perf_counter(); step(); one = time.perf_counter() - t0
    times = []
    for _ in range(max(10, int(1.0 / max(one, 1e-6)))):  # about one second of steps
        t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
    out[name] = float(np.median(times))
print(json.dumps({"simd": vgkern.build_info()["simd_selected"], "times": out}))
"""


def run(path, configs, threads):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
    proc = subprocess.run([sys.executable, "-c", CHILD, configs, str(threads)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", help="folder holding the old build's vgkern package")
    p.add_argument("new", help="folder holding the new build's vgkern package")
    p.add_argument("--configs", default=DEFAULT)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    ratios, times = {}, {"old": {}, "new": {}}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        got = {which: run(getattr(args, which), args.configs, args.threads) for which in order}
        for name in got["old"]["times"]:
            for which in ("old", "new"):
                times[which].setdefault(name, []).append(got[which]["times"][name])
            ratios.setdefault(name, []).append(got["new"]["times"][name] / got["old"]["times"][name])
    print(f"{args.rounds} rounds, {args.threads} threads, fp32, statistics on; "
          f"simd {got['new']['simd']}")
    print(f"{'config':24} {'old ms':>8} {'new ms':>8} {'new/old':>8} {'quartiles':>16}")
    for name, rs in ratios.items():
        q1, med, q3 = np.percentile(rs, [25, 50, 75])
        print(f"{name:24} {1e3 * np.median(times['old'][name]):8.3f} "
              f"{1e3 * np.median(times['new'][name]):8.3f} {med:8.3f} {f'[{q1:.3f}, {q3:.3f}]':>16}")


if __name__ == "__main__":
    main()
