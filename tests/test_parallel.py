"""The two-part split of layers (csrc/core/parallel.h, csrc/ops/layer_plan.h): a helper thread
runs the second row block of each layer, or the second column half of each big layer's GEMMs,
while the BLAS is held to one thread per call.

What must hold: results bit-identical with 1 and 2 BLAS threads for every net kind (the parts
depend on shapes only); the BLAS's thread setting restored after every call, also when several
Python threads run nets at once; the helper flushing subnormals exactly like the caller when
vgkern.set_flush_denormal(True) is on; and a forked child (multiprocessing "fork") running split
layers without hanging on the parent's helper thread.
"""
import multiprocessing
import os
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import vgkern
from vgkern import ops

TIMEOUT = 120.0  # seconds; a hang fails the test instead of blocking CI


def _scipy_openblas_pools():
    return [p for p in threadpool_info()
            if p["user_api"] == "blas" and os.sep + "scipy.libs" + os.sep in p["filepath"]]


# SciPy's PyPI wheels bundle OpenBLAS in scipy.libs (CI installs them); another SciPy build
# (conda, MKL) has other thread controls, and vgkern then runs every call on the caller.
pytestmark = pytest.mark.skipif(not _scipy_openblas_pools(),
                                reason="SciPy's bundled OpenBLAS (scipy.libs) is not in use")


def scipy_blas_threads():
    """Threads of the BLAS behind scipy.linalg.cython_blas (the one vgkern calls), not NumPy's
    (whose file is also named libscipy_openblas*, but lives in numpy.libs)."""
    pools = _scipy_openblas_pools()
    assert len(pools) == 1, threadpool_info()
    return pools[0]["num_threads"]


def leaves(result):
    if isinstance(result, dict):
        for key in sorted(result):
            yield from leaves(result[key])
    elif isinstance(result, (list, tuple)):
        for item in result:
            yield from leaves(item)
    else:
        yield np.ascontiguousarray(np.asarray(result)).tobytes()


def assert_bits_equal(a, b, what):
    assert list(leaves(a)) == list(leaves(b)), f"{what}: not bit-identical"


def mlp_step(batch_norm=False, activation="tanh", width=48, batch=96, dtype="float32"):
    net = vgkern.MLP([width] * 6 + [5], activation=activation, batch_norm=batch_norm,
                     dtype=dtype, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((batch, width)).astype(dtype)
    target = rng.standard_normal((batch, 5)).astype(dtype)
    rep = net.step(x, target, loss="mse")
    return dict(out=net.forward(x), report=rep.as_dict(), weights=[g.copy() for g in net.weight_grads])


def recurrent_step(kind, hidden=40, batch=33, steps=7, dtype="float32"):
    net = vgkern.LSTM(12, hidden, dtype=dtype, seed=5) if kind == "lstm" else \
        vgkern.RNN(12, hidden, dtype=dtype, seed=5)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((steps, batch, 12)).astype(dtype)
    target = rng.standard_normal((steps, batch, hidden)).astype(dtype)
    rep = net.step(x, target, loss="mse_sequence")
    return dict(report=rep.as_dict(), grads=np.array(net.grads, copy=True),
                h=np.array(net.last_output, copy=True) if net.last_output is not None else None)


def dense_ops(dtype="float32"):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((70, 30)).astype(dtype)
    w = rng.standard_normal((20, 30)).astype(dtype)
    b = rng.standard_normal(20).astype(dtype)
    h, dact = ops.dense_forward(x, w, b, "sigmoid")
    grad = rng.standard_normal((70, 20)).astype(dtype)
    return dict(fwd=(h, dact), bwd=ops.dense_backward(grad, dact, x, w))


CASES = {
    "mlp": mlp_step,
    "mlp_relu_float64": lambda: mlp_step(activation="relu", dtype="float64"),
    "mlp_batch_norm": lambda: mlp_step(batch_norm=True),
    # 200 x 600 x 600 per GEMM: each cut by output columns (ops/layer_plan.h)
    "mlp_column_split": lambda: mlp_step(width=600, batch=200),
    "mlp_column_split_float64": lambda: mlp_step(width=600, batch=200, dtype="float64"),
    "mlp_column_split_batch_norm": lambda: mlp_step(batch_norm=True, width=600, batch=200),
    # 1024 x 300 x 300: above the row-split work, but with more rows than units: rows again
    "mlp_tall_row_split": lambda: mlp_step(width=300, batch=1024),
    "lstm": lambda: recurrent_step("lstm"),
    "lstm_float64": lambda: recurrent_step("lstm", dtype="float64"),
    "rnn": lambda: recurrent_step("rnn"),
}


def test_build_info_names_the_thread_control():
    threading_info = vgkern.build_info()["threading"]
    assert "set_num_threads" in threading_info, threading_info  # SciPy's OpenBLAS


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_and_two_threads_bit_identical_and_blas_setting_restored(case):
    with threadpool_limits(limits=1, user_api="blas"):
        one = CASES[case]()
        assert scipy_blas_threads() == 1
    with threadpool_limits(limits=2, user_api="blas"):
        two = CASES[case]()
        assert scipy_blas_threads() == 2  # held to 1 only during the call
        again = CASES[case]()
    assert_bits_equal(one, two, f"{case}: 1 vs 2 threads")
    assert_bits_equal(two, again, f"{case}: repeated")


def test_ops_bit_identical_with_one_and_two_threads():
    with threadpool_limits(limits=1, user_api="blas"):
        one = dense_ops()
    with threadpool_limits(limits=2, user_api="blas"):
        two = dense_ops()
    assert_bits_equal(one, two, "dense ops")


def test_concurrent_nets_share_the_helper_and_restore_the_blas_setting():
    """Six Python threads run split nets at once: the helper serves one caller at a time (the
    others run both blocks themselves), results match the serial ones, and the BLAS's setting
    is back to 2 afterwards (the first caller in saves it, the last one out restores it)."""
    kinds = ["mlp", "mlp_batch_norm", "lstm", "rnn", "mlp", "lstm"]
    with threadpool_limits(limits=2, user_api="blas"):
        serial = [CASES[k]() for k in kinds]
        results = [None] * len(kinds)
        barrier = threading.Barrier(len(kinds), timeout=TIMEOUT)

        def work(i):
            barrier.wait()
            for _ in range(3):
                results[i] = CASES[kinds[i]]()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(kinds))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
            assert not t.is_alive(), "a thread hung"
        assert scipy_blas_threads() == 2
    for kind, got, want in zip(kinds, results, serial):
        assert_bits_equal(got, want, f"{kind} in a thread vs serial")


@pytest.fixture
def flushing():
    vgkern.set_flush_denormal(True)
    yield
    vgkern.set_flush_denormal(False)


def subnormal_forward():
    """A one-layer identity net whose outputs are all subnormal in float32 (1e-20 * 1e-20 * 16)
    in every row, so in both row blocks."""
    net = vgkern.MLP([16, 16], activation="identity", seed=0)
    net.weights[0][...] = 1e-20
    x = np.full((64, 16), 1e-20, np.float32)
    return net.forward(x)


def test_helper_flushes_subnormals_like_the_caller(flushing):
    with threadpool_limits(limits=2, user_api="blas"):
        out = subnormal_forward()
    assert np.all(out == 0), "a block left subnormal outputs: the helper did not flush"


def test_without_flushing_both_blocks_keep_subnormals():
    with threadpool_limits(limits=2, user_api="blas"):
        out = subnormal_forward()
    tiny = np.finfo(np.float32).tiny
    assert np.all((out > 0) & (out < tiny))
    np.testing.assert_allclose(out, 16e-40, rtol=1e-3)


def _child_step(queue):
    with threadpool_limits(limits=2, user_api="blas"):
        queue.put(list(leaves(CASES["lstm"]())) + list(leaves(CASES["mlp"]())))


def test_forked_child_runs_split_layers():
    with threadpool_limits(limits=2, user_api="blas"):
        parent = list(leaves(CASES["lstm"]())) + list(leaves(CASES["mlp"]()))  # helper exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_step, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=TIMEOUT)
    finally:
        child.join(TIMEOUT)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert got == parent
