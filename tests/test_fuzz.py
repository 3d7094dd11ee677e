"""Property-based fuzzing (hypothesis) of every public entry point: vgkern.ops.*, the MLP
constructor and methods, the LSTM / RNN constructors and methods, and the sweep's argument
checking (plus tiny sweeps).

The property, for every generated call:

* it ends in a result or in a TypeError / ValueError / RuntimeError / MemoryError whose message
  names what is wrong -- never a crash, a hang, or another exception type (an IndexError,
  KeyError, AttributeError, SystemError or OverflowError leaking from the internals);
* a call that is valid (right types, dtypes and shapes; non-contiguous, negative-stride,
  broadcast and read-only arrays included) is not refused, and its result has the documented
  shapes and dtype, is finite for finite inputs of moderate scale, equals the result for the
  contiguous copies of its inputs, and leaves its inputs unchanged;
* sizes far beyond memory (10**12 rows, widths of 2**40, ...) are refused (or, for empty
  arrays, answered) at once: in well under a second and without touching memory.

The cases: random shapes (0, 1, mismatched, wrong ranks, huge), dtypes (float32, float64,
float16, int32, int64, bool, complex64, object), layouts (Fortran, strided, negative strides,
zero strides, read-only), NaN / Inf values, and wrong Python types (None, str, list, dict,
scalars, numpy scalars, 0-d arrays, bools and floats where integers are expected).

Deterministic (derandomize=True) and fast: a few dozen examples per test, the whole file in
well under a minute on 2 cores (VGKERN_FUZZ_EXAMPLES=5000 runs deeper). Hangs are guarded
by a watchdog: a test that runs for longer than HANG_SECONDS prints every thread's stack and
ends the process instead of stalling CI.

The regression tests at the end pin the defects this fuzzing found, one by one.
"""
import contextlib
import faulthandler
import math
import os
import re
import resource
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import InvalidArgument  # noqa: E402

import vgkern  # noqa: E402
from vgkern import ops  # noqa: E402

EXAMPLES = int(os.environ.get("VGKERN_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                print_blob=True,
                # the only function-scoped fixture is the per-test hang watchdog below, which is
                # meant to span all the examples of a test
                suppress_health_check=[HealthCheck.function_scoped_fixture])

ALLOWED = (TypeError, ValueError, RuntimeError, MemoryError)
CALL_SECONDS = 5.0        # any single call (tiny shapes: normally milliseconds)
REFUSE_SECONDS = 1.0      # a call with a huge size: refused or answered at once
MAX_RSS_GROWTH = 256 << 20  # bytes a huge-size call may add to the peak resident set
# per test: after that the run ends with every thread's stack (see _no_hang)
HANG_SECONDS = float(os.environ.get("VGKERN_FUZZ_HANG_SECONDS", max(120, EXAMPLES)))

FLOATS = (np.float32, np.float64)
BAD_DTYPES = (np.float16, np.int32, np.int64, np.bool_, np.complex64, object)
HUGE = (10**12, 2**40 + 3)          # one dim: any array/output with it cannot fit in memory
OVER_INT = (2**31, 2**40, 10**12, 2**63, 2**70)
WRONG_TYPES = (None, "x", "float32", [], [1.0, 2.0], {}, {"a": 1}, 1, 2.5, True,
               np.float32(1.0), np.int64(3), np.array(1.0), np.array(1.0, np.float32),
               object(), 1j, b"ab")
LAYOUTS = ("c", "c", "c", "fortran", "strided", "negative", "broadcast", "readonly")


@pytest.fixture(autouse=True)
def _no_hang(request):
    """A test that runs for more than HANG_SECONDS ends the whole run, printing every thread's
    stack on the terminal (past pytest's output capture): a hang in a native loop must fail CI,
    not stall it. vgkern releases the GIL in its native calls, so this watchdog thread runs while
    the test is stuck there; faulthandler's own timer ends the run should the GIL be held."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    done = threading.Event()

    def watchdog():
        if done.wait(HANG_SECONDS):
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            sys.stderr.write(f"\n{request.node.nodeid}: no result after {HANG_SECONDS:.0f} s, "
                             "ending the run; the stacks:\n")
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            sys.stderr.flush()
        os._exit(70)

    threading.Thread(target=watchdog, daemon=True).start()
    faulthandler.dump_traceback_later(HANG_SECONDS + 30, exit=True)
    yield
    done.set()
    faulthandler.cancel_dump_traceback_later()


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------

def nelem(shape):
    return math.prod(int(d) for d in shape)


def with_layout(a, layout):
    """`a`'s values in another memory layout (broadcast: every row equal to the first)."""
    if layout == "c" or a.ndim == 0 or a.size == 0:
        return a
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if layout == "negative":
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "broadcast":
        return np.broadcast_to(a[:1], a.shape)
    raise AssertionError(layout)


def make(rng, shape, dtype=np.float32, layout="c", scale=1.0, positive=False):
    shape = tuple(int(d) for d in shape)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        a = scale * rng.standard_normal(shape)
        a = (np.abs(a) + 0.5 if positive else a).astype(dtype)
    elif dtype.kind == "c":
        a = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    elif dtype.kind == "b":
        a = rng.random(shape) < 0.5
    elif dtype.kind in "iu":
        a = rng.integers(0, 3, shape).astype(dtype)
    else:
        a = rng.standard_normal(shape).astype(object)
    return with_layout(a, layout)


def poison(rng, a):
    """A copy of float array `a` with a NaN, +inf or -inf somewhere (same layout kind)."""
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.size == 0:
        return a
    b = np.array(a)
    b.flat[int(rng.integers(b.size))] = rng.choice([np.nan, np.inf, -np.inf])
    return b


def snapshot(values):
    """Copies of the array arguments (None for others, and for zero-stride views too large to
    copy: their few real values cannot change unnoticed anyway)."""
    return [np.array(v, copy=True) if isinstance(v, np.ndarray) and v.size <= 10**6 else None
            for v in values]


def same(a, b):
    if b is None:
        return True  # not snapshotted
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return np.array_equal(a, b, equal_nan=True)
    if a.dtype.kind == "O":
        return True  # object arrays: compared by identity elsewhere, never written
    return np.array_equal(a, b)


def contiguous(v):
    return np.array(v, copy=True, order="C") if isinstance(v, np.ndarray) else v


def is_plain_float(v):
    return isinstance(v, np.ndarray) and v.dtype in (np.float32, np.float64)


# --------------------------------------------------------------------------------------------
# One call: result or a clear refusal, fast
# --------------------------------------------------------------------------------------------

def peak_rss():
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb if sys.platform == "darwin" else kb * 1024


def say(text):
    """hypothesis.note inside a hypothesis test (shown for a failing example), else nothing."""
    try:
        note(text)
    except InvalidArgument:
        pass


def call(what, fn, *args, names=(), valid=False, limit=CALL_SECONDS, **kwargs):
    """fn(*args, **kwargs) -> (result, None) or (None, the allowed exception).

    `names`: words of which the message of a TypeError/ValueError/RuntimeError must contain
    one (the arguments of the call); `valid`: the call must not be refused."""
    start = time.perf_counter()
    try:
        result, error = fn(*args, **kwargs), None
    except ALLOWED as err:
        result, error = None, err
    except Exception as err:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{what}: {type(err).__name__} leaked from the internals: {err}")
    elapsed = time.perf_counter() - start
    assert elapsed < limit, f"{what} took {elapsed:.2f} s (limit {limit} s)"
    if error is not None:
        message = str(error)
        say(f"{what} -> {type(error).__name__}: {message}")
        if valid:
            pytest.fail(f"{what}: a valid call was refused: {type(error).__name__}: {message}")
        assert message.strip(), f"{what}: {type(error).__name__} without a message"
        assert "incompatible" not in message, (  # pybind11's: says nothing of which argument
            f"{what}: a generic binding error instead of a check: {message}")
        if names and not isinstance(error, MemoryError):
            pattern = "|".join(rf"(?<![A-Za-z0-9]){re.escape(n)}(?![A-Za-z0-9])" for n in names)
            assert re.search(pattern, message), (
                f"{what}: the message does not name the argument (one of {list(names)}): "
                f"{type(error).__name__}: {message}")
    return result, error


def huge_call(what, fn, *args, **kwargs):
    """A call with a size far beyond memory: answered or refused within REFUSE_SECONDS and
    without growing the peak resident set (so nothing was allocated and touched)."""
    before = peak_rss()
    out = call(what, fn, *args, limit=REFUSE_SECONDS, **kwargs)
    grown = peak_rss() - before
    assert grown < MAX_RSS_GROWTH, f"{what}: the peak resident set grew by {grown >> 20} MiB"
    return out


def check_outputs(what, outputs, shapes, dtype, finite):
    """Each output an ndarray of the given shape and dtype (None where a shape is None; a
    float where it is "scalar"), finite when `finite`."""
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert len(outputs) == len(shapes), f"{what}: {len(outputs)} outputs, expected {len(shapes)}"
    for i, (out, shape) in enumerate(zip(outputs, shapes)):
        if shape is None:
            assert out is None, f"{what}: output {i} should be None, got {type(out).__name__}"
        elif shape == "scalar":
            assert isinstance(out, float), f"{what}: output {i} is a {type(out).__name__}"
            assert not finite or math.isfinite(out), f"{what}: output {i} = {out}"
        else:
            assert isinstance(out, np.ndarray), f"{what}: output {i} is a {type(out).__name__}"
            assert out.shape == tuple(shape), (
                f"{what}: output {i} has shape {out.shape}, expected {shape}")
            assert out.dtype == dtype, f"{what}: output {i} has dtype {out.dtype}, expected {dtype}"
            if finite:
                assert np.isfinite(out).all(), f"{what}: output {i} is not finite for finite input"


def assert_same_results(what, a, b):
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    for i, (x, y) in enumerate(zip(a, b)):
        if x is None or y is None:
            assert x is None and y is None, f"{what}: output {i}"
        elif isinstance(x, float):
            assert x == y or (math.isnan(x) and math.isnan(y)), f"{what}: output {i}: {x} != {y}"
        else:
            assert same(x, y), f"{what}: output {i} differs from the result for contiguous copies"


# --------------------------------------------------------------------------------------------
# vgkern.ops: one table of every op's arguments and outputs
# --------------------------------------------------------------------------------------------

# (name, shape in named dims, kind): kind "f" float array, "f?" float array or None,
# "f+" positive float array, "labels" integer labels in [0, C), "rw" a writable running stat.
OPS = {
    "activation_forward": dict(arrays=[("z", "RC", "f")], outs=["RC", "RC"]),
    "activation_backward": dict(arrays=[("dh", "RC", "f"), ("z", "RC", "f")], outs=["RC"]),
    "dense_forward": dict(arrays=[("x", "RI", "f"), ("w", "OI", "f"), ("b", "O", "f?")],
                          outs=["RO", "RO"]),
    "dense_backward": dict(arrays=[("dh", "RO", "f"), ("dact", "RO", "f"), ("x", "RI", "f"),
                                   ("w", "OI", "f")], outs=["RI", "OI", "O"]),
    "mse_loss": dict(arrays=[("out", "RC", "f"), ("target", "RC", "f")],
                     outs=["scalar", "RC"]),
    "cross_entropy_loss": dict(arrays=[("logits", "RC", "f"), ("labels", "R", "labels")],
                               outs=["scalar", "RC"]),
    "batchnorm_forward": dict(arrays=[("x", "RC", "f"), ("gamma", "C", "f?"), ("beta", "C", "f?"),
                                      ("running_mean", "C", "rw"), ("running_var", "C", "rw+")],
                              outs=["RC", "C", "C"]),
    "batchnorm_backward": dict(arrays=[("dy", "RC", "f"), ("x", "RC", "f"), ("mean", "C", "f"),
                                       ("rstd", "C", "f+"), ("gamma", "C", "f?")],
                               outs=["RC", "C", "C"]),
    "lstm_cell_forward": dict(arrays=[("x", "RI", "f"), ("h_prev", "RH", "f"),
                                      ("c_prev", "RH", "f"), ("weight_ih", "GI", "f"),
                                      ("weight_hh", "GH", "f"), ("bias", "G", "f")],
                              outs=["RH", "RH", "RG"]),
    "lstm_cell_backward": dict(arrays=[("dh", "RH", "f"), ("dc", "RH", "f"), ("gates", "RG", "f"),
                                       ("c", "RH", "f"), ("c_prev", "RH", "f"), ("x", "RI", "f"),
                                       ("h_prev", "RH", "f"), ("weight_ih", "GI", "f"),
                                       ("weight_hh", "GH", "f")],
                               outs=["RI", "RH", "RH", "GI", "GH", "G"]),
    "rnn_cell_forward": dict(arrays=[("x", "RI", "f"), ("h_prev", "RH", "f"),
                                     ("weight_ih", "HI", "f"), ("weight_hh", "HH", "f"),
                                     ("bias", "H", "f")], outs=["RH"]),
    "rnn_cell_backward": dict(arrays=[("dh", "RH", "f"), ("h", "RH", "f"), ("x", "RI", "f"),
                                      ("h_prev", "RH", "f"), ("weight_ih", "HI", "f"),
                                      ("weight_hh", "HH", "f")],
                              outs=["RI", "RH", "HI", "HH", "H"]),
    "sum_squares_norm": dict(arrays=[("a", "RC", "f")], outs=["scalar"]),
}
OP_NAMES = sorted(OPS)
# Outputs that are sums over the rows (zero, not garbage, for an empty batch).
ROW_SUMS = {"dense_backward": (1, 2), "lstm_cell_backward": (3, 4, 5),
            "rnn_cell_backward": (2, 3, 4)}


def dims_of(op, R, C, I, O, H):
    return dict(R=R, C=C, I=I, O=O, H=H, G=(4 * H if op.startswith("lstm") else H))


def shape_of(template, dims):
    return tuple(dims[c] for c in template)


def op_options(op, draw):
    """The non-array arguments: valid values, or (rarely) a bad one -> (kwargs, bad name)."""
    bad = None
    kw = {}
    pick = lambda good, wrong: draw(st.sampled_from(good + wrong)) if draw(
        st.integers(0, 5)) == 0 else draw(st.sampled_from(good))
    if op in ("activation_forward", "activation_backward", "dense_forward"):
        kw["activation"] = pick(["identity", "sigmoid", "tanh", "relu", "elu"],
                                ["gelu", None, 1, b"tanh", ["tanh"], "TANH"])
        kw["alpha"] = pick([1.0, 0.5, 2, np.float32(1.5)],
                           [None, "1", float("nan"), float("inf"), 10**400, np.array(1.0), 1j])
    if op == "dense_backward":
        kw["need_dx"] = pick([True, False, np.bool_(True), 1, 0],
                             ["no", "False", None, 2, 0.5, [], np.array([True])])
    if op in ("batchnorm_forward", "batchnorm_backward"):
        kw["training"] = pick([True, False, np.bool_(False)], ["False", None, 2, 1.0])
    if op == "batchnorm_forward":
        kw["momentum"] = pick([0.1, 0.0, 1, np.float64(0.5)],
                              [-0.1, 1.5, float("nan"), "0.1", None, 10**400, 1j])
        kw["eps"] = pick([1e-5, 1, np.float32(1e-3)],
                         [0.0, -1e-5, float("inf"), float("nan"), "1e-5", None])
    if op.startswith("rnn"):
        kw["nonlinearity"] = pick(["tanh", "relu"], ["sigmoid", None, 0, "Tanh", ["relu"]])
    for name, v in kw.items():
        if not _good_option(name, v):
            bad = name
    return kw, bad


def _real(v):
    """v as a float if it is a real number (not bool), else None."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    try:
        return float(v)
    except OverflowError:
        return math.inf


def _good_option(name, v):
    x = _real(v)
    if name == "activation":
        return isinstance(v, str) and v in ("identity", "sigmoid", "tanh", "relu", "elu")
    if name == "nonlinearity":
        return isinstance(v, str) and v in ("tanh", "relu")
    if name in ("need_dx", "training"):
        return isinstance(v, (bool, np.bool_)) or (type(v) is int and v in (0, 1))
    if name == "alpha":
        return x is not None and math.isfinite(x)
    if name == "momentum":
        return x is not None and 0 <= x <= 1
    if name == "eps":
        return x is not None and 0 < x < math.inf
    return True


def argument(rng, shape, dtype, layout="c", positive=False):
    """An array argument; with a huge dim, a zero-stride view (whose copy cannot fit)."""
    if nelem(shape) > 10**5:
        assume(nelem(shape) < 2**62)  # numpy's limit for any array, views included
        return np.broadcast_to(np.ones((), dtype), shape)
    return make(rng, shape, dtype, layout, positive=positive)


@st.composite
def op_cases(draw, huge=False):
    """(op, args, kwargs, info): one call of a vgkern.ops function."""
    op = draw(st.sampled_from(OP_NAMES))
    spec = OPS[op]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    small = st.sampled_from([0, 1, 2, 3, 5]) if not huge else st.sampled_from([0, 0, 1, 3])
    R, C, I, O, H = (draw(small) for _ in range(5))
    if huge:  # one or two dims far beyond memory
        for name in draw(st.lists(st.sampled_from("RCIOH"), min_size=1, max_size=2, unique=True)):
            value = draw(st.sampled_from(HUGE))
            R, C, I, O, H = [value if n == name else v for n, v in zip("RCIOH", (R, C, I, O, H))]
    dims = dims_of(op, R, C, I, O, H)
    dtype = draw(st.sampled_from(FLOATS))
    kw, bad = op_options(op, draw)
    training = kw.get("training", True)
    training = bool(training) if _good_option("training", training) else True

    args, names, shapes = [], [], []
    for name, template, kind in spec["arrays"]:
        shape = shape_of(template, dims)
        names.append(name)
        shapes.append(shape)
        if kind == "f?" and draw(st.integers(0, 3)) == 0:
            args.append(None)
            continue
        if kind.startswith("rw") and training and draw(st.integers(0, 3)) == 0:
            args.append(None)
            continue
        layout = draw(st.sampled_from(LAYOUTS)) if kind[:2] != "rw" else "c"
        if kind == "labels" and nelem(shape) <= 10**5:
            args.append(rng.integers(0, max(dims["C"], 1), shape).astype(
                draw(st.sampled_from([np.int64, np.int32, np.uint8]))))
            continue
        args.append(argument(rng, shape, np.int64 if kind == "labels" else dtype, layout,
                             kind.endswith("+")))
    # gamma and beta come together (affine) or not at all; so do the running statistics
    index = {n: i for i, n in enumerate(names)}
    for a, b in (("gamma", "beta"), ("running_mean", "running_var")):
        if a in index and b in index and (args[index[a]] is None) != (args[index[b]] is None):
            args[index[b]] = None if args[index[a]] is None else argument(
                rng, shapes[index[b]], dtype, "c", True)
    if op == "batchnorm_forward" and not training and args[index["running_mean"]] is None:
        args[index["running_mean"]] = argument(rng, shapes[index["running_mean"]], dtype)
        args[index["running_var"]] = argument(rng, shapes[index["running_var"]], dtype, "c", True)

    # at most one bad argument (a valid call otherwise), so that a refusal can be attributed
    mutation = None if huge else draw(st.sampled_from(
        [None] * 6 + ["dtype", "mixed_dtype", "rank", "dim", "type", "nan", "labels"]))
    target = draw(st.integers(0, len(args) - 1))
    a = args[target]
    if mutation == "labels" and op == "cross_entropy_loss":
        target, a = 1, args[1]
    if mutation == "dtype" and isinstance(a, np.ndarray):
        args[target] = make(rng, a.shape, draw(st.sampled_from(BAD_DTYPES)),
                            draw(st.sampled_from(LAYOUTS)))
    elif mutation == "mixed_dtype" and is_plain_float(a):
        args[target] = a.astype(np.float64 if a.dtype == np.float32 else np.float32)
    elif mutation == "rank" and isinstance(a, np.ndarray):
        new = draw(st.sampled_from([a.shape + (1,), a.shape[1:], (), (1,) + a.shape,
                                    a.shape + (2, 1, 1)]))
        args[target] = make(rng, new, a.dtype)
    elif mutation == "dim" and isinstance(a, np.ndarray) and a.ndim:
        axis = draw(st.integers(0, a.ndim - 1))
        new = list(a.shape)
        new[axis] = draw(st.sampled_from([0, 1, a.shape[axis] + 1, a.shape[axis] + 4]))
        if tuple(new) != a.shape:
            args[target] = make(rng, new, a.dtype)
    elif mutation == "type":
        args[target] = draw(st.sampled_from(WRONG_TYPES))
    elif mutation == "nan" and is_plain_float(a):
        args[target] = poison(rng, a)
    elif mutation == "labels" and op == "cross_entropy_loss" and a.size:
        lab = np.array(a)
        lab[int(rng.integers(lab.size))] = draw(st.sampled_from([-1, dims["C"], 10**6]))
        args[1] = lab
    changed = args[target] is not a
    return op, args, kw, dict(dims=dims, dtype=np.dtype(dtype), names=names, bad=bad,
                              mutated=names[target] if changed else None,
                              mutation=mutation if changed else None, training=training)


def expected_valid(op, args, info):
    """Whether the call must succeed: every argument well-formed (the case generator changed
    nothing, or only made an input non-finite) and the dims acceptable for the op."""
    if info["bad"] is not None or (info["mutated"] and info["mutation"] != "nan"):
        return False
    d = info["dims"]
    if op in ("mse_loss", "cross_entropy_loss") and d["R"] == 0:
        return False  # no rows: no mean
    if op == "cross_entropy_loss" and d["C"] == 0:
        return False
    if op == "mse_loss" and info["mutation"] == "nan" and info["mutated"] == "target":
        return False  # documented: a non-finite target is refused
    if op.startswith("batchnorm") and info["training"] and d["R"] < 2:
        return False
    return True


def expected_refusal(op, args, info):
    """Whether the call must be refused: a bad option, or an argument that is bad for sure
    (a wrong Python type, a dtype that is never cast, two float dtypes, a label out of range)."""
    if info["bad"] is not None:
        return True
    name = info["mutated"]
    if name is None:
        return False
    i = info["names"].index(name)
    kind, value = OPS[op]["arrays"][i][2], args[i]
    mutation = info["mutation"]
    if mutation == "type":
        optional = value is None and kind in ("f?", "rw", "rw+")
        return not optional and not (op == "sum_squares_norm" and isinstance(value, np.ndarray))
    if mutation == "dtype":
        return kind != "labels" or value.dtype.kind not in "iu"
    if mutation == "mixed_dtype":
        return sum(is_plain_float(a) for a in args) > 1
    return mutation == "labels"


@FUZZ
@given(case=op_cases())
def test_fuzz_ops(case):
    op, args, kw, info = case
    fn = getattr(ops, op)
    names = info["names"] + list(kw) + ["batch"]  # "batch": a training batch of one row
    valid = expected_valid(op, args, info)
    note(f"{op} dims={info['dims']} mutation={info['mutation']} on {info['mutated']} "
         f"bad option={info['bad']} valid={valid}")
    # running statistics are updated in place in training mode (documented): not inputs
    inputs = [a for n, a in zip(info["names"], args)
              if not (n.startswith("running") and info["training"])]
    before = snapshot(inputs)
    result, error = call(op, fn, *args, names=names, valid=valid, **kw)
    assert error is not None or not expected_refusal(op, args, info), (
        f"{op} accepted a bad argument: {info['mutation']} on {info['mutated']}, "
        f"bad option {info['bad']} = {kw.get(info['bad'])!r}")
    for a, b in zip(inputs, before):
        if isinstance(a, np.ndarray):
            assert same(a, b), f"{op} modified an input"
    if error is not None or not valid:
        return
    d, dtype = info["dims"], info["dtype"]
    shapes = [o if o == "scalar" else shape_of(o, d) for o in OPS[op]["outs"]]
    if op == "dense_backward" and not kw.get("need_dx", True):
        shapes[0] = None
    if op == "batchnorm_backward" and args[4] is None:
        shapes[1] = shapes[2] = None
    finite = info["mutation"] != "nan"
    check_outputs(op, result, shapes, dtype, finite)
    if op in ROW_SUMS and d["R"] == 0:
        for i in ROW_SUMS[op]:
            assert not np.any(result[i]), f"{op}: output {i} of an empty batch is not zero"
    # the same call on contiguous copies gives the same result
    copies = [contiguous(a) for a in args]
    if any(isinstance(a, np.ndarray) and not a.flags.c_contiguous for a in args) or any(
            isinstance(a, np.ndarray) and not a.flags.writeable for a in args):
        if op == "batchnorm_forward" and info["training"]:
            return  # the running statistics were updated by the first call
        again, _ = call(op, fn, *copies, valid=True, **kw)
        assert_same_results(op, result, again)


@FUZZ
@given(case=op_cases(huge=True))
def test_fuzz_ops_huge_sizes(case):
    """A dim of 10**12 or 2**40: every array that has it is empty, or a zero-stride view whose
    copy cannot fit, and so is every output with it: answered or refused at once."""
    op, args, kw, info = case
    note(f"{op} dims={info['dims']}")
    huge_call(op, getattr(ops, op), *args, names=info["names"] + list(kw) + ["batch"], **kw)


# --------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------

# "cuda" where a GPU is visible or the build emulates CUDA (the sanitizer build does)
DEVICES = ["cpu"] + (["cuda"] if vgkern.cuda_available() else [])

MLP_GOOD = dict(
    activation=["identity", "sigmoid", "tanh", "relu", "elu"],
    output_activation=["identity", "sigmoid", "tanh", "relu", "elu"],
    init=list(vgkern.INITS),
    dtype=["float32", "float64", np.float32, np.dtype("float64")],
    seed=[0, 1, 2**40, np.int64(3), None],
    sigma_w=[1.0, 0.5, 2, np.float32(1.3)],
    sigma_b=[0.0, 0.1, np.float64(0.2)],
    bias_init=[None, 0.0, -0.25, 1],
    gain=[1.0, 0.5, 3],
    alpha=[1.0, 0.5, 1.7],
    device=DEVICES,
    stats=[True, False, np.bool_(True)],
    batch_norm=[False, True, np.bool_(False)],
    bn_momentum=[0.1, 0.0, 1.0],
    bn_eps=[1e-5, 1e-3, 1],
    bn_affine=[True, False],
)
MLP_BAD = dict(
    activation=["softmax", None, 3, ["tanh"], "TANH"],
    output_activation=["softmax", None, 0],
    init=["xavier", None, 1],
    dtype=["float16", "int32", None, object, [1], {}, "f2", "complex64", 3],
    seed=[-1, 1.5, "a", {}, [-3]],
    sigma_w=[float("nan"), float("inf"), "1", -1.0, 10**400, np.array(1.0), True],
    sigma_b=[float("nan"), "0", -0.5],
    bias_init=[float("nan"), "0.1", True, 1e300, 10**400],
    gain=[float("inf"), [1.0], "1", 1e300],
    alpha=[float("nan"), None, 10**400, "1"],
    device=["tpu", None, 1, "CPU"],
    stats=["no", None, 2, 0.5],
    batch_norm=["yes", None, 2],
    bn_momentum=[-0.5, 1.5, float("nan"), "0.1", None, 10**400],
    bn_eps=[0, -1e-5, float("inf"), float("nan"), "1e-5", None],
    bn_affine=["no", None, 2],
)


@st.composite
def mlp_sizes(draw):
    """-> (sizes, kind): kind "ok", "bad" (must be refused) or "huge" (refused at once)."""
    widths = draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
    kind = draw(st.sampled_from(["ok"] * 6 + ["bad", "huge", "numpy"]))
    if kind == "ok":
        return widths, "ok"
    if kind == "numpy":
        return np.array(widths, dtype=draw(st.sampled_from([np.int64, np.int32, np.uint16]))), "ok"
    if kind == "huge":
        i = draw(st.integers(0, len(widths) - 1))
        if draw(st.booleans()):
            widths[i] = draw(st.sampled_from(OVER_INT))  # beyond a 32-bit BLAS
        else:  # two adjacent widths whose weight matrix has 10**12 entries or more
            i = min(i, len(widths) - 2)
            widths[i] = widths[i + 1] = draw(st.sampled_from([10**6, 2**20 + 1, 10**7]))
        return widths, "huge"
    shape = draw(st.sampled_from(["short", "empty", "zero", "negative", "bool", "float", "str",
                                  "none", "dict", "set", "0d", "2d", "scalar", "string",
                                  "npbool"]))
    i = draw(st.integers(0, len(widths) - 1))
    if shape == "short":
        return widths[:1], "bad"
    if shape == "empty":
        return [], "bad"
    if shape == "zero":
        widths[i] = 0
    elif shape == "negative":
        widths[i] = -draw(st.integers(1, 2**70))
    elif shape == "bool":
        widths[i] = True
    elif shape == "npbool":
        widths[i] = np.bool_(True)
    elif shape == "float":
        widths[i] = draw(st.sampled_from([2.0, 2.5, float("nan"), float("inf")]))
    elif shape == "str":
        widths[i] = "3"
    elif shape == "none":
        widths[i] = None
    elif shape == "dict":
        return dict.fromkeys(widths), "bad"
    elif shape == "set":
        return set(widths), "bad"
    elif shape == "0d":
        return np.array(widths[0]), "bad"
    elif shape == "2d":
        return np.array([widths, widths]), "bad"
    elif shape == "scalar":
        return widths[0], "bad"
    elif shape == "string":
        return "3,4", "bad"
    return widths, "bad"


GAIN_INITS = ("xavier_normal", "xavier_uniform", "orthogonal")  # the inits that read gain


@st.composite
def mlp_kwargs(draw):
    """-> (kwargs, bad key or None): every option valid, or exactly one bad."""
    keys = draw(st.lists(st.sampled_from(sorted(MLP_GOOD)), unique=True, max_size=6))
    kw = {k: draw(st.sampled_from(MLP_GOOD[k])) for k in keys}
    bad = None
    if draw(st.integers(0, 2)) == 0:
        bad = draw(st.sampled_from(sorted(MLP_BAD)))
        kw[bad] = draw(st.sampled_from(MLP_BAD[bad]))
    if ("sigma_w" in kw or "sigma_b" in kw) and bad != "init":
        kw["init"] = "scaled_normal"  # the only init that uses them (refused with the others)
        if bad != "gain":
            kw.pop("gain", None)  # refused with scaled_normal
    elif "gain" in kw and bad != "init" and kw.get("init") not in GAIN_INITS:
        kw["init"] = "xavier_normal"  # gain is refused with the inits that do not read it
    if kw.get(bad) == 1e300:  # overflows float32 (for gain: with the inits that use it)
        kw["dtype"] = "float32"
        if bad == "gain":
            kw["init"] = "xavier_normal"
            for key in ("sigma_w", "sigma_b"):  # refused with xavier_normal
                kw.pop(key, None)
    if bad in ("bn_momentum", "bn_eps") and isinstance(kw[bad], (int, float)):
        kw["batch_norm"] = True  # out of range matters with batch norm only
    if kw.get("init") == "scaled_normal" and kw.get("bias_init") is not None and bad != "bias_init":
        del kw["bias_init"]  # documented: bias_init does not apply to scaled_normal
    return kw, bad


@FUZZ
@given(sizes=mlp_sizes(), options=mlp_kwargs())
def test_fuzz_mlp_constructor(sizes, options):
    sizes, kind = sizes
    kw, bad = options
    names = ["sizes"] + ([bad] if bad else [])
    if bad == "device" and kw["device"] == "CPU":
        names.append("device")
    valid = kind == "ok" and bad is None
    if kind == "huge":
        net, error = huge_call("MLP", vgkern.MLP, sizes, names=names, **kw)
        assert error is not None, f"MLP({sizes}) was not refused"
        return
    net, error = call("MLP", vgkern.MLP, sizes, names=names if kind != "ok" else [bad],
                      valid=valid, **kw)
    if error is not None:
        return
    assert kind == "ok" and bad is None, f"MLP accepted sizes={sizes!r} and {kw}"
    widths = [int(s) for s in sizes]
    dtype = np.dtype(kw.get("dtype", "float32"))
    assert net.dtype == dtype and net.sizes == widths and net.num_layers == len(widths) - 1
    assert [w.shape for w in net.weights] == [(o, i) for i, o in zip(widths[:-1], widths[1:])]
    assert net.params.dtype == dtype and np.isfinite(net.params).all()
    repr(net)


@st.composite
def mlp_nets(draw):
    widths = draw(st.lists(st.integers(1, 5), min_size=2, max_size=4))
    bn = draw(st.booleans())
    net = vgkern.MLP(widths, activation=draw(st.sampled_from(MLP_GOOD["activation"])),
                     output_activation=draw(st.sampled_from(MLP_GOOD["output_activation"])),
                     dtype=draw(st.sampled_from(["float32", "float64"])), batch_norm=bn,
                     seed=draw(st.integers(0, 3)), device=draw(st.sampled_from(DEVICES)))
    net.stats = draw(st.booleans())
    if bn and draw(st.booleans()):
        net.eval()
    return net


@st.composite
def arrays_for(draw, rng, shape, dtype, names, kind="f"):
    """An array argument of `shape` (None for a free dim, filled in here): valid (any layout,
    read-only too), or bad in one way -> (value, how it is bad or None)."""
    how = draw(st.sampled_from([None] * 5 + ["dtype", "rank", "dim", "type", "nan", "huge"]))
    shape = tuple(draw(st.integers(1, 4)) if s is None else s for s in shape)
    layout = draw(st.sampled_from(LAYOUTS))
    if kind == "labels":
        a = with_layout(rng.integers(0, names["classes"], shape).astype(
            draw(st.sampled_from([np.int64, np.int32, np.uint8]))), layout)
    else:
        a = make(rng, shape, dtype, layout)
    if how is None:
        return a, None
    if how == "dtype":
        other = np.float64 if dtype == np.float32 else np.float32
        bad = draw(st.sampled_from(BAD_DTYPES + (other,)))
        if kind == "labels" and np.dtype(bad).kind in "iu":
            return a, None
        return make(rng, shape, bad, layout), how
    if how == "rank":
        return make(rng, draw(st.sampled_from([shape + (1,), shape[1:], (), (1,) + shape])),
                    dtype), how
    if how == "dim":
        axis = draw(st.integers(0, len(shape) - 1))
        new = list(shape)
        new[axis] = draw(st.sampled_from([0, shape[axis] + 1, shape[axis] + 3]))
        return make(rng, new, dtype), how
    if how == "type":
        return draw(st.sampled_from(WRONG_TYPES)), how
    if how == "nan" and kind != "labels":
        return poison(rng, a), how
    if how == "huge":  # a zero-stride view of 10**12 rows, or an empty one of 10**12 x 0
        big = (draw(st.sampled_from(HUGE)),) + shape[1:]
        if draw(st.booleans()):
            return np.broadcast_to(np.ones((), a.dtype), big), how
        return np.zeros((big[0], 0) + big[2:], a.dtype), how
    return a, None


def checked_call(what, fn, args, names, bads, limit_huge, unchanged=()):
    """fn(*args) through huge_call or call; then no array in `unchanged` may have changed."""
    before = snapshot(unchanged)
    if limit_huge:
        outcome = huge_call(what, fn, *args, names=names)
    else:
        outcome = call(what, fn, *args, names=names, valid=not bads)
    for a, b in zip(unchanged, before):
        if isinstance(a, np.ndarray) and a.dtype != object:
            assert same(a, b), f"{what} modified its input"
    return outcome


def finite_report(what, rep, stats):
    for field in ("weight_grad_norm", "preact_grad_norm", "act_grad_norm"):
        v = getattr(rep, field)
        if stats:
            assert np.isfinite(v).all(), f"{what}: report.{field} = {v}"
        else:
            assert np.isnan(v).all(), f"{what}: report.{field} = {v} with stats off"


def finite_values(*values):
    return all(np.isfinite(v).all() for v in values if is_plain_float(v))


class Tracker:
    """What the test knows about a net between calls: the rows of the last forward that
    succeeded (None: unknown, e.g. after a refused call) and whether non-finite values got in
    (accepted NaN input updates the running statistics, for instance)."""

    def __init__(self):
        self.last = None
        self.tainted = False


@FUZZ
@given(net=mlp_nets(), data=st.data())
def test_fuzz_mlp_methods(net, data):
    """A sequence of MLP calls (forward, backward, step with both losses, train/eval,
    parameter setters), each argument valid or bad in one way."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    d0, dL, dtype = net.sizes[0], net.sizes[-1], net.dtype
    known = Tracker()
    for _ in range(data.draw(st.integers(1, 5))):
        method = data.draw(st.sampled_from(["forward", "backward", "step", "step_ce", "train",
                                            "weights", "biases", "params", "stats"]))
        bn_train = net.batch_norm and net.num_layers > 1 and net.training
        if method in ("forward", "step", "step_ce"):
            B = data.draw(st.integers(1, 4))
            x, x_bad = data.draw(arrays_for(rng, (B, d0), dtype, {}))
            shaped = isinstance(x, np.ndarray) and x.ndim == 2 and x_bad != "huge"
            rows = x.shape[0] if shaped else B
            args, names, bads = [x], ["x"], [x_bad] if x_bad not in (None, "nan") else []
            if method != "forward":
                ce = method == "step_ce"
                target, t_bad = data.draw(arrays_for(
                    rng, (rows,) if ce else (rows, dL), dtype, {"classes": dL},
                    "labels" if ce else "f"))
                log_scale = data.draw(st.sampled_from([False, True, np.bool_(True), "no", None]))
                input_grad = data.draw(st.sampled_from([False, False, True, "yes"]))
                if t_bad is not None:
                    bads.append(t_bad)  # a non-finite mse target is refused (documented)
                for flag_name, flag in (("log_scale", log_scale),
                                        ("compute_input_grad", input_grad)):
                    if not isinstance(flag, (bool, np.bool_)):
                        bads.append(flag_name)
                args.append(target)
                names += ["target", "labels", "log_scale", "compute_input_grad"]
                loss = "cross_entropy" if ce else "mse"
                fn = lambda a, b, ls=log_scale, ig=input_grad, lo=loss: net.step(
                    a, b, loss=lo, log_scale=ls, compute_input_grad=ig)
            else:
                t_bad, fn = None, net.forward
            if bn_train and rows < 2:
                bads.append("a training batch of one")
            result, error = checked_call(f"MLP.{method}", fn, args, names, bads,
                                         "huge" in (x_bad, t_bad), unchanged=args)
            if error is not None or bads:
                known.last = None
                continue
            known.last = rows
            finite = not known.tainted and finite_values(*args)
            known.tainted |= not finite_values(*args)
            if method == "forward":
                check_outputs("MLP.forward", result, [(rows, dL)], dtype, finite)
                again, _ = call("MLP.forward", net.forward, contiguous(x), valid=True)
                assert_same_results("MLP.forward", result, again)
                continue
            assert len(result.weight_grad_norm) == net.num_layers
            check_outputs(f"MLP.{method}", net.last_output, [(rows, dL)], dtype, finite)
            if input_grad:
                check_outputs(f"MLP.{method}", net.input_grad, [(rows, d0)], dtype, finite)
            else:
                assert net.input_grad is None
            if finite:
                assert math.isfinite(result.loss)
                finite_report(f"MLP.{method}", result, net.stats)
                assert all(np.isfinite(g).all() for g in net.weight_grads)
            grads = [g.copy() for g in net.weight_grads]
            again, _ = call(f"MLP.{method}", fn, *map(contiguous, args), valid=True)
            assert_same_results(f"MLP.{method}", result.loss, again.loss)
            for g, h in zip(grads, net.weight_grads):
                assert same(g, h), f"MLP.{method}: the gradients differ for contiguous copies"
        elif method == "backward":
            B = known.last or data.draw(st.integers(1, 3))
            g, g_bad = data.draw(arrays_for(rng, (B, dL), dtype, {}))
            input_grad = data.draw(st.sampled_from([False, True, np.bool_(True), "yes", None]))
            bads = [g_bad] if g_bad not in (None, "nan") else []
            if not isinstance(input_grad, (bool, np.bool_)):
                bads.append("compute_input_grad")
            if known.last is None:
                bads.append("no forward")
            fn = lambda a, ig=input_grad: net.backward(a, compute_input_grad=ig)
            rep, error = checked_call("MLP.backward", fn, [g], ["grad_out", "compute_input_grad",
                                                              "forward"], bads, g_bad == "huge")
            if error is not None or bads:
                known.last = None
                continue
            finite = not known.tainted and finite_values(g)
            assert len(rep.weight_grad_norm) == net.num_layers
            if finite:
                finite_report("MLP.backward", rep, net.stats)
            if input_grad:
                check_outputs("MLP.backward", net.input_grad, [(B, d0)], dtype, finite)
            else:
                assert net.input_grad is None
        elif method == "train":
            mode = data.draw(st.sampled_from([True, False, np.bool_(True), 0, 1, "False", None]))
            valid = isinstance(mode, (bool, np.bool_)) or type(mode) is int
            before = net.training
            _, error = call("MLP.train", net.train, mode, names=["mode"], valid=valid)
            assert net.training is (bool(mode) if error is None else before)
            known.last = None
        elif method in ("weights", "biases", "params"):
            if method == "params":
                lst, i, index = None, None, None
                shape, old = net.params.shape, [net.params.copy()]
            else:
                lst = getattr(net, method)
                i = data.draw(st.sampled_from([0, net.num_layers - 1, -1]))
                shape, old = lst[i].shape, [np.array(w) for w in lst]
                index = data.draw(st.sampled_from([i, i, i, "0", 1.0, slice(0, 1)]))
            value, v_bad = data.draw(arrays_for(rng, shape, dtype, {}))
            if v_bad == "huge":
                continue
            bads = [v_bad] if v_bad not in (None, "nan") else []
            if method != "params" and not isinstance(index, int):
                bads.append("index")
            if method == "params":
                assign = lambda v: setattr(net, "params", v)
            else:
                assign = lambda v, j=index: lst.__setitem__(j, v)
            valid = not bads and isinstance(value, np.ndarray) and value.shape == shape
            _, error = call(f"MLP.{method} = ...", assign, value, names=[method, "indices"],
                            valid=valid)
            now = [net.params] if method == "params" else list(lst)
            if error is not None:
                assert all(same(a, b) for a, b in zip(now, old)), "a refused assignment wrote"
            elif valid:
                assert same(net.params if method == "params" else lst[i], np.asarray(value))
            if method == "params":
                net.params = old[0]  # restore (keeps the net finite for what follows)
                if net.device == "cpu":  # CUDA nets' params are read-only host copies
                    net.params *= net.params.dtype.type(1)  # in place, then assigned back
                assert same(net.params, old[0])
                continue
            # the whole list: `net.weights = [...]` copies in, or is refused without writing
            _, error = call(f"MLP.{method} = [...]", setattr, net, method, old, names=[method],
                            valid=True)
            assert all(same(a, b) for a, b in zip(lst, old))
            broken = [np.array(w) for w in old]
            broken[-1] = broken[-1].astype(object)
            _, error = call(f"MLP.{method} = [...]", setattr, net, method, broken,
                            names=[method])
            assert error is not None and all(same(a, b) for a, b in zip(lst, old))
        else:
            value = data.draw(st.sampled_from([True, False, np.bool_(False), "no", None, 2]))
            _, error = call("MLP.stats = ...", setattr, net, "stats", value, names=["stats"],
                            valid=isinstance(value, (bool, np.bool_)))


# --------------------------------------------------------------------------------------------
# LSTM / RNN
# --------------------------------------------------------------------------------------------

REC_GOOD = dict(dtype=["float32", "float64", np.float64], seed=[0, 5, None, np.int64(2)],
                stats=[True, False], device=DEVICES)
REC_BAD = dict(dtype=["float16", None, "int64", object, {}], seed=[-1, 2.5, "0", {}],
               stats=["no", None, 3], device=["tpu", None, 0])


@st.composite
def recurrent_ctor(draw):
    kind = draw(st.sampled_from(["LSTM", "RNN"]))
    I, H = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    how = draw(st.sampled_from(["ok"] * 5 + ["bad_size", "huge", "bad_option"]))
    kw = {k: draw(st.sampled_from(v)) for k, v in REC_GOOD.items() if draw(st.booleans())}
    bad = None
    if how == "bad_size":
        bad = draw(st.sampled_from(["input_size", "hidden_size"]))
        v = draw(st.sampled_from([0, -1, 2.0, True, "3", None, np.float64(3), [3], np.array(3)]))
        I, H = (v, H) if bad == "input_size" else (I, v)
    elif how == "huge":
        bad = draw(st.sampled_from(["input_size", "hidden_size", "both"]))
        v = draw(st.sampled_from(OVER_INT + (10**6,)))
        I, H = (v if bad != "hidden_size" else I), (v if bad != "input_size" else H)
        if v == 10**6 and bad != "both":
            H = I = 10**6  # 10**12 weights: refused by the memory check
        bad = None
    elif how == "bad_option":
        bad = draw(st.sampled_from(sorted(REC_BAD) + (["forget_bias"] if kind == "LSTM" else [
            "nonlinearity"])))
        extra = {"forget_bias": [float("nan"), "1", None, 1e300, 10**400],
                 "nonlinearity": ["sigmoid", None, 1]}
        kw[bad] = draw(st.sampled_from(extra.get(bad, REC_BAD.get(bad))))
    if kind == "LSTM" and bad != "forget_bias" and draw(st.booleans()):
        kw["forget_bias"] = draw(st.sampled_from([0.0, 1, -2.5, np.float32(1.0)]))
    if kind == "RNN" and bad != "nonlinearity" and draw(st.booleans()):
        kw["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    return kind, I, H, kw, how, bad


@FUZZ
@given(case=recurrent_ctor())
def test_fuzz_recurrent_constructors(case):
    kind, I, H, kw, how, bad = case
    cls = getattr(vgkern, kind)
    names = [bad] if bad else ["input_size", "hidden_size"]
    if how == "huge":
        _, error = huge_call(kind, cls, I, H, names=names, **kw)
        assert error is not None, f"{kind}({I}, {H}) was not refused"
        return
    net, error = call(kind, cls, I, H, names=names, valid=how == "ok", **kw)
    if error is None:
        G = (4 if kind == "LSTM" else 1) * H
        assert net.weight_ih.shape == (G, I) and net.weight_hh.shape == (G, H)
        assert net.bias.shape == (G,) and np.isfinite(net.params).all()
        assert net.params.dtype == np.dtype(kw.get("dtype", "float32"))
        repr(net)


@st.composite
def recurrent_nets(draw):
    kind = draw(st.sampled_from(["LSTM", "RNN"]))
    I, H = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    device = draw(st.sampled_from(DEVICES))
    if kind == "LSTM":
        net = vgkern.LSTM(I, H, dtype=dtype, seed=draw(st.integers(0, 3)),
                          forget_bias=draw(st.sampled_from([0.0, 1.0])), device=device)
    else:
        net = vgkern.RNN(I, H, nonlinearity=draw(st.sampled_from(["tanh", "relu"])), dtype=dtype,
                         seed=draw(st.integers(0, 3)), device=device)
    net.stats = draw(st.booleans())
    return net


@FUZZ
@given(net=recurrent_nets(), data=st.data())
def test_fuzz_recurrent_methods(net, data):
    """A sequence of LSTM / RNN calls (forward with h0/c0, backward with grad_h_seq, grad_hT,
    grad_cT, step with both losses, weight setters), each argument valid or bad in one way."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    lstm = isinstance(net, vgkern.LSTM)
    kind = "LSTM" if lstm else "RNN"
    I, H, dtype = net.input_size, net.hidden_size, net.dtype
    known = Tracker()  # .last: (T, B) of the last forward that succeeded

    def states(B, names):
        out, bads = {}, []
        for name in names:
            if data.draw(st.booleans()):
                value, bad = data.draw(arrays_for(rng, (B, H), dtype, {}))
                if bad == "huge":  # an empty (10**12, 0): wrong shape, refused at once
                    value, bad = np.zeros((0, H), dtype), "dim"
                out[name] = value
                if bad not in (None, "nan"):
                    bads.append(bad)
        return out, bads

    for _ in range(data.draw(st.integers(1, 4))):
        method = data.draw(st.sampled_from(["forward", "backward", "step", "step_seq",
                                            "weights"]))
        if method in ("forward", "step", "step_seq"):
            T, B = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
            x, x_bad = data.draw(arrays_for(rng, (T, B, I), dtype, {}))
            if isinstance(x, np.ndarray) and x.ndim == 3 and x_bad != "huge":
                T, B = x.shape[:2]
            kw, bads = states(B, ["h0", "c0"] if lstm else ["h0"])
            if x_bad not in (None, "nan"):
                bads.append(x_bad)
            if T == 0 or B == 0:
                bads.append("an empty sequence")
            args, names = [x], ["x_seq"] + list(kw)
            if method == "forward":
                fn = lambda a, kw=kw: net.forward(a, **kw)
            else:
                seq = method == "step_seq"
                shape = (T, B, H) if seq else (B, H)
                target, t_bad = data.draw(arrays_for(rng, shape, dtype, {}))
                if t_bad == "huge":
                    target, t_bad = np.zeros(shape[:-1] + (0,), dtype), "dim"
                if t_bad is not None:
                    bads.append(t_bad)  # a non-finite target is refused (documented)
                loss = data.draw(st.sampled_from(["mse_sequence" if seq else "mse"] * 4 + [
                    "mse" if seq else "mse_sequence", "cross_entropy", None, "MSE"]))
                if loss != ("mse_sequence" if seq else "mse"):
                    bads.append("loss")
                fn = lambda a, t, lo=loss, kw=kw: net.step(a, t, loss=lo, **kw)
                args.append(target)
                names += ["target", "loss"]
            inputs = args + list(kw.values())
            result, error = checked_call(f"{kind}.{method}", fn, args, names, bads,
                                         x_bad == "huge", unchanged=inputs)
            if error is not None or bads:
                known.last = None
                continue
            known.last = (T, B)
            finite = finite_values(*inputs)
            known.tainted = not finite  # the state backward differentiates
            if method == "forward":
                h_seq, state = result
                outs = (h_seq,) + (state if lstm else (state,))
                check_outputs(f"{kind}.forward", outs, [(T, B, H)] + [(B, H)] * (1 + lstm),
                              dtype, finite)
                again, _ = call(f"{kind}.forward", fn, contiguous(x), valid=True)
                assert_same_results(f"{kind}.forward", outs,
                                    (again[0],) + (again[1] if lstm else (again[1],)))
                continue
            assert len(result.x_grad_norm) == T
            if finite:
                assert math.isfinite(result.loss)
                check_outputs(f"{kind}.{method}", net.input_grad, [(T, B, I)], dtype, True)
                if net.stats:
                    assert np.isfinite(result.x_grad_norm).all()
            loss_value, x_grad = result.loss, net.input_grad.copy()
            again, _ = call(f"{kind}.{method}", fn, *map(contiguous, args), valid=True)
            assert_same_results(f"{kind}.{method}", (loss_value, x_grad),
                                (again.loss, net.input_grad))
        elif method == "backward":
            T, B = known.last or (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
            kw, bads = states(B, ["grad_hT", "grad_cT"] if lstm else ["grad_hT"])
            if data.draw(st.booleans()):
                kw["grad_h_seq"], g_bad = data.draw(arrays_for(rng, (T, B, H), dtype, {}))
                if g_bad not in (None, "nan"):
                    bads.append(g_bad)
            if known.last is None:
                bads.append("no forward")
            rep, error = checked_call(f"{kind}.backward", lambda: net.backward(**kw), [],
                                      list(kw) + ["forward"], bads,
                                      "huge" in bads)
            if error is not None or bads:
                known.last = None
                continue
            assert len(rep.h_grad_norm) == T
            check_outputs(f"{kind}.backward", net.input_grad, [(T, B, I)], dtype,
                          not known.tainted and finite_values(*kw.values()))
        else:
            name = data.draw(st.sampled_from(["weight_ih", "weight_hh", "bias"]))
            view = getattr(net, name)
            value, v_bad = data.draw(arrays_for(rng, view.shape, dtype, {}))
            if v_bad == "huge":
                continue
            old = view.copy()
            valid = v_bad in (None, "nan")
            _, error = call(f"{kind}.{name} = ...", setattr, net, name, value, names=[name],
                            valid=valid)
            if net.device == "cpu":
                assert getattr(net, name) is view, f"{kind}.{name} was rebound, not written"
                assert np.shares_memory(view, net.params)
            else:  # CUDA: each read is a new read-only host copy of the device's values
                view = getattr(net, name)
                assert not view.flags.writeable
            if error is not None:
                assert same(view, old), "a refused assignment wrote"
            else:
                assert same(view, np.asarray(value))
            setattr(net, name, old)  # restore: keeps the net finite for what follows
            assert same(getattr(net, name), old)


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------

SWEEP_GOOD = dict(
    model=["mlp", "lstm", "rnn", "MLP"], data=["gaussian", "digits"],
    depth=[1, 2, 3, np.int64(2), 2.0],
    width=[1, 2, 3], activation=["tanh", "relu", "sigmoid"], init=["xavier_normal", "he_normal"],
    batch=[2, 3], dtype=["float32", "float64"], seed=[0, 1, 2**40], steps=[1, 2],
    lr=[0.01, 0, 1], log_scale=[False, True], batch_norm=[False, True],
)
SWEEP_BAD = dict(
    model=["gru", None, 1], data=["mnist", None], depth=[0, -1, 2.5, True, "2", None,
                                                       float("nan"), 2**63, 1e300],
    width=[0, 1.5, False, [2, [3]], np.array([[2]])], activation=["swish", None],
    init=["glorot", 3], batch=[0, -2, "4"], dtype=["float16", None, "int8"],
    seed=[-1, 0.5, "1", 2**64], steps=[0, 1.5], lr=[float("nan"), float("inf"), -0.1, "0.1",
                                                    10**400, 1j],
    log_scale=["yes", None, 2], batch_norm=[None, "no", 1.5], dept=[3], forget_bias=[1.0],
)


@st.composite
def sweep_grids(draw):
    keys = draw(st.lists(st.sampled_from(sorted(SWEEP_GOOD)), unique=True, max_size=5))
    grid = {}
    for k in keys:
        values = SWEEP_GOOD[k]
        if draw(st.booleans()):
            grid[k] = draw(st.sampled_from(values))
        else:
            grid[k] = draw(st.lists(st.sampled_from(values), min_size=1, max_size=2))
    bad = None
    if draw(st.integers(0, 2)) == 0:
        bad = draw(st.sampled_from(sorted(SWEEP_BAD)))
        grid[bad] = draw(st.sampled_from(SWEEP_BAD[bad]))
    how = draw(st.sampled_from(["kwargs", "dict", "list", "huge"]))
    if how == "huge":
        key = draw(st.sampled_from(["depth", "width", "batch", "steps"]))
        grid[key] = draw(st.sampled_from([10**9, 10**12, 2**40]))
    return grid, bad, how


@FUZZ
@given(case=sweep_grids())
def test_fuzz_sweep_configs(case):
    grid, bad, how = case
    import vgkern.sweeps as S
    args, kw = ((), grid) if how in ("kwargs", "huge") else (
        (grid,) if how == "dict" else ([grid, dict(grid)],), {})
    names = list(grid) + ["grid"]  # the message names a key (maybe another one than `bad`)
    if how == "huge":
        configs, error = huge_call("sweep_configs", vgkern.sweep_configs, *args, names=names,
                                   **kw)
        if error is None:  # a configuration that does not use the huge key (e.g. depth of RNN
            # digits) or a model without it: no config may need more than this machine has
            assert all(S.grid._min_bytes(c) <= S.grid._physical_memory() for c in configs)
        return
    configs, error = call("sweep_configs", vgkern.sweep_configs, *args, names=names)
    if error is None:
        assert configs and all(set(S.COLUMNS[:len(S.CONFIG_COLUMNS) + 1]) <= set(c)
                               for c in configs)
        for c in configs:
            assert isinstance(c["depth"], int) and c["depth"] >= 1
            assert c["dtype"] in ("float32", "float64") and c["model"] in S.MODELS


SWEEP_ARGS_BAD = dict(workers=[0, 1.0, True, "2", None], batch_size=[0, 1.5, "1"],
                      blas_threads=[0, False, "1"], flush_interval=[-1, float("nan"), "1", None],
                      resume=["no", None, 2], progress=["no", 3], log=[3, "print"],
                      executor=[object(), "thread"], out=[3, [], "r.xlsx", "no/such/dir/r.csv"])


@FUZZ
@given(data=st.data())
def test_fuzz_sweep_runs(data):
    """Tiny sweeps (one or two configurations of width <= 3) with fuzzed sweep() arguments:
    they run and return one row per layer and step, or are refused before any work."""
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    model = data.draw(st.sampled_from(["mlp", "lstm", "rnn"]))
    grid = dict(model=model, depth=data.draw(st.sampled_from([1, 2, [1, 2]])),
                width=data.draw(st.integers(1, 3)), batch=data.draw(st.integers(2, 3)),
                steps=data.draw(st.integers(1, 2)))
    kw = {"workers": 1}
    bad = None
    if data.draw(st.booleans()):
        bad = data.draw(st.sampled_from(sorted(SWEEP_ARGS_BAD)))
        kw[bad] = data.draw(st.sampled_from(SWEEP_ARGS_BAD[bad]))
    if data.draw(st.booleans()):
        kw.setdefault("flush_interval", data.draw(st.sampled_from([0, 0.5, 10**400])))
    if bad != "out":
        kw["out"] = data.draw(st.sampled_from([None, "r.parquet", "r.csv", b"r.csv"]))
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(kw["out"], bytes):
            kw["out"] = os.fsencode(os.path.join(folder, os.fsdecode(kw["out"])))
        elif isinstance(kw["out"], str):
            kw["out"] = os.path.join(folder, kw["out"])
        names = [bad, "output"] if bad == "out" else [bad] if bad else []
        table, error = call("sweep", vgkern.sweep, names=names, valid=bad is None, **grid, **kw)
        if error is None:
            depths = grid["depth"] if isinstance(grid["depth"], list) else [grid["depth"]]
            assert len(table) == grid["steps"] * sum(depths)
            if kw["out"] is not None:
                again = vgkern.read_results(os.fsdecode(kw["out"]))
                assert len(again) == len(table)
        else:
            leftovers = [n for n in os.listdir(folder) if n.endswith(".journal")]
            assert not leftovers, f"a refused sweep left {leftovers} behind"


# --------------------------------------------------------------------------------------------
# Regression tests: one per defect the fuzzing found
# --------------------------------------------------------------------------------------------

f32 = np.float32


def refused_at_once(error, match, fn, *args, **kwargs):
    """fn(...) raises `error` with a message matching `match`, at once and without memory."""
    _, err = huge_call(getattr(fn, "__qualname__", "the call"), fn, *args, **kwargs)
    assert isinstance(err, error), f"expected {error.__name__}, got {err!r}"
    assert re.search(match, str(err)), f"{str(err)!r} does not match {match!r}"


@pytest.mark.parametrize("op", ["batchnorm_forward", "lstm_cell_forward", "lstm_cell_backward"])
def test_regression_empty_inputs_with_huge_rows_return_at_once(op):
    """Empty (10**12, 0) inputs ran the kernels' loops over the rows: minutes for nothing."""
    n = 10**12
    z = lambda *s: np.zeros(s, f32)
    args = {"batchnorm_forward": (z(n, 0), None, None, None, None),
            "lstm_cell_forward": (z(n, 0), z(n, 0), z(n, 0), z(0, 0), z(0, 0), z(0)),
            "lstm_cell_backward": (z(n, 0), z(n, 0), z(n, 0), z(n, 0), z(n, 0), z(n, 0),
                                   z(n, 0), z(0, 0), z(0, 0))}[op]
    result, error = huge_call(op, getattr(ops, op), *args)
    assert error is None and all(a.size == 0 for a in result)


def test_regression_empty_batch_and_no_hidden_units_give_zero_gradients():
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((0, 3)).astype(f32), np.zeros((0, 2), f32)
    w_ih, w_hh = np.ones((8, 3), f32), np.ones((8, 2), f32)
    grads = ops.lstm_cell_backward(h, h, np.zeros((0, 8), f32), h, h, x, h, w_ih, w_hh)
    assert all(g.shape == s and not g.any() for g, s in
               zip(grads, [(0, 3), (0, 2), (0, 2), (8, 3), (8, 2), (8,)]))
    x = rng.standard_normal((4, 3)).astype(f32)  # no hidden units: dx is exactly 0
    e = np.zeros((4, 0), f32)
    no_weights = np.zeros((0, 3), f32), np.zeros((0, 0), f32)
    dx = ops.lstm_cell_backward(e, e, e, e, e, x, e, *no_weights)[0]
    assert dx.shape == (4, 3) and not dx.any()


def test_regression_mismatched_empty_inputs_are_value_errors_not_huge_outputs():
    """The output of dense_forward / MLP / LSTM was allocated from unchecked dims: an empty
    (10**12, 0) x with a mismatched w asked for a (10**12, out) output."""
    x = np.zeros((10**12, 0), f32)
    refused_at_once(ValueError, r"\bw\b", ops.dense_forward, x, np.zeros((3, 5), f32), None)
    refused_at_once(ValueError, r"\bx\b.*\(\*, 3\)", vgkern.MLP([3, 2]).forward, x)
    refused_at_once(ValueError, r"\bx\b", vgkern.MLP([3, 2]).step, x, np.zeros((10**12, 0), f32))
    refused_at_once(ValueError, "x_seq", vgkern.LSTM(3, 2).forward, np.zeros((10**12, 1, 0), f32))
    refused_at_once(ValueError, "x_seq", vgkern.RNN(3, 2).step, np.zeros((1, 10**12, 0), f32),
                    np.zeros((10**12, 0), f32))
    # dense_forward with b=None and an empty batch allocated a zero bias of `out` entries
    h, dact = huge_call("dense_forward", ops.dense_forward, np.zeros((0, 0), f32),
                        np.zeros((2**31 + 7, 0), f32), None)[0]
    assert h.shape == dact.shape == (0, 2**31 + 7)
    refused_at_once(ValueError, "batch", ops.batchnorm_forward,  # before the (10**12,) stats
                    np.zeros((0, 10**12), f32), None, None, None, None)


def test_regression_wrong_width_non_contiguous_input_refused_before_the_copy():
    """x was copied (np.ascontiguousarray) before its dtype and width were checked: a
    zero-stride (10**9, width + 1) view cost a 12 GB copy and half a minute."""
    view = np.broadcast_to(f32(1), (10**9, 4))
    refused_at_once(ValueError, r"\bx\b.*\(\*, 3\).*\(1000000000, 4\)",
                    vgkern.MLP([3, 2]).forward, view)
    refused_at_once(TypeError, "float32", vgkern.MLP([4, 2]).forward,
                    np.broadcast_to(np.float64(1), (10**9, 4)))
    refused_at_once(ValueError, "target", vgkern.MLP([4, 2]).step, np.ones((2, 4), f32),
                    np.broadcast_to(f32(1), (10**9, 2)))
    refused_at_once(ValueError, "x_seq", vgkern.LSTM(3, 2).forward,
                    np.broadcast_to(f32(1), (10**5, 10**4, 4)))
    refused_at_once(ValueError, "h0", vgkern.RNN(3, 2).forward, np.ones((1, 2, 3), f32),
                    np.broadcast_to(f32(1), (10**9, 2)))
    refused_at_once(TypeError, r"\bx\b", ops.dense_forward,  # a refused dtype is not copied
                    np.broadcast_to(np.float16(1), (10**9, 3)), np.ones((2, 3), f32), None)


@pytest.mark.parametrize("make, message", [
    (lambda: vgkern.MLP([2**70, 2]), r"sizes\[0\].*2147483647"),
    (lambda: vgkern.MLP(np.array([2**63 + 5, 2], np.uint64)), r"sizes\[0\]"),
    (lambda: vgkern.LSTM(2**70, 3), "input_size"),
    (lambda: vgkern.RNN(3, 2**40), "hidden_size"),
    (lambda: vgkern.LSTM(3, 2**29 + 1), "hidden_size"),
])
def test_regression_sizes_beyond_int_are_value_errors_naming_them(make, message):
    """pybind11's 'incompatible constructor arguments' TypeError did not say which size."""
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(sigma_w=10**400), ValueError, "sigma_w"),      # was a TypeError from np.isfinite
    (dict(alpha=10**400), ValueError, "alpha"),
    (dict(bn_momentum=10**400, batch_norm=True), ValueError, "bn_momentum"),  # OverflowError
    (dict(bn_momentum="a"), TypeError, "bn_momentum"),  # float('a') ValueError, unnamed
    (dict(bn_momentum=None), TypeError, "bn_momentum"),
    (dict(bn_eps="1e-5"), TypeError, "bn_eps"),           # was accepted through float()
    (dict(bn_momentum=2, batch_norm=True), ValueError, "bn_momentum"),
    (dict(seed=-1), ValueError, "seed"),                  # numpy's message, unnamed
    (dict(seed=1.5), TypeError, "seed"),
    (dict(dtype=None), ValueError, "dtype"),              # was float64 (np.dtype(None))
    (dict(device=None), ValueError, "device"),            # pybind11's message
    (dict(batch_norm="no"), TypeError, "batch_norm"),     # was truthy: batch norm on
    (dict(stats="no"), TypeError, "stats"),
    (dict(gain=1e300), ValueError, "overflow"),           # inf weights and a RuntimeWarning
    (dict(bias_init=1e300), ValueError, "bias_init"),
    (dict(init="scaled_normal", sigma_w=1e300), ValueError, "overflow"),
    (dict(init="scaled_normal", sigma_b=1e300), ValueError, "overflow"),
])
def test_regression_mlp_options_refused_with_their_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        vgkern.MLP([3, 2], **kwargs)


@pytest.mark.parametrize("sizes", [{3: 1, 4: 2}, {3, 4}, np.array(3), np.array([[3, 4]])])
def test_regression_mlp_sizes_mappings_sets_and_non_vectors_refused(sizes):
    """A dict gave a net of its keys, a set one in iteration order; a 0-d array a bare
    'len() of unsized object'."""
    with pytest.raises(TypeError, match="sizes"):
        vgkern.MLP(sizes)


def test_regression_flags_are_not_read_by_truthiness():
    net = vgkern.MLP([3, 4, 2], batch_norm=True)
    x = np.ones((3, 3), f32)
    with pytest.raises(TypeError, match="mode"):
        net.train("False")  # was train mode
    assert net.training
    with pytest.raises(TypeError, match="log_scale"):
        net.step(x, np.zeros((3, 2), f32), log_scale="no")
    net.forward(x)
    with pytest.raises(TypeError, match="compute_input_grad"):
        net.backward(np.ones((3, 2), f32), compute_input_grad="no")
    with pytest.raises(TypeError, match="training"):
        ops.batchnorm_forward(x, None, None, np.zeros(3, f32), np.ones(3, f32), training="False")
    with pytest.raises(TypeError, match="need_dx"):
        ops.dense_backward(x, x, x, np.ones((3, 3), f32), need_dx="no")
    with pytest.raises(TypeError, match="stats"):
        vgkern.LSTM(3, 2, stats="no")


@pytest.mark.parametrize("call_, error, message", [
    (lambda: ops.activation_forward(np.ones((2, 2), f32), None), ValueError, "activation"),
    (lambda: ops.dense_forward(np.ones((2, 2), f32), np.ones((2, 2), f32), None, "elu", None),
     TypeError, "alpha"),
    (lambda: ops.activation_forward(np.ones((2, 2), f32), "elu", 10**400), ValueError, "alpha"),
    (lambda: ops.rnn_cell_forward(np.ones((1, 2), f32), np.ones((1, 2), f32),
                                  np.ones((2, 2), f32), np.ones((2, 2), f32), np.ones(2, f32),
                                  None), ValueError, "nonlinearity"),
    (lambda: ops.batchnorm_forward(np.ones((2, 2), f32), None, None, None, None, momentum="a"),
     TypeError, "momentum"),
    (lambda: ops.batchnorm_forward(np.ones((2, 2), f32), None, None, None, None, eps=None),
     TypeError, "eps"),
    # a 0-d array was turned into shape (1,) by np.ascontiguousarray: the message said "(1,)"
    (lambda: ops.activation_forward(np.array(1.0, f32), "tanh"), ValueError, r"\bz\b.*got 0"),
    (lambda: ops.dense_forward(np.ones((2, 3), f32), np.ones((4, 3), f32), np.array(1.0, f32)),
     ValueError, r"\bb\b.*got 0"),
])
def test_regression_ops_options_refused_with_their_name(call_, error, message):
    """pybind11's 'incompatible function arguments' or a bare float() error named nothing."""
    with pytest.raises(error, match=message):
        call_()


def test_regression_sum_squares_norm_of_a_0d_array():
    assert ops.sum_squares_norm(np.array(-3.0, f32)) == 3.0


def test_regression_parameter_attributes_copy_in_instead_of_rebinding():
    """`lstm.weight_ih = w` rebound the attribute: the net kept computing with the old weights.
    `net.weights[0:1] = ...` raised AttributeError."""
    lstm = vgkern.LSTM(3, 2)
    view = lstm.weight_ih
    new = np.full((8, 3), 0.5, f32)
    lstm.weight_ih = new
    assert lstm.weight_ih is view and np.all(view == 0.5) and np.shares_memory(view, lstm.params)
    with pytest.raises(ValueError, match="weight_hh"):
        lstm.weight_hh = np.zeros((3, 3), f32)
    lstm.bias -= f32(1)  # in place, then the same object assigned back
    net = vgkern.MLP([3, 4, 2])
    weights = [np.full(w.shape, 0.25, f32) for w in net.weights]
    net.weights = weights
    assert all(np.all(w == 0.25) for w in net.weights)
    x = np.ones((1, 3), f32)
    assert np.allclose(net.forward(x), np.full((1, 2), 4 * 0.25 * np.tanh(0.75)))
    with pytest.raises(ValueError, match="weights"):
        net.weights = weights[:1]
    with pytest.raises(TypeError, match="weights"):
        net.weights[0:1] = weights[:1]
    with pytest.raises(TypeError, match="weights"):
        net.weights[0] = None  # was a ValueError about the shape ()


def test_regression_recurrent_loss_message_names_the_net():
    with pytest.raises(ValueError, match=r"^LSTM\.step: loss"):  # said "MLP: loss"
        vgkern.LSTM(2, 2).step(np.ones((1, 1, 2), f32), np.ones((1, 2), f32),
                               loss="cross_entropy")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(width=__import__("fractions").Fraction(5, 2)), ValueError, "width"),  # was width 2
    (dict(lr=10**400), ValueError, "lr"),                  # OverflowError from math.isfinite
    (dict(seed=2**63), ValueError, "seed"),                # OverflowError writing the table
    (dict(dtype=None), ValueError, "dtype"),               # was float64
    (dict(depth=np.array(2)), None, None),                 # 0-d array: 'iteration over a 0-d array'
    (dict(data="digits", depth=2, width=10**5), None, None),  # fits: [64, 1e5, 10] is small
    (dict(depth=10**9), MemoryError, "GiB"),               # a list of 10**9 sizes, after minutes
    (dict(width=10**6, depth=10**6), MemoryError, "GiB"),  # 13 s to refuse
    (dict(lr=1e300), ValueError, "lr"),                    # inf in float32, RuntimeWarning
])
def test_regression_sweep_grid_values(kwargs, error, message):
    if error is None:
        assert len(vgkern.sweep_configs(**kwargs)) == 1
        return
    refused_at_once(error, message, vgkern.sweep_configs, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(out=3), "out must be a path"),         # TypeError from os.fspath
    (dict(log=3), "log must be a callable"),     # TypeError after the journal was opened
    (dict(resume="no"), "resume"),               # truthy: resumed
    (dict(progress="no"), "progress"),
])
def test_regression_sweep_arguments(kwargs, message, tmp_path):
    pytest.importorskip("pyarrow")
    if kwargs.get("out") is None:
        kwargs["out"] = str(tmp_path / "r.csv")
    with pytest.raises(ValueError, match=message):
        vgkern.sweep(depth=1, width=2, batch=2, workers=1, **kwargs)
    assert os.listdir(tmp_path) == []


def test_regression_sweep_bytes_out_path_and_huge_flush_interval(tmp_path):
    pytest.importorskip("pyarrow")
    out = os.fsencode(str(tmp_path / "r.csv"))  # "a bytes-like object is required"
    table = vgkern.sweep(depth=1, width=2, batch=2, workers=1, out=out, flush_interval=10**400)
    assert len(table) == 1 and len(vgkern.read_results(os.fsdecode(out))) == 1
