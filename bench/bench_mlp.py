#!/usr/bin/env python
"""Benchmark one MLP training step of vgkern against PyTorch, NumPy, JAX and the bare GEMMs.

One step = forward + MSE loss + backward + per-layer gradient statistics, every implementation
in this one process on the same shapes, dtype, weights (copied from vgkern's net), inputs and
thread count (python/vgkern/benchmark/: the rows, the timing method and `vgkern bench`, which
this script is a front end of):

  vgkern            net.step(x, target, loss="mse"), all statistics on
  vgkern stats off  the same net with net.stats = False
  NumPy loop        a Python loop over layers, NumPy GEMMs, float64 norms
  torch eager       nn.Sequential(Linear, [BatchNorm1d], act) * L; tensor hooks on every
                    pre-activation for ||dL/dz_l||, torch._foreach_norm over the parameter grads
  JAX jit           (if installed) loss, gradients and the same norms in one jitted function
  bare GEMMs        only the 3 GEMMs per layer through SciPy's sgemm/dgemm (vgkern's BLAS)

Timing (vgkern/benchmark/timing.py): steady state, the headline: rounds of blocks of K
back-to-back steps per implementation, each block after an idle pause and untimed warm-up
steps, rotated; medians and quartiles of the per-step times. The first step after idle is
reported apart.

Run:  python bench/bench_mlp.py                  # all configurations, 2 threads
      python bench/bench_mlp.py --quick          # smoke run
      python bench/bench_mlp.py --configs 64x256x50,64x256x50:tanh:bn --threads 1,2
      python bench/bench_mlp.py --device cuda    # on a GPU: vgkern vs torch CUDA and cuBLAS
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _targets import check_targets  # noqa: E402

DEFAULT_CONFIGS = ("64x256x50:tanh,256x256x50:tanh,1024x64x10:relu,64x256x50:tanh:bn,"
                   "256x256x50:tanh:bn")


def parse_args(argv, model: str, default_configs: str, impl_names, json_name: str):
    """The options bench_mlp.py and bench_lstm.py share (bench_lstm imports this)."""
    from vgkern.benchmark.command import add_method_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if model == "mlp" else
                                f"Benchmark one {model.upper()} training step",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    spelling = "WxBxL[:activation][:bn]" if model == "mlp" else "HxBxT or HxBxTxI (I = H)"
    p.add_argument("--configs",
                   help=f"comma-separated {spelling} (default: {default_configs})")
    p.add_argument("--threads", default="2", help="thread counts, comma separated (default 2)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--impls", help="comma-separated subset of: " + ",".join(
        n for n in impl_names if n != "vgkern") + " (vgkern always runs)")
    p.add_argument("--json", default=str(Path(__file__).resolve().parent / json_name),
                   help=f"output JSON path (default bench/{json_name})")
    add_method_arguments(p)
    return p


def run_front_end(args, configs, impls) -> dict:
    """Runs the configurations with the implementations impls (names; vgkern always runs),
    prints the table and the targets, writes the JSON."""
    from vgkern.benchmark.command import impls_by_model, method_from_args, progress_line, report
    from vgkern.benchmark.run import run

    try:
        threads = [int(t) for t in str(args.threads).split(",")]
    except ValueError:
        raise SystemExit(f"--threads: expected comma-separated integers, got {args.threads!r}")
    result = run(configs, threads, [args.dtype], method_from_args(args), impls_by_model(impls),
                 progress=progress_line)
    report(result, args.json)
    print("\n".join(check_targets(result)))
    return result


def main(argv=None):
    from vgkern.benchmark.run import DEFAULT_IMPLS, IMPLS

    p = parse_args(argv, "mlp", DEFAULT_CONFIGS, IMPLS["mlp"], "results_mlp.json")
    p.add_argument("--no-jax", action="store_true", help="leave JAX out even if installed")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: vgkern against PyTorch eager CUDA and cuBLAS (bench/_cuda_bench.py)")
    args = p.parse_args(argv)
    if args.device == "cuda":
        import vgkern
        from _cuda_bench import main_cuda

        return main_cuda(args, vgkern)
    from vgkern.benchmark.configs import parse_mlp_configs

    try:
        configs = parse_mlp_configs(args.configs or DEFAULT_CONFIGS)
    except ValueError as err:
        raise SystemExit(str(err))
    impls = args.impls.split(",") if args.impls else DEFAULT_IMPLS["mlp"]
    return run_front_end(args, configs, [n for n in impls if not (args.no_jax and n == "jax")])


if __name__ == "__main__":
    main()
