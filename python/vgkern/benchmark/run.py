"""Runs a benchmark: for each configuration, thread count and dtype, builds vgkern's step and
every baseline that is installed, checks their results against vgkern's (untimed), times them
(timing.steady_state, then timing.first_step_after_idle) and returns one row per
implementation and a summary per configuration, ready for JSON (see `run`)."""
from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional, cast

import numpy as np

from . import gemm, numpy_loop, vgkern_steps
from .compare import max_rel_diff, to_numpy
from .configs import Config, LstmConfig, MlpConfig
from .timing import (Method, Step, first_step_after_idle, paired_ratio, steady_state,
                     summarize, with_stats)

__all__ = ["IMPLS", "SCHEMA", "load_frameworks", "run", "machine_info"]

SCHEMA = "vgkern-bench/1"

# model -> implementation -> (label, framework it needs or None)
IMPLS: dict[str, dict[str, tuple[str, Optional[str]]]] = {
    "mlp": {"vgkern": ("vgkern", None),
            "vgkern_nostats": ("vgkern stats off", None),
            "numpy": ("NumPy loop", None),
            "torch": ("torch eager + hooks", "torch"),
            "jax": ("JAX jit", "jax"),
            "gemm": ("bare GEMMs (SciPy BLAS)", None)},
    "lstm": {"vgkern": ("vgkern LSTM", None),
             "vgkern_nostats": ("vgkern stats off", None),
             "torch_cell": ("torch LSTMCell loop + hooks", "torch"),
             "torch_lstm": ("torch nn.LSTM", "torch"),
             "gemm": ("bare GEMMs (SciPy BLAS)", None),
             "vgkern_rnn": ("vgkern RNN tanh", None)},
}
# Rows run unless a selection names others; the RNN row (another model) only when asked for.
DEFAULT_IMPLS = {m: [n for n in impls if n != "vgkern_rnn"] for m, impls in IMPLS.items()}


def load_frameworks(wanted: Iterable[str], xla_cores: Optional[int] = None
                    ) -> tuple[dict[str, Any], dict[str, str], Optional[int]]:
    """(modules, skipped, xla_cores): each wanted framework ("torch", "jax") that imports, for
    each one that does not the reason (a note, never an error), and the cores XLA's pool was
    sized for (jax_jit.import_jax with the xla_cores asked for; fixed for the process; None:
    sized by XLA from every core)."""
    modules: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    pool = None
    for name in sorted(set(wanted)):
        try:
            if name == "torch":
                import torch
                modules[name] = torch
            elif name == "jax":
                from .jax_jit import import_jax
                modules[name], pool = import_jax(xla_cores)
        except Exception as err:  # ImportError, or a broken install: skip, with the reason
            skipped[name] = f"{type(err).__name__}: {err}"
    return modules, skipped, pool


@contextlib.contextmanager
def _threads(n: int, modules: dict[str, Any], xla_cores: Optional[int]
             ) -> Iterator[dict[str, tuple[Optional[int], str]]]:
    """Every thread pool of the process limited to n: threadpoolctl for each BLAS and OpenMP
    runtime (vgkern follows its BLAS's setting), torch.set_num_threads for torch's pool.
    Yields impl -> (threads, how); XLA's pool is sized once, when JAX is loaded
    (load_frameworks)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("vgkern bench sets every thread pool with threadpoolctl: pip install "
                          "threadpoolctl (or vgkern[bench])") from err

    torch = modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n):
        if torch is not None:
            torch.set_num_threads(n)
        try:
            blas = (n, "threadpoolctl limit of every BLAS/OpenMP runtime (vgkern follows "
                       "its BLAS's)")
            used: dict[str, tuple[Optional[int], str]] = {
                "vgkern": blas, "vgkern_nostats": blas, "vgkern_rnn": blas,
                "numpy": (n, "threadpoolctl: NumPy's OpenBLAS"),
                "gemm": (n, "threadpoolctl: SciPy's OpenBLAS (vgkern's BLAS)"),
                "jax": ((xla_cores, "XLA's pool, sized for that many cores when its "
                                    "backend started (pinned to them)")
                        if xla_cores else
                        (os.cpu_count(), "XLA's own pool, sized from the cores (fixed once "
                                         "JAX has started)"))}
            if torch is not None:
                how = (torch.get_num_threads(), "torch.set_num_threads")
                used.update(torch=how, torch_cell=how, torch_lstm=how)
            yield used
        finally:
            if torch is not None:
                torch.set_num_threads(before)


def _result(step: Step) -> tuple[Any, ...]:
    """(loss, norms...) of a step that is checked: every row's but the bare GEMMs' (Step types
    the result `object` because those return None)."""
    return cast("tuple[Any, ...]", step())


# (steps, checks, gemm_calls) of one configuration, as _build_mlp and _build_lstm return them
_Built = tuple[dict[str, Step], dict[str, float], int]


def _build_mlp(vgkern: Any, cfg: MlpConfig, dtype: type[np.floating[Any]], impls: list[str],
               modules: dict[str, Any]) -> _Built:
    """(steps, checks, gemm_calls) of one MLP configuration; checks: impl -> max rel diff."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((cfg.batch, cfg.width)).astype(dtype)
    target = rng.standard_normal((cfg.batch, cfg.width)).astype(dtype)
    net, step = vgkern_steps.make_mlp(vgkern, cfg, x, target)
    steps: dict[str, Step] = {"vgkern": with_stats(net, step, True)}
    if "vgkern_nostats" in impls:
        steps["vgkern_nostats"] = with_stats(net, step, False)
    # Every baseline starts from copies of vgkern's initial weights.
    copies = [[np.array(a, dtype=dtype, copy=True) for a in arrays]
              for arrays in (net.weights, net.biases, net.bn_gammas, net.bn_betas)]
    if "numpy" in impls:
        steps["numpy"] = numpy_loop.make_mlp(cfg, x, target, *copies)
    if "torch" in impls:
        from . import torch_eager
        steps["torch"] = torch_eager.make_mlp(modules["torch"], cfg, x, target, *copies)
    if "jax" in impls:
        from . import jax_jit
        steps["jax"] = jax_jit.make_mlp(modules["jax"], cfg, x, target, *copies)
    calls = 0
    if "gemm" in impls:
        steps["gemm"], calls = gemm.make_mlp(cfg, x, copies[0])
    # first calls (compile, first touch) outside the timing, and the check against vgkern
    ref = vgkern_steps.mlp_reference(cfg, _result(steps["vgkern"]))
    checks: dict[str, float] = {n: max_rel_diff(_result(steps[n]), ref)
                                for n in ("numpy", "torch", "jax") if n in steps}
    if "vgkern_nostats" in steps:  # no norms in its report: its loss and its gradients' norms
        loss_off = _result(steps["vgkern_nostats"])[0]
        grads = [np.linalg.norm(np.asarray(g, dtype=np.float64)) for g in net.weight_grads]
        checks["vgkern_nostats"] = max_rel_diff((loss_off, grads), ref[:2])
    return steps, checks, calls


def _build_lstm(vgkern: Any, cfg: LstmConfig, dtype: type[np.floating[Any]], impls: list[str],
                modules: dict[str, Any]) -> _Built:
    """(steps, checks, gemm_calls) of one LSTM configuration."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((cfg.steps, cfg.batch, cfg.input)).astype(dtype)
    target = rng.standard_normal((cfg.batch, cfg.hidden)).astype(dtype)
    net, step = vgkern_steps.make_recurrent(vgkern, cfg, x, target)
    steps: dict[str, Step] = {"vgkern": with_stats(net, step, True)}
    if "vgkern_nostats" in impls:
        steps["vgkern_nostats"] = with_stats(net, step, False)
    w_ih, w_hh, b = (np.array(a, dtype=dtype, copy=True)
                     for a in (net.weight_ih, net.weight_hh, net.bias))
    torch = modules.get("torch")
    if torch is not None:
        from . import torch_eager
    if "torch_cell" in impls:
        steps["torch_cell"] = torch_eager.make_lstm_cell_loop(torch, cfg, x, target, w_ih, w_hh, b)
    if "torch_lstm" in impls:
        steps["torch_lstm"], lstm_x_norms = torch_eager.make_lstm(torch, cfg, x, target,
                                                                  w_ih, w_hh, b)
    calls = 0
    if "gemm" in impls:
        h_seq, _ = net.forward(x)  # real hidden states for the h_{t-1} operands
        h_prev = np.concatenate([np.zeros((1, cfg.batch, cfg.hidden), dtype), h_seq[:-1]])
        steps["gemm"], calls = gemm.make_lstm(cfg, x, w_ih, w_hh, h_prev)
    if "vgkern_rnn" in impls:
        rnn, steps["vgkern_rnn"] = vgkern_steps.make_recurrent(vgkern, cfg, x, target, "rnn")

    # fields: loss, weight norms (3,), ||dL/dh_t||, ||dL/dc_t||, ||dL/dx_t|| (T,) each
    ref = to_numpy(_result(steps["vgkern"]))
    checks: dict[str, float] = {}
    if "vgkern_nostats" in steps:  # no norms in its report: its loss and its gradients' norms
        loss_off = _result(steps["vgkern_nostats"])[0]
        grads = [np.linalg.norm(np.asarray(g, dtype=np.float64))
                 for g in (net.weight_ih_grad, net.weight_hh_grad, net.bias_grad)]
        checks["vgkern_nostats"] = max_rel_diff((loss_off, grads), ref[:2])
    if "torch_cell" in steps:
        checks["torch_cell"] = max_rel_diff(_result(steps["torch_cell"]), ref)
    if "torch_lstm" in steps:
        loss, wn = _result(steps["torch_lstm"])
        checks["torch_lstm"] = max_rel_diff((loss, wn, lstm_x_norms()), (ref[0], ref[1], ref[4]))
    if "vgkern_rnn" in steps and torch is not None:
        r = to_numpy(_result(steps["vgkern_rnn"]))
        want = torch_eager.rnn_result(torch, cfg, x, target, rnn.weight_ih, rnn.weight_hh,
                                      rnn.bias)
        checks["vgkern_rnn"] = max_rel_diff(want, (r[0], r[1], r[4]))
    return steps, checks, calls


def bench_config(vgkern: Any, cfg: Config, threads: int, dtype: str, method: Method,
                 impls: list[str], modules: dict, xla_cores: Optional[int] = None
                 ) -> tuple[list[dict], dict]:
    """(rows, summary) of one configuration at one thread count and dtype: a row per
    implementation (impls: names of IMPLS[cfg.model] whose framework is in modules;
    xla_cores: as load_frameworks returned it)."""
    with _threads(threads, modules, xla_cores) as used:
        scalar = np.dtype(dtype).type
        if isinstance(cfg, MlpConfig):  # cfg.model == "mlp"
            steps, checks, calls = _build_mlp(vgkern, cfg, scalar, impls, modules)
        else:
            steps, checks, calls = _build_lstm(vgkern, cfg, scalar, impls, modules)
        timed = steady_state(steps, method)
        first = first_step_after_idle(steps, method) if method.first_step_reps else {}
        overhead_ms = gemm.call_overhead_s(dtype) * calls * 1e3 if calls else None

    med = {n: float(np.median(timed.samples(n))) for n in steps}
    rows = []
    for n in steps:
        rows.append({
            "model": cfg.model, "config": cfg.name, "threads": threads, "dtype": dtype,
            "impl": n, "label": IMPLS[cfg.model][n][0],
            "threads_used": {"n": used[n][0], "how": used[n][1]},
            "steady": {**summarize(timed.samples(n)),
                       "block_medians_ms": [t * 1e3 for t in timed.block_medians(n)],
                       "block_fastest_ms": [t * 1e3 for t in timed.block_fastest(n)],
                       "samples_ms": [t * 1e3 for t in timed.samples(n)]},
            "first_step_after_idle": ({**summarize(first[n]),
                                       "samples_ms": [t * 1e3 for t in first[n]]}
                                      if first else None),
            "ratio_vs_vgkern": med[n] / med["vgkern"],  # > 1: vgkern is faster
            "ratio_vs_vgkern_paired": paired_ratio(timed.block_medians(n),
                                                   timed.block_medians("vgkern")),
            "gflops": cfg.flops(n) / med[n] / 1e9,
            # the bare GEMMs' time over this row's (not for the RNN: another model's GEMMs)
            "gemm_fraction": (med["gemm"] / med[n] if "gemm" in med and n != "vgkern_rnn"
                              else None),
            "check_max_rel_diff": checks.get(n),
        })
    stats_cost = None
    if "vgkern_nostats" in steps:  # fastest steps, round by round (as paired_overhead)
        r = paired_ratio(timed.block_fastest("vgkern"), timed.block_fastest("vgkern_nostats"))
        stats_cost = {k: v - 1.0 for k, v in r.items()}
    loads = [c for c in timed.foreign_cores if c is not None]
    summary = {
        "model": cfg.model, "config": cfg.name, "threads": threads, "dtype": dtype,
        "params": cfg.as_dict(), "gflop_per_step": cfg.flops() / 1e9,
        "impls": list(steps),
        "gemm_fraction_of_vgkern": med["gemm"] / med["vgkern"] if "gemm" in med else None,
        "gemm_calls_per_step": calls or None, "gemm_call_overhead_ms": overhead_ms,
        "stats_cost": stats_cost,
        "foreign_load_cores": float(np.mean(loads)) if loads else None,
    }
    return rows, summary


def machine_info() -> dict:
    """CPU model, logical cores, platform."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "machine": platform.machine()}


def _versions(vgkern: Any, modules: dict[str, Any]) -> dict[str, str]:
    import scipy
    v = {"python": platform.python_version(), "vgkern": vgkern.__version__,
         "numpy": np.__version__, "scipy": scipy.__version__}
    for name, mod in modules.items():
        v[name] = mod.__version__
    if "jax" in modules:
        try:
            import jaxlib
            v["jaxlib"] = jaxlib.__version__
        except ImportError:  # pragma: no cover - jaxlib ships with jax
            pass
    return v


def run(configs: list[Config], threads: list[int], dtypes: list[str], method: Method,
        impls: Optional[dict[str, list[str]]] = None,
        progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Benchmarks every (configuration, thread count, dtype); returns the JSON-ready result:
    {"schema", "meta": machine, SIMD level, versions, method, skipped frameworks, "rows": one
    per implementation x configuration x threads x dtype, "configs": one summary each}.

    impls: model -> implementation names (default DEFAULT_IMPLS; vgkern always runs);
    progress: called with each summary line as a configuration finishes (e.g. print)."""
    import vgkern

    impls = {m: list(impls.get(m, DEFAULT_IMPLS[m]) if impls else DEFAULT_IMPLS[m])
             for m in IMPLS}
    for m, names in impls.items():
        unknown = set(names) - set(IMPLS[m])
        if unknown:
            raise ValueError(f"impls[{m!r}]: unknown {sorted(unknown)}; choose from "
                             f"{list(IMPLS[m])}")
    models = {c.model for c in configs}
    needed = {fw for m in models for n in impls[m] if (fw := IMPLS[m][n][1]) is not None}
    # XLA's pool fits one thread count per process: the run's, when it has only one
    modules, skipped, xla_cores = load_frameworks(
        needed, threads[0] if len(set(threads)) == 1 else None)
    meta = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:],
        "machine": machine_info(), "simd_selected": vgkern.build_info().get("simd_selected"),
        "build_info": vgkern.build_info(), "versions": _versions(vgkern, modules),
        "method": method.as_dict(), "threads": list(threads), "dtypes": list(dtypes),
        "skipped": {name: f"{name} is not importable ({why}); its rows are left out"
                    for name, why in skipped.items()},
    }
    rows, summaries = [], []
    for cfg in configs:
        run_impls = ["vgkern"] + [n for n in IMPLS[cfg.model] if n in impls[cfg.model]
                                  and n != "vgkern" and IMPLS[cfg.model][n][1] not in skipped]
        for dtype in dtypes:
            for n in threads:
                r, s = bench_config(vgkern, cfg, n, dtype, method, run_impls, modules,
                                    xla_cores)
                rows += r
                summaries.append(s)
                if progress is not None:
                    progress(s)
    return {"schema": SCHEMA, "meta": meta, "rows": rows, "configs": summaries}
