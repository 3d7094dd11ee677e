#!/usr/bin/env python3
"""Leak check: many training steps of small nets must not grow the process's resident memory.

    python .ci/leak_check.py [--steps 10000] [--warmup 500] [--bound-mib 8]

Every iteration takes one step of each of four nets: an MLP [32, 64, 64, 10] (tanh, float32,
batch 32), the same widths with batch norm (ELU, float64, cross-entropy), an LSTM (I=8, H=32,
T=10, B=8, float32) and an RNN (float64, loss on every step). Around each step it touches the
Python side the way a user does: the report (as_dict, the norm arrays, repr), the params
setter (in place, `net.params -= lr * net.grads`, and with a new array), the per-layer lists
(weights, biases, gradients, batch-norm parameters and running statistics), forward and
backward, a few vgkern.ops calls, and a call that is refused with an exception (the native
side allocates its result arrays before it throws, so the error paths are exercised too).

RSS (from /proc/self/statm, after gc.collect()) is sampled after the warm-up (allocator pools,
lazy imports and first-touch pages settle there) and every 1000 steps; the check fails (exit 1)
if it grows by more than --bound-mib (default 4 MiB). Why 4 MiB: the steady state measured on
the dev machine grows by < 0.1 MiB over 10000 steps (allocator noise), while a leak of the
arrays that one iteration allocates (~86 KiB) would add ~845 MiB, 200x the bound; the bound
still catches any leak of more than ~420 bytes per iteration (e.g. one leaked report table of
one net per step). `--inject-leak-bytes 512` is a self-test that must fail. The number of
gc-tracked Python objects is checked too (a leaked reference to a container shows there even
when it is small).
"""
import argparse
import gc
import os
import sys
import time

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # set before numpy/scipy load OpenBLAS

import vgkern  # noqa: E402
from vgkern import ops  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
OBJECT_BOUND = 500  # gc-tracked objects; the steady state is flat (lazy caches fill in warm-up)
MIB = 1024.0 * 1024.0


def rss_bytes():
    """Current resident set size (not the peak that resource.getrusage gives)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def sample():
    """(RSS bytes, number of gc-tracked Python objects), after a full collection."""
    gc.collect()
    return rss_bytes(), len(gc.get_objects())


def nbytes(obj):
    """Total bytes of the numpy arrays inside nested tuples, lists and dicts."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(v) for v in obj)
    return 0


class Workload:
    LR = 1e-3

    def __init__(self):
        rng = np.random.default_rng(0)
        self.rng = rng
        B = 32
        self.mlp = vgkern.MLP([32, 64, 64, 10], activation="tanh", dtype="float32", seed=0)
        self.mlp_x = rng.standard_normal((B, 32), dtype=np.float32)
        self.mlp_t = rng.standard_normal((B, 10), dtype=np.float32)
        self.bn = vgkern.MLP([32, 64, 64, 10], activation="elu", dtype="float64", seed=1,
                             batch_norm=True)
        self.bn_x = rng.standard_normal((B, 32))
        self.bn_labels = rng.integers(0, 10, B)
        T, Bs, I, H = 10, 8, 8, 32
        self.lstm = vgkern.LSTM(I, H, dtype="float32", seed=2, forget_bias=1.0)
        self.lstm_x = rng.standard_normal((T, Bs, I), dtype=np.float32)
        self.lstm_t = rng.standard_normal((Bs, H), dtype=np.float32)
        self.lstm_h0 = np.zeros((Bs, H), np.float32)
        self.rnn = vgkern.RNN(I, H, dtype="float64", seed=3)
        self.rnn_x = rng.standard_normal((T, Bs, I))
        self.rnn_t = rng.standard_normal((T, Bs, H))
        self.bad_target = np.zeros((B, 11), np.float32)  # wrong width: a ValueError
        self.bad_x = np.zeros((B, 32), np.float64)      # wrong dtype for the float32 MLP

    def iteration(self, i):
        """One step of every net plus the Python-side touches. Returns everything it got back
        from vgkern (to count the bytes one iteration allocates)."""
        got = []
        lr = self.LR

        # MLP, float32, mse
        net = self.mlp
        rep = net.step(self.mlp_x, self.mlp_t, loss="mse", compute_input_grad=(i % 2 == 0))
        d = rep.as_dict()
        norms = [d[k] for k in d if k.endswith("_norm")]
        assert np.isfinite(rep.loss) and len(norms) >= 4
        got += [d, net.last_output, net.input_grad, repr(rep)]
        net.params -= lr * net.grads                 # in place, same array back to the setter
        net.params = net.params - lr * net.grads     # a new array: copied in by the setter
        for l, (w, b, gw, gb) in enumerate(zip(net.weights, net.biases, net.weight_grads,
                                               net.bias_grads)):
            assert w.shape == gw.shape and b.shape == gb.shape
        net.weights[0] = net.weights[0] * np.float32(1.0)  # ParameterList.__setitem__
        out = net.forward(self.mlp_x)
        rep2 = net.backward(out - self.mlp_t, log_scale=(i % 3 == 0))
        got += [out, rep2.as_dict(), rep2.log10_preact_grad_norm]

        # MLP with batch norm, float64, cross-entropy; eval-mode forward now and then
        net = self.bn
        rep = net.step(self.bn_x, self.bn_labels, loss="cross_entropy")
        got += [rep.as_dict(), rep.gamma_grad_norm, rep.beta_grad_norm]
        net.params -= lr * net.grads
        for g, b, m, v in zip(net.bn_gammas, net.bn_betas, net.running_means, net.running_vars):
            assert g.shape == b.shape == m.shape == v.shape
        net.bn_gammas[0] = net.bn_gammas[0].copy()
        if i % 10 == 0:
            got.append(net.eval().forward(self.bn_x))
            net.train()

        # LSTM, float32, loss on h_T; then forward + backward
        net = self.lstm
        rep = net.step(self.lstm_x, self.lstm_t, loss="mse", h0=self.lstm_h0)
        d = rep.as_dict()
        got += [d, rep.log10_x_grad_norm, net.input_grad, net.h0_grad, net.c0_grad, net.last_output,
                repr(rep)]
        net.params -= lr * net.grads
        net.params = net.params.copy()
        h_seq, (h_T, c_T) = net.forward(self.lstm_x, self.lstm_h0, self.lstm_h0)
        rep = net.backward(grad_hT=h_T - self.lstm_t, grad_cT=np.zeros_like(c_T))
        got += [h_seq, h_T, c_T, rep.as_dict(), net.weight_ih_grad.sum(), net.bias_grad]

        # RNN, float64, loss on every step
        net = self.rnn
        rep = net.step(self.rnn_x, self.rnn_t, loss="mse_sequence")
        got += [rep.as_dict(), net.input_grad]
        net.params -= lr * net.grads

        # a few ops
        h, dact = ops.dense_forward(self.mlp_x, self.mlp.weights[0], self.mlp.biases[0], "tanh")
        got += [h, dact, ops.dense_backward(h, dact, self.mlp_x, self.mlp.weights[0])]
        got.append(ops.mse_loss(h, h))
        got.append(ops.sum_squares_norm(h))
        got.append(ops.lstm_cell_forward(self.lstm_x[0], self.lstm_h0, self.lstm_h0,
                                         self.lstm.weight_ih, self.lstm.weight_hh,
                                         self.lstm.bias))

        # refused calls: the native side raises after its result arrays were allocated
        if i % 10 == 0:
            for call in (lambda: self.mlp.step(self.mlp_x, self.bad_target),
                         lambda: self.mlp.forward(self.bad_x),
                         lambda: self.lstm.step(self.lstm_x, self.bad_target)):
                try:
                    call()
                except (TypeError, ValueError):
                    pass
                else:
                    raise AssertionError("expected a TypeError/ValueError")
        return got


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--bound-mib", type=float, default=4.0)
    parser.add_argument("--inject-leak-bytes", type=int, default=0,
                        help="self-test: keep this many bytes alive per iteration (must FAIL)")
    args = parser.parse_args()
    injected = []

    t0 = time.perf_counter()
    work = Workload()
    per_iteration = nbytes(work.iteration(0))
    for i in range(1, args.warmup):
        work.iteration(i)
    base, base_objects = sample()
    t_warm = time.perf_counter()
    print(f"vgkern {vgkern.__version__} from {os.path.dirname(vgkern.__file__)}")
    print(f"warm-up: {args.warmup} iterations in {t_warm - t0:.1f} s; "
          f"each iteration steps an MLP, a batch-norm MLP, an LSTM and an RNN")
    print(f"{'step':>7} {'RSS MiB':>9} {'growth MiB':>11} {'gc objects':>11} {'time s':>7}")
    print(f"{0:>7} {base / MIB:>9.2f} {0.0:>11.2f} {base_objects:>11} {0.0:>7.1f}")
    samples = [(0, base, base_objects)]
    for i in range(1, args.steps + 1):
        work.iteration(args.warmup + i)
        if args.inject_leak_bytes:
            injected.append(np.ones(args.inject_leak_bytes, np.uint8))  # first-touch the pages
        if i % args.every == 0 or i == args.steps:
            rss, objects = sample()
            samples.append((i, rss, objects))
            print(f"{i:>7} {rss / MIB:>9.2f} {(rss - base) / MIB:>11.2f} {objects:>11} "
                  f"{time.perf_counter() - t_warm:>7.1f}", flush=True)
    wall = time.perf_counter() - t0
    end, end_objects = samples[-1][1:]
    growth = end - base
    object_growth = end_objects - base_objects
    bound = args.bound_mib * MIB
    print()
    print(f"RSS after warm-up {base / MIB:.2f} MiB, after {args.steps} steps {end / MIB:.2f} MiB: "
          f"growth {growth / MIB:+.2f} MiB (bound {args.bound_mib:g} MiB)")
    print(f"one iteration returns {per_iteration / 1024:.1f} KiB of arrays; leaking them every "
          f"step would add {per_iteration * args.steps / MIB:.0f} MiB over {args.steps} steps, "
          f"{per_iteration * args.steps / bound:.0f}x the bound; the bound catches any leak of "
          f"more than {bound / args.steps:.0f} bytes per iteration")
    print(f"gc-tracked Python objects: {base_objects} -> {end_objects} ({object_growth:+d}; "
          f"bound +{OBJECT_BOUND}, a leaked container per iteration would add {args.steps})")
    print(f"wall time {wall:.1f} s")
    failed = False
    if growth > bound:
        print(f"FAIL: RSS grew by {growth / MIB:.2f} MiB over {args.steps} steps "
              f"(> {args.bound_mib:g} MiB): a leak of about {growth / args.steps:.0f} bytes "
              "per iteration", file=sys.stderr)
        failed = True
    if object_growth > OBJECT_BOUND:
        print(f"FAIL: {object_growth} more gc-tracked Python objects after {args.steps} steps "
              f"(> {OBJECT_BOUND}): Python objects are kept alive (a reference leak)",
              file=sys.stderr)
        failed = True
    if failed:
        return 1
    print("OK: no leak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
