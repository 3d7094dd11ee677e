"""How vgkern's benchmarks time a step: one home for `vgkern bench` and the bench/ scripts.

**Steady state** (the headline figure; what a training loop or a sweep sees): each round runs,
for every implementation in turn, one block of K back-to-back steps. A block starts from idle
thread pools: a pause (at least `pause_s`, then until no thread of this process burns CPU, so
that no other library's pool is still spinning: OpenBLAS spins ~0.14 s after a threaded call),
then `warmup_steps` untimed steps (pools awake, caches warm), then K timed steps. The order of
the implementations rotates from round to round, so each one follows each other equally often.
Reported: the median and quartiles of the per-step times, and per round the median of each
block, so that two implementations can be compared round by round (both met the same load).

**First step after idle** (reported apart: the latency a short script sees): one step after
the process has gone idle, the implementations in rotating order. It pays for waking threads
and for caches other libraries evicted, and penalises OpenMP pools most; it is not what a loop
of steps costs.

**Paired overhead** (`paired_overhead`): the cost of one step variant over another, blocks of
back-to-back steps alternating, fastest step of each block (bench/bench_stats_regimes.py).
"""
from __future__ import annotations

import gc
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

__all__ = ["Method", "QUICK", "SteadyState", "settle", "steady_state", "first_step_after_idle",
           "summarize", "paired_ratio", "paired_overhead", "with_stats", "ForeignLoad"]

Step = Callable[[], object]


@dataclass(frozen=True)
class Method:
    """The parameters of the steady-state method (recorded with every result)."""

    block_steps: int = 10  # K timed back-to-back steps per block
    blocks: int = 10  # rounds; each runs one block of every implementation
    pause_s: float = 0.25  # least idle pause before a block (and before a first step)
    warmup_steps: int = 2  # untimed steps after the pause, before a block's K steps
    first_step_reps: int = 10  # first-step-after-idle samples per implementation (0: none)
    max_settle_s: float = 1.0  # longest wait for the process to go idle after the pause

    def __post_init__(self):
        for name in ("block_steps", "blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"Method.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "first_step_reps"):
            if getattr(self, name) < 0:
                raise ValueError(f"Method.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.pause_s <= self.max_settle_s:
            raise ValueError(f"Method: needs 0 <= pause_s <= max_settle_s, got pause_s="
                             f"{self.pause_s}, max_settle_s={self.max_settle_s}")

    def as_dict(self) -> dict:
        """The parameters as a JSON-ready dict (with the method's name)."""
        return {"name": "steady_state", **asdict(self)}


# A smoke run: few and short blocks (numbers from it are not worth quoting).
QUICK = Method(block_steps=3, blocks=3, pause_s=0.02, warmup_steps=1, first_step_reps=2,
               max_settle_s=0.3)


def settle(min_s: float, max_s: float, window_s: float = 10e-3, busy: float = 0.3) -> float:
    """Sleep at least min_s, then until no thread of this process burns CPU (at most max_s in
    all); returns the seconds waited.

    "Idle" is a window of window_s in which the process used less than busy * window_s of CPU
    time (kernels that account CPU time per 4 ms tick need windows of several ticks, hence
    10 ms and 30 %)."""
    t0 = time.perf_counter()
    time.sleep(min_s)
    while time.perf_counter() - t0 < max_s:
        c0, w0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)
        if time.process_time() - c0 < busy * (time.perf_counter() - w0):
            break
    return time.perf_counter() - t0


class ForeignLoad:
    """CPU time other processes used while a block ran, in cores (Linux /proc/stat; None
    elsewhere). Use as `with ForeignLoad() as f: ...`, then read f.cores."""

    cores: Optional[float] = None

    def __enter__(self) -> "ForeignLoad":
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy_s(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        own = time.process_time() - self.own0
        busy = self._busy_s()
        if busy is not None and self.busy0 is not None and wall > 0:
            self.cores = max(0.0, (busy - self.busy0 - own) / wall)

    @staticmethod
    def _busy_s() -> Optional[float]:
        try:
            f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
        total = sum(f[:8])  # user nice system idle iowait irq softirq steal
        return (total - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class SteadyState:
    """What `steady_state` measured. blocks[name][r]: the K per-step times (seconds) of that
    implementation's block in round r; foreign_cores[r]: other processes' CPU use in round r."""

    blocks: dict[str, list[list[float]]]
    foreign_cores: list[Optional[float]]

    def samples(self, name: str) -> list[float]:
        """Every timed step of one implementation, round by round."""
        return [t for block in self.blocks[name] for t in block]

    def block_medians(self, name: str) -> list[float]:
        """The median step time of each of its blocks, one per round."""
        return [float(np.median(block)) for block in self.blocks[name]]

    def block_fastest(self, name: str) -> list[float]:
        """The fastest step of each of its blocks, one per round: other processes can only slow
        a step down, so two variants of one step compare best by these (paired_overhead)."""
        return [float(np.min(block)) for block in self.blocks[name]]


def _rotated(names: list[str], r: int) -> list[str]:
    k = r % len(names)
    return names[k:] + names[:k]


def steady_state(steps: dict[str, Step], method: Method) -> SteadyState:
    """Times every step function of `steps` (name -> zero-argument callable running one
    complete step) by the steady-state method (module docstring). The garbage collector is
    off while timing (a collection inside a block would land on whichever step ran)."""
    if not steps:
        raise ValueError("steady_state: steps is empty; pass at least one implementation")
    names = list(steps)
    out = SteadyState({n: [] for n in names}, [])
    gc.collect()
    gc.disable()
    try:
        for r in range(method.blocks):
            with ForeignLoad() as foreign:
                for n in _rotated(names, r):
                    step = steps[n]
                    settle(method.pause_s, method.max_settle_s)
                    for _ in range(method.warmup_steps):
                        step()
                    times = []
                    for _ in range(method.block_steps):
                        t0 = time.perf_counter()
                        step()
                        times.append(time.perf_counter() - t0)
                    out.blocks[n].append(times)
            out.foreign_cores.append(foreign.cores)
    finally:
        gc.enable()
    return out


def first_step_after_idle(steps: dict[str, Step], method: Method) -> dict[str, list[float]]:
    """Seconds of one step started from an idle process, method.first_step_reps times per
    implementation in rotating order (name -> samples). The steps should have run before
    (compiled, first touch done): this is the latency of a step after a pause, not of the
    first call ever."""
    names = list(steps)
    out: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    gc.disable()
    try:
        for r in range(method.first_step_reps):
            for n in _rotated(names, r):
                settle(method.pause_s, method.max_settle_s)
                t0 = time.perf_counter()
                steps[n]()
                out[n].append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return out


def summarize(seconds: Sequence[float]) -> dict:
    """Median, quartiles, min and mean (in ms) and count of per-step times.

    seconds: (n,) step times in seconds, n >= 1."""
    s = np.asarray(seconds, dtype=np.float64) * 1e3
    if s.size == 0:
        raise ValueError("summarize: no samples")
    q1, med, q3 = np.percentile(s, [25, 50, 75])
    return {"median_ms": float(med), "q1_ms": float(q1), "q3_ms": float(q3),
            "min_ms": float(s.min()), "mean_ms": float(s.mean()), "n": int(s.size)}


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict:
    """Median and quartiles over rounds of numerator[r] / denominator[r].

    numerator, denominator: (rounds,) block medians of two implementations, same rounds."""
    a, b = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_ratio: needs two equal, non-empty lists of rounds, got "
                         f"{a.size} and {b.size}")
    q1, med, q3 = np.percentile(a / b, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


def paired_overhead(step_on: Step, step_off: Step, rounds: int = 24,
                    block_s: float = 0.4) -> dict:
    """Cost of step_on over step_off: blocks of back-to-back steps (about block_s each, at least
    5 steps), on and off alternating (on first in even rounds, off first in odd ones). Each
    block keeps its fastest step, which other processes can only slow down; the result is the
    median over rounds of on_min / off_min - 1 ("overhead"), with quartiles ("p25", "p75")."""
    step_on()
    t0 = time.perf_counter()
    step_off()
    steps = max(5, int(block_s / max(time.perf_counter() - t0, 1e-6)))
    best: dict[bool, list[float]] = {True: [], False: []}
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


def with_stats(net: Any, step: Step, on: bool) -> Step:
    """step() with net.stats switched on or off first. Both sides of the statistics' cost run
    one net: two nets differ in where their buffers lie, which alone moved a W=64 step by
    -1.2 to +1.5 %."""
    def switched():
        net.stats = on
        return step()
    return switched
