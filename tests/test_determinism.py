"""Determinism: the same inputs give bit-identical statistics and gradients on repeated calls,
with 1 or 2 BLAS threads, and from several Python threads; one net shared by two threads gives
either the right answer or a RuntimeError, never a wrong result.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import vgkern

STAT_FIELDS = [
    "weight_grad_norm", "bias_grad_norm", "preact_grad_norm", "act_grad_norm",
    "log10_weight_grad_norm", "log10_bias_grad_norm", "log10_preact_grad_norm",
    "log10_act_grad_norm", "preact_mean", "preact_std", "saturated_fraction", "zero_fraction",
    "dead_fraction", "grad_log2_scale",
]


def make_case(width, depth=10, batch=128, activation="tanh", dtype="float32", seed=0,
              loss="mse", **kwargs):
    sizes = [width] * depth + [10]
    net = vgkern.MLP(sizes, activation=activation, dtype=dtype, seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 100)
    x = rng.standard_normal((batch, width)).astype(dtype)
    if loss == "mse":
        target = rng.standard_normal((batch, 10)).astype(dtype)
    else:
        target = rng.integers(0, 10, size=batch).astype(np.int64)
    return net, x, target


def result_of(net, rep, out=None):
    """Everything a step produces, copied (the net's gradient buffers are overwritten later)."""
    return dict(
        out=None if out is None else out.copy(),
        loss=rep.loss,
        stats={name: np.array(getattr(rep, name), copy=True) for name in STAT_FIELDS},
        weight_grads=[g.copy() for g in net.weight_grads],
        bias_grads=[g.copy() for g in net.bias_grads],
    )


def run_step(net, x, target, loss="mse"):
    out = net.forward(x)
    rep = net.step(x, target, loss=loss)
    return result_of(net, rep, out)


def assert_bitwise_equal(a, b, what=""):
    if a["out"] is not None and b["out"] is not None:
        assert a["out"].tobytes() == b["out"].tobytes(), f"{what}: forward output differs"
    assert np.array(a["loss"]).tobytes() == np.array(b["loss"]).tobytes(), f"{what}: loss"
    for name in STAT_FIELDS:
        assert a["stats"][name].tobytes() == b["stats"][name].tobytes(), (
            f"{what}: {name} differs:\n{a['stats'][name]!r}\n{b['stats'][name]!r}")
    for kind in ("weight_grads", "bias_grads"):
        for l, (ga, gb) in enumerate(zip(a[kind], b[kind])):
            assert ga.dtype == gb.dtype and ga.shape == gb.shape
            assert ga.tobytes() == gb.tobytes(), (
                f"{what}: {kind}[{l}] differs in {np.count_nonzero(ga != gb)} entries, "
                f"max |diff| {np.max(np.abs(ga.astype(np.float64) - gb)):.3e}")


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


# --------------------------------------------------------------------------------------------
# Python threads
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
