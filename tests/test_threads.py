"""Threads: separate nets (and the low-level ops) run concurrently with results bit-identical to
serial runs; one net used from two threads at once is refused with a clear RuntimeError and is
left intact.

Every native call releases the GIL, so the Python threads below really do run the kernels at
the same time (on however many cores there are). Any shared mutable state in the C++ core (a
static scratch buffer, a cached workspace, a BLAS handle) would show up as a wrong bit.

The last section covers the two-part split of layers
(csrc/core/parallel.h, csrc/ops/layer_plan.h): a helper thread runs the second row block of each
layer, or the second column half of each big layer's GEMMs, while the BLAS is held to one thread
per call.

What must hold: results bit-identical with 1 and 2 BLAS threads for every net kind (the parts
depend on shapes only); the BLAS's thread setting restored after every call, also when several
Python threads run nets at once; the helper flushing subnormals exactly like the caller when
vgkern.set_flush_denormal(True) is on; and a forked child (multiprocessing "fork") running split
layers without hanging on the parent's helper thread.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import vgkern
from conftest import STAT_FIELDS, assert_bitwise_equal, make_case, run_step
from vgkern import ops

# The fragment of the one busy-guard message of every net, CPU and CUDA (csrc/core/busy_guard.h):
#   "MLP.step: this net is already running in another thread; one net may be used by ..."
REFUSAL = "already running in another thread"
BARRIER_TIMEOUT = 60.0  # seconds; a hang in a worker fails the test instead of blocking CI


@pytest.fixture
def one_blas_thread():
    """Pin the BLAS (OpenBLAS, via threadpoolctl) to one thread during a test.

    The serial and the concurrent runs must do exactly the same floating-point operations. With
    a multi-threaded OpenBLAS the split of a GEMM over its thread pool can depend on how many
    pool threads are free when the call comes in, and 8 Python threads x N BLAS threads would
    oversubscribe the (often 2) cores and make the test slow. One BLAS thread per caller is
    also what vgkern.sweep uses. The concurrency under test is that of the Python threads; the
    limit is process-wide, so it holds in every worker thread. Used by every test of the
    thread sections (test_threads.py's autouse fixture before); the split-layer section at the
    end sets the BLAS threads itself."""
    with vgkern.blas_threads(1):
        yield


# --------------------------------------------------------------------------------------------
# Bit-exact comparison of nested results
# --------------------------------------------------------------------------------------------

def _leaves(obj, path="result"):
    """(path, value) for every array / number inside nested tuples, lists and dicts."""
    if isinstance(obj, dict):
        for key in obj:
            yield from _leaves(obj[key], f"{path}[{key!r}]")
    elif isinstance(obj, (tuple, list)):
        for i, item in enumerate(obj):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, obj


def _bits(value):
    if value is None:
        return ("None",)
    a = np.asarray(value)
    return (a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes())


def assert_bit_identical(got, want, what):
    got_leaves, want_leaves = list(_leaves(got)), list(_leaves(want))
    assert [p for p, _ in got_leaves] == [p for p, _ in want_leaves], f"{what}: structure differs"
    for (path, g), (_, w) in zip(got_leaves, want_leaves):
        if _bits(g) != _bits(w):
            g_arr, w_arr = np.asarray(g), np.asarray(w)
            detail = ""
            if g_arr.shape == w_arr.shape and g_arr.dtype == w_arr.dtype and g_arr.size:
                diff = np.abs(g_arr.astype(np.float64) - w_arr.astype(np.float64))
                detail = f" (max |diff| {np.nanmax(diff) if np.isfinite(diff).any() else diff})"
            pytest.fail(f"{what}: {path} is not bit-identical to the serial run{detail}")


def _run_concurrently(fn, args, rounds=1):
    """fn(arg) for every arg, all in their own thread, started together by a Barrier; `rounds`
    times over. Returns the results of every round (a list of lists, in args order)."""
    out = []
    for _ in range(rounds):
        barrier = threading.Barrier(len(args))

        def gated(arg):
            barrier.wait(timeout=BARRIER_TIMEOUT)
            return fn(arg)

        with ThreadPoolExecutor(max_workers=len(args)) as pool:
            out.append(list(pool.map(gated, args)))
    return out


# --------------------------------------------------------------------------------------------
# Many threads, one net each: training runs equal serial runs bit for bit
# --------------------------------------------------------------------------------------------

STEPS = 6
LR = 0.05

# (name, constructor kwargs, loss, batch): each job builds its own net inside its thread.
MLP_JOBS = (
    ("mlp-f32-tanh", dict(sizes=[48, 96, 96, 96, 12], activation="tanh", dtype="float32", seed=1), "mse", 64),
    ("mlp-f64-relu", dict(sizes=[48, 96, 96, 96, 12], activation="relu", dtype="float64", seed=2), "mse", 64),
    ("mlp-f32-bn", dict(sizes=[48, 96, 96, 12], activation="tanh", dtype="float32", seed=3, batch_norm=True), "mse", 64),
    ("mlp-f64-bn-ce", dict(sizes=[48, 96, 96, 12], activation="elu", dtype="float64", seed=4, batch_norm=True), "cross_entropy", 64),
    ("mlp-f32-sigmoid-ce", dict(sizes=[48, 80, 80, 12], activation="sigmoid", dtype="float32", seed=5), "cross_entropy", 48),
)
RECURRENT_JOBS = (
    ("lstm-f32", "LSTM", dict(input_size=12, hidden_size=40, dtype="float32", seed=6, forget_bias=1.0), "mse", (16, 12)),
    ("lstm-f64-seq", "LSTM", dict(input_size=12, hidden_size=40, dtype="float64", seed=7), "mse_sequence", (16, 12)),
    ("rnn-f32-tanh", "RNN", dict(input_size=12, hidden_size=48, dtype="float32", seed=8), "mse", (20, 12)),
    ("rnn-f64-relu-seq", "RNN", dict(input_size=12, hidden_size=48, dtype="float64", seed=9, nonlinearity="relu"), "mse_sequence", (20, 12)),
)
ALL_JOBS = tuple(j[0] for j in MLP_JOBS) + tuple(j[0] for j in RECURRENT_JOBS)


def _train_mlp(job, sync):
    name, kwargs, loss, batch = job
    net = vgkern.MLP(**kwargs)
    rng = np.random.default_rng(kwargs["seed"] + 100)
    d_in, d_out = net.sizes[0], net.sizes[-1]
    x = rng.standard_normal((batch, d_in)).astype(net.dtype)
    if loss == "mse":
        target = rng.standard_normal((batch, d_out)).astype(net.dtype)
    else:
        target = rng.integers(0, d_out, batch)
    history = []
    for _ in range(STEPS):
        sync()
        rep = net.step(x, target, loss=loss, compute_input_grad=True)
        history.append((rep.as_dict(), net.last_output.copy(), net.input_grad.copy(),
                        net.grads.copy()))
        net.params -= LR * net.grads  # in place on the native buffer (see _params.py)
    grad_out = rng.standard_normal((batch, d_out)).astype(net.dtype)
    out = net.forward(x)
    rep = net.backward(grad_out, log_scale=True)
    final = dict(params=net.params.copy(), forward=out, backward=rep.as_dict(),
                 weights=[w.copy() for w in net.weights])
    if net.batch_norm:
        final["running_means"] = [m.copy() for m in net.running_means]
        final["running_vars"] = [v.copy() for v in net.running_vars]
        final["eval_forward"] = net.eval().forward(x)
    return dict(history=history, final=final)


def _train_recurrent(job, sync):
    name, cls, kwargs, loss, (T, B) = job
    net = getattr(vgkern, cls)(**kwargs)
    rng = np.random.default_rng(kwargs["seed"] + 100)
    x = rng.standard_normal((T, B, net.input_size)).astype(net.dtype)
    tshape = (T, B, net.hidden_size) if loss == "mse_sequence" else (B, net.hidden_size)
    target = rng.standard_normal(tshape).astype(net.dtype)
    h0 = 0.1 * rng.standard_normal((B, net.hidden_size)).astype(net.dtype)
    history = []
    for _ in range(STEPS):
        sync()
        rep = net.step(x, target, loss=loss, h0=h0)
        history.append((rep.as_dict(), net.last_output.copy(), net.input_grad.copy(),
                        net.h0_grad.copy(), net.grads.copy()))
        net.params -= LR * net.grads
    fwd = net.forward(x, h0)
    rep = net.backward(grad_h_seq=rng.standard_normal((T, B, net.hidden_size)).astype(net.dtype))
    final = dict(params=net.params.copy(), forward=fwd, backward=rep.as_dict(),
                 weight_hh=net.weight_hh.copy())
    return dict(history=history, final=final)


def _train(name, sync=lambda: None):
    """Build the named net and train it STEPS steps; sync() runs before every step."""
    for job in MLP_JOBS:
        if job[0] == name:
            return _train_mlp(job, sync)
    for job in RECURRENT_JOBS:
        if job[0] == name:
            return _train_recurrent(job, sync)
    raise KeyError(name)


@pytest.mark.usefixtures("one_blas_thread")
def test_separate_nets_in_many_threads_match_serial_runs():
    # 9 jobs, each a different net, plus a second copy of three of them: 12 threads at once
    # (two copies of one configuration must also agree with each other).
    names = list(ALL_JOBS) + ["mlp-f32-tanh", "mlp-f32-bn", "lstm-f32"]
    serial = {name: _train(name) for name in ALL_JOBS}
    for round_results in _run_concurrently(_train, names, rounds=2):
        for name, got in zip(names, round_results):
            assert_bit_identical(got, serial[name], f"{name} (concurrent)")


@pytest.mark.usefixtures("one_blas_thread")
def test_separate_nets_in_lock_step_match_serial_runs():
    # One net per thread, the threads taking their steps in lock step (a Barrier before every
    # step), so that every step of every net overlaps a step of each of the others.
    names = list(ALL_JOBS)
    serial = {name: _train(name) for name in names}
    barrier = threading.Barrier(len(names))
    sync = lambda: barrier.wait(timeout=BARRIER_TIMEOUT)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = list(pool.map(lambda name: _train(name, sync), names))
    for name, got in zip(names, results):
        assert_bit_identical(got, serial[name], f"{name} (lock-stepped)")


# --------------------------------------------------------------------------------------------
# The low-level ops from many threads
# --------------------------------------------------------------------------------------------

OP_ACTIVATIONS = (("tanh", 1.0), ("sigmoid", 1.0), ("relu", 1.0), ("elu", 0.7), ("identity", 1.0))


def _ops_run(seed):
    """Every op of vgkern.ops once, on inputs drawn from `seed` (float32 for even seeds,
    float64 for odd), chained as a net would chain them. Returns every output."""
    dtype = np.float32 if seed % 2 == 0 else np.float64
    rng = np.random.default_rng(seed)
    draw = lambda *shape: rng.standard_normal(shape).astype(dtype)
    act, alpha = OP_ACTIVATIONS[seed % len(OP_ACTIVATIONS)]
    B, I, O, H = 40 + seed, 33, 57, 24
    out = {}
    z = 3 * draw(B, O)
    out["activation_forward"] = ops.activation_forward(z, act, alpha)
    out["activation_backward"] = ops.activation_backward(draw(B, O), z, act, alpha)
    x, w, b = draw(B, I), draw(O, I), draw(O)
    h, dact = ops.dense_forward(x, w, b, act, alpha)
    out["dense_forward"] = (h, dact)
    out["dense_forward_nobias"] = ops.dense_forward(x, w, None, act, alpha)
    out["dense_backward"] = ops.dense_backward(draw(B, O), dact, x, w)
    out["dense_backward_nodx"] = ops.dense_backward(draw(B, O), dact, x, w, need_dx=False)
    out["mse_loss"] = ops.mse_loss(h, draw(B, O))
    out["cross_entropy_loss"] = ops.cross_entropy_loss(h, rng.integers(0, O, B))
    gamma, beta = 1 + 0.1 * draw(O), 0.1 * draw(O)
    running_mean, running_var = np.zeros(O, dtype), np.ones(O, dtype)
    y, mean, rstd = ops.batchnorm_forward(h, gamma, beta, running_mean, running_var)
    out["batchnorm_forward"] = (y, mean, rstd, running_mean, running_var)
    out["batchnorm_backward"] = ops.batchnorm_backward(draw(B, O), h, mean, rstd, gamma)
    out["batchnorm_forward_eval"] = ops.batchnorm_forward(h, gamma, beta, running_mean,
                                                          running_var, training=False)
    h_prev, c_prev = draw(B, H), draw(B, H)
    w_ih, w_hh, bias = 0.3 * draw(4 * H, I), 0.3 * draw(4 * H, H), draw(4 * H)
    hl, cl, gates = ops.lstm_cell_forward(x, h_prev, c_prev, w_ih, w_hh, bias)
    out["lstm_cell_forward"] = (hl, cl, gates)
    out["lstm_cell_backward"] = ops.lstm_cell_backward(draw(B, H), draw(B, H), gates, cl, c_prev,
                                                       x, h_prev, w_ih, w_hh)
    nl = "tanh" if seed % 3 else "relu"
    hr = ops.rnn_cell_forward(x, h_prev, w_ih[:H], w_hh[:H], bias[:H], nl)
    out["rnn_cell_forward"] = hr
    out["rnn_cell_backward"] = ops.rnn_cell_backward(draw(B, H), hr, x, h_prev, w_ih[:H],
                                                     w_hh[:H], nl)
    out["sum_squares_norm"] = (ops.sum_squares_norm(h), ops.sum_squares_norm(gates),
                               ops.sum_squares_norm(np.float64(1e-200) * draw(7, 5).astype(np.float64)))
    return out


def _ops_repeated(seed, repeats=4, sync=None):
    """_ops_run(seed) `repeats` times; every repeat must give the same bits."""
    results = []
    for _ in range(repeats):
        if sync is not None:
            sync()
        results.append(_ops_run(seed))
    for later in results[1:]:
        assert_bit_identical(later, results[0], f"ops (seed {seed}, repeated in one thread)")
    return results[0]


@pytest.mark.usefixtures("one_blas_thread")
def test_ops_from_many_threads_match_serial():
    seeds = list(range(8))
    serial = {seed: _ops_run(seed) for seed in seeds}
    barrier = threading.Barrier(len(seeds))
    sync = lambda: barrier.wait(timeout=BARRIER_TIMEOUT)
    with ThreadPoolExecutor(max_workers=len(seeds)) as pool:
        results = list(pool.map(lambda s: _ops_repeated(s, sync=sync), seeds))
    for seed, got in zip(seeds, results):
        assert_bit_identical(got, serial[seed], f"ops (seed {seed}, concurrent)")


@pytest.mark.usefixtures("one_blas_thread")
def test_one_op_from_many_threads_on_shared_inputs():
    # Several threads reading the same input arrays (ops never write their inputs, apart from
    # batchnorm_forward's running statistics, which get one copy per thread here).
    rng = np.random.default_rng(11)
    x = rng.standard_normal((96, 64)).astype(np.float32)
    w = rng.standard_normal((80, 64)).astype(np.float32)
    b = rng.standard_normal(80).astype(np.float32)
    x_before, w_before = x.copy(), w.copy()

    def work(_):
        h, dact = ops.dense_forward(x, w, b, "tanh")
        grads = ops.dense_backward(np.ones_like(h), dact, x, w)
        rm, rv = np.zeros(80, np.float32), np.ones(80, np.float32)
        bn = ops.batchnorm_forward(h, None, None, rm, rv)
        return (h, dact, grads, bn, rm, rv, ops.sum_squares_norm(x))

    want = work(None)
    for round_results in _run_concurrently(work, list(range(8)), rounds=3):
        for got in round_results:
            assert_bit_identical(got, want, "dense/batchnorm on shared inputs")
    assert_bit_identical((x, w), (x_before, w_before), "shared inputs after the threads")


# --------------------------------------------------------------------------------------------
# One net, several threads: refused with a RuntimeError, never corrupted
# --------------------------------------------------------------------------------------------

def _mlp_case(sizes, batch, seed=0):
    net = vgkern.MLP(sizes, activation="tanh", dtype="float32", seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    target = rng.standard_normal((batch, sizes[-1]), dtype=np.float32)
    grad_out = rng.standard_normal((batch, sizes[-1]), dtype=np.float32)
    calls = {
        "forward": lambda: net.forward(x),
        "step": lambda: net.step(x, target).as_dict(),
        "backward": lambda: net.backward(grad_out).as_dict(),
    }
    return net, x, calls


def _lstm_case(T, B, I, H, seed=0):
    net = vgkern.LSTM(I, H, dtype="float32", seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    target = rng.standard_normal((B, H), dtype=np.float32)
    grad_h = rng.standard_normal((B, H), dtype=np.float32)
    calls = {
        "forward": lambda: net.forward(x),
        "step": lambda: net.step(x, target).as_dict(),
        "backward": lambda: net.backward(grad_hT=grad_h).as_dict(),
    }
    return net, x, calls


# Sized so that one call takes a few milliseconds with the GIL released: calls from 4 threads
# overlap, and the test stays well under a second per round.
ONE_NET_CASES = {
    "mlp": lambda: _mlp_case([192, 192, 192, 192, 16], batch=192),
    "lstm": lambda: _lstm_case(T=24, B=32, I=16, H=64),
}


def _expected(net, calls):
    """Serial results of every call, and the gradients each of step and backward leaves. A
    forward or a step of the same x leaves the net in the same state, so a backward after
    either gives the same report; step and backward overwrite the gradients (they never
    accumulate).

    The calls return only what the native call itself produced (outputs, reports): copying
    net.grads after the call returns would race, in the test, with the next thread's call."""
    want = {"forward": calls["forward"](), "step": calls["step"]()}
    want["step_grads"] = net.grads.copy()
    want["backward"] = calls["backward"]()
    want["backward_grads"] = net.grads.copy()
    params = net.params.copy()
    # Repeat in another order: the serial results do not depend on the order of the calls.
    assert_bit_identical(calls["backward"](), want["backward"], "serial backward after backward")
    assert_bit_identical(calls["step"](), want["step"], "serial step after backward")
    assert_bit_identical(calls["forward"](), want["forward"], "serial forward after step")
    return want, params


def _storm(calls, want, n_threads=4, calls_per_thread=10):
    """n_threads threads, released together by a Barrier, each making calls_per_thread calls
    (forward, step and backward in turn, each thread starting at another one). Every call must
    succeed with the serial result or be refused with the BusyGuard's RuntimeError. Returns
    the number of refusals."""
    names = ("step", "forward", "backward")
    barrier = threading.Barrier(n_threads)

    def worker(i):
        barrier.wait(timeout=BARRIER_TIMEOUT)
        outcomes = []
        for k in range(calls_per_thread):
            name = names[(i + k) % len(names)]
            try:
                outcomes.append((name, calls[name]()))
            except RuntimeError as err:
                assert REFUSAL in str(err), f"{name}: unexpected RuntimeError: {err}"
                outcomes.append((name, None))
        return outcomes

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        per_thread = list(pool.map(worker, range(n_threads)))
    refusals = 0
    for i, outcomes in enumerate(per_thread):
        for k, (name, got) in enumerate(outcomes):
            if got is None:
                refusals += 1
            else:
                assert_bit_identical(got, want[name], f"thread {i} call {k} ({name}) in the storm")
    return refusals


@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("case", sorted(ONE_NET_CASES))
def test_one_net_from_many_threads_is_refused_never_corrupted(case):
    net, _, calls = ONE_NET_CASES[case]()
    want, params = _expected(net, calls)
    refusals = 0
    # Overlap is all but certain in the first round (4 threads, GIL released for milliseconds
    # per call); a few more rounds make a refusal-free storm practically impossible. The
    # refusal itself is also checked deterministically in the test below.
    for _ in range(8):
        refusals += _storm(calls, want)
        if refusals:
            break
    assert refusals > 0, "4 threads hammering one net were never refused: no overlap?"
    # The net is intact: the parameters are untouched and serial calls give the serial results.
    assert_bit_identical(net.params, params, f"{case}: params after the storm")
    assert_bit_identical(calls["backward"](), want["backward"], f"{case}: backward after the storm")
    assert_bit_identical(net.grads, want["backward_grads"], f"{case}: grads of that backward")
    assert_bit_identical(calls["forward"](), want["forward"], f"{case}: forward after the storm")
    assert_bit_identical(calls["step"](), want["step"], f"{case}: step after the storm")
    assert_bit_identical(net.grads, want["step_grads"], f"{case}: grads of that step")


LONG_CASES = {
    # one forward takes ~0.1 s on one core: a long window in which another call must be refused
    "mlp": lambda: (_mlp_case([1024, 1024, 1024, 1024], batch=512), np.zeros((1, 1024), np.float32)),
    "lstm": lambda: (_lstm_case(T=400, B=64, I=32, H=128), np.zeros((2, 1, 32), np.float32)),
}


@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("case", sorted(LONG_CASES))
def test_call_during_a_long_forward_is_refused(case):
    """Thread A runs one long forward; the main thread probes the same net with a tiny forward
    until A is done. A probe that lands while A is inside the native call must be refused; a
    probe before A got in (or after) succeeds with the tiny forward's serial result, and then A,
    if refused, retries. So the test cannot flake: it only needs one probe inside A's call,
    and A's call lasts far longer than one probe."""
    (net, x, calls), x_probe = LONG_CASES[case]()
    want_long = calls["forward"]()
    want_probe = net.forward(x_probe)
    for attempt in range(5):
        started = threading.Event()

        def long_forward():
            started.set()
            while True:
                try:
                    return calls["forward"]()
                except RuntimeError as err:  # the probe got in first: retry
                    assert REFUSAL in str(err), err
                    time.sleep(0.001)

        refusals = probes = 0
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(long_forward)
            assert started.wait(timeout=BARRIER_TIMEOUT)
            while not future.done():
                probes += 1
                try:
                    got = net.forward(x_probe)
                except RuntimeError as err:
                    message = str(err)
                    assert REFUSAL in message, f"unexpected RuntimeError: {message}"
                    assert message.startswith(("MLP.forward:", "LSTM.forward:")), message
                    refusals += 1
                    break
                assert_bit_identical(got, want_probe, f"{case}: probe forward")
            got_long = future.result(timeout=BARRIER_TIMEOUT)
        assert_bit_identical(got_long, want_long, f"{case}: the long forward")
        if refusals:
            break
    assert refusals == 1, f"{case}: no probe was refused in 5 long forwards ({probes} probes)"
    # Intact afterwards: forward, step and backward give their serial results.
    assert_bit_identical(calls["forward"](), want_long, f"{case}: forward afterwards")

# --------------------------------------------------------------------------------------------
# The two-part split of layers: one helper thread per process
# --------------------------------------------------------------------------------------------

TIMEOUT = 120.0  # seconds; a hang fails the test instead of blocking CI


def _scipy_openblas_pools():
    return [p for p in threadpool_info()
            if p["user_api"] == "blas" and os.sep + "scipy.libs" + os.sep in p["filepath"]]


# SciPy's PyPI wheels bundle OpenBLAS in scipy.libs (CI installs them); another SciPy build
# (conda, MKL) has other thread controls, and vgkern then runs every call on the caller.
# Marks every test of this section.
needs_scipy_openblas = pytest.mark.skipif(
    not _scipy_openblas_pools(), reason="SciPy's bundled OpenBLAS (scipy.libs) is not in use")


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


def mlp_stack_step(sizes=(32, 80, 16, 80, 3), activation="relu", x_scale=1.0, nan=False,
                   stats=True, batch=50):
    """A float32 net without batch norm whose layers all split by rows: on 2 threads a row-block
    stack (nets/mlp.cpp), on 1 layer by layer (block 1's share of dw added onto block 0's inside
    its GEMM where the blocks have at most 256 rows, else stored and added). Widths that shrink
    and grow (the blocks' regions of the shared buffers), dx of the input, extreme or NaN inputs
    (the statistics' fallbacks)."""
    net = vgkern.MLP(list(sizes), activation=activation, output_activation="sigmoid", seed=3,
                     stats=stats)
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((batch, sizes[0])) * x_scale).astype(np.float32)
    if nan:
        x[7, 3] = np.nan
    target = rng.standard_normal((batch, sizes[-1])).astype(np.float32)
    rep = net.step(x, target, loss="mse", compute_input_grad=True)
    return dict(out=net.forward(x), report=rep.as_dict(), input_grad=net.input_grad.copy(),
                weights=[g.copy() for g in net.weight_grads],
                biases=[g.copy() for g in net.bias_grads])


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
    # row-block stacks (the mlp case above is one too)
    "mlp_stack_widths_relu": mlp_stack_step,
    "mlp_stack_tanh_no_stats": lambda: mlp_stack_step(activation="tanh", stats=False),
    "mlp_stack_huge_inputs": lambda: mlp_stack_step(x_scale=1e25),
    "mlp_stack_nan_input": lambda: mlp_stack_step(activation="tanh", nan=True),
    # row blocks of 300 rows: dw's K longer than one pass of the packed GEMM (core/packed_gemm.h)
    "mlp_stack_long_blocks": lambda: mlp_stack_step(sizes=(32, 64, 64, 3), batch=600),
    "lstm": lambda: recurrent_step("lstm"),
    "lstm_float64": lambda: recurrent_step("lstm", dtype="float64"),
    "rnn": lambda: recurrent_step("rnn"),
    # per-step GEMMs above the row split: the whole batch, each GEMM in two column halves
    "lstm_whole_batch": lambda: recurrent_step("lstm", hidden=256, batch=160, steps=3),
    "rnn_whole_batch": lambda: recurrent_step("rnn", hidden=3400, batch=3, steps=2),
}


@needs_scipy_openblas
def test_build_info_names_the_thread_control():
    threading_info = vgkern.build_info()["threading"]
    assert "set_num_threads" in threading_info, threading_info  # SciPy's OpenBLAS


@needs_scipy_openblas
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


@needs_scipy_openblas
def test_ops_bit_identical_with_one_and_two_threads():
    with threadpool_limits(limits=1, user_api="blas"):
        one = dense_ops()
    with threadpool_limits(limits=2, user_api="blas"):
        two = dense_ops()
    assert_bits_equal(one, two, "dense ops")


@needs_scipy_openblas
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


@needs_scipy_openblas
def test_helper_flushes_subnormals_like_the_caller(flushing):
    with threadpool_limits(limits=2, user_api="blas"):
        out = subnormal_forward()
    assert np.all(out == 0), "a block left subnormal outputs: the helper did not flush"


@needs_scipy_openblas
def test_without_flushing_both_blocks_keep_subnormals():
    with threadpool_limits(limits=2, user_api="blas"):
        out = subnormal_forward()
    tiny = np.finfo(np.float32).tiny
    assert np.all((out > 0) & (out < tiny))
    np.testing.assert_allclose(out, 16e-40, rtol=1e-3)


def _child_step(queue):
    with threadpool_limits(limits=2, user_api="blas"):
        queue.put(list(leaves(CASES["lstm"]())) + list(leaves(CASES["mlp"]())))


def run_forked(target):
    """What target(queue) puts on the queue, run in a forked child (which must exit with 0)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=TIMEOUT)
    finally:
        child.join(TIMEOUT)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    return got


@needs_scipy_openblas
def test_forked_child_runs_split_layers():
    with threadpool_limits(limits=2, user_api="blas"):
        parent = list(leaves(CASES["lstm"]())) + list(leaves(CASES["mlp"]()))  # helper exists now
    assert run_forked(_child_step) == parent


def _child_step_on_one_cpu(queue):
    """The child and the helper it starts share one CPU: while the caller runs, the helper
    hardly ever gets that CPU, so the caller takes back the part the helper has not started
    (core/parallel.cpp, Helper::wait)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with threadpool_limits(limits=2, user_api="blas"):
        queue.put([list(leaves(CASES[case]())) for case in SPLIT_ON_ONE_CPU])


SPLIT_ON_ONE_CPU = ["mlp", "mlp_batch_norm", "mlp_column_split", "lstm", "rnn",
                    "lstm_whole_batch"]


@needs_scipy_openblas
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_parts_the_helper_cannot_start_run_on_the_caller():
    """Two-thread calls in a process held to one CPU (a forked child, so that the helper it
    starts inherits the mask) give the one-thread bits, without hanging."""
    with threadpool_limits(limits=1, user_api="blas"):
        one_thread = [list(leaves(CASES[case]())) for case in SPLIT_ON_ONE_CPU]
    got = run_forked(_child_step_on_one_cpu)
    for case, want, have in zip(SPLIT_ON_ONE_CPU, one_thread, got):
        assert have == want, f"{case}: two threads on one CPU differ from one thread"


# --------------------------------------------------------------------------------------------
# Python threads: bit-identical results, one net refused to a second thread (moved from
# test_determinism.py)
# --------------------------------------------------------------------------------------------

CONFIGS = [
    dict(width=64, activation="tanh", dtype="float32", seed=1, loss="mse"),
    dict(width=37, activation="relu", dtype="float64", seed=2, loss="cross_entropy"),
    dict(width=100, activation="sigmoid", dtype="float32", seed=3, loss="cross_entropy"),
    dict(width=13, activation="elu", dtype="float64", seed=4, loss="mse"),
    dict(width=64, activation="relu", dtype="float32", seed=5, loss="cross_entropy"),
    dict(width=128, activation="tanh", dtype="float64", seed=6, loss="mse"),
    dict(width=17, activation="sigmoid", dtype="float32", seed=7, loss="mse"),
    dict(width=64, activation="elu", dtype="float32", seed=8, loss="cross_entropy"),
]


def test_threads_on_separate_nets_match_serial():
    cases = [make_case(c["width"], depth=8, batch=64, activation=c["activation"],
                       dtype=c["dtype"], seed=c["seed"], loss=c["loss"]) for c in CONFIGS]
    losses = [c["loss"] for c in CONFIGS]
    serial = [run_step(net, x, t, loss) for (net, x, t), loss in zip(cases, losses)]
    rounds = 6

    def work(i):
        net, x, t = cases[i]
        return [run_step(net, x, t, losses[i]) for _ in range(rounds)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(len(cases))))
    for i, per_case in enumerate(results):
        for r, result in enumerate(per_case):
            assert_bitwise_equal(result, serial[i], f"net {i} ({CONFIGS[i]}), round {r}")


def test_threads_release_nothing_shared_between_fresh_nets():
    """Nets created concurrently in threads equal nets created serially (init is per-net)."""
    def build(seed):
        return vgkern.MLP([21, 64, 64, 3], activation="elu", seed=seed).params.copy()

    serial = [build(s) for s in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(build, range(8)))
    for a, b in zip(serial, threaded):
        assert a.tobytes() == b.tobytes()


def test_one_net_two_threads_correct_or_refused():
    """Using ONE net from two threads at once must give the right answer or a RuntimeError."""
    width, batch = 64, 128
    net, xa, ta = make_case(width, depth=10, batch=batch, activation="tanh", seed=11)
    rng = np.random.default_rng(12)
    # the second thread uses another batch size, so shared workspaces would be resized under
    # the first thread's feet if nothing protects them
    xb = rng.standard_normal((batch // 2 + 3, width)).astype(np.float32)
    tb = rng.standard_normal((batch // 2 + 3, 10)).astype(np.float32)
    full = {"a": run_step(net, xa, ta), "b": run_step(net, xb, tb)}
    # net.weight_grads cannot be read race-free while the other thread steps: compare what each
    # call returns (output, loss, report), and the gradients once the threads are done
    expected = {key: {k: v for k, v in r.items() if not k.endswith("_grads")}
                for key, r in full.items()}
    inputs = {"a": (xa, ta), "b": (xb, tb)}
    iterations = 150
    barrier = threading.Barrier(2)
    outcomes = {"a": [], "b": []}

    def work(key):
        x, t = inputs[key]
        barrier.wait()
        for _ in range(iterations):
            try:
                out = net.forward(x)
                outcomes[key].append(("forward", out.copy()))
            except RuntimeError as err:
                outcomes[key].append(("refused", str(err)))
            try:
                rep = net.step(x, t, loss="mse")
                outcomes[key].append(("step", dict(
                    loss=rep.loss,
                    stats={n: np.array(getattr(rep, n), copy=True) for n in STAT_FIELDS})))
            except RuntimeError as err:
                outcomes[key].append(("refused", str(err)))

    threads = [threading.Thread(target=work, args=(key,)) for key in ("a", "b")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "deadlock: a thread did not finish"

    counts = {"refused": 0, "forward": 0, "step": 0}
    for key, results in outcomes.items():
        assert len(results) == 2 * iterations, f"thread {key} died: {len(results)} results"
        exp = expected[key]
        for i, (kind, value) in enumerate(results):
            counts[kind] += 1
            if kind == "forward":
                assert value.tobytes() == exp["out"].tobytes(), (
                    f"thread {key}, call {i}: WRONG forward output under concurrent use")
            elif kind == "step":
                assert np.array(value["loss"]).tobytes() == np.array(exp["loss"]).tobytes(), (
                    f"thread {key}, call {i}: WRONG loss {value['loss']} vs {exp['loss']}")
                for name in STAT_FIELDS:
                    assert value["stats"][name].tobytes() == exp["stats"][name].tobytes(), (
                        f"thread {key}, call {i}: WRONG {name} under concurrent use")
    # after the storm the net is intact and usable from one thread
    assert_bitwise_equal(run_step(net, xa, ta), full["a"], "after concurrent use (a)")
    assert_bitwise_equal(run_step(net, xb, tb), full["b"], "after concurrent use (b)")
    assert counts["forward"] + counts["step"] > 0, "every call was refused, even uncontended ones"
