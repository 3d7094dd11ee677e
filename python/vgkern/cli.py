"""Command line: `vgkern demo` (vanishing gradients in 20-layer MLPs), `vgkern info`."""
import argparse
import json
import sys

import numpy as np


def demo(depth=20, width=64, batch=128, seed=0, dtype="float32", out=None):
    """Per-layer ||dL/dz|| (log10) of `depth`-layer MLPs, one column per activation."""
    out = sys.stdout if out is None else out
    from . import MLP

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, width)).astype(dtype)
    target = rng.standard_normal((batch, width)).astype(dtype)
    activations = ("sigmoid", "tanh", "relu", "elu")
    columns = {}
    for act in activations:
        net = MLP([width] * (depth + 1), activation=act, init="xavier_normal", dtype=dtype, seed=seed)
        columns[act] = net.step(x, target, loss="mse").log10_preact_grad_norm
    print(f"log10 ||dL/dz_l|| per layer: {depth} dense layers of width {width}, batch {batch}, "
          f"xavier_normal init, MSE loss, {dtype}", file=out)
    print(f"{'layer':>5} " + " ".join(f"{a:>9}" for a in activations), file=out)
    for l in range(depth):
        print(f"{l:>5} " + " ".join(f"{columns[a][l]:>9.3f}" for a in activations), file=out)
    print(f"{'gain':>5} " + " ".join(
        f"{(columns[a][-1] - columns[a][0]) / (depth - 1):>9.3f}" for a in activations)
        + "   (orders of magnitude lost per layer, towards the input)", file=out)
    return columns


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vgkern", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="per-layer gradient norms of 20-layer MLPs, side by side")
    p_demo.add_argument("--depth", type=int, default=20)
    p_demo.add_argument("--width", type=int, default=64)
    p_demo.add_argument("--batch", type=int, default=128)
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    sub.add_parser("info", help="build and runtime information as JSON")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.depth < 2 or args.width < 1 or args.batch < 1:
            parser.error("--depth must be >= 2, --width and --batch >= 1")
        demo(args.depth, args.width, args.batch, args.seed, args.dtype)
    else:
        from . import build_info
        print(json.dumps(build_info(), indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
