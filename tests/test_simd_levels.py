"""The SIMD levels' kernels (csrc/core/simd.h) agree with each other.

The tests elsewhere run the level this CPU selects; here each lower level is forced with
VGKERN_SIMD_LEVEL in a subprocess (the level is chosen once per process) and an MLP step (with
and without batch norm, float32 and float64) an LSTM and an RNN step are compared with the selected
level's: same statistics up to rounding (FMA contraction and vector widths differ between
levels, so not the same bits), and each level's own result the same twice in a row.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vgkern

SCRIPT = r"""
import json, sys
import numpy as np
import vgkern

out = {"selected": vgkern.build_info()["simd_selected"]}
rng = np.random.default_rng(0)
for dtype in ("float32", "float64"):
    for bn in (False, True):
        x = rng.standard_normal((64, 40)).astype(dtype)
        y = rng.standard_normal((64, 24)).astype(dtype)
        runs = []
        for _ in range(2):
            net = vgkern.MLP([40, 48, 48, 24], activation="tanh", seed=0, dtype=dtype,
                             batch_norm=bn)
            rep = net.step(x, y, loss="mse")
            runs.append([rep.loss, *map(float, rep.weight_grad_norm),
                         *map(float, rep.act_grad_norm), *map(float, rep.preact_std),
                         *map(float, rep.saturated_fraction)])
        out[f"mlp_{dtype}_bn{int(bn)}"] = runs
xs = rng.standard_normal((12, 8, 16)).astype("float32")
ys = rng.standard_normal((8, 24)).astype("float32")
for name, net in (("lstm", vgkern.LSTM(16, 24, seed=0)), ("rnn", vgkern.RNN(16, 24, seed=0))):
    rep = net.step(xs, ys, loss="mse")
    out[name] = [[rep.loss, *map(float, np.ravel(rep.h_grad_norm)),
                  *map(float, np.ravel(rep.saturated_fraction))]]
print(json.dumps(out))
"""

LEVELS = {"baseline": "baseline", "x86-64-v3": "x86-64-v3 (AVX2)"}


def run_level(level):
    env = dict(os.environ)
    env.pop("VGKERN_SIMD_LEVEL", None)
    if level is not None:
        env["VGKERN_SIMD_LEVEL"] = level
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def selected():
    return run_level(None)


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_forced_level_matches_selected(selected, level):
    forced = run_level(level)
    if "x86-64" not in vgkern.build_info()["simd"]:
        pytest.skip("this build has only the baseline kernels")
    order = ["baseline", "x86-64-v3 (AVX2)", "x86-64-v4 (AVX-512)"]
    expected = LEVELS[level]
    if order.index(expected) > order.index(selected["selected"]):
        expected = selected["selected"]  # a level above the CPU's is never taken
    assert forced["selected"] == expected
    for name, runs in forced.items():
        if name == "selected":
            continue
        assert runs[0] == runs[-1], f"{name}: not deterministic at level {level}"
        rtol = 1e-10 if "float64" in name else 1e-4
        np.testing.assert_allclose(runs[0], selected[name][0], rtol=rtol, atol=1e-12,
                                   err_msg=f"{name}: level {level} vs {selected['selected']}")
