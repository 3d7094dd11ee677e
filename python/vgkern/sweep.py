"""Sweeps: per-layer gradient statistics over a grid of configurations, as a tidy table.

    import vgkern
    table = vgkern.sweep(depth=[5, 10, 20], activation=["sigmoid", "tanh", "relu"],
                         batch_norm=[False, True], seed=range(3), out="results.parquet")
    summary = vgkern.sweep_summary(table)      # fitted gain per layer, first/last ratio

Grid keys (each takes one value or a list; a list of grid dicts gives the union of their
products, without duplicates):

    model        "mlp" | "lstm" | "rnn"                                   default "mlp"
    data         "gaussian" | "digits" (sklearn.datasets.load_digits)      default "gaussian"
    depth        MLP: number of dense layers L                            default 10
    seq_len      LSTM/RNN: sequence length T (default: the depth values)  default None
    width        hidden width (MLP layers, LSTM/RNN hidden size)          default 64
    activation   MLP: any of vgkern.ACTIVATIONS; RNN: "tanh" | "relu"      default "tanh"
    init         MLP: any of vgkern.INITS                                 default "xavier_normal"
    sigma_w, sigma_b   init "scaled_normal" only: W ~ N(0, sigma_w^2/fan_in), b ~ N(0, sigma_b^2)
    batch_norm   MLP: batch norm on every hidden layer                    default False
    batch        batch size                                              default 128
    dtype        "float32" | "float64"                                    default "float32"
    seed         weights and data                                         default 0
    steps        training steps (plain SGD); one row block per step       default 1
    lr           SGD learning rate                                        default 0.01
    log_scale    MLP: log-scale backward (exact log-norms where gradients underflow)  False
    forget_bias  LSTM: added to the forget-gate bias                      default 0.0

A key that does not apply to a model is ignored for it (its column is empty: None/NaN, or False
for batch_norm/log_scale); RNN rows take only the "tanh"/"relu" activations of the grid.

What one configuration computes (documented so that anyone can recompute it; the tests do):

* MLP, Gaussian data: ``net = vgkern.MLP([width] * (depth + 1), activation, init, dtype=dtype,
  seed=seed, batch_norm=batch_norm[, sigma_w, sigma_b])``; for step s = 0 .. steps-1:
  ``rng = numpy.random.default_rng([seed, s])``, ``x = rng.standard_normal((batch, width))``,
  ``target = rng.standard_normal((batch, width))`` (drawn in float64, then cast to dtype),
  ``rep = net.step(x, target, loss="mse", log_scale=log_scale)``, then (between steps)
  ``net.params -= lr * net.grads`` (with log_scale, the stored gradients are first multiplied
  by 2**grad_log2_scale of their layer, so that SGD uses the true gradient).
* MLP, digits: sizes ``[64] + [width] * (depth - 1) + [10]``, loss "cross_entropy"; the 1797
  images are scaled by 1/16 and standardised per pixel (constant pixels become 0); step s takes
  the examples ``rng.choice(1797, batch, replace=False)`` of ``rng = default_rng([seed, s])``.
* LSTM / RNN, Gaussian data: ``vgkern.LSTM(width, width, dtype, seed, forget_bias)`` or
  ``vgkern.RNN(width, width, activation, dtype, seed)``; x_seq ``(T, batch, width)`` then target
  ``(batch, width)`` from ``default_rng([seed, s])``; ``rep = net.step(x_seq, target, loss="mse")``
  (loss on the last hidden state, so the gradient has to travel back through time).
* LSTM / RNN, digits: each image is read row by row (T = 8, input size 8); a linear read-out
  ``vgkern.MLP([width, 10], activation="identity", dtype=dtype, seed=seed)`` on h_T with
  cross-entropy; its input gradient is back-propagated through time
  (``net.backward(None, grad_hT=readout.input_grad)``); SGD updates both.

The table has one row per (configuration, step, layer): the configuration's columns (plus a
``config_id``: the first 16 hex digits of the sha256 of the configuration as canonical JSON,
stable across processes and machines), ``step``, ``layer``, ``loss``, every GradReport field and,
for LSTM/RNN rows (``layer`` = time step t), the SequenceReport fields (``h_grad_norm``,
``c_grad_norm``, ``x_grad_norm``, their log10, ``forget_gate_mean``, ``saturated_fraction``, and
the per-network ``weight_ih_grad_norm``, ``weight_hh_grad_norm``, ``bias_grad_norm`` repeated on
every row). Columns that do not apply to a row are NaN.

Storage (``out="results.parquet"`` or ``".csv"``): every finished configuration is appended at
once, as one checksummed record written with a single write(), to a journal ``<out>.journal``
(so a killed process never loses a finished configuration, and a record cut short by a kill is
recognised and dropped). The output file itself is rebuilt from everything finished -- written
to a temporary file in the same folder, fsync'ed, then moved over the output with os.replace --
at most every ``flush_interval`` seconds and at the end, so it is always a complete, readable
file that is never more than a few seconds behind (the rebuild interval grows to 4x the last
rebuild's duration for very large files). Journal records reach the operating system at once
(a killed process loses nothing) and the disk at the next rebuild's fsync (a power cut loses at
most one interval). Re-running skips finished configurations (``resume=True``, matched by
config_id, reading both the output and the journal); a clean end removes the journal; a lock
on the journal refuses a second sweep on the same output. Ctrl-C stops, saves everything
finished and raises SweepInterrupted.

Throughput: configurations run on a thread pool (one per core by default) with BLAS limited to
one thread; vgkern releases the GIL in every native call. Within a process, configurations that
share a seed share one draw of the initial weights' random stream and of the input batches, and
each thread reuses its networks (rewriting every parameter), so a sweep pays for the network
and the random numbers once, not once per configuration; the results are byte-identical to
constructing vgkern.MLP(..., seed=seed) for every configuration.
"""
import concurrent.futures as cf
import contextlib
import csv
import difflib
import functools
import hashlib
import itertools
import json
import math
import numbers
import os
import struct
import sys
import threading
import time
from collections import OrderedDict

import numpy as np

from .init import INITS
from .report import FIELDS as REPORT_FIELDS

SCHEMA_VERSION = 1
_INT64_MAX = 2**63 - 1
MODELS = ("mlp", "lstm", "rnn")
DATASETS = ("gaussian", "digits")
RNN_ACTIVATIONS = ("tanh", "relu")
DIGITS_CLASSES, DIGITS_FEATURES, DIGITS_EXAMPLES = 10, 64, 1797

# Configuration columns, in table order, with their types.
_STR, _INT, _FLOAT, _BOOL = "string", "int64", "float64", "bool"
CONFIG_TYPES = {
    "model": _STR, "data": _STR, "depth": _INT, "width": _INT, "activation": _STR,
    "init": _STR, "sigma_w": _FLOAT, "sigma_b": _FLOAT, "batch_norm": _BOOL, "batch": _INT,
    "dtype": _STR, "seed": _INT, "steps": _INT, "lr": _FLOAT, "log_scale": _BOOL,
    "forget_bias": _FLOAT,
}
CONFIG_COLUMNS = tuple(CONFIG_TYPES)
GRID_KEYS = CONFIG_COLUMNS + ("seq_len",)
DEFAULTS = {
    "model": "mlp", "data": "gaussian", "depth": 10, "seq_len": None, "width": 64,
    "activation": "tanh", "init": "xavier_normal", "sigma_w": 1.0, "sigma_b": 0.0,
    "batch_norm": False, "batch": 128, "dtype": "float32", "seed": 0, "steps": 1, "lr": 0.01,
    "log_scale": False, "forget_bias": 0.0,
}
# Which grid keys each model uses (the others are ignored for it).
_APPLIES = {
    "mlp": {"model", "data", "depth", "width", "activation", "init", "sigma_w", "sigma_b",
            "batch_norm", "batch", "dtype", "seed", "steps", "lr", "log_scale"},
    "lstm": {"model", "data", "depth", "seq_len", "width", "batch", "dtype", "seed", "steps",
             "lr", "forget_bias"},
    "rnn": {"model", "data", "depth", "seq_len", "width", "activation", "batch", "dtype",
            "seed", "steps", "lr"},
}
# Values of the columns that do not apply to a model.
_NOT_APPLICABLE = {"activation": None, "init": None, "sigma_w": math.nan, "sigma_b": math.nan,
                   "batch_norm": False, "log_scale": False, "forget_bias": math.nan}

RECURRENT_FIELDS = ("h_grad_norm", "c_grad_norm", "x_grad_norm", "log10_h_grad_norm",
                    "log10_c_grad_norm", "log10_x_grad_norm", "forget_gate_mean")
RECURRENT_SCALARS = ("weight_ih_grad_norm", "weight_hh_grad_norm", "log10_weight_ih_grad_norm",
                     "log10_weight_hh_grad_norm")
STAT_COLUMNS = ("loss",) + tuple(REPORT_FIELDS) + RECURRENT_FIELDS + RECURRENT_SCALARS
_COL = {name: j for j, name in enumerate(STAT_COLUMNS)}
_MLP_COLS = [_COL[f] for f in REPORT_FIELDS]
_SEQ_COLS = [_COL[f] for f in RECURRENT_FIELDS] + [_COL["saturated_fraction"]]
_SEQ_SCALAR_COLS = [_COL[f] for f in ("weight_ih_grad_norm", "weight_hh_grad_norm",
                                      "bias_grad_norm", "log10_weight_ih_grad_norm",
                                      "log10_weight_hh_grad_norm", "log10_bias_grad_norm")]
ROW_COLUMNS = ("step", "layer")
COLUMNS = ("config_id",) + CONFIG_COLUMNS + ROW_COLUMNS + STAT_COLUMNS
# The statistic a configuration's gain is fitted to: MLP rows ||dL/dz_l||, LSTM/RNN ||dL/dx_t||.
GAIN_STAT = {"mlp": "log10_preact_grad_norm", "lstm": "log10_x_grad_norm",
             "rnn": "log10_x_grad_norm"}


class SweepInterrupted(KeyboardInterrupt):
    """Raised by sweep() on Ctrl-C (or SIGTERM in the CLI) after everything finished was saved.
    .results: DataFrame of the grid's finished configurations; .finished, .total: counts
    (configurations of the grid, including ones resumed from an earlier run); .out: the path."""

    def __init__(self, results, finished, total, out):
        super().__init__(f"sweep interrupted: {finished} of {total} configurations finished"
                         + (f" and saved to {out}" if out else ""))
        self.results, self.finished, self.total, self.out = results, finished, total, out


def _error(message):
    return ValueError(f"vgkern.sweep: {message}")


def _float(x):
    """float(x), with ints beyond the float range as +-inf instead of an OverflowError."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _require(*modules, why="vgkern.sweep"):
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"{why} needs {', '.join(missing)}: pip install 'vgkern[sweep]'")


# --------------------------------------------------------------------------------------------
# Grid -> configurations
# --------------------------------------------------------------------------------------------

def _as_values(key, value):
    if isinstance(value, dict):
        raise _error(f"grid key {key!r}: expected a value or a list of values, got a dict")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or (
            isinstance(value, np.ndarray) and value.ndim == 0):
        return [value]
    values = list(value)
    if not values:
        raise _error(f"grid key {key!r} has no values (an empty list gives an empty grid)")
    return values


def _norm_value(key, v):
    """One value of a grid key, checked and put in canonical form."""
    if isinstance(v, (np.generic, np.ndarray)) and np.ndim(v) == 0:
        v = v.item()
    kind = "int" if key == "seq_len" else CONFIG_TYPES[key]
    bad = lambda expected: _error(f"grid key {key!r}: expected {expected}, got {v!r}")
    if key in ("model", "data", "activation", "init"):
        options = {"model": MODELS, "data": DATASETS, "init": INITS}.get(key)
        if key == "activation":
            from .mlp import ACTIVATIONS as options
        if not isinstance(v, str) or v.lower() not in options:
            hint = ""
            if isinstance(v, str):
                close = difflib.get_close_matches(v.lower(), options, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _error(f"grid key {key!r}: unknown value {v!r}{hint}; "
                         f"expected one of {', '.join(map(repr, options))}")
        return v.lower()
    if key == "dtype":
        try:
            name = np.dtype(v).name if v is not None else None  # numpy reads None as float64
        except (TypeError, ValueError):
            name = None
        if name not in ("float32", "float64"):
            raise bad("'float32' or 'float64'")
        return name
    if kind == _BOOL:
        if isinstance(v, bool) or (isinstance(v, numbers.Integral) and v in (0, 1)):
            return bool(v)
        raise bad("True or False")
    if kind in ("int", _INT):
        if key == "seq_len" and v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise bad("an integer")
        if not isinstance(v, numbers.Integral):  # 2.0 is 2; 2.5, Fraction(5, 2) and inf are not
            try:
                whole = int(v)
            except (OverflowError, ValueError):
                raise bad("an integer") from None
            if whole != v:
                raise bad("an integer")
            v = whole
        v = int(v)
        low = 0 if key == "seed" else 1
        if v < low:
            raise bad(f"an integer >= {low}")
        if v > _INT64_MAX:  # the table's int64 columns
            raise bad(f"an integer <= {_INT64_MAX}")
        return v
    # floats
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise bad("a finite number")
    try:
        v = float(v)
    except OverflowError:  # an int beyond the float range
        raise bad("a finite number") from None
    if not math.isfinite(v):
        raise bad("a finite number")
    if key == "sigma_w" and v <= 0:
        raise bad("a number > 0")
    if key in ("sigma_b", "lr") and v < 0:
        raise bad("a number >= 0")
    return v + 0.0  # -0.0 -> 0.0


def config_id(config):
    """Stable id of a configuration: sha256 of its canonical JSON (NaN -> null), 16 hex digits."""
    canon = {"schema": SCHEMA_VERSION}
    for key in CONFIG_COLUMNS:
        v = config[key]
        canon[key] = None if isinstance(v, float) and math.isnan(v) else v
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _grid_list(grid, keys):
    if grid is None:
        grids = [{}]
    elif isinstance(grid, dict):
        grids = [grid]
    elif isinstance(grid, (list, tuple)):
        grids = list(grid)
        if not grids:
            raise _error("the grid is empty (an empty list of grids)")
        for g in grids:
            if not isinstance(g, dict):
                raise _error(f"a grid must be a dict of key -> values or a list of such dicts; "
                             f"got an element of type {type(g).__name__}")
    else:
        raise _error(f"grid must be a dict or a list of dicts, got {type(grid).__name__}")
    out = []
    for g in grids:
        both = set(g) & set(keys)
        if both:
            raise _error(f"grid key(s) {sorted(both)} given both in the grid and as arguments")
        merged = {**g, **keys}
        for key in merged:
            if key not in GRID_KEYS:
                close = difflib.get_close_matches(str(key), GRID_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _error(f"unknown grid key {key!r}{hint}; valid keys: {', '.join(GRID_KEYS)}")
        out.append(merged)
    return out


def _expand(g):
    """The configurations of one grid dict, in product order."""
    values = {}
    for key in GRID_KEYS:
        raw = _as_values(key, g[key]) if key in g else [DEFAULTS[key]]
        normed = []
        for v in raw:
            v = _norm_value(key, v)
            if v not in normed:
                normed.append(v)
        values[key] = normed
    models = values["model"]
    for key in g:  # an explicitly given key must matter for some model of this grid
        if not any(key in _APPLIES[m] for m in models):
            users = [m for m in MODELS if key in _APPLIES[m]]
            raise _error(f"grid key {key!r} applies to model {' or '.join(map(repr, users))} "
                         f"only; this grid has model {models}")
    if "sigma_w" in g or "sigma_b" in g:
        if "mlp" in models and "scaled_normal" not in values["init"]:
            raise _error("sigma_w and sigma_b apply to init 'scaled_normal' only; add "
                         "init='scaled_normal' to the grid")
    if "forget_bias" in g and "lstm" not in models:
        raise _error("forget_bias applies to model 'lstm' only")

    configs = []
    for model in models:
        mine = []
        if model == "mlp":
            inits = []
            for init in values["init"]:
                if init == "scaled_normal":
                    inits += [(init, sw, sb) for sw in values["sigma_w"] for sb in values["sigma_b"]]
                else:
                    inits.append((init, math.nan, math.nan))
            for (data, dtype, bn, act, (init, sw, sb), width, batch, depth, steps, lr, ls,
                 seed) in itertools.product(
                    values["data"], values["dtype"], values["batch_norm"], values["activation"],
                    inits, values["width"], values["batch"], values["depth"], values["steps"],
                    values["lr"], values["log_scale"], values["seed"]):
                mine.append(dict(model=model, data=data, depth=depth, width=width, activation=act,
                                 init=init, sigma_w=sw, sigma_b=sb, batch_norm=bn, batch=batch,
                                 dtype=dtype, seed=seed, steps=steps, lr=lr, log_scale=ls,
                                 forget_bias=math.nan))
        else:
            acts = [None] if model == "lstm" else [a for a in values["activation"]
                                                   if a in RNN_ACTIVATIONS]
            if not acts:
                raise _error(f"this grid gives no 'rnn' configuration: the RNN's activation must "
                             f"be 'tanh' or 'relu', the grid has {values['activation']}")
            fbs = values["forget_bias"] if model == "lstm" else [math.nan]
            lengths = values["seq_len"] if values["seq_len"] != [None] else values["depth"]
            for data, dtype, act, fb, width, batch, T, steps, lr, seed in itertools.product(
                    values["data"], values["dtype"], acts, fbs, values["width"], values["batch"],
                    lengths, values["steps"], values["lr"], values["seed"]):
                if data == "digits":
                    T = 8  # an 8x8 image read row by row
                mine.append(dict(model=model, data=data, depth=T, width=width, activation=act,
                                 init=None, sigma_w=math.nan, sigma_b=math.nan, batch_norm=False,
                                 batch=batch, dtype=dtype, seed=seed, steps=steps, lr=lr,
                                 log_scale=False, forget_bias=fb))
        configs += mine
    return configs


def sweep_configs(grid=None, **keys):
    """The configurations of a grid (dict, or list of dicts; keyword arguments are merged into
    every grid dict), checked and without duplicates, in grid order: a list of dicts with the
    configuration columns plus 'config_id'. Raises ValueError for unknown keys or values."""
    configs, seen = [], set()
    for g in _grid_list(grid, keys):
        for c in _expand(g):
            cid = config_id(c)
            if cid in seen:
                continue
            seen.add(cid)
            _check_config(c)
            configs.append({"config_id": cid, **c})
    if not configs:
        raise _error("the grid is empty")
    return configs


def _min_bytes(c):
    """A lower bound of the memory one configuration takes: parameters and their gradients,
    one activation per layer (or step) for the batch, the input batch and the result rows, plus
    ~100 bytes of bookkeeping per layer. Only what certainly gets allocated, so that a refusal on
    this bound is never wrong."""
    item = 4 if c["dtype"] == "float32" else 8
    W, B, L = c["width"], c["batch"], c["depth"]
    digits = c["data"] == "digits"
    if c["model"] == "mlp":  # sizes [W] * (L + 1), or [64] + [W] * (L - 1) + [10] for digits
        if digits:
            params = (DIGITS_FEATURES + 1) * DIGITS_CLASSES if L == 1 else (
                W * (DIGITS_FEATURES + 1) + (L - 2) * W * (W + 1) + DIGITS_CLASSES * (W + 1))
            acts, data = (L - 1) * B * W, 0  # the digits batches are small
        else:
            params, acts, data = L * W * (W + 1), L * B * W, B * W * 8 * 2  # x, target: float64
    else:
        I = 8 if digits else W
        params = (4 if c["model"] == "lstm" else 1) * W * (I + W + 1)
        acts, data = L * B * W, 0 if digits else L * B * I * 8
    rows = c["steps"] * L * len(STAT_COLUMNS) * 8
    return 2 * params * item + acts * item + data + rows + 100 * L


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def _check_config(c):
    limit = _physical_memory()
    need = _min_bytes(c)
    if limit and need > limit:
        shown = {k: c[k] for k in ("model", "depth", "width", "batch", "steps", "dtype")}
        raise MemoryError(f"vgkern.sweep: configuration {shown} needs at least "
                          f"{need / 2**30:.4g} GiB, more than this machine's "
                          f"{limit / 2**30:.4g} GiB of physical memory")
    limit = float(np.finfo(c["dtype"]).max)
    for key in ("lr", "sigma_w", "sigma_b", "forget_bias"):
        if abs(c[key]) > limit:  # NaN (not applicable) passes
            raise _error(f"grid key {key!r}: {c[key]!r} overflows {c['dtype']}")
    if c["batch_norm"] and c["batch"] < 2:
        raise _error(f"batch_norm=True needs batch >= 2 (train-mode batch statistics), got "
                     f"batch={c['batch']}")
    if c["data"] == "digits" and c["batch"] > DIGITS_EXAMPLES:
        raise _error(f"data='digits' has {DIGITS_EXAMPLES} examples; batch must be <= "
                     f"{DIGITS_EXAMPLES}, got {c['batch']}")


def _cost(c):
    """Rough cost (multiply-adds) of a configuration, to schedule the long ones first."""
    w, b = c["width"], c["batch"]
    if c["model"] == "mlp":
        per_step = c["depth"] * w * w * b
    else:
        gates = 4 if c["model"] == "lstm" else 1
        per_step = c["depth"] * gates * w * 2 * w * b
    return c["steps"] * per_step + 1000 * c["depth"]


# --------------------------------------------------------------------------------------------
# One configuration
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def digits_data():
    """(x (1797, 64) float64 standardised, labels (1797,) int64) from sklearn's load_digits."""
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


# Weight init without redrawing. The normal-family inits of vgkern.MLP scale one stream of
# standard normals, numpy.random.default_rng(seed).standard_normal, consumed layer by layer
# (W_l, then b_l for scaled_normal): the stream depends on the seed only, not on the activation,
# batch norm, init or depth. A sweep therefore draws each seed's stream once per process and
# scales slices of it exactly as vgkern.init.draw_layer does (the same float64 products, then
# the same cast), and it reuses one net object per thread and architecture, rewriting all of
# its parameters. A self-check per init compares the result with vgkern.MLP byte for byte
# and falls back to constructing vgkern.MLP when they differ.
_NORMAL_INITS = ("xavier_normal", "he_normal", "lecun_normal", "scaled_normal")
_STREAM_MAX_VALUES = 1 << 23  # per seed (64 MiB); larger nets are initialised by vgkern.MLP
_STREAM_MAX_TOTAL = 1 << 24   # all seeds (128 MiB)
_NET_POOL_BYTES = 64 << 20    # parameters of the nets kept per thread


class _NormalStreams:
    def __init__(self):
        self._lock = threading.Lock()
        self._streams = OrderedDict()  # seed -> [rng, values, lock]

    def get(self, seed, n):
        """At least n standard normals of default_rng(seed) (a read-only array), or None."""
        if n > _STREAM_MAX_VALUES:
            return None
        with self._lock:
            entry = self._streams.get(seed)
            if entry is None:
                entry = self._streams[seed] = [np.random.default_rng(seed), np.empty(0),
                                               threading.Lock()]
            self._streams.move_to_end(seed)
        values = entry[1]
        if len(values) < n:
            with entry[2]:
                values = entry[1]
                if len(values) < n:
                    cap = min(max(n, 2 * len(values)), _STREAM_MAX_VALUES)
                    grown = np.empty(cap)
                    grown[:len(values)] = values
                    grown[len(values):] = entry[0].standard_normal(cap - len(values))
                    grown.setflags(write=False)
                    entry[1] = values = grown
            with self._lock:  # keep the total bounded: drop the least recently used seeds
                total = sum(len(e[1]) for e in self._streams.values())
                while total > _STREAM_MAX_TOTAL and len(self._streams) > 1:
                    _, old = self._streams.popitem(last=False)
                    total -= len(old[1])
        return values


_STREAMS = _NormalStreams()
_LOCAL = threading.local()
_INIT_CHECKED = {}


def _normal_plan(init, sizes, sigma_w, sigma_b):
    """[(weight offset, shape, scale, bias offset or -1, bias scale)], stream length -- the
    draws of vgkern.init.draw_layer, layer by layer."""
    plan, off = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        if init == "xavier_normal":
            scale = 1.0 * np.sqrt(2.0 / (fan_in + fan_out))
        elif init == "he_normal":
            scale = np.sqrt(2.0 / fan_in)
        elif init == "lecun_normal":
            scale = np.sqrt(1.0 / fan_in)
        else:
            scale = sigma_w / np.sqrt(fan_in)
        w_off, off = off, off + fan_out * fan_in
        b_off = -1
        if init == "scaled_normal":
            b_off, off = off, off + fan_out
        plan.append((w_off, (fan_out, fan_in), scale, b_off, sigma_b))
    return plan, off


def _bare_mlp_class():
    from .mlp import MLP

    class _BareMLP(MLP):
        """vgkern.MLP whose constructor leaves the weights to the caller."""

        def _initialize(self, *args, **kwargs):
            pass

    return _BareMLP


@functools.lru_cache(maxsize=1)
def _bare_mlp():
    return _bare_mlp_class()


def _fill_params(net, plan, stream, batch_norm):
    net.params[...] = 0
    for l, (w_off, shape, scale, b_off, b_scale) in enumerate(plan):
        n = shape[0] * shape[1]
        net.weights[l][...] = scale * stream[w_off:w_off + n].reshape(shape)
        bias = net.biases[l]
        if b_off >= 0 and bias.size:
            bias[...] = b_scale * stream[b_off:b_off + shape[0]]
    for g in net.bn_gammas:
        g[...] = 1
    for m in net.running_means:
        m[...] = 0
    for v in net.running_vars:
        v[...] = 1


def _init_reproduces_mlp(init):
    """Self-check: the stream path gives vgkern.MLP's parameters, byte for byte."""
    ok = _INIT_CHECKED.get(init)
    if ok is None:
        from .mlp import MLP

        sizes, extra = [5, 4, 3, 2], {}
        if init == "scaled_normal":
            extra = dict(sigma_w=1.3, sigma_b=0.2)
        ok = True
        for bn in (False, True):
            want = MLP(sizes, activation="tanh", init=init, seed=12345, batch_norm=bn, **extra)
            net = _bare_mlp()(sizes, activation="tanh", init=init, seed=0, batch_norm=bn)
            plan, n = _normal_plan(init, sizes, extra.get("sigma_w", 1.0), extra.get("sigma_b", 0.0))
            _fill_params(net, plan, np.random.default_rng(12345).standard_normal(n), bn)
            ok = ok and net.params.tobytes() == want.params.tobytes()
        _INIT_CHECKED[init] = ok
    return ok


def _make_mlp(c, sizes):
    """vgkern.MLP for configuration c with the weights of MLP(..., seed=c["seed"])."""
    from .mlp import MLP

    init, bn = c["init"], c["batch_norm"]
    extra = dict(sigma_w=c["sigma_w"], sigma_b=c["sigma_b"]) if init == "scaled_normal" else {}
    if init in _NORMAL_INITS and _init_reproduces_mlp(init):
        plan, n = _normal_plan(init, sizes, c["sigma_w"], c["sigma_b"])
        stream = _STREAMS.get(c["seed"], n)
        if stream is not None:
            pool = getattr(_LOCAL, "nets", None)
            if pool is None:
                pool = _LOCAL.nets = OrderedDict()
            key = (tuple(sizes), c["activation"], bn, c["dtype"])
            net = pool.pop(key, None)
            if net is None:
                net = _bare_mlp()(sizes, activation=c["activation"], init=init,
                                  dtype=c["dtype"], batch_norm=bn)
            pool[key] = net
            size = lambda m: m.params.nbytes + m.grads.nbytes
            total = sum(size(m) for m in pool.values())
            while total > _NET_POOL_BYTES and len(pool) > 1:
                _, old = pool.popitem(last=False)
                total -= size(old)
            net.init = init
            net.train()
            _fill_params(net, plan, stream, bn)
            return net
    return MLP(sizes, activation=c["activation"], init=init, dtype=c["dtype"], seed=c["seed"],
               batch_norm=bn, **extra)


def _sgd(net, lr, dtype):
    net.params -= np.asarray(lr, dtype=dtype) * net.grads


def _unscale_grads(net, scales):
    """log_scale: stored gradients = true ones * 2**-scale[l]; make them the true ones."""
    L = net.num_layers
    hidden_bn = list(range(L - 1)) if len(net.bn_gamma_grads) else []
    for l in range(L):
        e = int(scales[l])
        if e == 0:
            continue
        grads = [net.weight_grads[l], net.bias_grads[l]]
        if l in hidden_bn:
            grads += [net.bn_gamma_grads[l], net.bn_beta_grads[l]]
        for g in grads:
            np.ldexp(g, e, out=g)


def run_config(c):
    """Run one configuration (a dict from sweep_configs) -> float64 array (steps * L, len(STAT_COLUMNS)),
    rows in (step, layer) order, columns STAT_COLUMNS."""
    from .mlp import MLP
    from .recurrent import LSTM, RNN

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
                    _unscale_grads(net, rep.grad_log2_scale)
                _sgd(net, lr, dtype)
            if digits:
                x, target = _digits_batch(c, s)
                rep = net.step(x, target, loss="cross_entropy", log_scale=c["log_scale"])
            else:
                x, target = _gaussian_batch(c, s, (B, W), (B, W))
                rep = net.step(x, target, loss="mse", log_scale=c["log_scale"])
            block = out[s * L:(s + 1) * L]
            block[:, 0] = rep.loss
            block[:, _MLP_COLS] = np.column_stack([getattr(rep, f) for f in REPORT_FIELDS])
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
            x_seq = np.ascontiguousarray(x.reshape(B, 8, 8).transpose(1, 0, 2))
            h_seq, _ = net.forward(x_seq)[:2]
            rrep = readout.step(np.ascontiguousarray(h_seq[-1]), labels, loss="cross_entropy",
                                input_grad=True)
            rep = net.backward(None, grad_hT=readout.input_grad)
            loss = rrep.loss
        else:
            x_seq, target = _gaussian_batch(c, s, (L, B, W), (B, W))
            rep = net.step(x_seq, target, loss="mse")
            loss = rep.loss
        block = out[s * L:(s + 1) * L]
        block[:, 0] = loss
        block[:, _SEQ_COLS] = np.column_stack(
            [getattr(rep, f) for f in RECURRENT_FIELDS] + [rep.saturated_fraction])
        block[:, _SEQ_SCALAR_COLS] = [rep.weight_ih_grad_norm, rep.weight_hh_grad_norm,
                                      rep.bias_grad_norm, rep.log10_weight_ih_grad_norm,
                                      rep.log10_weight_hh_grad_norm, rep.log10_bias_grad_norm]
    return out


def _limit_blas(threads):
    if not threads:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is in the sweep extra
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(threads), user_api="blas")


def run_batch(configs, blas_threads=None):
    """Run a batch of configurations (one executor task) -> [(config_id, array)].
    blas_threads: limit BLAS threads of this process while the batch runs (process executors)."""
    results = []
    with _limit_blas(blas_threads):
        for c in configs:
            try:
                results.append((c["config_id"], run_config(c)))
            except Exception as err:
                shown = {k: v for k, v in c.items() if k != "config_id"}
                raise RuntimeError(f"vgkern.sweep: configuration {c['config_id']} {shown} failed: "
                                   f"{type(err).__name__}: {err}") from err
    return results


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def arrow_schema():
    import pyarrow as pa

    types = {_STR: pa.string(), _INT: pa.int64(), _FLOAT: pa.float64(), _BOOL: pa.bool_()}
    fields = [pa.field("config_id", pa.string())]
    fields += [pa.field(k, types[t]) for k, t in CONFIG_TYPES.items()]
    fields += [pa.field(k, pa.int64()) for k in ROW_COLUMNS]
    fields += [pa.field(k, pa.float64()) for k in STAT_COLUMNS]
    return pa.schema(fields, metadata={"vgkern_sweep_schema": str(SCHEMA_VERSION)})


def _arrow_table(results):
    """[(config, array)] -> pyarrow Table with the sweep schema."""
    import pyarrow as pa

    schema = arrow_schema()
    counts = np.array([a.shape[0] for _, a in results], dtype=np.int64)
    stats = (np.concatenate([a for _, a in results]) if results
             else np.empty((0, len(STAT_COLUMNS))))
    cols = {}
    cfgs = [c for c, _ in results]
    rep = lambda vals, dt: np.repeat(np.array(vals, dtype=dt), counts)
    cols["config_id"] = pa.array(rep([c["config_id"] for c in cfgs], object), pa.string())
    for key, kind in CONFIG_TYPES.items():
        vals = [c[key] for c in cfgs]
        if kind == _STR:
            cols[key] = pa.array(rep(vals, object), pa.string())
        else:
            cols[key] = rep(vals, {_INT: np.int64, _FLOAT: np.float64, _BOOL: np.bool_}[kind])
    steps, layers = [], []
    for c, a in results:
        L = a.shape[0] // c["steps"]
        steps.append(np.repeat(np.arange(c["steps"], dtype=np.int64), L))
        layers.append(np.tile(np.arange(L, dtype=np.int64), c["steps"]))
    cols["step"] = np.concatenate(steps) if steps else np.empty(0, np.int64)
    cols["layer"] = np.concatenate(layers) if layers else np.empty(0, np.int64)
    stats = np.asfortranarray(stats)
    for j, name in enumerate(STAT_COLUMNS):
        cols[name] = stats[:, j]
    return pa.table(cols, schema=schema)


def _to_pandas(table):
    return table.to_pandas()


def _format_of(path):
    name = os.fspath(path).lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    raise _error(f"output {os.fspath(path)!r}: unknown format; the name must end in .parquet "
                 "(or .pq) or .csv")


def _read_file(path, fmt, schema, what="output"):
    """Read a results file written by a sweep, checking its schema against ours."""
    path = os.fspath(path)
    try:
        # One open file for the schema and the data: a sweep running at the same time replaces
        # the output with os.replace, and reading it by name twice could mix two versions.
        with open(path, "rb") as f:
            return _read_open_file(f, path, fmt, schema, what)
    except OSError as err:
        raise _error(f"{what} file {path!r} could not be read ({err}); pass another path or "
                     "overwrite it (resume=False / --overwrite)") from err


def _read_open_file(f, path, fmt, schema, what):
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            found = pq.read_schema(f)
        else:
            names = next(csv.reader([f.readline().decode("utf-8")]), [])
            found = pa.schema([pa.field(n, schema.field(n).type if n in schema.names
                                        else pa.string()) for n in names])
    except (OSError, UnicodeDecodeError, pa.ArrowException, ValueError) as err:
        raise _error(f"{what} file {path!r} exists but is not a readable {fmt.upper()} file "
                     f"({err}); pass another path or overwrite it (resume=False / --overwrite)") from err
    missing = [n for n in schema.names if n not in found.names]
    extra = [n for n in found.names if n not in schema.names]
    wrong = [n for n in schema.names if n in found.names and found.field(n).type != schema.field(n).type]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing columns {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if extra:
            parts.append(f"extra columns {extra[:8]}{' ...' if len(extra) > 8 else ''}")
        if wrong:
            parts.append("different types for " + ", ".join(
                f"{n} ({found.field(n).type} instead of {schema.field(n).type})" for n in wrong[:8]))
        raise _error(f"{what} file {path!r} has a different schema than this version of "
                     f"vgkern.sweep writes ({'; '.join(parts)}); pass another path or overwrite it "
                     "(resume=False / --overwrite)")
    f.seek(0)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(f).select(schema.names)
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(f, convert_options=pcsv.ConvertOptions(
                column_types=schema, strings_can_be_null=True)).select(schema.names)
        return table.cast(schema)
    except (OSError, pa.ArrowException, ValueError) as err:
        raise _error(f"{what} file {path!r} could not be read ({err}); pass another path or "
                     "overwrite it (resume=False / --overwrite)") from err


def read_results(path):
    """Read a sweep's results file (.parquet or .csv) into a DataFrame with the sweep's dtypes."""
    _require("pandas", "pyarrow", why="vgkern.read_results")
    fmt = _format_of(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vgkern.read_results: no such file: {os.fspath(path)!r}")
    return _to_pandas(_read_file(path, fmt, arrow_schema(), what="results"))


def _fsync_dir(folder):
    if os.name != "posix":  # pragma: no cover
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(table, path, fmt):
    """Write a table to path atomically: temp file in the same folder, fsync, os.replace."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                pq.write_table(table, f, compression="zstd")
            else:
                import pyarrow.csv as pcsv

                pcsv.write_csv(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


# --------------------------------------------------------------------------------------------
# Journal: checksummed records, one per finished configuration, appended with one write()
# --------------------------------------------------------------------------------------------

_JOURNAL_MAGIC = b"VGKERN-SWEEP-JOURNAL 1\n"
_REC = struct.Struct("<4sIQ32s")  # magic, header length, data length, sha256(header + data)
_REC_MAGIC = b"REC1"
_COLUMNS_TAG = hashlib.sha256(json.dumps(list(COLUMNS)).encode()).hexdigest()[:16]


def _journal_record(config, array):
    header = json.dumps({"config": config, "rows": int(array.shape[0]), "columns": _COLUMNS_TAG},
                        separators=(",", ":")).encode()
    data = np.ascontiguousarray(array, dtype="<f8").tobytes()
    digest = hashlib.sha256(header + data).digest()
    return _REC.pack(_REC_MAGIC, len(header), len(data), digest) + header + data


def _nan_config(cfg):
    return {k: (math.nan if CONFIG_TYPES.get(k) == _FLOAT and v is None else v)
            for k, v in cfg.items()}


def _read_journal(f, path):
    """-> ([(config, array)], offset of the end of the last complete record)."""
    f.seek(0)
    blob = f.read()
    if not blob:
        return [], 0
    if not blob.startswith(_JOURNAL_MAGIC[:len(blob)]) or (
            len(blob) > len(_JOURNAL_MAGIC) and not blob.startswith(_JOURNAL_MAGIC)):
        raise _error(f"{path!r} is not a vgkern sweep journal; move it away or overwrite "
                     "(resume=False / --overwrite)")
    pos, records = len(_JOURNAL_MAGIC), []
    while pos + _REC.size <= len(blob):
        magic, hlen, dlen, digest = _REC.unpack_from(blob, pos)
        end = pos + _REC.size + hlen + dlen
        if magic != _REC_MAGIC or end > len(blob):
            break
        body = blob[pos + _REC.size:end]
        if hashlib.sha256(body).digest() != digest:
            break  # cut short or damaged by a kill: this and anything after it is dropped
        header = json.loads(body[:hlen])
        if header.get("columns") != _COLUMNS_TAG:
            raise _error(f"journal {path!r} was written by another version of vgkern.sweep "
                         "(different columns); delete it or overwrite (resume=False / --overwrite)")
        array = np.frombuffer(body[hlen:], dtype="<f8").reshape(header["rows"], len(STAT_COLUMNS))
        records.append((_nan_config(header["config"]), array.astype(np.float64)))
        pos = end
    return records, pos


class _Store:
    """The output file plus its journal; see the module docstring."""

    def __init__(self, path, resume, flush_interval):
        import pyarrow as pa

        self.path = os.fspath(path)
        self.fmt = _format_of(self.path)
        self.journal_path = self.path + ".journal"
        self.flush_interval = float(flush_interval)
        self.schema = arrow_schema()
        self._pa = pa
        folder = os.path.dirname(os.path.abspath(self.path))
        if os.path.isdir(self.path):
            raise _error(f"output {self.path!r} is a directory; give a file name ending in "
                         ".parquet or .csv")
        if not os.path.isdir(folder):
            raise _error(f"output {self.path!r}: the folder {folder!r} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK) or (
                os.path.exists(self.path) and not os.access(self.path, os.W_OK)):
            raise _error(f"output {self.path!r} is not writable (permission denied on "
                         f"{folder!r} or the file)")
        # The journal: create (or open) and lock it first, so that two sweeps never share an
        # output; then read what is there.
        created = not os.path.exists(self.journal_path)
        try:
            self._journal = open(self.journal_path, "a+b")
        except OSError as err:
            raise _error(f"output {self.path!r}: cannot create the journal "
                         f"{self.journal_path!r}: {err}") from err
        try:
            self._lock()
            existing = None
            if resume and os.path.exists(self.path):
                existing = _read_file(self.path, self.fmt, self.schema)
            records = []
            if resume:
                records, _ = _read_journal(self._journal, self.journal_path)
            self._chunks = [existing] if existing is not None and existing.num_rows else []
            self.done = {}  # config_id -> None for configs in the output or the journal
            if self._chunks:
                for cid in existing.column("config_id").unique().to_pylist():
                    self.done[cid] = None
            self._pending = []  # (config, array) not yet in an Arrow chunk
            for cfg, arr in records:
                if cfg["config_id"] not in self.done:
                    self.done[cfg["config_id"]] = None
                    self._pending.append((cfg, arr))
            # Consolidate: the output holds everything finished so far (this also proves that
            # it can be written), then the journal is emptied.
            if self._pending or existing is None:
                self.flush()
            else:
                self._reset_journal()
        except BaseException:
            self._journal.close()
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(self.journal_path)
            raise
        self._last_flush_time = time.monotonic()

    def _lock(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            return
        try:
            fcntl.flock(self._journal.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise _error(f"another vgkern sweep is writing {self.path!r} (its journal "
                         f"{self.journal_path!r} is locked)") from err

    def add(self, config, array):
        """Record a finished configuration: one write() to the journal, then maybe a rebuild."""
        record = _journal_record({k: (None if isinstance(v, float) and math.isnan(v) else v)
                                  for k, v in config.items()}, array)
        fd = self._journal.fileno()
        view = memoryview(record)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        self.done[config["config_id"]] = None
        self._pending.append((config, array))
        if time.monotonic() - self._last_flush_time >= self._flush_every:
            self.flush()

    @property
    def _flush_every(self):
        # at least flush_interval, and at least 4x the last rebuild's duration (so that
        # rebuilding a large file never takes more than ~20% of the time)
        return max(self.flush_interval, 4 * getattr(self, "_last_flush_cost", 0.0))

    def table(self):
        if self._pending:
            self._chunks.append(_arrow_table(self._pending))
            self._pending = []
        if not self._chunks:
            return self.schema.empty_table()
        return self._pa.concat_tables(self._chunks) if len(self._chunks) > 1 else self._chunks[0]

    def flush(self, table=None):
        t0 = time.monotonic()
        _atomic_write(self.table() if table is None else table, self.path, self.fmt)
        self._reset_journal()  # everything is in the output now
        self._last_flush_time = time.monotonic()
        self._last_flush_cost = self._last_flush_time - t0

    def _reset_journal(self):
        """Empty the journal, keeping its header and the lock (the file is in append mode)."""
        self._journal.truncate(0)
        self._journal.write(_JOURNAL_MAGIC)
        self._journal.flush()
        self._last_flush_time = time.monotonic()

    def close(self, final_table=None):
        try:
            if final_table is not None:
                self._chunks, self._pending = [final_table], []
            self.flush()
            # the output holds everything: the journal is no longer needed
            with contextlib.suppress(OSError):
                os.unlink(self.journal_path)
        finally:
            self._journal.close()

    def abandon(self):
        """Close without a rebuild (an error while rebuilding): the journal keeps the rest."""
        with contextlib.suppress(Exception):
            self._journal.close()


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return os.cpu_count() or 1


def _batches(configs, batch_size):
    for i in range(0, len(configs), batch_size):
        yield configs[i:i + batch_size]


def _executor_workers(executor):
    n = getattr(executor, "_max_workers", None)
    if n:
        return int(n)
    client = getattr(executor, "_client", None)  # distributed.cfexecutor.ClientExecutor
    if client is not None:
        with contextlib.suppress(Exception):
            info = client.scheduler_info()
            return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))
    return _cpu_count()


def _run(todo, *, workers, executor, batch_size, blas_threads, on_result):
    """Run configurations, calling on_result(config, array) in this thread as each finishes."""
    by_id = {c["config_id"]: c for c in todo}
    if executor is None and workers == 1:  # serial, in this thread
        with _limit_blas(blas_threads or 1):
            for c in todo:
                for cid, arr in run_batch([c]):
                    on_result(by_id[cid], arr)
        return

    own = executor is None
    threads = own or isinstance(executor, cf.ThreadPoolExecutor)
    n_workers = workers if own else _executor_workers(executor)
    if batch_size is None:  # threads: one configuration per task; processes: ~8 tasks per worker
        batch_size = 1 if threads else max(1, min(64, len(todo) // (8 * n_workers)))
    if own:
        executor = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vgkern-sweep")
    # Threads share one process: limit BLAS once, here. Other executors limit it in the task.
    limit_here = _limit_blas(blas_threads or 1) if threads else contextlib.nullcontext()
    task_threads = None if threads else (blas_threads or 1)
    window = max(4, 3 * n_workers)  # tasks in flight: enough to keep workers busy, few to cancel
    batches = _batches(todo, batch_size)
    pending = set()

    def fill():
        while len(pending) < window:
            batch = next(batches, None)
            if batch is None:
                return
            pending.add(executor.submit(run_batch, batch, task_threads))

    def harvest(future):
        for cid, arr in future.result():
            on_result(by_id[cid], arr)

    try:
        with limit_here:
            fill()
            while pending:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    pending.discard(future)
                    harvest(future)
                fill()
    except BaseException:
        for future in pending:
            future.cancel()
        # keep what finished in the meantime
        for future in list(pending):
            if future.done() and not future.cancelled() and future.exception() is None:
                with contextlib.suppress(Exception):
                    harvest(future)
        raise
    finally:
        if own:
            executor.shutdown(wait=False, cancel_futures=True)


def _progress_bar(total, progress, resumed):
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        if progress:
            raise ImportError("progress=True needs tqdm: pip install 'vgkern[sweep]'") from None
        return None
    return tqdm(total=total, unit="config", desc="vgkern sweep", file=sys.stderr,
                dynamic_ncols=True, smoothing=0.05,
                postfix={"resumed": resumed} if resumed else None)


def sweep(grid=None, *, out=None, resume=True, workers=None, executor=None, batch_size=None,
          progress=None, flush_interval=2.0, blas_threads=None, log=None, **keys):
    """Run a grid of configurations and return the tidy table (pandas DataFrame): one row per
    (configuration, step, layer), see the module docstring for the grid keys and the columns.

    grid: a dict {key: value or list of values}, or a list of such dicts (their union);
        keyword arguments are merged into every grid dict: sweep(depth=[5, 10], seed=range(3)).
    out: a .parquet or .csv path: finished configurations are saved as they finish (journal +
        atomic rebuilds, see the module docstring); resume=True (default) skips configurations
        already there, resume=False starts the file afresh.
    workers: threads (default: the number of cores); each configuration runs in one thread with
        the GIL released inside vgkern and BLAS limited to blas_threads (default 1: at the
        widths of a sweep, one configuration per core beats threaded small GEMMs; raise it for
        wide layers). workers=1 runs everything in this thread; ignored when executor is given.
    executor: any concurrent.futures.Executor (e.g. ProcessPoolExecutor, or a Dask
        client.get_executor()); one task per batch_size configurations (default: 1 for threads,
        about 8 tasks per worker otherwise); results stream back and are saved as they arrive.
    progress: a tqdm bar on stderr (None: only when stderr is a terminal).
    flush_interval: seconds between rebuilds of the output file (0: after every configuration).
    log: a callable taking one line of text (e.g. print) for messages such as what was resumed.

    Returns the rows of the grid's configurations in grid order (including resumed ones). On
    Ctrl-C raises SweepInterrupted (a KeyboardInterrupt) after saving everything finished.
    """
    _require("pandas", "pyarrow")
    configs = sweep_configs(grid, **keys)  # checks the grid first: errors before any work
    if workers is None:
        workers = _cpu_count()
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise _error(f"workers must be an integer >= 1, got {workers!r}")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise _error(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
            batch_size, numbers.Integral) or batch_size < 1):
        raise _error(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if blas_threads is not None and (isinstance(blas_threads, bool) or not isinstance(
            blas_threads, numbers.Integral) or blas_threads < 1):
        raise _error(f"blas_threads must be an integer >= 1, got {blas_threads!r}")
    if isinstance(flush_interval, bool) or not isinstance(flush_interval, numbers.Real) or not (
            _float(flush_interval) >= 0):
        raise _error(f"flush_interval must be a number of seconds >= 0, got {flush_interval!r}")
    flush_interval = _float(flush_interval)
    for name, value in (("resume", resume), ("progress", progress)):
        if not (value is None and name == "progress") and not isinstance(value, (bool, np.bool_)):
            raise _error(f"{name} must be True or False, got {value!r}")
    if log is not None and not callable(log):
        raise _error(f"log must be a callable taking one line of text (e.g. print), got "
                     f"{type(log).__name__}")
    if out is not None:
        try:
            out = os.fsdecode(os.fspath(out))
        except TypeError:
            raise _error(f"out must be a path (str or os.PathLike) ending in .parquet or .csv, "
                         f"got {type(out).__name__}") from None
        _format_of(out)
    if any(c["data"] == "digits" for c in configs):
        digits_data()  # fails early without scikit-learn, and loads once for all threads
    if progress:
        _require("tqdm", why="progress=True")

    store = _Store(out, resume, flush_interval) if out is not None else None
    results = {}  # config_id -> array, for configurations finished in this call
    done_before = set(store.done) if store else set()
    todo = [c for c in configs if c["config_id"] not in done_before]
    todo.sort(key=_cost, reverse=True)  # longest first: no straggler at the end
    resumed = len(configs) - len(todo)
    if log is not None and store is not None and resumed:
        log(f"resuming: {resumed} of {len(configs)} configurations are already finished in "
            f"{store.path}; running the other {len(todo)}")
    bar = _progress_bar(len(todo), progress, resumed)

    def on_result(config, array):
        results[config["config_id"]] = array
        if store is not None:
            store.add(config, array)
        if bar is not None:
            bar.update(1)

    interrupted = None
    try:
        _run(todo, workers=workers, executor=executor, batch_size=batch_size,
             blas_threads=blas_threads, on_result=on_result)
    except KeyboardInterrupt as err:
        interrupted = err
    except BaseException:
        if store is not None:
            try:
                store.close()
            except BaseException:
                store.abandon()
        raise
    finally:
        if bar is not None:
            bar.close()

    grid_table = _grid_table(configs, results, store)
    if store is not None:
        # The output is rebuilt from `results` (filled before each journal write), never from
        # the store's own lists alone: a Ctrl-C can land inside store.add, after the record
        # reached the journal but before the store took note of it.
        ids = set(c["config_id"] for c in configs)
        others = _filter_ids(store.table(), ids, keep=False)
        final = (grid_table if others.num_rows == 0
                 else store._pa.concat_tables([grid_table, others]))
        store.close(final)
    frame = _to_pandas(grid_table)
    if interrupted is not None:
        finished = sum(1 for c in configs if c["config_id"] in results or c["config_id"] in done_before)
        raise SweepInterrupted(frame, finished, len(configs), out) from None
    return frame


def _filter_ids(table, ids, keep=True):
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.is_in(table.column("config_id"), value_set=pa.array(sorted(ids), pa.string()))
    return table.filter(mask if keep else pc.invert(mask))


def _grid_table(configs, results, store):
    """The grid's finished configurations, in grid order, as an Arrow table."""
    import pyarrow as pa

    fresh = [(c, results[c["config_id"]]) for c in configs if c["config_id"] in results]
    new = _arrow_table(fresh)
    if store is None:
        return new
    old_ids = [c["config_id"] for c in configs
               if c["config_id"] in store.done and c["config_id"] not in results]
    if not old_ids:
        return new
    old = _filter_ids(store.table(), set(old_ids))
    both = pa.concat_tables([old, new])
    # stable sort by position in the grid (rows of one configuration keep their order)
    pos = {c["config_id"]: i for i, c in enumerate(configs)}
    keys = np.array([pos[c] for c in both.column("config_id").to_pylist()], dtype=np.int64)
    return both.take(pa.array(np.argsort(keys, kind="stable")))


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ("slope", "gain", "log10_ratio_first_last", "ratio_first_last", "num_layers",
                   "gain_stat")


def sweep_summary(table):
    """Per (configuration, step): the fitted per-layer gain and the first/last ratio.

    slope: least-squares slope of log10 ||dL/dz_l|| (MLP; LSTM/RNN: log10 ||dL/dx_t||) against
        the layer (time step) index, over the finite values: orders of magnitude per layer,
        positive when the gradient is smaller at the input side (vanishing).
    gain: 10 ** -slope, the factor by which one layer (step) of backpropagation multiplies the
        gradient norm: < 1 vanishing, > 1 exploding, 1 for a perfectly balanced network.
    log10_ratio_first_last, ratio_first_last: norm at layer 0 over norm at the last layer.
    gain_stat: the column the gain was fitted to. Columns: the configuration's, then 'step',
    'loss' and the above. NaN where fewer than two finite values exist.
    """
    import pandas as pd

    df = table if isinstance(table, pd.DataFrame) else _to_pandas(table)
    if not len(df):
        return pd.DataFrame(columns=["config_id", *CONFIG_COLUMNS, "step", "loss", *SUMMARY_COLUMNS])
    df = df.reset_index(drop=True)
    is_mlp = (df["model"] == "mlp").to_numpy()
    y = np.where(is_mlp, df["log10_preact_grad_norm"].to_numpy(np.float64),
                 df["log10_x_grad_norm"].to_numpy(np.float64))
    x = df["layer"].to_numpy(np.float64)
    codes, uniques = pd.factorize(pd.MultiIndex.from_arrays([df["config_id"], df["step"]]),
                                  sort=False)
    n_groups = len(uniques)
    # least squares over the finite values of each group, from sums
    ok = np.isfinite(y)
    xs, ys = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    sums = lambda v: np.bincount(codes, weights=v, minlength=n_groups)
    n, sx, sy, sxx, sxy = sums(ok.astype(np.float64)), sums(xs), sums(ys), sums(xs * xs), sums(xs * ys)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = n * sxx - sx * sx
        slope = np.where((n >= 2) & (denom > 0), (n * sxy - sx * sy) / denom, np.nan)
    # first and last layer of each group
    order = np.lexsort((x, codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)] - 1
    first, last = order[starts], order[ends]
    out = df.loc[first, ["config_id", *CONFIG_COLUMNS, "step", "loss"]].reset_index(drop=True)
    with np.errstate(invalid="ignore", over="ignore"):
        out["slope"] = slope
        out["gain"] = np.power(10.0, -slope)
        log_ratio = y[first] - y[last]
        out["log10_ratio_first_last"] = log_ratio
        out["ratio_first_last"] = np.power(10.0, log_ratio)
    out["num_layers"] = np.bincount(codes, minlength=n_groups)
    out["gain_stat"] = np.where(out["model"].to_numpy() == "mlp", GAIN_STAT["mlp"], GAIN_STAT["lstm"])
    return out
