"""The scripts in examples/ run, in their fast mode (--quick), and print what they promise.

Each runs in a subprocess with this interpreter and environment (so with the vgkern under
test), from a temporary folder. Timings are printed, never checked.
"""
import math
import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu")


def run_example(name, *args, cwd):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), "--quick", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_depth_sweep_shows_sigmoid_vanishing_and_batch_norm_helping(tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    out = run_example("depth_sweep.py", cwd=tmp_path)
    # quick grid: 4 activations x {no BN, BN} x depths {4, 8} x 1 seed
    assert "16 configurations" in out, out
    rows = re.findall(r"^(sigmoid|tanh|relu|elu)?\s+(False|True)((?:\s+\d+\.\d+){2})\s*$", out,
                      re.M)
    assert len(rows) == 8, out  # gain table: (activation, batch_norm) x depths 4, 8
    gains = [float(g) for _, _, row in rows for g in row.split()]
    assert all(0.05 < g < 5 for g in gains), out
    ratio = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in re.finditer(
        r"^\s+(\w+)\s+(-?\d+\.\d+) without batch norm,\s+(-?\d+\.\d+) with", out, re.M)}
    assert sorted(ratio) == sorted(ACTIVATIONS), out
    # depth 8, log10 ||dL/dz_0|| / ||dL/dz_7||: sigmoid loses > 3 orders of magnitude (gain
    # ~0.23 per layer), the others and every batch-norm net stay within ~1.5
    plain_sigmoid, bn_sigmoid = ratio["sigmoid"]
    assert plain_sigmoid < -3.0, out
    assert bn_sigmoid > plain_sigmoid + 2.0, out
    for activation in ("tanh", "relu", "elu"):
        assert abs(ratio[activation][0]) < 1.5, out
    assert all(abs(with_bn) < 1.5 for _, with_bn in ratio.values()), out


def test_depth_sweep_saves_its_figure(tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pytest.importorskip("matplotlib")
    out = run_example("depth_sweep.py", "--plot", "gain.png", cwd=tmp_path)
    png = tmp_path / "gain.png"
    assert "figure: gain.png" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("with_torch", [True, False], ids=["torch", "no_torch"])
def test_compare_frameworks_agree_and_times_every_implementation(with_torch, tmp_path):
    if with_torch:
        pytest.importorskip("torch")
    out = run_example("compare_frameworks.py", *([] if with_torch else ["--no-torch"]),
                      cwd=tmp_path)
    names = ["vgkern", "numpy"] + (["torch"] if with_torch else [])
    assert "MLP [32, 32, 32, 32, 32], tanh, float32, batch 16" in out, out
    for name in names:
        match = re.search(rf"^{name}\s+gradients and statistics agree with the float64 "
                          r"reference: largest relative error (\S+)", out, re.M)
        assert match, out
        assert float(match.group(1)) < 1e-4, out
        assert re.search(rf"^{name}\s+\d+\.\d+ ms\s+\d+\.\d+ ms\s+\d+\.\d+x$", out, re.M), out
    assert "DISAGREE" not in out
    assert ("torch" in out.split("Time per step")[1]) == with_torch, out


def test_edge_of_chaos_measured_matches_predicted(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_example("edge_of_chaos.py", "-o", "eoc.png", cwd=tmp_path)
    assert "edge of chaos: sigma_w = 1.1225" in out, out
    rows = re.findall(r"^\s+(\d\.\d\d)\s+(\d\.\d+)\s+(\d\.\d+)\s+(\d\.\d+)\s*$", out, re.M)
    assert len(rows) == 6, out  # --quick: sigma_w 0.5, 1.0, ..., 3.0
    for sigma_w, measured, predicted, _ in rows:
        # width 512, depth 20, 3 seeds: within 0.01 in log10 per layer (test_theory.py derives
        # the finite-width tolerance; here it is ~0.004)
        assert abs(math.log10(float(measured) / float(predicted))) < 0.01, out
    assert (tmp_path / "eoc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
