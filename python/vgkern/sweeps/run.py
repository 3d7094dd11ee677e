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
import functools
import threading
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from numpy.typing import NDArray

from ..init import NormalStream
from ..mlp import MLP
from ..recurrent import LSTM, RNN
from .spec import DIGITS_CLASSES, DIGITS_FEATURES, MLP_STATS, SEQUENCE_STATS, STAT_COLUMNS

_COL = {name: j for j, name in enumerate(STAT_COLUMNS)}
_MLP_COLS = [_COL[f] for f in MLP_STATS]


@functools.lru_cache(maxsize=1)
def digits_data() -> Tuple[NDArray[np.float64], NDArray[np.int64]]:
    """(x, labels) from sklearn's load_digits: x: (1797, 64) float64 standardised,
    labels: (1797,) int64."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("data='digits' needs scikit-learn: pip install 'vgkern[sweep]'") from err
    d = load_digits()
    x = d.data / 16.0
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    x.setflags(write=False)
    labels = d.target.astype(np.int64)
    labels.setflags(write=False)
    return x, labels


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


def _sgd(net, lr, dtype):
    net.params -= np.asarray(lr, dtype=dtype) * net.grads


def run_config(c: Mapping[str, Any]) -> NDArray[np.float64]:
    """Run one configuration (a dict from sweep_configs) -> stats: (steps * L, n_stats) float64,
    rows in (step, layer) order, n_stats = len(STAT_COLUMNS) columns STAT_COLUMNS."""
    dtype, steps, lr, B, W = c["dtype"], c["steps"], c["lr"], c["batch"], c["width"]
    L = c["depth"]
    out = np.full((steps * L, len(STAT_COLUMNS)), np.nan)
    if c["model"] == "mlp":
        digits = c["data"] == "digits"
        sizes = [DIGITS_FEATURES] + [W] * (L - 1) + [DIGITS_CLASSES] if digits else [W] * (L + 1)
        net = _make_mlp(c, sizes)
        rep = None
        for s in range(steps):
            if s:
                if c["log_scale"]:
                    net.unscale_grads(rep)
                _sgd(net, lr, dtype)
            if digits:
                x, target = _digits_batch(c, s)
                rep = net.step(x, target, loss="cross_entropy", log_scale=c["log_scale"])
            else:
                x, target = _gaussian_batch(c, s, (B, W), (B, W))
                rep = net.step(x, target, loss="mse", log_scale=c["log_scale"])
            block = out[s * L:(s + 1) * L]
            block[:, 0] = rep.loss
            block[:, _MLP_COLS] = np.column_stack([getattr(rep, f) for f in MLP_STATS])
        return out

    digits = c["data"] == "digits"
    I = 8 if digits else W
    if c["model"] == "lstm":
        net = LSTM(I, W, dtype=dtype, seed=c["seed"], forget_bias=c["forget_bias"])
    else:
        net = RNN(I, W, nonlinearity=c["activation"], dtype=dtype, seed=c["seed"])
    readout = MLP([W, DIGITS_CLASSES], activation="identity", dtype=dtype, seed=c["seed"]) if digits else None
    for s in range(steps):
        if s:
            _sgd(net, lr, dtype)
            if readout is not None:
                _sgd(readout, lr, dtype)
        if digits:
            x, labels = _digits_batch(c, s)
            assert readout is not None  # made above for the digits data
            x_seq = np.ascontiguousarray(x.reshape(B, 8, 8).transpose(1, 0, 2))
            h_seq, _ = net.forward(x_seq)[:2]
            rrep = readout.step(np.ascontiguousarray(h_seq[-1]), labels, loss="cross_entropy",
                                compute_input_grad=True)
            rep = net.backward(None, grad_hT=readout.input_grad)
            loss = rrep.loss
        else:
            x_seq, target = _gaussian_batch(c, s, (L, B, W), (B, W))
            rep = net.step(x_seq, target, loss="mse")
            loss = rep.loss
        block = out[s * L:(s + 1) * L]
        block[:, 0] = loss
        for f in SEQUENCE_STATS:  # per-step arrays; per-network scalars repeat on every row
            block[:, _COL[f]] = getattr(rep, f)
    return out


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
