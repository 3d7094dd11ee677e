#!/usr/bin/env python
"""Benchmark one LSTM training step (BPTT) of vgkern against PyTorch eager and the bare GEMMs.

One step = forward over T steps + MSE loss on the last hidden state + backpropagation through
time + gradient statistics, every implementation in this one process on the same shapes,
dtype, weights (copied from vgkern's net), inputs and thread count (rows and timing in
python/vgkern/benchmark/, shared with `vgkern bench`):

  vgkern LSTM       vgkern.LSTM(I, H).step(x_seq, target, loss="mse"), per-step statistics on
                    (||dL/dh_t||, ||dL/dc_t||, ||dL/dx_t||, forget-gate mean, saturation) and
                    the weight-gradient norms
  vgkern stats off  the same net with net.stats = False
  torch LSTMCell    a Python loop of nn.LSTMCell; hooks on every h_t and c_t record the same
                    per-step gradient norms, ||dL/dx_t|| from x.grad, _foreach_norm over grads
  torch nn.LSTM     the fused layer: weight-gradient norms only (no per-step ones)
  bare GEMMs        only the GEMMs vgkern's driver issues (2T + 4 calls) through SciPy's BLAS
  vgkern RNN tanh   for reference: vgkern.RNN(I, H), the same statistics (a quarter of the
                    LSTM's GEMM work; its GFLOP/s use its own count)

Timing: steady state (blocks of back-to-back steps, rotated), first step after idle apart;
see bench_mlp.py and vgkern/benchmark/timing.py.

Run:  python bench/bench_lstm.py                     # H=128 and H=512, B=64, T=50, 2 threads
      python bench/bench_lstm.py --quick             # smoke run
      python bench/bench_lstm.py --configs 128x64x50 --threads 1,2
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mlp import parse_args, run_front_end  # noqa: E402

DEFAULT_CONFIGS = "128x64x50,512x64x50"


def main(argv=None):
    from vgkern.benchmark.configs import parse_lstm_configs
    from vgkern.benchmark.run import IMPLS

    p = parse_args(argv, "lstm", DEFAULT_CONFIGS, IMPLS["lstm"], "results_lstm.json")
    p.description = __doc__.split("\n\n")[0]
    args = p.parse_args(argv)
    try:
        configs = parse_lstm_configs(args.configs or DEFAULT_CONFIGS)
    except ValueError as err:
        raise SystemExit(str(err))
    return run_front_end(args, configs, args.impls.split(",") if args.impls else IMPLS["lstm"])


if __name__ == "__main__":
    main()
