"""Package-level behaviour: build information, BLAS hookup, CUDA seam, the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vgkern
from vgkern import cli


def test_build_info_reports_compiler_flags_blas_openmp_cuda():
    info = vgkern.build_info()
    for key in ("compiler", "cxx_flags", "openmp", "cuda", "blas_source", "blas_runtime", "version"):
        assert key in info, key
    assert "-O3" in info["cxx_flags"]
    assert "cython_blas" in info["blas_source"]
    assert isinstance(info["cuda"], bool)
    # threadpoolctl (a test dependency) sees the BLAS that SciPy ships
    assert any(pool.get("internal_api") for pool in info["blas_runtime"])
    json.dumps(info, default=str)  # serialisable for benchmark records


def test_cuda_seam_without_gpu():
    if vgkern.cuda_available():
        pytest.skip("a CUDA GPU is present; this test covers machines without one")
    with pytest.raises(RuntimeError, match="cuda"):
        vgkern.MLP([4, 4], device="cuda")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        vgkern.MLP([4, 4], device="tpu")


def test_gemm_uses_scipy_blas_for_large_products():
    # A product big enough that any blocking bug would show; compared in float64.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((67, 301))
    w = rng.standard_normal((129, 301))
    b = rng.standard_normal(129)
    h, _ = vgkern.ops.dense_forward(x, w, b, "identity")
    np.testing.assert_allclose(h, x @ w.T + b, rtol=1e-12, atol=1e-12)


def test_demo_prints_vanishing_sigmoid_gradient(capsys):
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    summary = cli.demo(depths=(5, 10, 20), width=32, batch=64, seed=0, png=None)
    out = capsys.readouterr().out
    assert "sigmoid" in out and "tanh" in out and "relu" in out and "elu" in out
    assert "LSTM" in out and "RNN" in out
    # one line per depth in each of the three tables
    assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == 3 * 3
    # sigmoid's input-side gradient is orders of magnitude below its output side, far more
    # than tanh's (the demo's point)
    mlp = summary[(summary["model"] == "mlp") & (summary["depth"] == 20) & ~summary["batch_norm"]]
    ratio = mlp.set_index("activation")["log10_ratio_first_last"]
    assert ratio["sigmoid"] < -5.0
    assert ratio["sigmoid"] < 3 * ratio["tanh"]


def test_cli_entry_points_run(tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    png = tmp_path / "demo.png"
    demo = subprocess.run([sys.executable, "-m", "vgkern.cli", "demo", "--depth", "5,10",
                           "-o", str(png)], capture_output=True, text=True, check=True,
                          cwd=tmp_path)
    assert "depth" in demo.stdout and png.is_file()
    info = subprocess.run([sys.executable, "-m", "vgkern.cli", "info"],
                          capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["version"] == vgkern.__version__
    bad = subprocess.run([sys.executable, "-m", "vgkern.cli", "demo", "--depth", "1"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "--depth" in bad.stderr


def test_cli_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"{vgkern.__version__}\n"
    run = subprocess.run([sys.executable, "-m", "vgkern.cli", "--version"],
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout.strip()) == (0, vgkern.__version__)


def test_version_is_the_one_in_pyproject():
    tomllib = pytest.importorskip("tomllib")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        expected = tomllib.load(f)["project"]["version"]
    assert vgkern.__version__ == expected
    assert vgkern.build_info()["version"] == expected


def test_pyproject_version_reads_vgkerns_project_table_only(tmp_path):
    from vgkern.info import pyproject_version

    path = tmp_path / "pyproject.toml"
    path.write_text('[build-system]\nversion = "9"\n\n[project]\nname = "vgkern"\n'
                    'version = "1.2.3"\n\n[tool.x]\nversion = "7"\n')
    assert pyproject_version(str(path)) == "1.2.3"
    path.write_text('[project]\nname = "other"\nversion = "1.2.3"\n')
    assert pyproject_version(str(path)) is None
    assert pyproject_version(str(tmp_path / "missing.toml")) is None


def test_version_without_a_source_tree_is_the_metadata_or_unknown(monkeypatch, tmp_path):
    from importlib import metadata

    from vgkern import info

    monkeypatch.setattr(info, "_PYPROJECT", str(tmp_path / "missing.toml"))
    monkeypatch.setattr(metadata, "version", lambda name: {"vgkern": "4.5.6"}[name])
    assert info.package_version() == "4.5.6"

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert info.package_version() == "0+unknown"


def test_blas_threads_context_manager():
    from threadpoolctl import threadpool_info

    with vgkern.blas_threads(1):
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
