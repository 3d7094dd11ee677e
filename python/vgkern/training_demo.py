"""The claim that vanishing gradients stop the first layers from learning, measured on the
digits (`vgkern demo --train`; tests/test_training_claim.py asserts it on these settings).

Setup, fixed once: sklearn's digits (vgkern.datasets, training split for the updates, test split
for the accuracy), 20 dense layers of width 64 (sizes [64] + [64] * 19 + [10]), float32, batch
64, STEPS = 500 plain SGD steps (vgkern.optim.SGD), seed 0 -- exactly a vgkern.sweep
configuration (model "mlp", data "digits", depth 20, eval_every = STEPS / 10), so the sweep's
documented recipe is the recipe here. Four nets: sigmoid (xavier_normal), ReLU (he_normal),
ELU (he_normal), sigmoid + batch norm (xavier_normal). For sequences: LSTM and tanh RNN with 64
hidden units reading each image row by row (T = 8) with a linear read-out, same batch, steps
and optimizer.

Learning rates, chosen once by a stated rule (not toward the thresholds): for every net, the
learning rate of LR_GRID with the lowest mean training loss over the last 50 steps (diverged
runs excluded). select_learning_rates() reruns the rule (about a minute: 36 runs);
LEARNING_RATES holds what it chose, which the demo and the tests use.
"""
import math
import sys
import time
from typing import TYPE_CHECKING, TextIO

import numpy as np

if TYPE_CHECKING:  # annotations only: pandas loads with the sweep
    import pandas

DEPTH, WIDTH, BATCH, STEPS, SEED, DTYPE = 20, 64, 64, 500, 0, "float32"
LR_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
LAST_STEPS = 50  # the rule's window: mean training loss over the last 50 steps
MLP_NETS = {  # name -> the sweep keys of the net
    "sigmoid": dict(activation="sigmoid", init="xavier_normal", batch_norm=False),
    "relu": dict(activation="relu", init="he_normal", batch_norm=False),
    "elu": dict(activation="elu", init="he_normal", batch_norm=False),
    "sigmoid+bn": dict(activation="sigmoid", init="xavier_normal", batch_norm=True),
}
RECURRENT_NETS = {"lstm": dict(model="lstm"), "rnn": dict(model="rnn", activation="tanh")}
# select_learning_rates() on this setup (see its docstring for the whole grid's losses)
LEARNING_RATES = {"sigmoid": 0.003, "relu": 0.01, "elu": 0.03, "sigmoid+bn": 0.1,
                  "lstm": 1.0, "rnn": 1.0}


def grid(name: str, lr: "float | list[float]", steps: int = STEPS, batch: int = BATCH,
         seed: int = SEED) -> dict:
    """The vgkern.sweep grid (a dict) of one net of the claim at learning rate lr."""
    common = dict(data="digits", width=WIDTH, batch=batch, steps=steps, lr=lr, seed=seed,
                  dtype=DTYPE, optimizer="sgd", eval_every=max(1, steps // 10))
    if name in MLP_NETS:
        return dict(model="mlp", depth=DEPTH, **MLP_NETS[name], **common)
    return dict(**RECURRENT_NETS[name], **common)


def run(names: "list[str] | None" = None, learning_rates: "dict | None" = None,
        steps: int = STEPS, batch: int = BATCH, seed: int = SEED,
        workers: "int | None" = 1) -> "pandas.DataFrame":
    """The sweep table of the claim's nets (all of MLP_NETS and RECURRENT_NETS by default) at
    their learning rates (LEARNING_RATES unless given): one row per (net, step, layer or t),
    with a "net" column naming the net."""
    from .sweeps import sweep

    names = list(names or (*MLP_NETS, *RECURRENT_NETS))
    rates = {**LEARNING_RATES, **(learning_rates or {})}
    grids = [grid(n, rates[n], steps, batch, seed) for n in names]
    table = sweep(grids, workers=workers, progress=False)
    ids = {}
    from .sweeps import sweep_configs

    for n, g in zip(names, grids):
        ids[sweep_configs(g)[0]["config_id"]] = n
    table.insert(1, "net", table["config_id"].map(ids))
    return table


def measure(table: "pandas.DataFrame") -> dict:
    """Per net: what the claim is about, from the last step of run()'s table -> {net: dict}.

    MLP: first_change, last_change (weight_change of layer 0 and of the last layer: ||W - W0||
    / ||W0|| after all steps), change_ratio (last / first; inf when the first layer did not
    move at all), test_accuracy. LSTM/RNN: x_grad_first (||dL/dx_0||, the first step's input
    gradient, mean over the training steps), log10_ratio_init (log10 ||dL/dx_0|| / ||dL/dx_{T-1}||
    at the initial weights), weight_ih_change, test_accuracy."""
    out = {}
    for name, rows in table.groupby("net", sort=False):
        last = rows[rows["step"] == rows["step"].max()].sort_values("layer")
        m = {"test_accuracy": float(last["test_accuracy"].iloc[0]),
             "loss_last": float(rows.groupby("step")["loss"].first().iloc[-LAST_STEPS:].mean())}
        if rows["model"].iloc[0] == "mlp":
            first, final = float(last["weight_change"].iloc[0]), float(last["weight_change"].iloc[-1])
            m.update(first_change=first, last_change=final,
                     change_ratio=final / first if first > 0 else math.inf)
        else:
            t0 = rows[rows["layer"] == 0]
            init = rows[rows["step"] == 0].sort_values("layer")["log10_x_grad_norm"].to_numpy()
            m.update(x_grad_first=float(t0["x_grad_norm"].mean()),
                     log10_ratio_init=float(init[0] - init[-1]),
                     weight_ih_change=float(last["weight_ih_change"].iloc[0]))
        out[name] = m
    return out


def select_learning_rates(names: "list[str] | None" = None, workers: "int | None" = None,
                          stream: "TextIO | None" = None) -> dict:
    """The rule: per net, the lr of LR_GRID with the lowest mean training loss over the last
    LAST_STEPS steps (NaN: diverged, excluded) -> {net: lr}; prints every run's loss.

    Measured (this setup, float32, CPU; `python -m vgkern.training_demo --select`):
      sigmoid     2.302 2.303 2.305 2.310 2.315 2.308   -> 0.003 (all at chance)
      relu        0.675 0.129 0.212 1.147 2.196 nan     -> 0.01
      elu         0.124 0.011 0.002 nan   nan   nan     -> 0.03
      sigmoid+bn  1.359 0.737 0.291 0.118 0.141 0.256   -> 0.1
      lstm        2.267 2.124 1.672 0.568 0.079 0.006   -> 1.0
      rnn         1.358 0.604 0.221 0.058 0.010 0.002   -> 1.0
    (columns: LR_GRID 0.003 .. 1.0)."""
    from .sweeps import sweep, sweep_configs

    stream = sys.stdout if stream is None else stream
    names = list(names or (*MLP_NETS, *RECURRENT_NETS))
    grids = [grid(n, list(LR_GRID)) for n in names]
    table = sweep(grids, workers=workers, progress=False)
    chosen = {}
    for name, g in zip(names, grids):
        losses = []
        for c in sweep_configs(g):
            rows = table[table["config_id"] == c["config_id"]]
            per_step = rows.groupby("step")["loss"].first().to_numpy()
            losses.append(float(np.mean(per_step[-LAST_STEPS:])))
        finite = [(v, lr) for v, lr in zip(losses, LR_GRID) if math.isfinite(v)]
        chosen[name] = min(finite)[1] if finite else None
        print(f"{name:<11} " + " ".join(f"{v:.3f}" if math.isfinite(v) else "nan  "
                                        for v in losses) + f"   -> {chosen[name]}", file=stream)
    return chosen


def demo_train(png: "str | None" = "vgkern-train.png", workers: "int | None" = None,
               stream: "TextIO | None" = None) -> dict:
    """`vgkern demo --train`: trains the claim's nets (run()), prints what measure() finds
    next to the claim, and draws the weight change per layer over the steps
    (vgkern.plot_training) for the four MLPs and the LSTM/RNN input weights. Returns the
    measurements."""
    stream = sys.stdout if stream is None else stream
    t0 = time.perf_counter()
    table = run(workers=workers)  # the sweep limits BLAS to one thread per worker
    elapsed = time.perf_counter() - t0
    found = measure(table)
    print(f"vgkern demo --train: {DEPTH}-layer width-{WIDTH} MLPs and LSTM/RNN (64 units, rows "
          f"of the image as T = 8 steps) on the digits, {STEPS} SGD steps of batch {BATCH}, "
          f"{DTYPE}, learning rates by the rule in vgkern.training_demo ({elapsed:.1f} s)\n",
          file=stream)
    print(f"{'net':<11} {'lr':>5} {'test acc':>9} {'first-layer':>12} {'last-layer':>11} "
          f"{'last/first':>11}   (weight_change = ||W - W0|| / ||W0||)", file=stream)
    for name in MLP_NETS:
        m = found[name]
        print(f"{name:<11} {LEARNING_RATES[name]:>5g} {m['test_accuracy']:>9.3f} "
              f"{m['first_change']:>12.3g} {m['last_change']:>11.3g} "
              f"{m['change_ratio']:>11.3g}", file=stream)
    print("\nClaim: the sigmoid net's first layer moves >= 100x less than its last and its "
          "accuracy stays near chance (0.1);\nReLU, ELU and sigmoid + batch norm reach >= 0.9 "
          "and move their first layer within 10x of the last.\n", file=stream)
    print(f"{'net':<5} {'lr':>5} {'test acc':>9} {'||dL/dx_0||':>12} {'log10 x0/xT':>12} "
          f"{'weight_ih_change':>17}", file=stream)
    for name in RECURRENT_NETS:
        m = found[name]
        print(f"{name:<5} {LEARNING_RATES[name]:>5g} {m['test_accuracy']:>9.3f} "
              f"{m['x_grad_first']:>12.3g} {m['log10_ratio_init']:>12.2f} "
              f"{m['weight_ih_change']:>17.3g}", file=stream)
    print("(||dL/dx_0||: mean over the steps; log10 x0/xT: first over last step's input "
          "gradient at the initial weights)", file=stream)
    if png:
        _figure(table, png)
        print(f"\nwrote {png}", file=stream)
    return found


def _figure(table, png):
    """weight_change per layer over the steps, one panel per MLP, and the recurrent nets'
    weight_ih_change, with test accuracy underneath."""
    from .plots import _matplotlib
    from .plots_training import plot_training

    _, Figure = _matplotlib()
    fig = Figure(figsize=(16, 8.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 1.0])
    mlps = top.subfigures(1, len(MLP_NETS))
    for sub, name in zip(mlps, MLP_NETS):
        plot_training(table[table["net"] == name], "weight_change", fig=sub, log=True)
        sub.suptitle(f"{name} (lr {LEARNING_RATES[name]:g}): weight_change per layer",
                     fontsize=9)
    rec = bottom.subfigures(1, 2 * len(RECURRENT_NETS))
    for i, name in enumerate(RECURRENT_NETS):
        rows = table[table["net"] == name]
        plot_training(rows, "weight_ih_change", fig=rec[2 * i], log=True)
        rec[2 * i].suptitle(f"{name.upper()}: weight_ih_change", fontsize=9)
        plot_training(rows, "log10_x_grad_norm", fig=rec[2 * i + 1])
        rec[2 * i + 1].suptitle(f"{name.upper()}: log10 ||dL/dx_t|| per t", fontsize=9)
    fig.savefig(png, dpi=100)


if __name__ == "__main__":  # pragma: no cover - `python -m vgkern.training_demo --select`
    if "--select" in sys.argv:
        select_learning_rates()
    else:
        demo_train()
