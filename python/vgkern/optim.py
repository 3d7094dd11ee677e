"""vgkern.optim: SGD, Adam and AdamW with torch.optim's semantics, as one native pass.

    opt = vgkern.optim.Adam(net, lr=1e-3)
    for x, y in batches:
        rep = net.step(x, y)
        opt.step(rep)          # updates net.params, fills rep's update statistics

`opt.step(rep)` is one native call (csrc/ops/optim.h) over the net's flat parameter buffer: it
reads each gradient once (unscaled by 2**grad_log2_scale for a log-scale MLP report), updates the
optimizer state and the parameter, and computes per tensor, in float64 and in the same pass, the
statistics it writes into `rep`: for an MLP per layer weight_/bias_ update_norm, update_ratio,
norm, change (and log10_ twins); for an LSTM/RNN the same per weight matrix (weight_ih_,
weight_hh_, bias_). Batch-norm gamma and beta are updated too (without statistics). The
optimizer's state lives on the net's device; the net keeps a reference to its optimizer, so
`net.state()` and pickling carry it (see NativeParameters).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Dict, Optional, cast

import numpy as np

from . import _checks, _core
from ._params import NativeParameters
from .mlp import MLP
from .report import FIELDS, SEQUENCE_UPDATE_FIELDS, GradReport, SequenceReport

# The columns of a native statistics row (ops/optim.h, UpdateStat), as report field suffixes.
_STAT_SUFFIXES = ("update_norm", "update_ratio", "norm", "change")
_MLP_TENSORS = ("weight", "bias")  # stats rows 2l, 2l + 1 of layer l
_RECURRENT_TENSORS = ("weight_ih", "weight_hh", "bias")  # stats rows 0, 1, 2

_STATE_FORMAT = 1


def _field(tensor, suffix):
    """weight + update_norm -> weight_update_norm; weight + norm -> weight_norm."""
    return f"{tensor}_{suffix}"


assert all(_field(t, s) in FIELDS for t in _MLP_TENSORS for s in _STAT_SUFFIXES)
assert all(_field(t, s) in SEQUENCE_UPDATE_FIELDS for t in _RECURRENT_TENSORS
           for s in _STAT_SUFFIXES)


def _segments(net):
    """The tensors of net's flat buffer: (S, 3) int64 rows [offset, count, stats row (-1: none)],
    the layer of each (S,) (whose grad_log2_scale applies; MLP only), and the stats rows."""
    rows, layers = [], []
    if isinstance(net, MLP):
        sizes = net.sizes
        for l, offsets in enumerate(net._core.layout):
            fan_in, fan_out = sizes[l], sizes[l + 1]
            for kind, count, stats_row in (("weight", fan_out * fan_in, 2 * l),
                                           ("bias", fan_out, 2 * l + 1),
                                           ("gamma", fan_out, -1), ("beta", fan_out, -1)):
                if offsets[kind] >= 0:
                    rows.append((offsets[kind], count, stats_row))
                    layers.append(l)
        num_rows = 2 * len(net._core.layout)
    else:
        G, I, H = net._gates * net.hidden_size, net.input_size, net.hidden_size
        rows = [(0, G * I, 0), (G * I, G * H, 1), (G * (I + H), G, 2)]
        layers = [0, 0, 0]
        num_rows = 3
    return np.array(rows, dtype=np.int64).reshape(-1, 3), np.array(layers, dtype=np.int64), num_rows


class Optimizer:
    """What SGD, Adam and AdamW share: the net, lr (settable between steps) or a schedule,
    step_count, the state buffers (on the net's device), step(rep), state_dict(). Making one
    attaches it to the net (net.optimizer), replacing any earlier one there."""

    _rule: Optional[str] = None  # the native rule: "sgd", "adam", "adamw"
    # the state buffers by name, on the net's device (None while only _host_buffers exist)
    _buffers: Optional[Dict[str, Any]] = None

    def __init__(self, net: NativeParameters, lr: float,
                 schedule: Optional[Callable[[int], float]], hyper: Dict[str, Any]) -> None:
        name = type(self).__name__
        if not isinstance(net, NativeParameters):
            raise TypeError(f"{name}: net must be a vgkern.MLP, LSTM or RNN, got "
                            f"{type(net).__name__}")
        self.net = net
        self.lr = lr
        if schedule is not None and not callable(schedule):
            raise TypeError(f"{name}: schedule must be a callable step -> lr (or None), got "
                            f"{type(schedule).__name__}")
        self.schedule = schedule
        self._hyper = hyper
        self.step_count = 0
        self._host_buffers = {n: np.zeros_like(np.asarray(net._core.params))
                              for n in self._buffer_names()}
        self._buffers = None
        self._attach()

    # -- hyperparameters --------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate of the next step (with a schedule: of the last one)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _nonnegative(f"{type(self).__name__}: lr", value)

    def _init(self, net, lr, schedule, hyper):
        """The subclasses' __init__ ends here with checked hyperparameters."""
        if isinstance(net, _Checking):  # load_state_dict checking hyperparameters
            self.lr = lr
            self._hyper = hyper
            return
        Optimizer.__init__(self, net, lr, schedule, hyper)

    def _buffer_names(self):
        raise NotImplementedError  # pragma: no cover - every optimizer defines it

    def _native_hyper(self):
        """(momentum, dampening, nesterov, weight_decay, beta1, beta2, eps) for the native step."""
        h = self._hyper
        return (h.get("momentum", 0.0), h.get("dampening", 0.0), h.get("nesterov", False),
                h["weight_decay"], *h.get("betas", (0.9, 0.999)), h.get("eps", 1e-8))

    # -- the net and the buffers ------------------------------------------------------------

    def _attach(self):
        """Puts the state buffers on the net's device and makes this the net's optimizer, once
        both are complete (unpickling builds one before the other: each calls this)."""
        net = self.__dict__.get("net")
        if net is None or "_core" not in net.__dict__ or "_host_buffers" not in self.__dict__:
            return
        if self._buffers is None:
            on_cuda = net._on_cuda()
            self._buffers = {n: _core.to_device(a) if on_cuda else a
                             for n, a in self._host_buffers.items()}
            self._host_buffers = {}
            self._segments, self._segment_layers, rows = _segments(net)
            self._table = np.empty((rows, len(_STAT_SUFFIXES)))
            self._is_mlp = isinstance(net, MLP)
        net._optimizer = self

    def _host(self, name):
        assert self._buffers is not None, "the optimizer is not attached to its net"
        buffer = self._buffers[name]
        return buffer.copy() if isinstance(buffer, np.ndarray) else buffer.numpy()

    # -- the step ---------------------------------------------------------------------------

    def step(self, rep: GradReport | SequenceReport) -> GradReport | SequenceReport:
        """One optimizer step from the gradients of the net's last step()/backward() (one
        native call: net.params (N,) and the state buffers (N,) updated in place), with this
        step's statistics written into that call's report. Returns rep.

        rep: the report of that call. MLP: a GradReport whose grad_log2_scale (L,) unscales a
            log-scale backward's gradients; it gets, as (L,) float64 arrays, weight_update_norm,
            weight_update_ratio, weight_norm, weight_change, the same four bias_ ones (NaN for
            batch-norm hidden layers) and their log10_ twins. LSTM/RNN: a SequenceReport; it gets
            floats weight_ih_update_norm, ... bias_change (the four per weight_ih, weight_hh,
            bias) and their log10_ twins."""
        scales = self._scales(rep)
        if self.schedule is not None:
            self.lr = self.schedule(self.step_count)
        step = self.step_count + 1
        momentum, dampening, nesterov, decay, beta1, beta2, eps = self._native_hyper()
        b = self._buffers
        assert b is not None, "the optimizer is not attached to its net"
        names = ("momentum_buffer", "") if self._rule == "sgd" else ("exp_avg", "exp_avg_sq")
        first, second = (b.get(n) for n in names)
        net = self.net
        if net._reference is None:
            net.set_reference()
        _core.optim_step(net._core, self._rule, self._lr, momentum, dampening, nesterov, decay,
                         beta1, beta2, eps, step, first, second, net._reference,
                         self._segments, scales, self._table)
        self.step_count = step
        self._write(rep)
        return rep

    def _scales(self, rep):
        """Per segment, the power of two the stored gradients are scaled by (checked rep)."""
        name = f"{type(self).__name__}.step"
        kind = GradReport if self._is_mlp else SequenceReport
        if not isinstance(rep, kind):
            raise TypeError(f"{name}: rep must be the {kind.__name__} of this "
                            f"{type(self.net).__name__}'s last step() or backward(), got "
                            f"{type(rep).__name__}")
        if id(rep) != self.net._last_report:
            raise ValueError(f"{name}: rep is not the report of this {type(self.net).__name__}'s "
                             "last step() or backward() (a report of another net, or an older "
                             "one): pass the report whose gradients the net holds")
        if not self._is_mlp:
            return np.zeros(len(self._segments), dtype=np.int64)
        scales = np.asarray(rep.grad_log2_scale)
        if not (np.isfinite(scales).all() and (scales == np.round(scales)).all()):
            raise ValueError(f"{name}: rep.grad_log2_scale must hold integers, got {scales}")
        return scales.astype(np.int64)[self._segment_layers]

    def _write(self, rep):
        table = self._table
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log10(table)
        if self._is_mlp:
            for t, tensor in enumerate(_MLP_TENSORS):
                for c, suffix in enumerate(_STAT_SUFFIXES):
                    name = _field(tensor, suffix)
                    getattr(rep, name)[...] = table[t::2, c]
                    getattr(rep, "log10_" + name)[...] = logs[t::2, c]
        else:
            for t, tensor in enumerate(_RECURRENT_TENSORS):
                for c, suffix in enumerate(_STAT_SUFFIXES):
                    name = _field(tensor, suffix)
                    setattr(rep, name, float(table[t, c]))
                    setattr(rep, "log10_" + name, float(logs[t, c]))

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """{"type", "format", "step_count", "lr", "hyper": {...}, "buffers": {name: (N,)}}: host
        copies (buffers: flat arrays of the net's dtype laid out as net.params (N,)), for
        load_state_dict() on an optimizer of the same type on a net of the same shape and dtype
        (either device). The schedule is not included (it is code)."""
        return {"type": type(self).__name__, "format": _STATE_FORMAT,
                "step_count": self.step_count, "lr": self._lr, "hyper": dict(self._hyper),
                "buffers": {n: self._host(n) for n in self._buffers or ()}}

    def load_state_dict(self, state: dict) -> Optimizer:
        """Writes a state_dict() into this optimizer after checking all of it (type, format,
        hyperparameters, buffer names, shapes, dtypes): step count, lr, hyperparameters and the
        state buffers, as torch.optim.Optimizer.load_state_dict does. Returns self.

        state: a dict from state_dict(); its buffers (N,) as net.params."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict):
            raise TypeError(f"{name}: state must be a dict from state_dict(), got "
                            f"{type(state).__name__}")
        if state.get("type") != type(self).__name__ or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"{name}: state is of a {state.get('type')!r} (format "
                             f"{state.get('format')!r}), not of a {type(self).__name__!r} "
                             f"(format {_STATE_FORMAT})")
        step_count = _checks.size(f"{name}: state['step_count']", state["step_count"], low=0)
        # a stand-in net: the subclass's __init__ checks the hyperparameters, and builds nothing
        checker = type(self)(cast(Any, _Checking(self.net)), state["lr"], **state["hyper"])
        names = checker._buffer_names()  # those of the loaded hyperparameters (momentum or not)
        buffers = state["buffers"]
        if not isinstance(buffers, dict) or sorted(buffers) != sorted(names):
            raise ValueError(f"{name}: state['buffers'] must have the keys {sorted(names)}, "
                             f"got {sorted(buffers) if isinstance(buffers, dict) else buffers}")
        like = np.asarray(self.net._core.params)
        values = {}
        for n in names:
            value = np.asarray(buffers[n])
            if value.shape != like.shape or value.dtype != like.dtype:
                raise ValueError(f"{name}: state['buffers'][{n!r}] must be a {like.dtype} array "
                                 f"of shape {like.shape}, got {value.dtype} {value.shape}")
            values[n] = np.array(value, dtype=np.dtype(like.dtype.type))
        on_cuda = self.net._on_cuda()
        self._buffers = {n: _core.to_device(v) if on_cuda else v for n, v in values.items()}
        self._hyper, self._lr, self.step_count = checker._hyper, checker.lr, step_count
        return self

    # Pickling and copy.deepcopy: the net (which holds this optimizer: the two travel together),
    # host copies of the buffers, and the rest as they are; a schedule must be picklable.
    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("_buffers", "_segments", "_segment_layers", "_table", "_is_mlp")}
        state["_host_buffers"] = {n: self._host(n) for n in self._buffers or ()}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._buffers = None
        self._attach()  # now, or from the net's __setstate__ when the net comes second

    def __repr__(self):
        hyper = ", ".join(f"{k}={v!r}" for k, v in self._hyper.items())
        return (f"{type(self).__name__}({type(self.net).__name__}, lr={self._lr!r}, {hyper}, "
                f"step_count={self.step_count})")


class _Checking:
    """Stands in for a net while load_state_dict checks hyperparameters through __init__."""

    def __init__(self, net):
        self.net = net


def _nonnegative(what, value):
    value = _checks.real(what, value)
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return value


def _beta(what, value):
    value = _checks.real(what, value)
    if not 0 <= value < 1:
        raise ValueError(f"{what} must be in [0, 1), got {value!r}")
    return value


class SGD(Optimizer):
    """torch.optim.SGD on a vgkern net: with weight_decay g += wd * p; with momentum
    buf = g at the first step, then buf = momentum * buf + (1 - dampening) * g, and g = buf (or
    g + momentum * buf with nesterov); p -= lr * g. State: "momentum_buffer" (with momentum).
    schedule(step_count) -> lr, if given, sets lr before each step (step_count: steps taken)."""

    _rule = "sgd"

    def __init__(self, net: NativeParameters, lr: float, momentum: float = 0,
                 dampening: float = 0, nesterov: bool = False, weight_decay: float = 0, *,
                 schedule: Callable[[int], float] | None = None):
        momentum = _nonnegative("SGD: momentum", momentum)
        dampening = _checks.real("SGD: dampening", dampening)
        nesterov = _checks.flag("SGD: nesterov", nesterov)
        weight_decay = _nonnegative("SGD: weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov=True requires momentum > 0 and dampening = 0 (as "
                             f"torch.optim.SGD), got momentum={momentum!r}, "
                             f"dampening={dampening!r}")
        self._init(net, lr, schedule, dict(momentum=momentum, dampening=dampening,
                                           nesterov=nesterov, weight_decay=weight_decay))

    def _buffer_names(self):
        return ("momentum_buffer",) if self._hyper["momentum"] != 0 else ()


class Adam(Optimizer):
    """torch.optim.Adam on a vgkern net: g += wd * p (weight_decay); m = beta1 m + (1 - beta1) g,
    v = beta2 v + (1 - beta2) g^2; p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t)
    + eps), t = step_count. State: "exp_avg" (m), "exp_avg_sq" (v). schedule as for SGD."""

    _rule = "adam"

    def __init__(self, net: NativeParameters, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, *, schedule: Callable[[int], float] | None = None):
        name = type(self).__name__
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        betas = (_beta(f"{name}: betas[0]", betas[0]), _beta(f"{name}: betas[1]", betas[1]))
        eps = _nonnegative(f"{name}: eps", eps)
        weight_decay = _nonnegative(f"{name}: weight_decay", weight_decay)
        self._init(net, lr, schedule, dict(betas=betas, eps=eps, weight_decay=weight_decay))

    def _buffer_names(self):
        return ("exp_avg", "exp_avg_sq")


class AdamW(Adam):
    """torch.optim.AdamW on a vgkern net: p *= 1 - lr * weight_decay (decoupled decay, default
    1e-2), then Adam's step without weight decay in the gradient. State and schedule as Adam."""

    _rule = "adamw"

    def __init__(self, net: NativeParameters, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, schedule: Callable[[int], float] | None = None):
        super().__init__(net, lr, betas, eps, weight_decay, schedule=schedule)
