"""vgkern.set_flush_denormal: off by default (IEEE gradual underflow, exact norms of subnormal
values); on, the native calls flush subnormals to zero (FTZ + DAZ) in the calling thread only
for their own duration, values in the normal range are unchanged, and nothing subnormal is left
in the results. Speed is measured in bench/bench_denormals.py, not here."""
import numpy as np
import pytest

import vgkern
from vgkern import ops

TINY32 = np.finfo(np.float32).tiny


@pytest.fixture
def flushing():
    assert vgkern.flush_denormal() is False  # the default
    assert vgkern.set_flush_denormal(True) is True  # x86 (SSE2): supported
    assert vgkern.flush_denormal() is True
    yield
    vgkern.set_flush_denormal(False)


def _subnormal(a):
    a = np.abs(np.asarray(a))
    return (a > 0) & (a < np.finfo(a.dtype).tiny)


def test_default_is_ieee_and_mode_must_be_a_bool():
    assert vgkern.flush_denormal() is False
    assert vgkern.build_info()["flush_denormal"] is False
    tiny = np.full(100, 1e-40, np.float32)
    assert ops.sum_squares_norm(tiny) == pytest.approx(10 * float(np.float32(1e-40)), rel=1e-6)
    for bad in (1, "yes", None, 1.0):
        with pytest.raises(TypeError, match="mode must be a bool"):
            vgkern.set_flush_denormal(bad)


def test_flushing_zeroes_subnormal_inputs_and_leaves_the_callers_state_alone(flushing):
    tiny = np.full(100, 1e-40, np.float32)
    assert ops.sum_squares_norm(tiny) == 0.0  # DAZ: subnormal inputs read as 0
    assert ops.sum_squares_norm(np.full(100, 1e-30, np.float32)) == pytest.approx(1e-29, rel=1e-6)
    # the calling thread's floating-point state is restored: numpy still underflows gradually
    assert np.float32(1e-30) * np.float32(1e-10) > 0


def _lstm_backward(steps):
    net = vgkern.LSTM(8, 32, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps, 4, 8)).astype(np.float32)
    net.forward(x)
    grad = np.zeros((steps, 4, 32), np.float32)
    grad[-1] = 1
    rep = net.backward(grad)
    return rep, np.array(net.grads)


def _mlp_step(depth):
    net = vgkern.MLP([32] * (depth + 1), activation="sigmoid", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 32)).astype(np.float32)
    rep = net.step(x, np.zeros_like(x))
    return rep, [np.array(g) for g in net.weight_grads]


def test_deep_sigmoid_mlp_flushed_matches_ieee_in_the_normal_range():
    ieee, ieee_grads = _mlp_step(120)
    assert ieee.weight_grad_norm[0] < TINY32  # the configuration does reach subnormals
    assert any(_subnormal(g).any() for g in ieee_grads)
    vgkern.set_flush_denormal(True)
    try:
        flushed, flushed_grads = _mlp_step(120)
    finally:
        vgkern.set_flush_denormal(False)
    assert not any(_subnormal(g).any() for g in flushed_grads)
    normal = ieee.weight_grad_norm > 1e6 * TINY32  # well clear of the subnormal range
    assert normal.sum() >= 20
    np.testing.assert_allclose(flushed.weight_grad_norm[normal], ieee.weight_grad_norm[normal],
                               rtol=1e-5)
    assert np.all(flushed.weight_grad_norm[ieee.weight_grad_norm == 0] == 0)


def test_long_lstm_flushed_matches_ieee_in_the_normal_range():
    ieee, _ = _lstm_backward(300)
    assert ieee.x_grad_norm[0] < TINY32
    vgkern.set_flush_denormal(True)
    try:
        flushed, grads = _lstm_backward(300)
    finally:
        vgkern.set_flush_denormal(False)
    assert not _subnormal(grads).any()
    normal = ieee.x_grad_norm > 1e6 * TINY32
    assert normal.sum() >= 20
    np.testing.assert_allclose(flushed.x_grad_norm[normal], ieee.x_grad_norm[normal], rtol=1e-5)
