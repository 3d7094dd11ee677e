"""Command line:

  vgkern demo                          a small sweep: MLPs of depth 5..50 (sigmoid, tanh, relu,
                                       elu; with and without batch norm) and LSTM vs RNN through
                                       time; prints a summary and writes vgkern-demo.png
  vgkern sweep --depth 2,4,8 --activation sigmoid,tanh --seed 0..4 --out results.parquet
                                       a sweep (see `vgkern sweep --help`)
  vgkern demo --train                  the training claim: first layers of a deep sigmoid MLP stop
                                       learning, ReLU/ELU/batch norm do not (digits, ~30 s)
  vgkern plot results.parquet -o fig.png   (--over steps --stat weight_change: over training)
  vgkern summary results.parquet       the per-configuration summary (--step N|last)
  vgkern theory --activation tanh --sigma-w 0.5..3.0:0.25 --sigma-b 0.05
                                       mean-field q*, chi1, depth scales, the edge of chaos
  vgkern bench --model mlp,lstm --width 64,256 --threads 1,2 --json bench.json
                                       one training step against PyTorch, JAX, NumPy and the
                                       bare GEMMs (see `vgkern bench --help`)
  vgkern info                          build and runtime information as JSON
  vgkern --version                     the version (vgkern.__version__)

Lists: values separated by commas or spaces, integer ranges a..b or a..b:step (inclusive).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from . import _cli_training  # demo --train, plot --over steps, summary --step
from .sweeps.spec import KEYS as SWEEP_KEYS  # the grid keys: --<key> options, kinds, help

if TYPE_CHECKING:
    import pandas

__all__ = ["demo", "main"]  # the Python API; cmd_* are the subcommands' internals

_BOOLS = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False,
          "1": True, "0": False}


class _Fail(Exception):
    pass


def _parse_values(option, kind, tokens):
    values: List[Any] = []
    for token in tokens:
        for item in token.split(","):
            item = item.strip()
            if not item:
                continue
            if kind == "bool":
                if item.lower() == "both":
                    values += [False, True]
                elif item.lower() in _BOOLS:
                    values.append(_BOOLS[item.lower()])
                else:
                    raise _Fail(f"--{option.replace('_', '-')}: expected on/off, got {item!r}")
            elif kind in ("int", "float") and ".." in item:
                rng, _, step = item.partition(":")
                lo, _, hi = rng.partition("..")
                conv = int if kind == "int" else float
                try:
                    lo, hi, step = conv(lo), conv(hi), conv(step) if step else conv(1)
                except ValueError:
                    raise _Fail(f"--{option.replace('_', '-')}: bad range {item!r} "
                                "(use a..b or a..b:step)") from None
                if step <= 0 or hi < lo:
                    raise _Fail(f"--{option.replace('_', '-')}: bad range {item!r} "
                                "(needs a <= b and step > 0)")
                n = int((hi - lo) / step + 1e-9) + 1
                values += [lo + i * step for i in range(n)]
            elif kind == "int":
                try:
                    values.append(int(item))
                except ValueError:
                    raise _Fail(f"--{option.replace('_', '-')}: expected integers, got {item!r}") from None
            elif kind == "float":
                try:
                    values.append(float(item))
                except ValueError:
                    raise _Fail(f"--{option.replace('_', '-')}: expected numbers, got {item!r}") from None
            else:
                values.append(item)
    if not values:
        raise _Fail(f"--{option.replace('_', '-')}: no values given")
    return values


def _option_kind(key):
    """How the CLI reads a grid key's values: "str", "int", "float" or "bool"."""
    return {"choice": "str", "dtype": "str"}.get(key.kind, key.kind)


def _grid_from_args(args):
    keys = {}
    for name, key in SWEEP_KEYS.items():
        tokens = getattr(args, name)
        if tokens is not None:
            keys[name] = _parse_values(name, _option_kind(key), tokens)
    grid = None
    if args.grid:
        text = args.grid
        if os.path.isfile(text):
            with open(text) as f:
                text = f.read()
        try:
            grid = json.loads(text)
        except json.JSONDecodeError as err:
            raise _Fail(f"--grid: not a JSON file or JSON text ({err})") from None
    return grid, keys


def _add_grid_options(p):
    g = p.add_argument_group("grid (each option takes a list; the sweep is their product)")
    for name, key in SWEEP_KEYS.items():
        g.add_argument("--" + name.replace("_", "-"), dest=name, nargs="+", metavar="V",
                       help=key.describe(cli=True))
    g.add_argument("--grid", help="a JSON file (or JSON text) with a grid dict or a list of grid "
                   "dicts; the options above are merged into each")


def _print_summary(summary, stream, limit=60, step=None):
    """Mean over seeds of the gain and the first/last ratio, one line per configuration group,
    at the first step (or at `step`: the summary was already cut to it, a number or "last")."""
    import numpy as np

    if not len(summary):
        print("(no finished configurations)", file=stream)
        return
    if step is None:
        step = summary["step"].min()
        s = summary[summary["step"] == step]
    else:
        s = summary
    cols = [c for c in ("model", "data", "activation", "init", "sigma_w", "sigma_b", "batch_norm",
                        "width", "batch", "dtype", "steps", "lr", "optimizer", "momentum",
                        "weight_decay", "log_scale", "forget_bias")
            if c in s.columns and s[c].nunique(dropna=False) > 1]
    cols = (cols or ["model"]) + ["depth"]
    agg = s.groupby(cols, dropna=False, sort=True).agg(
        seeds=("seed", "nunique"), gain=("gain", "mean"),
        log10_ratio=("log10_ratio_first_last", "mean")).reset_index()
    header = [*cols, "seeds", "gain/layer", "log10 first/last"]
    rows = []
    for _, r in agg.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c == "batch_norm":
                v = "BN" if v else "-"
            elif v is None or (isinstance(v, float) and np.isnan(v)):
                v = "-"
            elif isinstance(v, float):
                v = f"{v:g}"
            cells.append(str(v))
        cells += [str(r["seeds"]), f"{r['gain']:.4f}", f"{r['log10_ratio']:.2f}"]
        rows.append(cells)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print(f"Per-layer gain (10^-slope of log10 ||dL/dz_l|| vs layer; LSTM/RNN: ||dL/dx_t|| vs t; "
          f"< 1 vanishes towards the input) and log10 ||first|| / ||last||, step {step}, mean "
          f"over seeds:", file=stream)
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)), file=stream)
    for row in rows[:limit]:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)), file=stream)
    if len(rows) > limit:
        print(f"... {len(rows) - limit} more lines (vgkern.sweep_summary() or --summary gives "
              "them all)", file=stream)


def _write_summary(summary, path):
    from .sweeps import atomic_write, format_of
    import pyarrow as pa

    atomic_write(pa.Table.from_pandas(summary, preserve_index=False), path, format_of(path))


def _executor_for(args, stack):
    """(executor or None, description) for --scheduler / --dask-local."""
    if not args.scheduler and not args.dask_local:
        from .sweeps import cpu_count

        return None, f"{args.workers or cpu_count()} worker thread(s)"
    if args.scheduler and args.dask_local:
        raise _Fail("give --scheduler or --dask-local, not both")
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise _Fail("--scheduler/--dask-local need dask.distributed: pip install "
                    "'vgkern[sweep]'") from None
    if args.dask_local:
        if args.dask_local < 1:
            raise _Fail("--dask-local must be >= 1")
        cluster = stack.enter_context(LocalCluster(
            n_workers=args.dask_local, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None, silence_logs=40))
        client = stack.enter_context(Client(cluster))
        what = f"a local Dask cluster of {args.dask_local} processes"
    else:
        try:
            client = stack.enter_context(Client(args.scheduler, timeout="20s"))
        except (OSError, TimeoutError) as err:
            raise _Fail(f"--scheduler {args.scheduler}: cannot connect ({err})") from None
        what = f"the Dask scheduler at {args.scheduler}"
    return client.get_executor(pure=False), what


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through subprocesses
    raise KeyboardInterrupt


def cmd_sweep(args, stream=None):
    import contextlib

    stream = sys.stdout if stream is None else stream
    from .sweeps import SweepInterrupted, sweep as run_sweep, sweep_configs, sweep_summary

    grid, keys = _grid_from_args(args)
    configs = sweep_configs(grid, **keys)
    if args.dry_run:
        print(f"{len(configs)} configurations", file=stream)
        for c in configs[:args.show]:
            print(json.dumps(c), file=stream)
        if len(configs) > args.show:
            print(f"... {len(configs) - args.show} more", file=stream)
        return 0
    if not args.out:
        raise _Fail("--out is required (a .parquet or .csv file), e.g. --out results.parquet")
    if args.workers is not None and args.workers < 1:
        raise _Fail("--workers must be >= 1")
    if hasattr(signal, "SIGTERM"):
        with contextlib.suppress(ValueError):  # not in the main thread
            signal.signal(signal.SIGTERM, _on_sigterm)
    with contextlib.ExitStack() as stack:
        executor, where = _executor_for(args, stack)
        print(f"vgkern sweep: {len(configs)} configurations on {where} -> {args.out}",
              file=sys.stderr)
        t0 = time.perf_counter()
        try:
            table = run_sweep(grid, out=args.out, resume=not args.overwrite, workers=args.workers,
                              executor=executor, batch_size=args.batch_size,
                              progress=args.progress, flush_interval=args.flush_interval,
                              log=lambda line: print(line, file=sys.stderr, flush=True), **keys)
        except SweepInterrupted as stop:
            print(f"\ninterrupted: {stop.finished} of {stop.total} configurations are finished "
                  f"and saved in {args.out}; run the same command again to resume",
                  file=sys.stderr)
            return 130
        elapsed = time.perf_counter() - t0
    summary = sweep_summary(table)
    _print_summary(summary, stream)
    if args.summary:
        _write_summary(summary, args.summary)
    n = len(configs)
    print(f"{n} configurations, {len(table)} rows in {args.out} ({elapsed:.1f} s"
          + (f", {n / elapsed:.1f} configurations/s" if elapsed > 0 else "") + ")", file=stream)
    return 0


def cmd_plot(args, stream=None):
    stream = sys.stdout if stream is None else stream
    from . import plot_sweep, read_results

    where = {}
    for item in args.where or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise _Fail(f"--where: expected key=value, got {item!r}")
        vals = []
        for v in value.split(","):
            for conv in (int, float):
                try:
                    v = conv(v)
                    break
                except ValueError:
                    pass
            if isinstance(v, str) and v.lower() in ("true", "false", "on", "off"):
                v = v.lower() in ("true", "on")
            vals.append(v)
        where[key] = vals
    if not os.path.isfile(args.results):
        raise _Fail(f"no such results file: {args.results!r}")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        raise _Fail(f"-o {args.output}: the folder {out_dir!r} does not exist or is not writable")
    table = read_results(args.results)
    if args.over == "steps":  # vgkern._cli_training: a statistic over the training steps
        from ._cli_training import plot_over_steps

        plot_over_steps(args, table, where or None)
    else:
        plot_sweep(table, args.output, depth=args.depth, step=args.step, where=where or None,
                   dpi=args.dpi)
    print(f"wrote {args.output}", file=stream)
    return 0


def cmd_summary(args, stream=None):
    stream = sys.stdout if stream is None else stream
    from . import read_results, sweep_summary

    if not os.path.isfile(args.results):
        raise _Fail(f"no such results file: {args.results!r}")
    from ._cli_training import summary_at_step

    summary = summary_at_step(sweep_summary(read_results(args.results)), args.step)
    _print_summary(summary, stream, limit=args.limit, step=args.step)
    if args.output:
        _write_summary(summary, args.output)
        print(f"wrote {args.output}", file=stream)
    return 0


DEMO_DEPTHS = tuple(range(5, 51, 5))


def demo(depths: Sequence[int] = DEMO_DEPTHS, width: int = 64, batch: int = 128, seed: int = 0,
         dtype: str = "float32", png: Optional[str] = "vgkern-demo.png",
         out: Optional[str] = None, workers: Optional[int] = None,
         stream: Optional[IO[str]] = None) -> pandas.DataFrame:
    """The README's first command: a small sweep (MLPs of `depths` x sigmoid/tanh/relu/elu x
    with/without batch norm, xavier_normal, MSE on Gaussian data; LSTM vs tanh RNN with the
    same sequence lengths), a printed summary table and a PNG (without matplotlib: one line
    saying how to get it instead). Returns sweep_summary()."""
    stream = sys.stdout if stream is None else stream
    from . import plot_sweep, sweep, sweep_summary

    activations = ("sigmoid", "tanh", "relu", "elu")
    grid: List[Dict[str, Any]] = [
        dict(model="mlp", depth=list(depths), activation=list(activations),
             batch_norm=[False, True]),
        dict(model=["lstm", "rnn"], seq_len=list(depths), activation="tanh")]
    common = dict(width=width, batch=batch, seed=seed, dtype=dtype)
    grid = [{**g, **common} for g in grid]
    t0 = time.perf_counter()
    table = sweep(grid, out=out, workers=workers, progress=False)
    elapsed = time.perf_counter() - t0
    summary = sweep_summary(table)
    n = summary["config_id"].nunique()
    print(f"vgkern demo: {n} configurations in {elapsed:.2f} s: MLPs with depth "
          f"{depths[0]}..{depths[-1]}, width {width}, batch {batch}, xavier_normal, MSE on "
          f"Gaussian data, {dtype}; LSTM and tanh RNN over the same sequence lengths", file=stream)

    mlp = summary[summary["model"] == "mlp"]
    cols = [(a, bn) for a in activations for bn in (False, True)]
    names = [a + ("+BN" if bn else "") for a, bn in cols]
    print("\nGradient gain per layer (backprop multiplies ||dL/dz|| by this each layer; "
          "< 1: vanishing towards the input)", file=stream)
    print(f"{'depth':>5} " + " ".join(f"{n_:>10}" for n_ in names), file=stream)
    for d in depths:
        cells = []
        for a, bn in cols:
            v = mlp[(mlp["depth"] == d) & (mlp["activation"] == a) & (mlp["batch_norm"] == bn)]["gain"]
            cells.append(f"{v.iloc[0]:>10.3f}" if len(v) else f"{'-':>10}")
        print(f"{d:>5} " + " ".join(cells), file=stream)
    print("\nlog10 ||dL/dz_0|| / ||dL/dz_{L-1}|| (input layer vs output layer)", file=stream)
    print(f"{'depth':>5} " + " ".join(f"{n_:>10}" for n_ in names), file=stream)
    for d in depths:
        cells = []
        for a, bn in cols:
            v = mlp[(mlp["depth"] == d) & (mlp["activation"] == a) & (mlp["batch_norm"] == bn)][
                "log10_ratio_first_last"]
            cells.append(f"{v.iloc[0]:>10.2f}" if len(v) else f"{'-':>10}")
        print(f"{d:>5} " + " ".join(cells), file=stream)
    from .theory.table import measured_vs_predicted

    for line in measured_vs_predicted(summary, activations, depths):
        print(line, file=stream)
    rec = summary[summary["model"] != "mlp"]
    print("\nThrough time: log10 ||dL/dx_0|| / ||dL/dx_{T-1}|| (loss on the last step)",
          file=stream)
    print(f"{'T':>5} {'LSTM':>10} {'RNN tanh':>10}", file=stream)
    for d in depths:
        cells = []
        for m in ("lstm", "rnn"):
            v = rec[(rec["depth"] == d) & (rec["model"] == m)]["log10_ratio_first_last"]
            cells.append(f"{v.iloc[0]:>10.2f}" if len(v) else f"{'-':>10}")
        print(f"{d:>5} " + " ".join(cells), file=stream)
    if png and not _have_matplotlib():
        print(f"\nno figure: {png} needs matplotlib: pip install 'vgkern[sweep]'"
              + (f" (wrote {out})" if out else ""), file=stream)
    elif png:
        plot_sweep(table, png, depth=max(depths))
        print(f"\nwrote {png}" + (f" and {out}" if out else ""), file=stream)
    return summary


def cmd_theory(args, stream=None):
    """`vgkern theory`: the mean-field table for one activation over sigma_w values."""
    from .theory.table import theory_table

    stream = sys.stdout if stream is None else stream
    sigma_ws = _parse_values("sigma_w", "float", [args.sigma_w])
    for line in theory_table(args.activation, sigma_ws, args.sigma_b, elu_alpha=args.elu_alpha):
        print(line, file=stream)
    return 0


def _have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `vgkern` command (the module's docstring lists the subcommands): parses argv
    (default sys.argv[1:]), runs the subcommand and returns its exit status."""
    parser = argparse.ArgumentParser(prog="vgkern", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    parser.add_argument("--version", action="version", version=__version__,
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    p_demo = sub.add_parser("demo", help="a small sweep: vanishing gradients in MLPs (with and "
                            "without batch norm) and LSTM vs RNN; prints a summary, writes a PNG")
    p_demo.add_argument("--depth", default="5..50:5",
                        help="MLP depths and LSTM/RNN lengths (default 5..50:5)")
    p_demo.add_argument("--width", type=int, default=64)
    p_demo.add_argument("--batch", type=int, default=128)
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p_demo.add_argument("-o", "--output", default="vgkern-demo.png",
                        help="the PNG to write (default vgkern-demo.png; '' for none)")
    p_demo.add_argument("--out", help="also save the results table (.parquet or .csv)")
    p_demo.add_argument("--workers", type=int, help="threads (default: the number of cores)")
    _cli_training.add_demo_options(p_demo)

    p_sweep = sub.add_parser(
        "sweep", help="run a grid of configurations; per-layer statistics to Parquet/CSV",
        description="Run a grid of configurations and append one row per (configuration, step, "
        "layer) to --out as each configuration finishes. Re-running the same command resumes. "
        "Lists: comma/space separated, integer ranges a..b or a..b:step.",
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        epilog="example: vgkern sweep --depth 2,4,8,16,32 --activation sigmoid,tanh,relu,elu "
               "--batch-norm off,on --seed 0..4 --out results.parquet")
    _add_grid_options(p_sweep)
    r = p_sweep.add_argument_group("running")
    r.add_argument("--out", help="output file: .parquet or .csv (required)")
    r.add_argument("--resume", dest="overwrite", action="store_false", default=False,
                   help="skip configurations already in --out (the default)")
    r.add_argument("--overwrite", "--no-resume", dest="overwrite", action="store_true",
                   help="start --out afresh, discarding what is there")
    r.add_argument("--workers", type=int, help="worker threads (default: the number of cores)")
    r.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run on a Dask distributed scheduler (vgkern installed on the workers)")
    r.add_argument("--dask-local", type=int, metavar="N",
                   help="run on a local Dask cluster of N worker processes")
    r.add_argument("--batch-size", type=int, help="configurations per task (default: 1 for "
                   "threads, ~8 tasks per worker for Dask)")
    r.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always show the progress bar (default: when stderr is a terminal)")
    r.add_argument("--no-progress", dest="progress", action="store_false")
    r.add_argument("--flush-interval", type=float, default=2.0, metavar="S",
                   help="seconds between rebuilds of --out (default 2; finished configurations "
                   "are in the journal at once)")
    r.add_argument("--summary", metavar="PATH", help="also write the per-configuration summary "
                   "(.parquet or .csv)")
    r.add_argument("--dry-run", action="store_true", help="list the configurations and stop")
    r.add_argument("--show", type=int, default=20, help=argparse.SUPPRESS)

    p_plot = sub.add_parser("plot", help="plot a results file: gradient norm vs layer, gain vs "
                            "depth, depth x layer heatmaps")
    p_plot.add_argument("results", help="a results file from `vgkern sweep` (.parquet or .csv)")
    p_plot.add_argument("-o", "--output", default="vgkern-sweep.png",
                        help="image file (.png, .pdf, .svg; default vgkern-sweep.png)")
    p_plot.add_argument("--depth", type=int, help="depth of the norm-vs-layer panel (default: "
                        "the largest)")
    p_plot.add_argument("--step", type=int, default=0, help="training step to show (default 0)")
    p_plot.add_argument("--where", nargs="+", metavar="KEY=V[,V]",
                        help="keep only rows with these values, e.g. init=he_normal batch_norm=off")
    p_plot.add_argument("--dpi", type=int, default=120)
    _cli_training.add_plot_options(p_plot)

    p_sum = sub.add_parser("summary", help="per-configuration gain and first/last ratio of a "
                           "results file")
    p_sum.add_argument("results")
    p_sum.add_argument("-o", "--output", help="write the summary table (.parquet or .csv)")
    p_sum.add_argument("--limit", type=int, default=200, help="lines to print (default 200)")
    _cli_training.add_summary_options(p_sum)

    p_theory = sub.add_parser("theory", help="mean-field predictions: q*, chi1, depth scales and "
                              "the edge of chaos for one activation over sigma_w values")
    p_theory.add_argument("--activation", required=True,
                          choices=("identity", "sigmoid", "tanh", "relu", "elu"))
    p_theory.add_argument("--sigma-w", default="0.5..3.0:0.25",
                          help="sigma_w values: list or range a..b:step (default 0.5..3.0:0.25)")
    p_theory.add_argument("--sigma-b", type=float, default=0.0, help="bias std (default 0)")
    p_theory.add_argument("--elu-alpha", type=float, default=1.0)

    from .benchmark.command import add_parser as add_bench_parser

    add_bench_parser(sub)
    sub.add_parser("info", help="build and runtime information as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo" and args.train:
            return _cli_training.cmd_demo_train(args)
        if args.command == "demo":
            try:
                depths = _parse_values("depth", "int", [args.depth])
            except _Fail as err:
                parser.error(str(err))
            if min(depths) < 2 or args.width < 1 or args.batch < 2:
                parser.error("--depth values must be >= 2, --width >= 1 and --batch >= 2")
            try:
                demo(tuple(depths), args.width, args.batch, args.seed, args.dtype,
                     png=args.output or None, out=args.out, workers=args.workers)
            except KeyboardInterrupt:
                print("\ninterrupted", file=sys.stderr)
                return 130
            return 0
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "plot":
            return cmd_plot(args)
        if args.command == "summary":
            return cmd_summary(args)
        if args.command == "theory":
            return cmd_theory(args)
        if args.command == "bench":
            from .benchmark.command import cmd_bench

            return cmd_bench(args)
        from . import build_info

        print(json.dumps(build_info(), indent=2, default=str))
        return 0
    except (_Fail, ValueError, ImportError, FileNotFoundError) as err:
        print(f"vgkern {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
