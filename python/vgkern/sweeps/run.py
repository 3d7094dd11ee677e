"""One configuration: its data, its networks and its rows (run_config), and a batch of them (one
executor task, run_batch). What a configuration computes is documented in the package
docstring; the tests recompute it from there.

Speed: within a process, configurations that share a seed share one draw of the initial
weights' random stream (vgkern.init.NormalStream) and of the input batches, and each thread
reuses one MLP per architecture (net.reinitialize redraws it in place), so a sweep pays for the
networks and the random numbers once, not once per configuration; the results are those of
constructing vgkern.MLP(..., seed=seed) for every configuration, bit for bit."""
from __future__ import annotations

import contextlib
import math
import threading
from collections import OrderedDict
from typing import Any, List, Mapping, Optional, Tuple

import numpy as np
from numpy.typing import NDArray

from ..datasets import DIGITS_CLASSES, DIGITS_FEATURES, as_sequence, digits_arrays
from ..history import History
from ..init import NormalStream
from ..mlp import MLP
from ..recurrent import LSTM, RNN
from .spec import STAT_COLUMNS

DIGITS_SPLIT_SEED = 0  # every sweep trains and tests on the same split of the digits


def digits_data() -> Tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The training split of vgkern.datasets.digits (split seed 0), cached and read-only, which
    sweeps draw their batches from -> x: (1437, 64) float64, labels: (1437,) int64."""
    return digits_arrays("train", DIGITS_SPLIT_SEED)


class _LRU:
    """A small thread-safe LRU cache (values are treated as read-only)."""

    def __init__(self, size):
        self._size, self._data, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = make()
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)
        return value


_BATCHES = _LRU(64)  # configurations that differ only in the network share their batches


def _readonly(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _digits_batch(c, step):
    def make():
        x, labels = digits_data()
        idx = np.random.default_rng([c["seed"], step]).choice(len(x), size=c["batch"], replace=False)
        return _readonly(x[idx].astype(c["dtype"]), labels[idx])
    return _BATCHES.get(("digits", c["seed"], step, c["batch"], c["dtype"]), make)


def _gaussian_batch(c, step, x_shape, t_shape):
    def make():
        rng = np.random.default_rng([c["seed"], step])
        return _readonly(rng.standard_normal(x_shape).astype(c["dtype"]),
                         rng.standard_normal(t_shape).astype(c["dtype"]))
    return _BATCHES.get(("gaussian", c["seed"], step, x_shape, t_shape, c["dtype"]), make)


# The shared draws of the seeds' normals, and the nets each thread keeps.
_STREAM_MAX_VALUES = 1 << 23  # per net (64 MiB): larger nets draw their own numbers
_STREAMS_MAX_BYTES = 128 << 20  # all seeds
_NET_POOL_BYTES = 64 << 20    # parameters and gradients of the nets kept per thread


class _Streams:
    """vgkern.init.NormalStream per seed, least recently used dropped beyond the total."""

    def __init__(self):
        self._lock = threading.Lock()
        self._streams = OrderedDict()  # seed -> NormalStream

    def get(self, seed):
        with self._lock:
            stream = self._streams.get(seed)
            if stream is None:
                stream = self._streams[seed] = NormalStream(seed)
            self._streams.move_to_end(seed)
            total = sum(s.nbytes for s in self._streams.values())
            while total > _STREAMS_MAX_BYTES and len(self._streams) > 1:
                _, old = self._streams.popitem(last=False)
                total -= old.nbytes
        return stream


_STREAMS = _Streams()
_LOCAL = threading.local()


def _seed_source(c, sizes):
    """What the net's seed is: the seed's shared stream, or the seed itself for nets too large
    to keep their draw."""
    values = sum(fan_out * (fan_in + 1) for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    if values > _STREAM_MAX_VALUES:
        return c["seed"]
    return _STREAMS.get(c["seed"]).generator()


class _NetPool:
    """One thread's nets, by architecture, least recently used first; their parameters and
    gradients take at most _NET_POOL_BYTES (the last net used is always kept)."""

    def __init__(self):
        self._nets = OrderedDict()  # key -> (net, bytes)
        self._bytes = 0

    def take(self, key):
        net, size = self._nets.pop(key, (None, 0))
        self._bytes -= size
        return net

    def put(self, key, net):
        size = net.params.nbytes + net.grads.nbytes
        self._nets[key] = (net, size)
        self._bytes += size
        while self._bytes > _NET_POOL_BYTES and len(self._nets) > 1:
            _, (_, old) = self._nets.popitem(last=False)
            self._bytes -= old


def _make_mlp(c, sizes):
    """An MLP for configuration c with the parameters of MLP(..., seed=c["seed"]): this
    thread's net of the same architecture redrawn, or a new one."""
    init, bn = c["init"], c["batch_norm"]
    options = dict(sigma_w=c["sigma_w"], sigma_b=c["sigma_b"]) if init == "scaled_normal" else {}
    seed = _seed_source(c, sizes)
    pool = getattr(_LOCAL, "nets", None)
    if pool is None:
        pool = _LOCAL.nets = _NetPool()
    key = (tuple(sizes), c["activation"], bn, c["dtype"])
    net = pool.take(key)
    if net is None:
        net = MLP(sizes, activation=c["activation"], init=init, dtype=c["dtype"], seed=seed,
                  batch_norm=bn, **options)
    else:
        net.reinitialize(seed, init=init, **options)
    pool.put(key, net)
    return net


def make_optimizer(c, net):
    """The configuration's optimizer (vgkern.optim) for net: optimizer "sgd" is SGD without
    momentum, "momentum" SGD with the momentum key; weight_decay as torch.optim's (adamw:
    decoupled)."""
    from .. import optim

    lr, wd = c["lr"], c["weight_decay"]
    if c["optimizer"] == "sgd":
        return optim.SGD(net, lr, weight_decay=wd)
    if c["optimizer"] == "momentum":
        return optim.SGD(net, lr, momentum=c["momentum"], weight_decay=wd)
    if c["optimizer"] == "adam":
        return optim.Adam(net, lr, weight_decay=wd)
    return optim.AdamW(net, lr, weight_decay=wd)


def _evaluates(c, s):
    """Whether step s carries test metrics: every eval_every steps, and the last step."""
    every = c["eval_every"]
    return c["data"] == "digits" and every > 0 and (s % every == 0 or s == c["steps"] - 1)


def _test_split(c):
    return _BATCHES.get(("digits-test", c["dtype"]), lambda: _readonly(*(
        a.astype(c["dtype"]) if a.dtype.kind == "f" else a
        for a in digits_arrays("test", DIGITS_SPLIT_SEED))))


def run_config(c: Mapping[str, Any]) -> NDArray[np.float64]:
    """Run one configuration (a dict from sweep_configs) -> stats: (steps * L, n_stats) float64,
    rows in (step, layer) order, n_stats = len(STAT_COLUMNS) columns STAT_COLUMNS (a
    vgkern.History of the reports, as one array)."""
    steps, B, W, L = c["steps"], c["batch"], c["width"], c["depth"]
    digits = c["data"] == "digits"
    nan = (math.nan, math.nan)
    if c["model"] == "mlp":
        sizes = [DIGITS_FEATURES] + [W] * (L - 1) + [DIGITS_CLASSES] if digits else [W] * (L + 1)
        net = _make_mlp(c, sizes)
        opt = make_optimizer(c, net)  # after _make_mlp: the weights it measures change against
        hist = History(net, capacity=steps)
        for s in range(steps):
            if digits:
                x, target = _digits_batch(c, s)
                rep = net.step(x, target, loss="cross_entropy", log_scale=c["log_scale"])
            else:
                x, target = _gaussian_batch(c, s, (B, W), (B, W))
                rep = net.step(x, target, loss="mse", log_scale=c["log_scale"])
            opt.step(rep)  # unscales a log-scale report's gradients itself
            hist.record(s, rep, *(net.evaluate(*_test_split(c)) if _evaluates(c, s) else nan))
        return hist.rows(STAT_COLUMNS)

    I = 8 if digits else W
    if c["model"] == "lstm":
        net = LSTM(I, W, dtype=c["dtype"], seed=c["seed"], forget_bias=c["forget_bias"])
    else:
        net = RNN(I, W, nonlinearity=c["activation"], dtype=c["dtype"], seed=c["seed"])
    readout = MLP([W, DIGITS_CLASSES], activation="identity", dtype=c["dtype"],
                  seed=c["seed"]) if digits else None
    opts = [make_optimizer(c, n) for n in (net, readout) if n is not None]
    hist = History(net, capacity=steps)
    for s in range(steps):
        if digits:
            x, labels = _digits_batch(c, s)
            assert readout is not None  # made above for the digits data
            x_seq = np.ascontiguousarray(as_sequence(x))
            h_seq, _ = net.forward(x_seq)[:2]
            rrep = readout.step(np.ascontiguousarray(h_seq[-1]), labels, loss="cross_entropy",
                                compute_input_grad=True)
            rep = net.backward(None, grad_hT=readout.input_grad)
            rep.loss = rrep.loss  # the loss of the whole classifier
            opts[1].step(rrep)
        else:
            x_seq, target = _gaussian_batch(c, s, (L, B, W), (B, W))
            rep = net.step(x_seq, target, loss="mse")
        opts[0].step(rep)
        test = nan
        if _evaluates(c, s):
            x_test, y_test = _test_split(c)
            test = net.evaluate(np.ascontiguousarray(as_sequence(x_test)), y_test, readout)
        hist.record(s, rep, *test)
    return hist.rows(STAT_COLUMNS)


def limit_blas(threads):
    """A context that limits this process's BLAS threads (a no-op for None)."""
    if not threads:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is in the sweep extra
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(threads), user_api="blas")


def run_batch(configs: List[Mapping[str, Any]], blas_threads: Optional[int] = None
              ) -> List[Tuple[str, NDArray[np.float64]]]:
    """Run a batch of configurations (one executor task) -> [(config_id, array)].
    blas_threads: limit BLAS threads of this process while the batch runs (process executors)."""
    results = []
    with limit_blas(blas_threads):
        for c in configs:
            try:
                results.append((c["config_id"], run_config(c)))
            except Exception as err:
                shown = {k: v for k, v in c.items() if k != "config_id"}
                raise RuntimeError(f"vgkern.sweep: configuration {c['config_id']} {shown} failed: "
                                   f"{type(err).__name__}: {err}") from err
    return results
