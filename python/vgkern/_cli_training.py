"""The command line over training steps (registered in vgkern.cli with a few lines):

  vgkern demo --train                       vgkern.training_demo: the claim, measured (~30 s)
  vgkern plot r.parquet --over steps --stat weight_change
                                            a statistic per layer over the steps
                                            (vgkern.plot_training), one panel per configuration
  vgkern summary r.parquet --step last      the summary at one step (a number, or "last": each
                                            configuration's last step); default: the first
"""
import argparse
import sys


class _Fail(Exception):
    """A command-line error (the message is printed as `vgkern <command>: error: ...`)."""


def add_plot_options(parser):
    parser.add_argument("--over", choices=("layers", "steps"), default="layers",
                        help="layers (default): the gradient-norm plots at --step; steps: "
                        "--stat per layer over the training steps, one panel per configuration")
    parser.add_argument("--stat", default="weight_change",
                        help="with --over steps: the column to plot (default weight_change)")


def add_summary_options(parser):
    parser.add_argument("--step", type=_step, default=None, metavar="N|last",
                        help="the training step to summarise: a number, or 'last' (each "
                        "configuration's last step); default: the first")


def add_demo_options(parser):
    parser.add_argument("--train", action="store_true",
                        help="instead: train 20-layer MLPs (sigmoid, ReLU, ELU, sigmoid + batch "
                        "norm) and LSTM/RNN on the digits and show which layers learn "
                        "(vgkern.training_demo); -o names its PNG (default vgkern-train.png)")


def _step(text):
    if text == "last":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a step number or 'last', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a step number >= 0, got {value}")
    return value


def summary_at_step(summary, step):
    """The rows of sweep_summary() at `step`: None -> all (the printer takes the first step),
    an integer -> that step (ValueError naming the steps there are), "last" -> each
    configuration's last step."""
    if step is None or not len(summary):
        return summary
    if step == "last":
        last = summary.groupby("config_id")["step"].transform("max")
        return summary[summary["step"] == last]
    if not (summary["step"] == step).any():
        steps = sorted(summary["step"].unique().tolist())
        shown = ", ".join(map(str, steps[:10])) + (" ..." if len(steps) > 10 else "")
        raise ValueError(f"--step {step}: no rows at that step; steps in the file: {shown} "
                         "(or --step last)")
    return summary[summary["step"] == step]


def plot_over_steps(args, table, where):
    """`vgkern plot --over steps`: plot_training of the results file into args.output."""
    from .plots_training import plot_training

    plot_training(table, args.stat, args.output, where=where, dpi=args.dpi)


def cmd_demo_train(args, stream=None):
    """`vgkern demo --train`."""
    from .training_demo import demo_train

    stream = sys.stdout if stream is None else stream
    png = args.output
    if png == "vgkern-demo.png":  # the sweep demo's default name: keep the two figures apart
        png = "vgkern-train.png"
    try:
        demo_train(png=png or None, workers=args.workers, stream=stream)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0
