"""`vgkern bench` and the benchmark package: the JSON's schema (keys, types, one row per
implementation x configuration, ratios and fractions consistent with the medians it reports),
frameworks that are missing skipped with a note, bad options refused, the steady-state method's
bookkeeping, and the bench/ scripts on a tiny configuration. Timings are never asserted."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vgkern
from vgkern.benchmark.configs import LstmConfig, MlpConfig, parse_lstm_configs, parse_mlp_configs
from vgkern.benchmark.timing import (Method, first_step_after_idle, paired_ratio, steady_state,
                                     summarize)

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = str(Path(vgkern.__file__).resolve().parent.parent)
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None

# the smallest run: every option that shrinks it
TINY = ["--quick", "--model", "mlp,lstm", "--width", "8", "--depth", "3", "--batch", "4",
        "--batch-norm", "both", "--hidden", "4", "--lstm-batch", "2", "--time-steps", "3",
        "--threads", "1", "--blocks", "2", "--block-steps", "3", "--pause-ms", "0",
        "--warmup-steps", "1", "--first-step-reps", "2"]


def run_cli(args, tmp_path, blocked=()):
    """Runs `vgkern bench` in a subprocess; blocked: module names that fail to import there."""
    path = [PACKAGE_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    if blocked:
        shadow = tmp_path / "blocked"
        for name in blocked:
            (shadow / name).mkdir(parents=True)
            (shadow / name / "__init__.py").write_text(
                f"raise ImportError('{name} is blocked for this test')\n")
        path.insert(0, str(shadow))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    return subprocess.run([sys.executable, "-m", "vgkern.cli", "bench", *args], env=env,
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)


def expected_impls(model, torch=HAVE_TORCH, jax=HAVE_JAX):
    if model == "mlp":
        return (["vgkern", "vgkern_nostats", "numpy"] + ["torch"] * torch + ["jax"] * jax
                + ["gemm"])
    return ["vgkern", "vgkern_nostats"] + ["torch_cell", "torch_lstm"] * torch + ["gemm"]


def is_summary(d, n):
    assert set(d) >= {"median_ms", "q1_ms", "q3_ms", "min_ms", "mean_ms", "n", "samples_ms"}
    assert d["n"] == n == len(d["samples_ms"])
    assert all(isinstance(v, float) and v > 0 and math.isfinite(v) for v in d["samples_ms"])
    assert d["min_ms"] <= d["q1_ms"] <= d["median_ms"] <= d["q3_ms"]
    assert d["median_ms"] == pytest.approx(float(np.median(d["samples_ms"])), rel=1e-12)
    assert d["q1_ms"] == pytest.approx(float(np.percentile(d["samples_ms"], 25)), rel=1e-12)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    proc = run_cli([*TINY, "--json", str(tmp / "out.json")], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((tmp / "out.json").read_text())


def test_json_meta_records_machine_versions_and_method(tiny_run):
    _, result = tiny_run
    assert result["schema"] == "vgkern-bench/1"
    assert set(result) == {"schema", "meta", "rows", "configs"}
    meta = result["meta"]
    assert isinstance(meta["machine"]["cpu"], str) and meta["machine"]["cores"] == os.cpu_count()
    assert meta["simd_selected"] == vgkern.build_info()["simd_selected"]
    assert meta["versions"]["vgkern"] == vgkern.__version__
    assert meta["versions"]["numpy"] == np.__version__
    assert ("torch" in meta["versions"]) == HAVE_TORCH
    assert meta["method"] == {"name": "steady_state", "block_steps": 3, "blocks": 2,
                              "pause_s": 0.0, "warmup_steps": 1, "first_step_reps": 2,
                              "max_settle_s": meta["method"]["max_settle_s"]}
    assert meta["threads"] == [1] and meta["dtypes"] == ["float32"]
    assert ("jax" in meta["skipped"]) == (not HAVE_JAX)
    assert ("torch" in meta["skipped"]) == (not HAVE_TORCH)


def test_json_has_one_row_per_implementation_and_configuration(tiny_run):
    _, result = tiny_run
    configs = [(s["model"], s["config"]) for s in result["configs"]]
    assert configs == [("mlp", "8x4x3:tanh"), ("mlp", "8x4x3:tanh:bn"), ("lstm", "4x2x3")]
    for s in result["configs"]:
        rows = [r for r in result["rows"] if (r["model"], r["config"]) == (s["model"], s["config"])]
        assert [r["impl"] for r in rows] == expected_impls(s["model"]) == s["impls"]
        assert all(r["threads"] == 1 and r["dtype"] == "float32" for r in rows)
    assert len(result["rows"]) == sum(len(s["impls"]) for s in result["configs"])


def test_json_rows_are_consistent_with_their_medians(tiny_run):
    _, result = tiny_run
    for s in result["configs"]:
        rows = {r["impl"]: r for r in result["rows"]
                if (r["model"], r["config"]) == (s["model"], s["config"])}
        vg = rows["vgkern"]["steady"]["median_ms"]
        gemm = rows["gemm"]["steady"]["median_ms"]
        cfg = (MlpConfig(**{k: s["params"][k] for k in ("width", "batch", "layers",
                                                         "activation", "batch_norm")})
               if s["model"] == "mlp" else
               LstmConfig(*(s["params"][k] for k in ("hidden", "batch", "steps", "input"))))
        assert s["gflop_per_step"] == pytest.approx(cfg.flops() / 1e9)
        assert s["gemm_fraction_of_vgkern"] == pytest.approx(gemm / vg, rel=1e-12)
        for name, r in rows.items():
            med = r["steady"]["median_ms"]
            is_summary(r["steady"], 2 * 3)
            is_summary(r["first_step_after_idle"], 2)
            blocks = r["steady"]["block_medians_ms"]
            assert blocks == pytest.approx([float(np.median(r["steady"]["samples_ms"][i:i + 3]))
                                            for i in (0, 3)], rel=1e-12)
            assert r["ratio_vs_vgkern"] == pytest.approx(med / vg, rel=1e-12)
            paired = np.array(blocks) / np.array(rows["vgkern"]["steady"]["block_medians_ms"])
            assert r["ratio_vs_vgkern_paired"]["median"] == pytest.approx(np.median(paired))
            assert r["gemm_fraction"] == pytest.approx(gemm / med, rel=1e-12)
            assert r["gflops"] == pytest.approx(cfg.flops(name) / (med / 1e3) / 1e9, rel=1e-9)
            # every pool limited to --threads 1, XLA's sized for it when JAX started
            assert r["threads_used"]["n"] == 1
            assert isinstance(r["threads_used"]["how"], str)
            if name in ("vgkern", "gemm"):
                assert r["check_max_rel_diff"] is None
            else:  # the baselines compute the same loss and norms as vgkern
                assert r["check_max_rel_diff"] < 1e-3, (s["config"], name)
        fastest = {n: r["steady"]["block_fastest_ms"] for n, r in rows.items()}
        assert fastest["vgkern"] == pytest.approx(
            [min(rows["vgkern"]["steady"]["samples_ms"][i:i + 3]) for i in (0, 3)], rel=1e-12)
        on, off = np.array(fastest["vgkern"]), np.array(fastest["vgkern_nostats"])
        assert s["stats_cost"]["median"] == pytest.approx(np.median(on / off) - 1, abs=1e-12)
        assert s["stats_cost"]["q1"] <= s["stats_cost"]["median"] <= s["stats_cost"]["q3"]


def test_table_names_every_row_and_column(tiny_run):
    proc, result = tiny_run
    out = proc.stdout
    for col in ("median ms [q1, q3]", "x vgkern", "GFLOP/s", "GEMM %", "stats", "1st step ms"):
        assert col in out
    for r in result["rows"]:
        assert any(r["label"] in line and r["config"] in line for line in out.splitlines())
    assert f"SIMD {vgkern.build_info()['simd_selected']}" in out
    if not HAVE_JAX:
        assert "note: jax is not importable" in out


def test_missing_frameworks_are_skipped_with_a_note(tmp_path):
    proc = run_cli([*TINY, "--batch-norm", "off", "--first-step-reps", "0", "--json",
                    str(tmp_path / "out.json")], tmp_path, blocked=("torch", "jax"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert set(result["meta"]["skipped"]) == {"torch", "jax"}
    assert "blocked for this test" in result["meta"]["skipped"]["torch"]
    for model in ("mlp", "lstm"):
        rows = [r["impl"] for r in result["rows"] if r["model"] == model]
        assert rows == expected_impls(model, torch=False, jax=False)
    assert all(r["first_step_after_idle"] is None for r in result["rows"])
    assert "note: torch is not importable" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "cnn"], "--model"),
    (["--threads", "0"], "--threads"),
    (["--dtype", "float16"], "--dtype"),
    (["--impls", "tensorflow"], "--impls"),
    (["--width", "x"], "--width"),
    (["--blocks", "0"], "blocks"),
])
def test_bad_options_are_refused_with_the_option_named(args, message, capsys):
    from vgkern import cli

    assert cli.main(["bench", *TINY, *args]) == 2  # refused before anything is timed
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_steady_state_runs_rotated_blocks_after_warm_up():
    calls = []
    steps = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    method = Method(block_steps=4, blocks=3, pause_s=0.0, warmup_steps=2, first_step_reps=2,
                    max_settle_s=0.0)
    timed = steady_state(steps, method)
    per_block = method.warmup_steps + method.block_steps
    order = [calls[i] for i in range(0, len(calls), per_block)]
    assert order == list("abc" "bca" "cab")  # round r starts at implementation r % 3
    assert all(calls[i:i + per_block] == [calls[i]] * per_block
               for i in range(0, len(calls), per_block))
    for n in "abc":
        assert [len(b) for b in timed.blocks[n]] == [4, 4, 4]
        assert len(timed.samples(n)) == 12 and len(timed.block_medians(n)) == 3
    assert len(timed.foreign_cores) == 3
    calls.clear()
    first = first_step_after_idle(steps, method)
    assert calls == list("abc" "bca") and all(len(v) == 2 for v in first.values())


def test_summaries_and_paired_ratios_match_numpy():
    rng = np.random.default_rng(0)
    s = rng.uniform(1e-3, 2e-3, 17)
    got = summarize(s)
    assert got["median_ms"] == pytest.approx(np.median(s) * 1e3)
    assert got["q3_ms"] == pytest.approx(np.percentile(s, 75) * 1e3) and got["n"] == 17
    a, b = rng.uniform(1, 2, 9), rng.uniform(1, 2, 9)
    r = paired_ratio(a, b)
    assert r["median"] == pytest.approx(np.median(a / b))
    assert r["q1"] == pytest.approx(np.percentile(a / b, 25))
    with pytest.raises(ValueError, match="equal"):
        paired_ratio(a, b[:3])
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


@pytest.mark.parametrize("kwargs, message", [
    (dict(block_steps=0), "block_steps"), (dict(blocks=0), "blocks"),
    (dict(warmup_steps=-1), "warmup_steps"), (dict(pause_s=2.0, max_settle_s=1.0), "pause_s"),
])
def test_method_refuses_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Method(**kwargs)


def test_config_spellings():
    assert parse_mlp_configs("64x256x50, 8x4x3:relu:bn") == [
        MlpConfig(64, 256, 50, "tanh"), MlpConfig(8, 4, 3, "relu", True)]
    assert parse_lstm_configs("128x64x50,8x4x5x3") == [LstmConfig(128, 64, 50, 128),
                                                        LstmConfig(8, 4, 5, 3)]
    assert LstmConfig(8, 4, 5).flops("vgkern_rnn") * 4 == LstmConfig(8, 4, 5).flops()
    for bad in ("64x256", "64x256x50:swish", "8x4x1:tanh:bn", "0x4x3"):
        with pytest.raises(ValueError, match="--configs"):
            parse_mlp_configs(bad)
    with pytest.raises(ValueError, match="--configs"):
        parse_lstm_configs("8x4")


@pytest.mark.parametrize("script, configs, impls", [
    ("bench_mlp.py", "8x4x3:tanh:bn", "vgkern_nostats,numpy,gemm"),
    ("bench_lstm.py", "4x2x3", "vgkern_nostats,gemm,vgkern_rnn"),
])
def test_bench_scripts_run_a_tiny_configuration(tmp_path, script, configs, impls):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", "--configs",
                           configs, "--impls", impls, "--threads", "1", "--pause-ms", "0",
                           "--json", str(out)], env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["impl"] for r in result["rows"]] == ["vgkern", *impls.split(",")]
    rnn = [r for r in result["rows"] if r["impl"] == "vgkern_rnn"]
    assert all(r["gemm_fraction"] is None for r in rnn)  # the LSTM's GEMMs are not its own
    assert "targets:" in proc.stdout


@pytest.mark.parametrize("script, args", [
    ("bench_optim.py", ["--quick", "--width", "16", "--depth", "3", "--batch", "8"]),
    ("bench_torch_module.py", ["--quick", "--width", "16", "--layers", "3", "--batch", "8"]),
    ("bench_history.py", ["--blocks", "1", "--steps", "5", "--batch", "8"]),
])
def test_standalone_bench_scripts_run(script, args):
    """The scripts outside vgkern.benchmark still import and run (a smoke run, no timings)."""
    pytest.importorskip("torch")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "median" in proc.stdout or "us/step" in proc.stdout
