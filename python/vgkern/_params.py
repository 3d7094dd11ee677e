"""Parameters held by a native object: per-layer numpy views into one flat buffer."""
from __future__ import annotations

import numbers
from typing import Any, Dict, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _checks, _core, _cuda


class ParameterList:
    """Per-layer arrays of a net's flat buffer. On the CPU they are views: `lst[i][...] = a`
    writes in place. On CUDA each access returns read-only host copies made then (`source` is a
    function) and writes go through `write(i, value)` to the device. On both, `lst[i] = a` (and
    `net.weights = [...]`) copies `a` in after checking its shape and dtype."""

    def __init__(self, name, source, write=None):
        self._name = name
        self._source = source
        self._write = write

    @property
    def _arrays(self):
        return self._source() if callable(self._source) else self._source

    def __len__(self):
        return len(self._arrays)

    def __getitem__(self, i):
        return self._arrays[i]

    def __iter__(self):
        return iter(self._arrays)

    def __setitem__(self, i, value):
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral):
            raise TypeError(f"{self._name} indices must be integers, got {i!r} "
                            f"({type(i).__name__}); assign layers one at a time")
        target = self._arrays[i]
        self._store(i, target, _checked(f"{self._name}[{i}]", target, value))

    def assign(self, values):
        """`net.weights = [w_0, ..., w_{L-1}]`: every entry is checked before any is written."""
        arrays = self._arrays
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or (
                isinstance(values, np.ndarray) and values.ndim == 0):
            raise TypeError(f"{self._name} must be assigned a list of {len(arrays)} arrays, got "
                            f"{type(values).__name__}")
        if len(values) != len(arrays):
            raise ValueError(f"{self._name} must be assigned a list of {len(arrays)} arrays, got "
                             f"{len(values)}")
        checked = [_checked(f"{self._name}[{i}]", t, v)
                   for i, (t, v) in enumerate(zip(arrays, values))]
        for i, (target, value) in enumerate(zip(arrays, checked)):
            self._store(i, target, value)

    def _store(self, i, target, value):
        if self._write is None:
            target[...] = value
        else:
            self._write(i % len(self), value)

    def __repr__(self):
        return f"ParameterList({self._name}: {[a.shape for a in self._arrays]})"



def _checked(what, target, value):
    value = np.asarray(value)
    if value.dtype.kind not in "biufc":
        raise TypeError(f"{what} must be a numeric array of dtype {target.dtype}, got "
                        f"{type(value).__name__} of dtype {value.dtype}")
    if value.shape != target.shape:
        raise ValueError(f"{what} must have shape {target.shape}, got {value.shape}")
    if value.dtype != target.dtype:
        raise TypeError(f"{what} must have dtype {target.dtype}, got {value.dtype} "
                        "(vgkern never casts silently)")
    # numpy's own instance of the dtype: an unpickled array carries an equal but distinct one,
    # which the native write refuses (it compares dtypes by identity)
    return value.view(np.dtype(value.dtype.type))


def _copy_into(what, target, value):
    target[...] = _checked(what, target, value)


class DeviceSlice:
    """An array inside a CUDA net's flat buffer: read as a read-only host copy made at each
    access, written through the core after the checks a CPU view's assignment makes."""

    def __init__(self, core, buffer, offset, shape):
        self._core, self._buffer, self._offset, self._shape = core, buffer, offset, shape

    def get(self):
        size = int(np.prod(self._shape))
        return getattr(self._core, self._buffer)[self._offset:self._offset + size].reshape(
            self._shape)

    def set(self, what, value):
        checked = _checked(what, self.get(), value)
        self._core.write(self._buffer, self._offset, np.ascontiguousarray(checked).ravel())


class DeviceView:
    """A read-only array attribute that is a view on the CPU (kept in the instance, which shadows
    this descriptor) and a DeviceSlice in `_<name>` on CUDA (a fresh host copy at each access)."""

    def __set_name__(self, owner, name):
        self.slot = "_" + name

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self.slot).get()


class Bound:
    """A parameter attribute (a view, or a ParameterList of views, into the native buffer; on
    CUDA a DeviceSlice or a ParameterList of copies): `net.attr = value` copies value in after
    checking it, as `net.params = ...` does, instead of rebinding the name to an array the net
    never reads. `net.attr -= x` (in place, then the same object assigned back) keeps working
    on the CPU."""

    def __set_name__(self, owner, name):
        self.name, self.slot = name, "_" + name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        current = getattr(obj, self.slot)
        return current.get() if isinstance(current, DeviceSlice) else current

    def __set__(self, obj, value):
        current = getattr(obj, self.slot)
        if isinstance(current, DeviceSlice):
            current.set(self.name, value)
            return
        if value is current:
            return
        if isinstance(current, ParameterList):
            current.assign(value)
        else:
            _copy_into(self.name, current, value)


_Net = TypeVar("_Net", bound="NativeParameters")  # methods that return self


class NativeParameters:
    """Flat params/grads of a native core (self._core; on the CPU also the views self._params,
    self._grads) and the statistics switch. On CUDA both are read-only host copies made at each
    access; `net.params = new` writes to the device (`net.params -= ...` needs a CPU net)."""

    # set by the subclasses' _build
    _core: Any  # the native object (_core.MLPCore or _core.RecurrentCore)
    _config: Dict[str, Any]  # the checked constructor arguments _build took
    _params: NDArray[np.floating]  # flat views into the core's buffers (CPU)
    _grads: NDArray[np.floating]

    def _build(self, **config: Any) -> None:
        raise NotImplementedError  # every net defines it

    def _on_cuda(self):
        return getattr(self, "device", "cpu") == "cuda"

    @property
    def params(self) -> NDArray[np.floating]:
        """All parameters as one flat array, params: (P,); writes take effect (CPU)."""
        return self._core.params if self._on_cuda() else self._params

    @params.setter
    def params(self, value: ArrayLike) -> None:
        if self._on_cuda():
            current = self._core.params
            self._core.write("params", 0, np.ascontiguousarray(_checked("params", current, value)))
        elif value is not self._params:
            # `net.params -= lr * net.grads` works in place and then assigns the same array back
            _copy_into("params", self._params, value)

    @property
    def grads(self) -> NDArray[np.floating]:
        """All gradients, grads: (P,), laid out like params (net.params -= lr * net.grads is an
        SGD step)."""
        return self._core.grads if self._on_cuda() else self._grads

    # The buffers state() saves: the parameters, and the batch-norm running statistics.
    _STATE = ("params", "running_means", "running_vars")
    # Training state (vgkern.optim): the reference weights W0 that the optimizer's weight_change
    # compares against (a flat host copy of params on the CPU, a CudaArray on CUDA; taken by
    # set_reference() at construction and reinitialize()), and the optimizer this net trains
    # with, which holds its state buffers (the last one made on this net; None before).
    _reference: Any = None  # np.ndarray (CPU) or vgkern.CudaArray (CUDA)
    _optimizer: Any = None  # a vgkern.optim.Optimizer
    _last_report = None  # id() of the report of the last step()/backward() (see _issued)

    def _issued(self, report):
        """Records `report` as the one of this net's last step()/backward(): opt.step(rep)
        refuses any other (its gradients, and its log-scale exponents, would not match)."""
        self._last_report = id(report)
        return report

    def set_reference(self: _Net) -> _Net:
        """Takes the current parameters as the reference W0 that the optimizer's weight_change
        (||W - W0|| / ||W0||, vgkern.optim) compares against. Done at construction (and by
        MLP.reinitialize); call it again to measure from here. Returns the net."""
        flat = np.array(self._core.params)  # a host copy (on CUDA: made from the device)
        self._reference = _core.to_device(flat) if self._on_cuda() else flat
        return self

    @property
    def optimizer(self) -> Any:
        """The vgkern.optim optimizer made on this net last (None before): it travels with the
        net in state() and pickling."""
        return self._optimizer

    def state(self) -> Dict[str, NDArray[np.floating]]:
        """Host copies of everything the net learns or tracks, {"params": flat array, ...}
        (plus "running_means"/"running_vars" for an MLP with batch norm; with an optimizer
        (vgkern.optim) also "reference", the weights W0, and "optimizer", its state_dict()):
        load_state() takes it on any net of the same shape, dtype and kind, on either device."""
        state = self._buffer_state()
        if self._optimizer is not None:
            state["reference"] = self._host_reference()
            state["optimizer"] = self._optimizer.state_dict()
        return state

    def _buffer_state(self):
        return {name: np.array(getattr(self._core, name))
                for name in self._STATE if hasattr(self._core, name)}

    def _host_reference(self):
        if self._reference is None:
            self.set_reference()
        ref = self._reference
        return ref.copy() if isinstance(ref, np.ndarray) else ref.numpy()

    def load_state(self, state: Dict[str, ArrayLike]) -> None:
        """Writes a state() dict into this net (CPU or CUDA); every entry is checked (names,
        shapes, dtypes) before any is written."""
        what = f"{type(self).__name__}.load_state"
        if not isinstance(state, dict):
            raise TypeError(f"{what}: state must be a dict from state(), got {type(state).__name__}")
        names = [n for n in self._STATE if hasattr(self._core, n)]
        training = [n for n in ("reference", "optimizer") if n in state]  # optional
        if sorted(set(state) - set(training)) != sorted(names):
            raise ValueError(f"{what}: state must have the keys {names} (and optionally "
                             f"'reference', 'optimizer'), got {sorted(state)}")
        if "optimizer" in state and self._optimizer is None:
            raise ValueError(f"{what}: state has an 'optimizer' entry but this net has no "
                             "optimizer; make one on it first (e.g. vgkern.optim.Adam(net)), "
                             "then load_state")
        checked = {n: np.ascontiguousarray(_checked(f"{what}: state[{n!r}]",
                                                    getattr(self._core, n), state[n]))
                   for n in names}
        if "reference" in state:
            reference = np.ascontiguousarray(_checked(f"{what}: state['reference']",
                                                      self._core.params, state["reference"]))
        if "optimizer" in state:
            self._optimizer.load_state_dict(state["optimizer"])  # checks it before it writes
        for n, value in checked.items():
            if value.size:
                self._core.write(n, 0, value)
        if "reference" in state:
            self._reference = _core.to_device(reference) if self._on_cuda() else reference.copy()

    @property
    def stats(self) -> bool:
        """Whether forward/backward compute statistics (False: report fields are NaN)."""
        return self._core.stats

    @stats.setter
    def stats(self, on: bool) -> None:
        self._core.stats = _checks.flag(f"{type(self).__name__}.stats", on)

    # Pickling and copy.deepcopy. The native core cannot be pickled, so a net travels as the
    # checked constructor arguments its core was built from (self._config, given to
    # self._build on arrival), its buffers (state() and the gradients), its switches, and the
    # results of its last call; that is everything a later step reads, so a round-tripped net
    # steps bit-identically. Not carried: the activations a forward saves for the next
    # backward (call forward or step first on the copy) and attributes users add.
    _PICKLE_FORMAT = 1
    _SWITCHES = ("stats", "training")  # native flags, where the core has them
    # plain attributes a copy keeps, where the net has them: last results, the init's options
    _RESULTS = ("input_grad", "h0_grad", "c0_grad", "last_output", "_init_options",
                "torch_batch_first")  # the last: LSTM/RNN.from_torch records it for to_torch

    def __getstate__(self):
        core = self._core
        return {
            "format": self._PICKLE_FORMAT,
            "config": dict(self._config),
            "switches": {n: getattr(core, n) for n in self._SWITCHES if hasattr(core, n)},
            "state": self._buffer_state(),
            "grads": np.array(core.grads),
            "results": {n: getattr(self, n) for n in self._RESULTS if n in self.__dict__},
            # training state (absent from pickles of older versions)
            "reference": self._host_reference(),
            "optimizer": self._optimizer,
        }

    def __setstate__(self, saved):
        what = f"unpickling a vgkern.{type(self).__name__}"
        if not isinstance(saved, dict) or saved.get("format") != self._PICKLE_FORMAT:
            found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"{what}: unknown pickle format {found!r} (this vgkern reads "
                             f"format {self._PICKLE_FORMAT})")
        _cuda.net_device(type(self).__name__, saved["config"]["device"])  # cuBLAS, for "cuda"
        self._build(**saved["config"])
        for name, value in saved["switches"].items():
            setattr(self._core, name, value)
        self.load_state(saved["state"])
        grads = np.ascontiguousarray(_checked(f"{what}: grads", self._core.grads, saved["grads"]))
        if grads.size:
            self._core.write("grads", 0, grads)
        self.__dict__.update(saved["results"])
        reference = saved.get("reference")
        if reference is None:
            self.set_reference()
        else:
            self._reference = _core.to_device(reference) if self._on_cuda() else reference
        if saved.get("optimizer") is not None:
            self._optimizer = saved["optimizer"]
            self._optimizer._attach()  # once both are unpickled (see Optimizer.__setstate__)
