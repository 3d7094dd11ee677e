"""Determinism: the same inputs give bit-identical statistics and gradients on repeated calls
and with 1 or 2 BLAS threads. (From several Python threads, and one net shared by two threads:
tests/test_threads.py.)
"""
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import vgkern
from conftest import assert_bitwise_equal, make_case, result_of, run_step


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation,loss", [("tanh", "mse"), ("relu", "cross_entropy"),
                                             ("sigmoid", "mse"), ("elu", "cross_entropy")])
def test_repeated_calls_bit_identical(activation, loss, dtype, device):
    net, x, target = make_case(37, depth=6, batch=29, activation=activation, dtype=dtype,
                               loss=loss, init="scaled_normal", sigma_w=1.3, sigma_b=0.2,
                               device=device)
    first = run_step(net, x, target, loss)
    assert np.isfinite(first["loss"])
    for _ in range(3):
        assert_bitwise_equal(run_step(net, x, target, loss), first, "repeat")
    # forward + backward(dL/dout) path repeats bitwise too
    out = net.forward(x)
    grad_out = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    a = result_of(net, net.backward(grad_out), out)
    net.forward(x)
    b = result_of(net, net.backward(grad_out), out)
    assert_bitwise_equal(a, b, "forward+backward repeat")
    # a step on other data in between leaves no trace
    _, x2, t2 = make_case(37, depth=6, batch=29, activation=activation, dtype=dtype, seed=9,
                          loss=loss)
    net.step(x2, t2, loss=loss)
    net.step(x2[:7].copy(), t2[:7].copy(), loss=loss)
    assert_bitwise_equal(run_step(net, x, target, loss), first, "after other data")


def test_same_seed_same_parameters_other_seed_different():
    for dtype in ("float32", "float64"):
        a = vgkern.MLP([13, 37, 5], dtype=dtype, seed=42)
        b = vgkern.MLP([13, 37, 5], dtype=dtype, seed=42)
        c = vgkern.MLP([13, 37, 5], dtype=dtype, seed=43)
        assert a.params.tobytes() == b.params.tobytes()
        assert a.params.tobytes() != c.params.tobytes()
        assert not np.shares_memory(a.params, b.params)


def test_threadpoolctl_sees_a_blas():
    """The 1-vs-2-thread test below only means something if a BLAS is under control."""
    assert any(lib["user_api"] == "blas" for lib in threadpool_info())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("width", [256, 64])
def test_one_and_two_blas_threads_bit_identical(width, dtype):
    net, x, target = make_case(width, depth=10, batch=128, dtype=dtype, activation="tanh",
                               init="scaled_normal", sigma_w=1.2, sigma_b=0.1)
    with threadpool_limits(limits=1):
        one = run_step(net, x, target)
        one_ce = run_step(net, x, np.arange(128, dtype=np.int64) % 10, "cross_entropy")
    with threadpool_limits(limits=2):
        two = run_step(net, x, target)
        two_ce = run_step(net, x, np.arange(128, dtype=np.int64) % 10, "cross_entropy")
    assert_bitwise_equal(one, two, f"1 vs 2 BLAS threads, width {width}")
    assert_bitwise_equal(one_ce, two_ce, f"1 vs 2 BLAS threads, width {width}, cross_entropy")
    with threadpool_limits(limits=2):
        again = run_step(net, x, target)
    assert_bitwise_equal(again, two, "2 BLAS threads repeated")


def test_stats_off_changes_no_gradient():
    """stats=False skips the statistics but must not change outputs, loss or gradients."""
    net, x, target = make_case(64, depth=10, batch=128, activation="relu")
    with_stats = run_step(net, x, target)
    net.stats = False
    assert net.stats is False
    without = run_step(net, x, target)
    assert without["out"].tobytes() == with_stats["out"].tobytes()
    assert without["loss"] == with_stats["loss"]
    for kind in ("weight_grads", "bias_grads"):
        for ga, gb in zip(without[kind], with_stats[kind]):
            assert ga.tobytes() == gb.tobytes()
    for name in ("preact_mean", "preact_std", "saturated_fraction", "zero_fraction",
                 "dead_fraction", "weight_grad_norm", "act_grad_norm"):
        assert np.all(np.isnan(without["stats"][name])), f"{name} with stats=False"
    net.stats = True
    assert_bitwise_equal(run_step(net, x, target), with_stats, "stats back on")
