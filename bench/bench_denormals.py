"""What subnormal numbers cost, and what vgkern.set_flush_denormal(True) buys back.

Vanishing gradients end in float32's subnormal range (below 1.2e-38), where x86 arithmetic is
far slower. Two float32 workloads that get there, each timed with flushing off (the default,
IEEE) and on, in one process, interleaved, medians over repetitions, for 1 and 2 BLAS threads:

* MLP step, sigmoid, depth 100, width 128, batch 128 (gradients below 1e-38 from layer ~60 down)
* LSTM forward + backward, I=32, H=128, B=64, T=300, loss on the last step

PyTorch eager (nn.Sequential / nn.LSTM, torch.set_flush_denormal off and on) runs the same
shapes for reference. Prints each median and the ratios off/on. Usage:
    python bench/bench_denormals.py [--reps 7]
"""
import argparse
import statistics

import numpy as np
import torch

import vgkern
from vgkern.benchmark.timing import Method, steady_state


def vgkern_mlp():
    net = vgkern.MLP([128] * 101, activation="sigmoid", seed=0)
    x = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)
    target = np.zeros_like(x)
    return lambda: net.step(x, target)


def vgkern_lstm():
    net = vgkern.LSTM(32, 128, seed=0)
    x = np.random.default_rng(0).standard_normal((300, 64, 32)).astype(np.float32)
    target = np.zeros((64, 128), np.float32)
    return lambda: net.step(x, target)


def torch_mlp():
    layers = []
    for _ in range(100):
        layers += [torch.nn.Linear(128, 128), torch.nn.Sigmoid()]
    net = torch.nn.Sequential(*layers[:-1])
    x = torch.randn(128, 128)

    def step():
        net.zero_grad()
        (0.5 * net(x).pow(2).sum(1).mean()).backward()
    return step


def torch_lstm():
    net = torch.nn.LSTM(32, 128)
    x = torch.randn(300, 64, 32)

    def step():
        net.zero_grad()
        out, _ = net(x)
        (0.5 * out[-1].pow(2).sum(1).mean()).backward()
    return step


def flushed(step, flush):
    def run():
        vgkern.set_flush_denormal(flush)
        torch.set_flush_denormal(flush)
        try:
            step()
        finally:
            vgkern.set_flush_denormal(False)
            torch.set_flush_denormal(False)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    print(f"vgkern {vgkern.__version__}, torch {torch.__version__}, float32, medians of {args.reps}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with vgkern.blas_threads(threads):
            for name, make in [("vgkern MLP sigmoid d100", vgkern_mlp), ("torch MLP sigmoid d100", torch_mlp),
                               ("vgkern LSTM T=300", vgkern_lstm), ("torch LSTM T=300", torch_lstm)]:
                step = make()
                steps = {"off": flushed(step, False), "on": flushed(step, True)}
                for run in steps.values():  # warm-up, untimed
                    run()
                # rounds of one step each, off and on rotated, no pause (the steps are long)
                t = steady_state(steps, Method(block_steps=1, blocks=args.reps, pause_s=0.0,
                                               warmup_steps=0, first_step_reps=0,
                                               max_settle_s=0.0))
                off, on = (statistics.median(t.samples(k)) for k in ("off", "on"))
                print(f"{threads} thread(s)  {name:26s} flush off {off * 1e3:8.1f} ms   "
                      f"on {on * 1e3:8.1f} ms   off/on {off / on:5.1f}x")


if __name__ == "__main__":
    main()
