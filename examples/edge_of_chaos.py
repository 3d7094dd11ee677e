"""The edge of chaos for tanh: measured vs predicted per-layer gradient gain across sigma_w.

    python examples/edge_of_chaos.py                 # writes edge_of_chaos.png (~20 s)
    python examples/edge_of_chaos.py --quick         # a coarser grid, no figure unless -o

For each sigma_w: vgkern.MLP(init="scaled_normal", sigma_w, sigma_b=0.05, tanh), width 512,
depth 20, batch 256, standard-normal inputs and an upstream gradient independent of the forward
pass (what mean-field theory assumes), seeds 0-2. The measured gain is 10^-slope of the
least-squares line through log10 ||dL/dz_l|| (as vgkern.sweep_summary fits it); the predicted
one is the same fit of vgkern.theory's profile for the same depth (dashed), and sqrt(chi1(q*))
is the infinitely deep limit (dotted). The vertical line is the edge of chaos, chi1(q*) = 1.
"""
import argparse
import time

import numpy as np

import vgkern
from vgkern import theory

ACTIVATION, SIGMA_B, WIDTH, DEPTH, BATCH, SEEDS = "tanh", 0.05, 512, 20, 256, (0, 1, 2)


def measured_gain(sigma_w, seed, depth=DEPTH, width=WIDTH):
    net = vgkern.MLP([width] * (depth + 1), activation=ACTIVATION, init="scaled_normal",
                     sigma_w=sigma_w, sigma_b=SIGMA_B, seed=seed)
    rng = np.random.default_rng(10_000 + seed)
    net.forward(rng.standard_normal((BATCH, width), dtype=np.float32))
    y = net.backward(rng.standard_normal((BATCH, width), dtype=np.float32),
                     log_scale=True).log10_preact_grad_norm
    return 10.0 ** -np.polyfit(np.arange(depth), y, 1)[0], y - y[-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a coarser grid of sigma_w")
    parser.add_argument("-o", "--output", help="figure file (default edge_of_chaos.png; "
                        "--quick: none)")
    args = parser.parse_args(argv)
    output = args.output if args.output or args.quick else "edge_of_chaos.png"
    sigma_ws = np.round(np.arange(0.5, 3.01, 0.5 if args.quick else 0.1), 2)
    critical = theory.critical_sigma_w(ACTIVATION, SIGMA_B)
    t0 = time.perf_counter()
    rows, profiles = [], {}
    for s in sigma_ws:
        gains = []
        for seed in SEEDS:
            g, profile = measured_gain(s, seed)
            gains.append(g)
            profiles.setdefault(s, []).append(profile)
        mf = theory.mean_field(ACTIVATION, s, SIGMA_B, q0=1.0, depth=DEPTH)
        rows.append((s, np.mean(gains), np.min(gains), np.max(gains), mf.profile_gain, mf.gain))
    elapsed = time.perf_counter() - t0
    print(f"tanh, sigma_b={SIGMA_B}, width {WIDTH}, depth {DEPTH}, batch {BATCH}, seeds "
          f"{SEEDS[0]}-{SEEDS[-1]}: {len(rows) * len(SEEDS)} nets in {elapsed:.1f} s")
    print(f"edge of chaos: sigma_w = {critical:.4f}")
    print(f"{'sigma_w':>8} {'measured':>9} {'predicted':>9} {'sqrt(chi1)':>10}")
    for s, g, _, _, pred, asym in rows:
        print(f"{s:>8.2f} {g:>9.4f} {pred:>9.4f} {asym:>10.4f}")
    if output:
        plot(rows, profiles, critical, output)
        print(f"figure: {output}")


def plot(rows, profiles, critical, path):
    from matplotlib.figure import Figure

    s, g, lo, hi, pred, asym = map(np.array, zip(*rows))
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.25, 1])
    ax.errorbar(s, g, yerr=[g - lo, hi - g], fmt="o", ms=4, color="#ff7f0e", capsize=2,
                label=f"measured (vgkern, {len(SEEDS)} seeds: mean, min-max)")
    ax.plot(s, pred, "--", color="black", lw=1.2, label=f"predicted, depth {DEPTH} (vgkern.theory)")
    ax.plot(s, asym, ":", color="#555555", lw=1.2, label=r"$\sqrt{\chi_1(q^*)}$ (infinite depth)")
    ax.axvline(critical, color="#d62728", lw=1.0)
    ax.text(critical, 0.55, f" edge of chaos\n $\\sigma_w$={critical:.3f}", color="#d62728",
            fontsize=8, va="bottom")
    ax.text(0.55, 1.25, "ordered\n(vanishing)", fontsize=8, color="#555555")
    ax.text(2.45, 0.8, "chaotic\n(exploding)", fontsize=8, color="#555555")
    ax.axhline(1.0, color="black", lw=0.6, alpha=0.5)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel(r"$\sigma_w$  (W ~ N(0, $\sigma_w^2$/fan_in), $\sigma_b$ = 0.05)")
    ax.set_ylabel("gain per layer of ||dL/dz||  (< 1 vanishing)")
    ax.set_title(f"tanh MLP, width {WIDTH}, depth {DEPTH}, batch {BATCH}: gain across "
                 r"$\sigma_w$", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    layers = np.arange(DEPTH)
    for target, color in ((0.7, "#1f77b4"), (critical, "#d62728"), (2.0, "#2ca02c")):
        near = min(profiles, key=lambda v: abs(v - target))
        m = np.mean(profiles[near], axis=0)
        ax2.plot(layers, m, "o", ms=3, color=color, label=f"$\\sigma_w$={near:g} measured")
        ax2.plot(layers, theory.mean_field(ACTIVATION, near, SIGMA_B, q0=1.0,
                                           depth=DEPTH).log10_profile, "--", color=color, lw=1.2)
    ax2.set_xlabel("layer l (0 = input side)")
    ax2.set_ylabel(r"log$_{10}$ ||dL/dz$_l$|| - log$_{10}$ ||dL/dz$_{L-1}$||")
    ax2.set_title("per layer: measured (dots) vs predicted (dashed)", fontsize=10)
    ax2.legend(fontsize=8, frameon=False)
    ax2.grid(True, alpha=0.3)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
