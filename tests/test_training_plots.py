"""Plots and the command line over training steps: vgkern.plot_training (History, its table,
sweep tables), the gradient-norm plots refusing step=None over several steps, `vgkern plot
--over steps`, `vgkern summary --step N|last` and `vgkern demo --train`."""
import subprocess
import sys

import numpy as np
import pytest

import vgkern
from vgkern import cli
from vgkern._cli_training import summary_at_step

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from test_sweep import assert_png  # noqa: E402


@pytest.fixture(scope="module")
def trained_table():
    """A small sweep over steps: two MLPs and an LSTM on the digits, with test metrics."""
    return vgkern.sweep([dict(model="mlp", data="digits", depth=4, width=16, batch=32,
                              activation=["sigmoid", "relu"], steps=12, lr=0.1, eval_every=4),
                         dict(model="lstm", data="digits", width=8, batch=16, steps=6,
                              eval_every=3)], workers=1)


def _history(steps=15):
    x, y = vgkern.datasets.digits("train")
    xt, yt = vgkern.datasets.digits("test")
    net = vgkern.MLP([64, 32, 32, 32, 10], activation="tanh", seed=0)
    opt = vgkern.optim.SGD(net, lr=0.1)
    hist = vgkern.History(net)
    for s in range(steps):
        rep = net.step(x[32 * s:32 * s + 32], y[32 * s:32 * s + 32], loss="cross_entropy")
        opt.step(rep)
        hist.record(s, rep, *(net.evaluate(xt, yt) if s % 5 == 0 else (np.nan, np.nan)))
    return hist


def test_plot_training_draws_a_curve_per_layer_and_the_test_accuracy(tmp_path):
    from matplotlib.figure import Figure

    hist = _history()
    fig = vgkern.plot_training(hist, "weight_change", tmp_path / "h.png")
    assert isinstance(fig, Figure)
    assert_png(tmp_path / "h.png", min_bytes=10_000, min_colored=0.002)
    top, bottom = fig.axes[0], fig.axes[1]
    assert len(top.lines) == 4  # one per layer
    assert top.get_yscale() == "log"  # positive values spanning > 10x: log axis
    colors = [tuple(line.get_color()) for line in top.lines]
    assert len(set(colors)) == 4  # coloured input -> output
    acc = bottom.lines[0]
    assert acc.get_xdata().tolist() == [0, 5, 10]
    np.testing.assert_array_equal(acc.get_ydata(), hist.column("test_accuracy")[[0, 5, 10]])
    # the same from the table, and a per-step statistic is one curve
    fig2 = vgkern.plot_training(hist.to_pandas(), "loss")
    assert len(fig2.axes[0].lines) == 1


def test_plot_training_on_a_sweep_table_has_a_panel_per_configuration(trained_table, tmp_path):
    fig = vgkern.plot_training(trained_table, "log10_preact_grad_norm",
                               where={"model": "mlp"})
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert sorted(ax.get_title() for ax in titled) == ["relu", "sigmoid"]
    fig = vgkern.plot_training(trained_table, "weight_ih_change", tmp_path / "l.png",
                               where={"model": "lstm"})
    assert len(fig.axes[0].lines) == 1  # a per-network scalar: one curve
    assert_png(tmp_path / "l.png", min_bytes=10_000, min_colored=0.002)
    with pytest.raises(ValueError, match="no column 'weight_chnage'; statistics in the table:"):
        vgkern.plot_training(trained_table, "weight_chnage")
    with pytest.raises(ValueError, match="3 configurations is more than max_panels=2"):
        vgkern.plot_training(trained_table, max_panels=2)
    with pytest.raises(ValueError, match="no rows to plot"):
        vgkern.plot_training(trained_table, where={"depth": 99})


def test_layers_that_never_moved_are_named_on_a_log_axis():
    hist = _history(3)
    table = hist.to_pandas()
    table.loc[table["layer"] == 0, "weight_change"] = 0.0
    fig = vgkern.plot_training(table, "weight_change", log=True)
    assert any("layer 0: exactly 0" in t.get_text() for t in fig.axes[0].texts)


def test_gradient_plots_refuse_to_average_over_steps(trained_table):
    with pytest.raises(ValueError, match=r"step=None would average 12 training steps \(0..11\); "
                                         r"pass step=N .* vgkern.plot_training"):
        vgkern.plot_gradient_norms(trained_table, step=None, where={"model": "mlp"})
    with pytest.raises(ValueError, match="step=None would average"):
        vgkern.plot_sweep(trained_table, step=None)
    one_step = trained_table[trained_table["step"] == 3]
    vgkern.plot_gradient_norms(one_step, step=None)  # one step: nothing to average


def test_summary_at_a_step(trained_table):
    summary = vgkern.sweep_summary(trained_table)
    last = summary_at_step(summary, "last")
    assert sorted(zip(last["model"], last["step"])) == [("lstm", 5), ("mlp", 11), ("mlp", 11)]
    assert (summary_at_step(summary, 4)["step"] == 4).all()
    with pytest.raises(ValueError, match=r"--step 40: no rows at that step; steps in the file: "
                                         r"0, 1, 2"):
        summary_at_step(summary, 40)


def test_cli_plot_over_steps_and_summary_at_a_step(trained_table, tmp_path, capsys):
    res = tmp_path / "r.parquet"
    vgkern.sweeps.atomic_write(vgkern.sweeps.store.arrow_table(
        [(c, vgkern.sweeps.run_config(c)) for c in vgkern.sweep_configs(
            model="mlp", data="digits", depth=3, width=8, batch=16, steps=6, eval_every=2,
            activation=["tanh", "elu"])]), str(res), "parquet")
    fig = tmp_path / "steps.png"
    assert cli.main(["plot", str(res), "-o", str(fig), "--over", "steps", "--stat",
                     "weight_update_ratio"]) == 0
    assert_png(fig, min_bytes=10_000, min_colored=0.002)
    assert cli.main(["plot", str(res), "-o", str(fig), "--over", "steps", "--stat", "nope"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err
    assert cli.main(["summary", str(res), "--step", "last"]) == 0
    out = capsys.readouterr().out
    assert "step last" in out and "tanh" in out and "elu" in out
    assert cli.main(["summary", str(res), "--step", "3"]) == 0
    assert "step 3" in capsys.readouterr().out
    assert cli.main(["summary", str(res), "--step", "9"]) == 2
    assert "--step 9: no rows at that step" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["summary", str(res), "--step", "first"])
    assert "expected a step number or 'last'" in capsys.readouterr().err


def test_cli_demo_train_shows_the_claim_with_a_png(tmp_path):
    png = tmp_path / "train.png"
    proc = subprocess.run([sys.executable, "-m", "vgkern.cli", "demo", "--train", "-o",
                           str(png)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("vgkern demo --train", "sigmoid+bn", "relu", "elu", "lstm", "rnn",
                 "weight_change", f"wrote {png}"):
        assert word in out, word
    sigmoid = next(line for line in out.splitlines() if line.startswith("sigmoid "))
    assert sigmoid.split()[-1] == "inf"  # the first layer did not move at all (float32)
    assert_png(png)
