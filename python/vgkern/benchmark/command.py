"""`vgkern bench`: vgkern against whichever of PyTorch, JAX and NumPy are installed, on the
same shapes and statistics; one table on stdout, everything measured in JSON (--json).

  vgkern bench --model mlp,lstm --width 64,256 --depth 50 --batch 256 --activation tanh \\
               --batch-norm both --threads 1,2 --dtype float32 --json bench.json
  vgkern bench --quick          # small shapes, short blocks: a smoke run in seconds
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from .configs import Config, LstmConfig, MlpConfig
from .timing import QUICK, Method

__all__ = ["add_parser", "cmd_bench", "add_method_arguments", "method_from_args", "report",
           "progress_line", "configs_from_args", "impls_by_model"]

# option -> (full run default, --quick default); an option given on the command line wins
_DEFAULTS = {
    "model": ("mlp,lstm", "mlp,lstm"),
    "width": ("64,256", "32"), "depth": ("50", "10"), "batch": ("256", "64"),
    "activation": ("tanh", "tanh"), "batch_norm": ("off", "off"),
    "hidden": ("128", "32"), "lstm_batch": ("64", "16"), "time_steps": ("50", "10"),
    "input": ("0", "0"),
    "threads": (f"1,{os.cpu_count() or 1}", "1"), "dtype": ("float32", "float32"),
}
_METHOD = ("blocks", "block_steps", "pause_ms", "warmup_steps", "first_step_reps")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Adds the `bench` subcommand to the CLI's subparsers (sub: argparse's subparsers)."""
    p = sub.add_parser(
        "bench", help="time one training step of vgkern against PyTorch, JAX and NumPy",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what runs (lists: comma separated or a..b ranges; defaults in "
                             "brackets: full run / --quick)")

    def opt(name, help_text):
        full, quick = _DEFAULTS[name]
        g.add_argument("--" + name.replace("_", "-"), dest=name, metavar="LIST",
                       help=f"{help_text} [{full} / {quick}]")

    opt("model", "mlp, lstm")
    opt("width", "MLP width W (every layer W -> W)")
    opt("depth", "MLP layers L")
    opt("batch", "MLP batch B")
    opt("activation", "MLP hidden activation: identity, sigmoid, tanh, relu, elu")
    opt("batch_norm", "MLP batch norm: off, on, both")
    opt("hidden", "LSTM hidden size H")
    opt("lstm_batch", "LSTM batch B")
    opt("time_steps", "LSTM sequence length T")
    opt("input", "LSTM input size I (0: I = H)")
    opt("threads", "thread counts, set alike for every implementation")
    opt("dtype", "float32, float64")
    g.add_argument("--impls", metavar="LIST", help="implementations to run besides vgkern "
                   "(default: all installed): vgkern_nostats, numpy, torch, jax, gemm (MLP); "
                   "vgkern_nostats, torch_cell, torch_lstm, gemm, vgkern_rnn (LSTM)")
    add_method_arguments(p)
    p.add_argument("--json", metavar="PATH", help="write every measurement as JSON")
    return p


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """The steady-state method's options and --quick (p: an argparse parser); read them back
    with method_from_args. Shared by `vgkern bench` and the bench/ scripts."""
    m = p.add_argument_group("method (steady state; defaults: full run / --quick)")
    m.add_argument("--blocks", type=int, help=f"rounds, each one block per implementation "
                   f"[{Method.blocks} / {QUICK.blocks}]")
    m.add_argument("--block-steps", type=int, help=f"timed back-to-back steps per block "
                   f"[{Method.block_steps} / {QUICK.block_steps}]")
    m.add_argument("--pause-ms", type=float, help=f"least idle pause before each block "
                   f"[{Method.pause_s * 1e3:g} / {QUICK.pause_s * 1e3:g}]")
    m.add_argument("--warmup-steps", type=int, help=f"untimed steps after the pause "
                   f"[{Method.warmup_steps} / {QUICK.warmup_steps}]")
    m.add_argument("--first-step-reps", type=int, help=f"first-step-after-idle samples per "
                   f"implementation, 0 for none [{Method.first_step_reps} / "
                   f"{QUICK.first_step_reps}]")
    m.add_argument("--quick", action="store_true", help="a smoke run: short blocks (and, for "
                   "`vgkern bench`, small shapes and 1 thread; under 30 s on 2 cores)")


def method_from_args(args: argparse.Namespace) -> Method:
    """The Method the options of add_method_arguments ask for (QUICK's with --quick)."""
    base = QUICK if args.quick else Method()
    given = {k: getattr(args, k) for k in _METHOD if getattr(args, k) is not None}
    if "pause_ms" in given:
        pause_s = given.pop("pause_ms") / 1e3
        given.update(pause_s=pause_s, max_settle_s=max(base.max_settle_s, pause_s))
    return Method(**{**base.__dict__, **given})


def report(result: dict, json_path: Optional[str] = None, stream: Optional[TextIO] = None) -> None:
    """Prints result (run.run's) as one table to stream (stdout) and writes it as JSON to
    json_path, if given."""
    from .table import format_table

    stream = stream or sys.stdout
    print(format_table(result), file=stream)
    if json_path:
        out = Path(json_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"wrote {out}", file=stream)


def progress_line(summary: dict) -> None:
    """One line on stderr as a configuration finishes (run.run's progress callback)."""
    print(f"  done: {summary['model']} {summary['config']} {summary['dtype']}, "
          f"{summary['threads']} thread(s)", file=sys.stderr, flush=True)


def _values(args, name, kind):
    """The list an option gives (or its default), read as `vgkern sweep` reads lists."""
    from .. import cli

    text = getattr(args, name)
    if text is None:
        text = _DEFAULTS[name][1 if args.quick else 0]
    try:
        return cli._parse_values(name, kind, [text])
    except cli._Fail as err:  # a ValueError for whichever module runs as the CLI
        raise ValueError(str(err)) from None


def configs_from_args(args: argparse.Namespace) -> list[Config]:
    """The configurations the options describe: the product of the MLP lists, then of the
    LSTM lists, for the models asked for."""
    models = _values(args, "model", "str")
    unknown = set(models) - {"mlp", "lstm"}
    if unknown:
        raise ValueError(f"--model: expected mlp and/or lstm, got {sorted(unknown)}")
    configs: list[Config] = []
    if "mlp" in models:
        for w, l, b, act, bn in itertools.product(
                _values(args, "width", "int"), _values(args, "depth", "int"),
                _values(args, "batch", "int"), _values(args, "activation", "str"),
                _values(args, "batch_norm", "bool")):
            configs.append(MlpConfig(w, b, l, act, bn))
    if "lstm" in models:
        for h, b, t, i in itertools.product(
                _values(args, "hidden", "int"), _values(args, "lstm_batch", "int"),
                _values(args, "time_steps", "int"), _values(args, "input", "int")):
            configs.append(LstmConfig(h, b, t, i))
    return configs


def impls_by_model(names: Sequence[str]) -> dict[str, list[str]]:
    """Implementation names (of any model; vgkern always runs) -> model -> names."""
    from .run import IMPLS

    known = {n for m in IMPLS.values() for n in m}
    unknown = set(names) - known
    if unknown:
        raise ValueError(f"--impls: unknown {sorted(unknown)}; choose from {sorted(known)}")
    return {m: [n for n in IMPLS[m] if n in names] for m in IMPLS}


def cmd_bench(args: argparse.Namespace, stream: Optional[TextIO] = None) -> int:
    """Runs `vgkern bench` with parsed arguments; prints the table to stream (stdout)."""
    from .run import run

    configs = configs_from_args(args)
    threads = list(dict.fromkeys(_values(args, "threads", "int")))  # "1,<cores>" on 1 core
    if min(threads) < 1:
        raise ValueError(f"--threads: expected counts >= 1, got {threads}")
    dtypes = _values(args, "dtype", "str")
    if set(dtypes) - {"float32", "float64"}:
        raise ValueError(f"--dtype: expected float32 and/or float64, got {dtypes}")
    impls = impls_by_model(_values(args, "impls", "str")) if args.impls else None
    print(f"vgkern bench: {len(configs)} configuration(s) x {len(threads)} thread count(s) x "
          f"{len(dtypes)} dtype(s) ...", file=sys.stderr, flush=True)
    result = run(configs, threads, dtypes, method_from_args(args), impls,
                 progress=progress_line)
    report(result, args.json, stream)
    return 0
