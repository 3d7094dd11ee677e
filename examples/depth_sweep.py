"""The vanishing-gradient story in one depth sweep.

One training step of an MLP [width] * (depth + 1) on Gaussian data, for each activation
(sigmoid and tanh with Xavier init, relu and elu with He init), with and without batch norm,
at several depths and seeds. vgkern.sweep records ||dL/dz_l|| for every layer l, and
vgkern.sweep_summary fits how much one layer of backpropagation multiplies it (the "gain":
< 1 vanishing, > 1 exploding). Expected: sigmoid without batch norm loses about 0.6 orders of
magnitude per layer (its derivative is at most 1/4); tanh, relu and elu with a matching init
stay within a factor ~2 per layer; batch norm pulls every gain towards 1 (or a little above:
BN's gradients grow towards the input at initialization). The sweep runs with log_scale=True,
so that the norms stay exact where float32 gradients underflow (sigmoid at depth 80: 1e-50).

    pip install 'vgkern[sweep]'
    python examples/depth_sweep.py                   # depths 5..80, 3 seeds (a minute or so)
    python examples/depth_sweep.py --quick           # seconds (or VGKERN_EXAMPLES_QUICK=1)
    python examples/depth_sweep.py --plot sweep.png  # also save the gain-vs-depth figure
"""
import argparse
import os
import sys

import vgkern

# Each activation with the init it is usually paired with.
INIT_OF = {"sigmoid": "xavier_normal", "tanh": "xavier_normal",
           "relu": "he_normal", "elu": "he_normal"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("VGKERN_EXAMPLES_QUICK", "") not in ("", "0"),
                        help="small grid for a fast run (also: VGKERN_EXAMPLES_QUICK=1)")
    parser.add_argument("--plot", metavar="PNG", help="save the gain-vs-depth figure there")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads for the sweep (default: one per core)")
    return parser.parse_args(argv)


def grid(quick):
    """One grid dict per init (vgkern.sweep takes the union of their products)."""
    shared = dict(
        depth=[4, 8] if quick else [5, 10, 20, 40, 80],
        width=16 if quick else 64,
        batch=32 if quick else 128,
        seed=range(1 if quick else 3),
        batch_norm=[False, True],
        # exact log10 norms where float32 gradients underflow to 0 (sigmoid, depth 80)
        log_scale=True,
    )
    inits = sorted(set(INIT_OF.values()))
    return [dict(shared, init=init, activation=[a for a, i in INIT_OF.items() if i == init])
            for init in inits]


def gain_table(summary):
    """Mean gain over seeds: rows (activation, batch_norm), columns depth."""
    table = summary.groupby(["activation", "batch_norm", "depth"])["gain"].mean()
    table = table.unstack("depth")
    order = [(a, bn) for a in INIT_OF for bn in (False, True)]
    return table.reindex(order)


def first_last_table(summary):
    """log10 of ||dL/dz_0|| / ||dL/dz_last|| at the largest depth, mean over seeds."""
    deepest = summary[summary["depth"] == summary["depth"].max()]
    return deepest.groupby(["activation", "batch_norm"])["log10_ratio_first_last"].mean()


def main(argv=None):
    args = parse_args(argv)
    table = vgkern.sweep(grid(args.quick), workers=args.workers, progress=False)
    summary = vgkern.sweep_summary(table)

    print(f"{summary['config_id'].nunique()} configurations, {len(table)} rows "
          f"(one per configuration, step and layer)\n")
    print("Gain per layer (10 ** -slope of log10 ||dL/dz_l|| against l; mean over seeds):")
    print(gain_table(summary).to_string(float_format=lambda v: f"{v:.3f}"))
    depth = int(summary["depth"].max())
    ratios = first_last_table(summary)
    print(f"\nAt depth {depth}, log10 ||dL/dz_0|| - log10 ||dL/dz_{depth - 1}||:")
    for activation in INIT_OF:
        plain, with_bn = ratios[(activation, False)], ratios[(activation, True)]
        print(f"  {activation:8s} {plain:8.2f} without batch norm, {with_bn:6.2f} with "
              f"({INIT_OF[activation]})")

    if args.plot:
        try:
            fig = vgkern.plot_gain_vs_depth(summary)
        except ImportError:
            print("\nno figure: matplotlib is missing (pip install 'vgkern[sweep]')")
            return 0
        fig.savefig(args.plot, dpi=120)
        print(f"\nfigure: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
