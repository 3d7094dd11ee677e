"""The project's speed targets (from the issues), checked against a result of
vgkern.benchmark.run.run by bench_mlp.py and bench_lstm.py. A target applies to every measured
configuration whose parameters and thread count match its `where`; it is never asserted in a
test (speed is measured here, on a quiet machine)."""
from __future__ import annotations

# (model, where: params/threads that must match, measure, ">=" or "<=", value, source)
# measure: "x <impl>" = that row's median / vgkern's; "gemm" = bare GEMMs' median / vgkern's;
# "stats" = vgkern statistics on vs off (paired over rounds), as a fraction.
TARGETS = [
    ("mlp", dict(width=64, batch=256, layers=50, batch_norm=False), "x torch", ">=", 3.0, "MLP"),
    ("mlp", dict(width=64, batch=256, layers=50, batch_norm=False), "x numpy", ">=", 2.0, "MLP"),
    ("mlp", dict(width=64, batch=256, layers=50, batch_norm=False), "x jax", ">=", 1.5, "MLP"),
    ("mlp", dict(width=64, batch=256, layers=50, batch_norm=False), "gemm", ">=", 0.60, "MLP"),
    ("mlp", dict(width=256, batch=256, layers=50, batch_norm=False), "gemm", ">=", 0.85, "MLP"),
    ("mlp", dict(width=1024, batch=64, layers=10, batch_norm=False), "gemm", ">=", 0.90, "MLP"),
    ("mlp", dict(width=64, batch=256, layers=50, batch_norm=True), "x torch", ">=", 3.0, "BN"),
    ("mlp", dict(width=64, batch=256, layers=50, batch_norm=True), "x numpy", ">=", 2.0, "BN"),
    ("mlp", dict(width=256, batch=256, layers=50, batch_norm=True), "x torch", ">=", 2.0, "BN"),
    ("mlp", dict(width=256, batch=256, layers=50, batch_norm=True), "gemm", ">=", 0.85, "BN"),
    ("mlp", dict(), "stats", "<=", 0.03, "MLP"),
    # issue 18: one thread at small widths; LSTM ahead of nn.LSTM at 1 and 2 threads
    *[("mlp", dict(width=w, batch=b, threads=1, batch_norm=False), "gemm", ">=", 0.90,
       "issue 18") for w in (64, 128) for b in (128, 256)],
    *[("lstm", dict(hidden=h, batch=64, steps=50), m, ">=", v, "issue 18")
      for h in (128, 512) for m, v in (("gemm", 0.90), ("x torch_lstm", 1.2))],
    ("lstm", dict(hidden=128, batch=64, steps=50, threads=2), "x torch_cell", ">=", 3.0, "LSTM"),
    ("lstm", dict(hidden=512, batch=64, steps=50, threads=2), "x torch_cell", ">=", 1.5, "LSTM"),
]


def _measured(summary: dict, rows: dict, measure: str):
    if measure == "gemm":
        return summary["gemm_fraction_of_vgkern"]
    if measure == "stats":
        return None if summary["stats_cost"] is None else summary["stats_cost"]["median"]
    row = rows.get(measure.split(" ", 1)[1])
    return None if row is None else row["ratio_vs_vgkern"]


def check_targets(result: dict) -> list[str]:
    """One line per target that applies to a measured configuration, then a verdict line."""
    lines, missed = [], 0
    for s in result["configs"]:
        facts = {**s["params"], "threads": s["threads"]}
        rows = {r["impl"]: r for r in result["rows"] if (r["model"], r["config"], r["threads"],
                                                         r["dtype"]) ==
                (s["model"], s["config"], s["threads"], s["dtype"])}
        for model, where, measure, op, value, source in TARGETS:
            if model != s["model"] or any(facts.get(k) != v for k, v in where.items()):
                continue
            got = _measured(s, rows, measure)
            if got is None:
                continue
            met = got >= value if op == ">=" else got <= value
            missed += not met
            lines.append(f"  {s['model']} {s['config']} {s['threads']} thr {s['dtype']}: "
                         f"{measure} {got:.3f} (target {op} {value:g}, {source}) "
                         f"{'ok' if met else 'MISS'}")
    verdict = "targets: " + ("none apply" if not lines else
                             "all met" if not missed else f"{missed} of {len(lines)} MISSED")
    return lines + [verdict]
