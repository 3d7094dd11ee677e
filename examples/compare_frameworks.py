"""One MLP training step in vgkern, NumPy and PyTorch: same shapes, same statistics, same
gradients, and how long a step takes.

The net is [width] * (depth + 1), tanh hidden layers, an identity output, float32, MSE loss
0.5 * sum((out - target)^2) / batch. One "step" is what vgkern.MLP.step does: forward,
backward, and the per-layer statistics a vanishing-gradient study needs: the loss,
||dL/dW_l|| and ||dL/dz_l|| (z_l = the pre-activation of layer l) for every layer. NumPy and
PyTorch compute them explicitly from their own gradients; vgkern returns them in its GradReport.
No parameter update: every step sees the same parameters, so each step's work is the same.

First the three are checked against a float64 NumPy reference (weight and bias gradients and
the statistics, norm-relative); the script exits with status 1 if one of them disagrees. Then
each runs blocks of back-to-back steps (after warm-up blocks), the implementations taking turns
block by block so that a slow moment of the machine hits all of them; the table gives the
median and the fastest block, per step. Everyone uses its default threads (vgkern and NumPy:
the BLAS's; PyTorch: its own pool), printed below the table.

    python examples/compare_frameworks.py            # width 256, depth 8, batch 128
    python examples/compare_frameworks.py --quick    # seconds (or VGKERN_EXAMPLES_QUICK=1)
    python examples/compare_frameworks.py --width 1024 --depth 4 --batch 64
"""
import argparse
import os
import sys
import time

import numpy as np

import vgkern

RTOL = 1e-3  # float32 vs the float64 reference, norm-relative (measured: ~1e-6)


def parse_args(argv=None):
    quick = os.environ.get("VGKERN_EXAMPLES_QUICK", "") not in ("", "0")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=quick,
                        help="a small net and few blocks (also: VGKERN_EXAMPLES_QUICK=1)")
    parser.add_argument("--width", type=int, help="hidden width (default 256, quick 32)")
    parser.add_argument("--depth", type=int, help="number of layers (default 8, quick 4)")
    parser.add_argument("--batch", type=int, help="batch size (default 128, quick 16)")
    parser.add_argument("--blocks", type=int, help="timed blocks per implementation (default 15)")
    parser.add_argument("--steps", type=int, help="back-to-back steps per block (default 20)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    args = parser.parse_args(argv)
    defaults = dict(width=32, depth=4, batch=16, blocks=3, steps=5) if args.quick else \
        dict(width=256, depth=8, batch=128, blocks=15, steps=20)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# --------------------------------------------------------------------------------------------
# The three implementations. Each step function returns (loss, weight grads, bias grads,
# ||dL/dW_l|| per layer, ||dL/dz_l|| per layer), the gradients as (out, in) / (out,) arrays.
# --------------------------------------------------------------------------------------------

def vgkern_step(net, x, target):
    rep = net.step(x, target, loss="mse")
    return (rep.loss, net.weight_grads, net.bias_grads, rep.weight_grad_norm,
            rep.preact_grad_norm)


def numpy_step(weights, biases, x, target):
    """Forward and backward written out: z_l = h_{l-1} W_l^T + b_l, h_l = tanh(z_l) (identity
    for the last layer), dL/dz_l = dL/dh_l * tanh'(z_l), dL/dW_l = dL/dz_l^T h_{l-1}."""
    hs = [x]
    for l, (w, b) in enumerate(zip(weights, biases)):
        z = hs[-1] @ w.T + b
        hs.append(z if l == len(weights) - 1 else np.tanh(z))
    batch = x.shape[0]
    diff = hs[-1] - target
    loss = 0.5 * float(np.sum(diff * diff)) / batch
    dz = diff / batch
    dws, dbs, dw_norms, dz_norms = [], [], [], []
    for l in reversed(range(len(weights))):
        dws.append(dz.T @ hs[l])
        dbs.append(dz.sum(axis=0))
        dw_norms.append(np.linalg.norm(dws[-1]))
        dz_norms.append(np.linalg.norm(dz))
        if l > 0:
            dz = (dz @ weights[l]) * (1.0 - hs[l] * hs[l])  # tanh'(z) = 1 - tanh(z)^2
    return loss, dws[::-1], dbs[::-1], np.array(dw_norms[::-1]), np.array(dz_norms[::-1])


def make_torch_step(weights, biases):
    import torch

    ws = [torch.tensor(w, requires_grad=True) for w in weights]
    bs = [torch.tensor(b, requires_grad=True) for b in biases]

    def torch_step(x, target):
        for p in ws + bs:
            p.grad = None
        h, zs = x, []
        for l, (w, b) in enumerate(zip(ws, bs)):
            z = torch.nn.functional.linear(h, w, b)
            z.retain_grad()
            zs.append(z)
            h = z if l == len(ws) - 1 else torch.tanh(z)
        loss = 0.5 * ((h - target) ** 2).sum() / x.shape[0]
        loss.backward()
        with torch.no_grad():
            dw_norms = torch.stack([torch.linalg.vector_norm(w.grad) for w in ws])
            dz_norms = torch.stack([torch.linalg.vector_norm(z.grad) for z in zs])
        return (float(loss.detach()), [w.grad.numpy() for w in ws],
                [b.grad.numpy() for b in bs], dw_norms.numpy(), dz_norms.numpy())

    return torch_step, torch


# --------------------------------------------------------------------------------------------
# Agreement and timing
# --------------------------------------------------------------------------------------------

def rel_err(got, want):
    """||got - want|| / ||want||, in float64."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


def worst_error(result, reference):
    """The largest norm-relative error over the loss, every gradient and both statistics."""
    loss, dws, dbs, dw_norms, dz_norms = result
    ref_loss, ref_dws, ref_dbs, ref_dw_norms, ref_dz_norms = reference
    errors = [rel_err(loss, ref_loss), rel_err(dw_norms, ref_dw_norms),
              rel_err(dz_norms, ref_dz_norms)]
    errors += [rel_err(a, b) for a, b in zip(dws, ref_dws)]
    errors += [rel_err(a, b) for a, b in zip(dbs, ref_dbs)]
    return max(errors)


def time_blocks(steps, blocks, steps_per_block, warmup_blocks=2):
    """{name: [seconds per step of each block]}: the implementations take turns block by block
    (block k starts with implementation k mod n), after warm-up blocks that are not kept."""
    names = list(steps)
    per_step = {name: [] for name in names}
    for k in range(warmup_blocks + blocks):
        shift = k % len(names)
        for name in names[shift:] + names[:shift]:
            step = steps[name]
            t0 = time.perf_counter()
            for _ in range(steps_per_block):
                step()
            if k >= warmup_blocks:
                per_step[name].append((time.perf_counter() - t0) / steps_per_block)
    return per_step


def main(argv=None):
    args = parse_args(argv)
    sizes = [args.width] * (args.depth + 1)
    net = vgkern.MLP(sizes, activation="tanh", init="xavier_normal", dtype="float32", seed=0)
    weights = [np.array(w) for w in net.weights]  # (out, in) float32 copies
    biases = [np.array(b) for b in net.biases]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((args.batch, args.width)).astype(np.float32)
    target = rng.standard_normal((args.batch, args.width)).astype(np.float32)

    steps = {
        "vgkern": lambda: vgkern_step(net, x, target),
        "numpy": lambda: numpy_step(weights, biases, x, target),
    }
    if not args.no_torch:
        try:
            torch_step, torch = make_torch_step(weights, biases)
        except ImportError:
            print("PyTorch is not installed: comparing vgkern and NumPy only")
        else:
            xt, tt = torch.from_numpy(x), torch.from_numpy(target)
            steps["torch"] = lambda: torch_step(xt, tt)

    print(f"MLP {sizes}, tanh, float32, batch {args.batch}, MSE loss; one step = forward, "
          f"backward, loss, ||dL/dW_l|| and ||dL/dz_l|| for each of the {args.depth} layers\n")
    reference = numpy_step([w.astype(np.float64) for w in weights],
                           [b.astype(np.float64) for b in biases],
                           x.astype(np.float64), target.astype(np.float64))
    errors = {name: worst_error(step(), reference) for name, step in steps.items()}
    for name, err in errors.items():
        verdict = "agree" if err <= RTOL else "DISAGREE"
        print(f"{name:7s} gradients and statistics {verdict} with the float64 reference: "
              f"largest relative error {err:.1e} (tolerance {RTOL:.0e})")

    per_step = time_blocks(steps, args.blocks, args.steps)
    fastest = min(float(np.median(t)) for t in per_step.values())
    print(f"\nTime per step, {args.blocks} blocks of {args.steps} back-to-back steps each:")
    print(f"{'':8s}{'median':>12s}{'fastest':>12s}{'vs best':>9s}")
    for name, seconds in per_step.items():
        median = float(np.median(seconds))
        print(f"{name:8s}{median * 1e3:9.3f} ms{min(seconds) * 1e3:9.3f} ms"
              f"{median / fastest:8.2f}x")
    threads = f"PyTorch {torch.get_num_threads()} threads, " if "torch" in steps else ""
    print(f"\n{threads}{os.cpu_count()} CPUs; see bench/ for the careful benchmarks")
    return 0 if all(err <= RTOL for err in errors.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
