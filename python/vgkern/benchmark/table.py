"""The printed form of a benchmark result (run.run): one table, a row per implementation and
configuration, and the notes that say how it was measured."""
from __future__ import annotations

__all__ = ["format_table", "format_header"]

_COLUMNS = (f"{'model':<5} {'config':<20} {'dtype':<7} {'impl':<28} {'thr':>4} "
            f"{'median ms [q1, q3]':>28} {'x vgkern':>9} {'GFLOP/s':>8} {'GEMM %':>7} "
            f"{'stats':>16} {'1st step ms':>12} {'check':>8}")


def _ms(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _row(row: dict, summary: dict) -> str:
    s = row["steady"]
    spread = f"{_ms(s['median_ms'])} [{_ms(s['q1_ms'])}, {_ms(s['q3_ms'])}]"
    gemm = "" if row["gemm_fraction"] is None else f"{100 * row['gemm_fraction']:.0f} %"
    stats = ""
    if row["impl"] == "vgkern" and summary["stats_cost"] is not None:
        c = summary["stats_cost"]
        stats = f"{100 * c['median']:+.1f}% [{100 * c['q1']:+.0f},{100 * c['q3']:+.0f}]"
    first = row["first_step_after_idle"]
    first = "" if first is None else _ms(first["median_ms"])
    check = row["check_max_rel_diff"]
    check = "" if check is None else f"{check:.0e}"
    used = row["threads_used"]["n"]
    threads = f"{used}" + ("*" if used != row["threads"] else "")
    return (f"{row['model']:<5} {row['config']:<20} {row['dtype']:<7} {row['label']:<28} "
            f"{threads:>4} {spread:>28} {row['ratio_vs_vgkern']:>8.2f}x {row['gflops']:>8.1f} "
            f"{gemm:>7} {stats:>16} {first:>12} {check:>8}")


def format_header(result: dict) -> str:
    """What ran where: machine, SIMD level, versions, method, skipped frameworks."""
    meta = result["meta"]
    m, method = meta["machine"], meta["method"]
    lines = [f"vgkern bench: {m['cpu']}, {m['cores']} cores, SIMD {meta['simd_selected']}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
             f"method: steady state, {method['blocks']} rounds x blocks of "
             f"{method['block_steps']} back-to-back steps per implementation, each block after "
             f"a pause of >= {method['pause_s']:g} s (until idle) and {method['warmup_steps']} "
             f"untimed steps; first step after idle: {method['first_step_reps']} samples each"]
    for note in meta["skipped"].values():
        lines.append(f"note: {note}")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    """The whole result as one table with its legend."""
    summaries = {(s["model"], s["config"], s["threads"], s["dtype"]): s
                 for s in result["configs"]}
    lines = [format_header(result), "", _COLUMNS]
    last = None
    for row in result["rows"]:
        key = (row["model"], row["config"], row["threads"], row["dtype"])
        if last is not None and key != last:
            lines.append("")
        last = key
        lines.append(_row(row, summaries[key]))
    loaded = [s for s in result["configs"] if (s["foreign_load_cores"] or 0) > 0.1]
    lines += ["",
              "median ms [q1, q3]: per-step time in steady state; x vgkern: its median / "
              "vgkern's (> 1: vgkern is faster); GFLOP/s: the step's GEMM flops / median;",
              "GEMM %: the bare GEMMs' median / this row's (how close to the BLAS's GEMM time); "
              "stats: vgkern with statistics on vs off, fastest step of each block, median "
              "[quartiles] over rounds;",
              "1st step ms: median of one step started from an idle process (reported apart: "
              "the latency of a short script); check: max relative difference of loss and "
              "norms vs vgkern;",
              "thr: threads the row used (threadpoolctl for the BLAS/OpenMP runtimes, "
              "torch.set_num_threads for torch, XLA's pool sized at JAX's start: for the "
              "run's thread count when it has one; *: not the row's)."]
    if loaded:
        lines.append("WARNING: other processes used the CPU during " + ", ".join(
            f"{s['model']} {s['config']} ({s['foreign_load_cores']:.2f} cores)"
            for s in loaded) + "; those numbers are not reliable")
    return "\n".join(lines)
