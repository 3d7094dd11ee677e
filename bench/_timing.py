"""Timing helpers shared by bench_mlp.py and bench_lstm.py: interleaved repetitions in a
rotating order, an untimed wait before each step until the process's thread pools stop
spinning, other processes' CPU use per repetition, and the correctness-check helpers (relative
difference of loss and norms).

See bench/README.md ("Fairness notes") for why the benchmarks wait for idle pools.
"""
from __future__ import annotations

import gc
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg.blas as scipy_blas

__all__ = ["Timings", "ForeignLoad", "settle", "run_interleaved", "with_stats", "cpu_model",
           "gemm_call_overhead_s", "to_numpy", "max_rel_diff", "add_timing_arguments",
           "targets_line"]


def to_numpy(result):
    loss, *norms = result

    def arr(v):
        if isinstance(v, (list, tuple)):
            return np.array([float(t) for t in v])
        return np.asarray(v, dtype=np.float64)

    return (float(loss), *(arr(v) for v in norms))


def max_rel_diff(result, reference) -> float:
    """Largest relative difference of loss and norms; inf for a NaN or a length mismatch."""
    worst = 0.0
    result = to_numpy(result)
    if len(result) != len(reference):
        return float("inf")
    for a, b in zip(result, reference):
        a, b = np.atleast_1d(a), np.atleast_1d(b)
        if a.shape != b.shape:
            return float("inf")
        d = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
        if np.isnan(d).any():
            return float("inf")
        worst = max(worst, float(np.max(d)))
    return worst


@dataclass
class Timings:
    samples: dict[str, list[float]] = field(default_factory=dict)  # name -> seconds per step
    settle: dict[str, list[float]] = field(default_factory=dict)  # name -> idle wait after it
    foreign: list[float] = field(default_factory=list)  # other processes' cores, kept reps
    dropped: int = 0  # repetitions dropped because other processes used the CPU
    loaded: int = 0  # repetitions kept although other processes used the CPU (out of retries)


def settle(min_s: float, max_s: float, window_s: float = 10e-3, busy: float = 0.3) -> float:
    """Sleep until no thread of this process burns CPU (at most max_s); returns the wait.

    After a threaded call, BLAS and framework pools keep their workers spinning for a while
    (OpenBLAS: 2^28 cycles, ~0.1 s). A spinning pool of one library steals the cores of the
    next library's pool, so each step starts only once the process is idle: a window of
    window_s in which the process used less than busy * window_s of CPU time. (Kernels that
    account CPU time per 4 ms tick need windows of several ticks, hence 10 ms and 30 %.)
    """
    t0 = time.perf_counter()
    time.sleep(min_s)
    while time.perf_counter() - t0 < max_s:
        c0, w0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)
        if time.process_time() - c0 < busy * (time.perf_counter() - w0):
            break
    return time.perf_counter() - t0


class ForeignLoad:
    """CPU time used by other processes while a block runs, in cores (Linux /proc/stat)."""

    def __enter__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy_s(), time.process_time()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        own = time.process_time() - self.own0
        busy = self._busy_s()
        self.cores = None if busy is None else max(0.0, (busy - self.busy0 - own) / wall)

    @staticmethod
    def _busy_s():
        try:
            f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
        total = sum(f[:8])  # user nice system idle iowait irq softirq steal
        return (total - idle) / os.sysconf("SC_CLK_TCK")


def run_interleaved(steps: dict, reps: int, warmup: int, gap_s: float, max_settle_s: float,
                    max_foreign: float) -> Timings:
    """Rotating order: repetition r starts at implementation r % k, so every implementation
    follows every other one equally often; before each step the process settles (idle).
    A repetition during which other processes used more than max_foreign cores is dropped and
    run again, as long as the retries (3 * reps in all) allow; later ones are kept and counted."""
    names = list(steps)
    k = len(names)
    t = Timings({n: [] for n in names}, {n: [] for n in names})
    gc.collect()
    gc.disable()
    try:
        attempt, kept, budget = 0, 0, warmup + 4 * reps
        while kept < reps:
            order = names[attempt % k:] + names[:attempt % k]
            times, waits = {}, {}
            with ForeignLoad() as foreign:
                for n in order:
                    waits[n] = settle(gap_s, max_settle_s)  # idle wait before step n
                    t0 = time.perf_counter()
                    steps[n]()
                    times[n] = time.perf_counter() - t0
            attempt += 1
            if attempt <= warmup:
                continue
            if foreign.cores is not None and foreign.cores > max_foreign:
                if budget - attempt >= reps - kept:
                    t.dropped += 1
                    continue
                t.loaded += 1
            kept += 1
            t.foreign.append(foreign.cores or 0.0)
            for i, n in enumerate(order):
                t.samples[n].append(times[n])
                if i + 1 < k:  # the wait before the next step = how long n left pools spinning
                    t.settle[n].append(waits[order[i + 1]])
    finally:
        gc.enable()
    return t


def paired_overhead(step_on, step_off, rounds: int = 24, block_s: float = 0.4) -> dict:
    """Cost of step_on over step_off, measured the way a sweep runs: blocks of back-to-back
    steps (warm caches, pools awake), on and off alternating (on first in even rounds, off first
    in odd ones). Each block keeps its fastest step, which other processes can only slow down,
    never speed up; the result is the median over rounds of on_min / off_min - 1, with the
    quartiles as the spread. Measured here: the same step on both sides agrees with itself
    within 0.3 %, where medians differed by up to 9 %."""
    step_on()
    t0 = time.perf_counter()
    step_off()
    steps = max(5, int(block_s / max(time.perf_counter() - t0, 1e-6)))
    best = {True: [], False: []}
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                step = step_on if on else step_off
                fastest = float("inf")
                for _ in range(steps):
                    t0 = time.perf_counter()
                    step()
                    fastest = min(fastest, time.perf_counter() - t0)
                best[on].append(fastest)
    finally:
        gc.enable()
    ratios = np.asarray(best[True]) / np.asarray(best[False]) - 1.0
    return {"overhead": float(np.median(ratios)), "p25": float(np.percentile(ratios, 25)),
            "p75": float(np.percentile(ratios, 75)), "rounds": rounds,
            "steps_per_block": steps}


def with_stats(net, step, on: bool):
    """step() with net.stats switched on or off first. Both sides of the statistics' cost run
    one net: two nets differ in where their buffers lie, which alone moved a W=64 step by
    -1.2 to +1.5 % (two identical nets, statistics on in both, paired_overhead)."""
    def switched():
        net.stats = on
        return step()
    return switched


def stats_overhead_fields(step_on, step_off, medians_ratio: float) -> dict:
    """A result's statistics-cost fields: (on - off) / off from paired_overhead, and the ratio
    of the interleaved single-step medians (far noisier) for reference."""
    paired = paired_overhead(step_on, step_off)
    return {"stats_overhead": paired["overhead"],
            "stats_overhead_spread": [paired["p25"], paired["p75"]],
            "stats_overhead_method": {k: paired[k] for k in ("rounds", "steps_per_block")},
            "stats_overhead_interleaved_medians": medians_ratio}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def gemm_call_overhead_s(dtype) -> float:
    """Seconds per call of a 1x1 GEMM through the same wrapper (Python + f2py + BLAS entry)."""
    gemm = scipy_blas.sgemm if dtype == np.float32 else scipy_blas.dgemm
    a, c = np.ones((1, 1), dtype), np.empty((1, 1), dtype)
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        gemm(1.0, a, a, 0.0, c, 0, 0, 1)
    return (time.perf_counter() - t0) / n


def add_timing_arguments(p):
    """The command-line options every benchmark shares (threads, repetitions, settling, dtype)."""
    p.add_argument("--threads", type=int, default=2, help="threads for BLAS, OpenMP and torch")
    p.add_argument("--reps", type=int, default=30, help="timed repetitions (>= 20; default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed repetitions first")
    p.add_argument("--gap-ms", type=float, default=1.0,
                   help="minimum untimed sleep before each step (default 1)")
    p.add_argument("--max-settle-ms", type=float, default=500.0,
                   help="longest wait for spinning thread pools to go idle before a step "
                        "(default 500; 0 disables settling)")
    p.add_argument("--max-foreign-load", type=float, default=0.1,
                   help="drop and rerun a repetition during which other processes used more "
                        "than this many cores (default 0.1; inf keeps all)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])


def targets_line(results) -> str:
    """'targets: all met' or the list of missed targets, from each result's "targets" dict."""
    misses = [f"{r['config']['name']} {k}" for r in results
              for k, t in r["targets"].items() if not t["met"]]
    return "targets: " + ("all met" if not misses else "MISSED: " + ", ".join(misses))
