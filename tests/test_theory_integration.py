"""vgkern.theory in the sweep summary, the plots, `vgkern theory` and `vgkern demo`."""
import io
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import vgkern
from vgkern import cli, theory

pd = pytest.importorskip("pandas")
PYTHONPATH = os.path.dirname(os.path.dirname(vgkern.__file__))  # the vgkern under test


@pytest.fixture(scope="module")
def table():
    grid = [dict(model="mlp", depth=[4, 8], width=256, batch=128, activation=["tanh", "relu"],
                 init=["scaled_normal", "orthogonal"], sigma_w=1.3, sigma_b=0.05, seed=[0, 1]),
            dict(model=["rnn", "lstm"], seq_len=[6], width=128, batch=64, activation="tanh")]
    return vgkern.sweep(grid, progress=False)


def test_summary_has_predictions_beside_the_fit(table):
    s = vgkern.sweep_summary(table)
    for col in ("predicted_gain", "predicted_log10_ratio", "gain_error"):
        assert col in s.columns and col in vgkern.sweeps.SUMMARY_COLUMNS
    covered = (s["model"] == "mlp") & (s["init"] == "scaled_normal") | (s["model"] == "rnn")
    assert np.isfinite(s.loc[covered, "predicted_gain"]).all()
    predicted = ["predicted_gain", "predicted_log10_ratio", "gain_error"]
    assert s.loc[~covered, predicted].isna().all().all()
    for _, row in s[covered & (s["model"] == "mlp")].iterrows():
        profile = theory.gradient_profile(row["activation"], 1.3, 0.05, q0=1.0, depth=row["depth"])
        assert row["predicted_log10_ratio"] == pytest.approx(profile[0], rel=1e-12)
        slope = np.polyfit(np.arange(row["depth"]), profile, 1)[0]
        assert row["predicted_gain"] == pytest.approx(10 ** -slope, rel=1e-12)
    np.testing.assert_allclose(s["gain_error"], np.log10(s["gain"]) - np.log10(s["predicted_gain"]))
    # the RNN row: vgkern.RNN's torch-uniform init (sigma_w^2 = sigma_v^2 = 1/3, sigma_b^2 = 2/(3H))
    rnn = s[s["model"] == "rnn"].iloc[0]
    mf = theory.rnn_mean_field("tanh", math.sqrt(1 / 3), math.sqrt(2 / (3 * 128)),
                               sigma_v=math.sqrt(1 / 3), steps=6)
    assert rnn["predicted_gain"] == pytest.approx(mf.profile_gain, rel=1e-12)
    # measurement and theory agree where the theory holds: tanh at width 256 (finite-width
    # allowance ~0.02 log10 per layer, see test_theory.py) and the RNN
    tanh = s[(s["activation"] == "tanh") & (s["init"] == "scaled_normal") & (s["model"] == "mlp")]
    assert np.abs(tanh["gain_error"]).max() < 0.03
    assert abs(rnn["gain_error"]) < 0.03


def test_predict_config_coverage():
    base = dict(model="mlp", data="gaussian", activation="tanh", init="he_normal", sigma_w=1.0,
                sigma_b=0.0, batch_norm=False, width=64)
    gain, ratio = theory.predict_config(base, 10)
    he_profile = theory.gradient_profile("tanh", math.sqrt(2), depth=10)
    assert gain == pytest.approx(theory.configs.profile_gain(he_profile))
    assert ratio == he_profile[0]
    assert theory.predict_config({**base, "batch_norm": True}, 10)[0] == pytest.approx(
        theory.configs.profile_gain(theory.batch_norm_profile("tanh", 10)))
    for other in ({**base, "init": "orthogonal"}, {**base, "model": "lstm"},
                  {**base, "init": "xavier_normal", "data": "digits"}):
        assert all(math.isnan(v) for v in theory.predict_config(other, 10))


def _dashed(ax):
    return [l for l in ax.get_lines() if l.get_linestyle() not in ("-", "None", "")
            and l.get_linewidth() == theory_lw()]


def theory_lw():
    from vgkern.plots import THEORY_STYLE
    return THEORY_STYLE["lw"]


def test_plots_draw_predictions_dashed(table):
    pytest.importorskip("matplotlib")
    mlp = table[table["model"] == "mlp"]
    n_covered = 2  # tanh and relu with scaled_normal; orthogonal has no prediction
    fig = vgkern.plot_gain_vs_depth(mlp)
    assert len(_dashed(fig.axes[0])) == n_covered
    assert len(_dashed(vgkern.plot_gain_vs_depth(mlp, theory=False).axes[0])) == 0
    fig = vgkern.plot_gradient_norms(mlp, depth=8)
    lines = _dashed(fig.axes[0])
    assert len(lines) == n_covered
    # anchored at the last layer: each dashed line ends on a measured mean, and its shape is
    # the predicted profile
    ends = {round(float(l.get_ydata()[-1]), 9) for l in fig.axes[0].get_lines() if l not in lines}
    for line in lines:
        assert round(float(line.get_ydata()[-1]), 9) in ends
    profiles = [theory.gradient_profile(a, 1.3, 0.05, depth=8) for a in ("tanh", "relu")]
    got = [np.asarray(l.get_ydata()) - l.get_ydata()[-1] for l in lines]
    for g in got:
        assert any(np.allclose(g, p, atol=1e-12) for p in profiles)
    assert "theory" in fig.axes[0].get_title()
    assert len(_dashed(vgkern.plot_gradient_norms(mlp, depth=8, theory=False).axes[0])) == 0
    fig = vgkern.plot_sweep(table, theory=True)
    assert sum(len(_dashed(ax)) for ax in fig.axes) >= n_covered * 2 + 1  # + the RNN


def test_cli_theory_table(capsys):
    assert cli.main(["theory", "--activation", "tanh", "--sigma-w", "0.5..3.0:0.25",
                     "--sigma-b", "0.05"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [l.split() for l in out if l.strip() and l.split()[0][0].isdigit()]
    assert len(rows) == 11
    for r in rows:
        mf = theory.mean_field("tanh", float(r[0]), 0.05)
        assert float(r[1]) == pytest.approx(mf.q_star, rel=1e-5)
        assert float(r[2]) == pytest.approx(mf.chi1, rel=1e-5)
        assert r[-1] == ("ordered" if mf.chi1 < 1 else "chaotic")
    assert f"sigma_w = {theory.critical_sigma_w('tanh', 0.05):.6f}" in out[-1]
    assert cli.main(["theory", "--activation", "tanh", "--sigma-w", "-1"]) == 2
    assert "sigma_w must be a finite number >= 0" in capsys.readouterr().err


def test_cli_theory_subprocess():
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    run = subprocess.run([sys.executable, "-m", "vgkern.cli", "theory", "--activation", "relu",
                          "--sigma-w", "1,2"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "edge of chaos (chi1 = 1): sigma_w = 1.414214" in run.stdout


def test_demo_prints_measured_vs_predicted():
    stream = io.StringIO()
    summary = cli.demo(depths=(4, 8), width=32, batch=32, png=None, stream=stream)
    text = stream.getvalue()
    assert "Measured vs predicted gain per layer" in text
    table = text[text.index("Measured vs predicted"):text.index("Through time")].splitlines()
    tanh = next(l.split() for l in table if l.split()[:1] == ["tanh"])
    row = summary[(summary["model"] == "mlp") & (summary["activation"] == "tanh")
                  & (~summary["batch_norm"]) & (summary["depth"] == 8)].iloc[0]
    assert float(tanh[3]) == pytest.approx(row["gain"], abs=5e-4)
    assert float(tanh[4]) == pytest.approx(row["predicted_gain"], abs=5e-4)
    assert float(tanh[4]) == pytest.approx(theory.configs.profile_gain(
        theory.gradient_profile("tanh", 1.0, depth=8)), abs=5e-4)
