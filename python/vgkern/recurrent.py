"""LSTM and Elman RNN over whole sequences: one native call for the forward over all T steps,
one for the whole backpropagation through time, reporting per-step gradient norms
(SequenceReport).

log_scale (as in MLP.backward) is not offered: backward(log_scale=True) and step(log_scale=True)
raise NotImplementedError. The native BPTT (nets/recurrent.cpp and recurrent_cuda.cpp) would
have to renormalise dL/dh_t and dL/dc_t by a power of two at every step, carry one exponent per
step into a grad_log2_scale column of the SequenceReport, and take the log10 norms from mantissa
and exponent. The hard part is the weight gradients: unlike an MLP layer's, they are sums over
all T steps, each step's term at its own scale, so the accumulators would need one common
exponent and rescaling whenever it moves; none of this exists in the C++ core yet.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Tuple, TypeVar, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _checks, _core, _cuda, _deprecated
from ._params import Bound, DeviceSlice, DeviceView, NativeParameters
from .ops import RNN_NONLINEARITIES
from .report import SequenceReport

if TYPE_CHECKING:
    import torch

    from .mlp import MLP

RECURRENT_LOSSES = ("mse", "mse_sequence")
_Net = TypeVar("_Net", bound="_Recurrent")


def _no_log_scale(op, log_scale):
    """log_scale must be False on the recurrent nets (the module's docstring says why)."""
    if _checks.flag(f"{op}: log_scale", log_scale):
        raise NotImplementedError(
            f"{op}: log_scale=True is not implemented for the recurrent nets (only "
            "MLP.backward/step have it): their native BPTT has no per-step power-of-two "
            "renormalisation; see the docstring of vgkern.recurrent")


class _Recurrent(NativeParameters):
    _kind: str = ""  # "lstm" or "rnn"
    _gates = 1

    # views into params (CUDA: host copies); `net.weight_ih = w` copies in (checked), as
    # `net.params = ...` does
    weight_ih, weight_hh, bias = Bound(), Bound(), Bound()
    weight_ih_grad, weight_hh_grad, bias_grad = DeviceView(), DeviceView(), DeviceView()

    # deprecated name of input_grad (dL/dx_seq), kept one release
    x_grad = _deprecated.RenamedAttribute("input_grad")

    def __init__(self, input_size, hidden_size, nonlinearity, dtype, seed, stats, device):
        name = self._kind.upper()
        input_size = _checks.size(f"{name}: input_size", input_size)
        hidden_size = _checks.size(f"{name}: hidden_size", hidden_size,
                                   high=_checks.INT_MAX // self._gates)
        dtype = _checks.dtype_name(f"{name}: dtype", dtype)
        rng = _checks.rng(f"{name}: seed", seed)
        device = _cuda.net_device(name, device)
        self._build(input_size=input_size, hidden_size=hidden_size, nonlinearity=nonlinearity,
                    dtype=dtype, device=device)
        self._core.stats = _checks.flag(f"{name}: stats", stats)
        # As PyTorch: every parameter U(-1/sqrt(H), 1/sqrt(H)); bias = bias_ih + bias_hh.
        G, I, H = self._gates * self.hidden_size, self.input_size, self.hidden_size
        bound = 1.0 / np.sqrt(H)
        self.weight_ih = rng.uniform(-bound, bound, (G, I)).astype(self.dtype)
        self.weight_hh = rng.uniform(-bound, bound, (G, H)).astype(self.dtype)
        self.bias = (rng.uniform(-bound, bound, G) + rng.uniform(-bound, bound, G)).astype(
            self.dtype)

    def _build(self, **config: Any) -> None:
        """The native core and the Python views on it, from checked arguments (`config`, kept
        for pickling: see NativeParameters.__getstate__). Parameters are left to the caller."""
        self._config = config
        self.input_size, self.hidden_size = config["input_size"], config["hidden_size"]
        self.dtype = np.dtype(config["dtype"])
        self.device = device = config["device"]
        self._core = _core.RecurrentCore(self._kind, self.input_size, self.hidden_size,
                                         config["nonlinearity"], self.dtype.name, device)
        G, I, H = self._gates * self.hidden_size, self.input_size, self.hidden_size
        layout = {"weight_ih": (0, (G, I)), "weight_hh": (G * I, (G, H)), "bias": (G * (I + H), (G,))}
        if device == "cpu":
            self._params, self._grads = self._core.params, self._core.grads
            for flat, suffix in ((self._params, ""), (self._grads, "_grad")):
                for key, (start, shape) in layout.items():
                    view = flat[start:start + int(np.prod(shape))].reshape(shape)
                    # the gradients are plain attributes (they shadow the DeviceView)
                    setattr(self, ("_" + key) if not suffix else key + suffix, view)
        else:
            for buffer, suffix in (("params", ""), ("grads", "_grad")):
                for key, (start, shape) in layout.items():
                    setattr(self, "_" + key + suffix, DeviceSlice(self._core, buffer, start, shape))
        self.input_grad = self.h0_grad = self.c0_grad = None

    def _state(self, value, what, rows=None):
        return None if value is None else _checks.array_input(
            value, f"{self._kind.upper()}.{what}", dtype=self.dtype, shape=(rows, self.hidden_size),
            device=self.device)

    def _sequence(self, x_seq, what):
        op = f"{self._kind.upper()}.{what}"
        return _checks.array_input(
            x_seq, f"{op}: x_seq", ndim=3, dtype=self.dtype, shape=(None, None, self.input_size),
            before_copy=lambda shape: self._core.check_sequence(op, *shape[:2]),
            device=self.device)

    def _forward(self, x_seq, h0, c0):
        x_seq = self._sequence(x_seq, "forward")
        B = _checks.shape_of(x_seq)[1]
        results = self._core.forward(x_seq, self._state(h0, "forward: h0", B),
                                     self._state(c0, "forward: c0", B))
        return results

    def _backward(self, grad_h_seq, grad_hT, grad_cT, log_scale):
        name = self._kind.upper()
        _no_log_scale(f"{name}.backward", log_scale)
        g_seq = None if grad_h_seq is None else _checks.array_input(
            grad_h_seq, f"{name}.backward: grad_h_seq", 3, dtype=self.dtype,
            shape=(None, None, self.hidden_size), device=self.device)
        results = self._core.backward(g_seq, self._state(grad_hT, "backward: grad_hT"),
                                      self._state(grad_cT, "backward: grad_cT"))
        return self._report(results)

    def _report(self, results, loss=float("nan")):
        _, _, _, table, weights, self.input_grad, self.h0_grad, self.c0_grad = results
        return self._issued(SequenceReport(table, weights, loss))

    def _step(self, x_seq, target, loss, h0, c0, log_scale):
        """forward + loss + BPTT in one native call -> SequenceReport with .loss."""
        name = self._kind.upper()
        _checks.choice(f"{name}.step: loss", loss, RECURRENT_LOSSES)
        _no_log_scale(f"{name}.step", log_scale)
        x_seq = self._sequence(x_seq, "step")
        T, B = _checks.shape_of(x_seq)[:2]
        every = loss == "mse_sequence"
        target = _checks.array_input(
            target, f"{name}.step: target", ndim=3 if every else 2, dtype=self.dtype,
            shape=((T,) if every else ()) + (B, self.hidden_size), device=self.device)
        value, results = self._core.step(x_seq, self._state(h0, "step: h0", B),
                                         self._state(c0, "step: c0", B), target, every)
        self.last_output = results[0]
        return self._report(results, value)

    def evaluate(self, x_seq: np.ndarray, labels: np.ndarray, readout: "MLP") -> tuple[float, float]:
        """Held-out loss and accuracy of a classifier made of this net and `readout`, an MLP
        (sizes[0] = hidden_size, the net's dtype) on the last hidden state h_T, without
        gradients or statistics -> (loss, accuracy).

        x_seq: (T, B, I); labels: (B,) integer classes in [0, readout.sizes[-1]).
        loss: the mean softmax cross entropy of readout(h_T) (float64); accuracy: the fraction
        of examples whose largest output is the label. Parameters, gradients and switches stay
        as they were; the activations saved for a backward are overwritten."""
        from ._evaluation import evaluate_recurrent

        return evaluate_recurrent(self, x_seq, labels, readout)


    # PyTorch interop and the nn.Module conventions (vgkern.torch_convert does the work).
    @classmethod
    def from_torch(cls: type[_Net], module: Union[torch.nn.LSTM, torch.nn.RNN], *,
                   dtype: Optional[DTypeLike] = None, device: str = "cpu",
                   stats: bool = True) -> _Net:
        """A new net (LSTM or RNN, as cls) with the parameters of `module`, a torch.nn.LSTM /
        torch.nn.RNN with one layer, one direction and biases (an LSTM without proj_size):
        bias = bias_ih_l0 + bias_hh_l0. dtype: the module's unless given. batch_first is
        recorded in net.torch_batch_first for to_torch(); this net's forward still takes x_seq
        (T, B, I): the conversion is of the weights."""
        from . import torch_convert

        net = torch_convert.recurrent_from_torch(cls, module, dtype=dtype, device=device,
                                                 stats=stats)
        return net.set_reference()  # the module's weights are W0 (vgkern.optim)

    def to_torch(self) -> Union[torch.nn.LSTM, torch.nn.RNN]:
        """The equivalent torch.nn.LSTM / torch.nn.RNN (CPU, this net's dtype; bias_ih_l0 =
        bias, bias_hh_l0 = 0; batch_first as recorded by from_torch, else False)."""
        from . import torch_convert

        return torch_convert.recurrent_to_torch(self)

    def state_dict(self) -> Dict[str, NDArray[np.floating]]:
        """{key: numpy array (a copy)} as to_torch()'s module: weight_ih_l0 (G, I),
        weight_hh_l0 (G, H), bias_ih_l0 = bias and bias_hh_l0 = 0 (G,), G = 4H (LSTM) or H."""
        from . import torch_convert

        return torch_convert.state_dict(self)

    def load_state_dict(self: _Net, state: Mapping[str, Any]) -> _Net:
        """Writes a state dict (numpy arrays or torch tensors, keyed as state_dict()) after
        checking every key, shape and dtype; bias = bias_ih_l0 + bias_hh_l0. Returns the net."""
        from . import torch_convert

        return torch_convert.load_state_dict(self, state)

    forward: Callable[..., Any]  # LSTM.forward and RNN.forward
    torch_batch_first: bool  # set by from_torch, read by to_torch (absent: False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """net(x_seq, h0, ...) is net.forward(x_seq, h0, ...): x_seq (T, B, I), h0 (B, H); see
        LSTM.forward and RNN.forward for what it returns."""
        return self.forward(*args, **kwargs)


class LSTM(_Recurrent):
    """LSTM over whole sequences, gate order and layout as torch.nn.LSTM (one layer):
    weight_ih (4H, I), weight_hh (4H, H), bias (4H,) = torch's bias_ih + bias_hh.
    forget_bias is added to the forget-gate slice bias[H:2H] after the PyTorch-style init.
    Options are keywords: LSTM(32, 64, dtype="float64", forget_bias=1.0).

    Gradients (as MLP names its): weight_ih_grad, weight_hh_grad, bias_grad, and input_grad
    (dL/dx_seq, (T, B, I)), h0_grad, c0_grad (B, H). pickle and copy.deepcopy give an
    independent net (see NativeParameters.__getstate__)."""

    _kind, _gates = "lstm", 4

    def __init__(self, input_size: int, hidden_size: int, *, dtype: DTypeLike = "float32",
                 seed: Any = 0, forget_bias: float = 0.0, stats: bool = True,
                 device: str = "cpu") -> None:
        forget_bias = _checks.real("LSTM: forget_bias", forget_bias)
        super().__init__(input_size, hidden_size, "tanh", dtype, seed, stats, device)
        _checks.fits_dtype("LSTM: forget_bias", abs(forget_bias) + 2.0, self.dtype)  # + the init
        bias = np.array(self.bias)
        bias[self.hidden_size:2 * self.hidden_size] += forget_bias
        self.bias = bias
        self.set_reference()  # the weights vgkern.optim's weight_change compares against

    def forward(self, x_seq: ArrayLike, h0: Optional[ArrayLike] = None,
                c0: Optional[ArrayLike] = None
                ) -> Tuple[NDArray[np.floating], Tuple[NDArray[np.floating], NDArray[np.floating]]]:
        """x_seq (T, B, I) -> (h_seq (T, B, H), (h_T, c_T)), h_T, c_T (B, H); h0, c0 (B, H)
        default to zeros."""
        h_seq, h_last, c_last, *_ = self._forward(x_seq, h0, c0)
        return h_seq, (h_last, c_last)

    def backward(self, grad_h_seq: Optional[ArrayLike] = None, grad_hT: Optional[ArrayLike] = None,
                 grad_cT: Optional[ArrayLike] = None, *, log_scale: bool = False
                 ) -> SequenceReport:
        """BPTT from grad_h_seq: (T, B, H) = dL/dh_seq and/or grad_hT, grad_cT: (B, H) = dL/dh_T,
        dL/dc_T -> SequenceReport.
        Gradients land in weight_ih_grad, weight_hh_grad, bias_grad, input_grad, h0_grad,
        c0_grad (overwritten, not accumulated). log_scale=True raises NotImplementedError: the
        recurrent core has no log-scale mode (vgkern.recurrent's docstring says what it needs)."""
        return self._backward(grad_h_seq, grad_hT, grad_cT, log_scale)

    def step(self, x_seq: ArrayLike, target: ArrayLike, loss: str = "mse",
             h0: Optional[ArrayLike] = None, c0: Optional[ArrayLike] = None, *,
             log_scale: bool = False) -> SequenceReport:
        """forward + loss + BPTT in one native call -> SequenceReport with .loss; x_seq (T, B, I),
        h0, c0 (B, H) as in forward(); h_seq (T, B, H) lands in self.last_output, the gradients
        as after backward() (log_scale: as there).

        loss="mse": on the last hidden state, target (B, H): 0.5 * mean over the batch of the
        squared error summed over units. loss="mse_sequence": on every step, target (T, B, H):
        0.5 / B * the squared error summed over steps, examples and units."""
        return self._step(x_seq, target, loss, h0, c0, log_scale)

    def __repr__(self):
        return f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, dtype={self.dtype.name!r})"


class RNN(_Recurrent):
    """Elman RNN h_t = act(W_ih x_t + W_hh h_{t-1} + b), act "tanh" or "relu", as torch.nn.RNN
    (one layer): weight_ih (H, I), weight_hh (H, H), bias (H,) = torch's bias_ih + bias_hh.
    Options are keywords: RNN(32, 64, nonlinearity="relu"). Gradients as LSTM's, without
    c0_grad."""

    _kind, _gates = "rnn", 1

    def __init__(self, input_size: int, hidden_size: int, *, nonlinearity: str = "tanh",
                 dtype: DTypeLike = "float32", seed: Any = 0, stats: bool = True,
                 device: str = "cpu") -> None:
        nonlinearity = _checks.choice("RNN: nonlinearity", nonlinearity, RNN_NONLINEARITIES)
        super().__init__(input_size, hidden_size, nonlinearity, dtype, seed, stats, device)
        self.set_reference()  # the weights vgkern.optim's weight_change compares against

    def _build(self, **config: Any) -> None:
        self.nonlinearity = config["nonlinearity"]
        super()._build(**config)

    def forward(self, x_seq: ArrayLike, h0: Optional[ArrayLike] = None
                ) -> Tuple[NDArray[np.floating], NDArray[np.floating]]:
        """x_seq (T, B, I) -> (h_seq (T, B, H), h_T (B, H)); h0 (B, H) defaults to zeros."""
        h_seq, h_last, *_ = self._forward(x_seq, h0, None)
        return h_seq, h_last

    def backward(self, grad_h_seq: Optional[ArrayLike] = None, grad_hT: Optional[ArrayLike] = None,
                 *, log_scale: bool = False) -> SequenceReport:
        """BPTT from grad_h_seq: (T, B, H) = dL/dh_seq and/or grad_hT: (B, H) = dL/dh_T ->
        SequenceReport, as
        LSTM.backward (log_scale=True: NotImplementedError, as there)."""
        return self._backward(grad_h_seq, grad_hT, None, log_scale)

    def step(self, x_seq: ArrayLike, target: ArrayLike, loss: str = "mse",
             h0: Optional[ArrayLike] = None, *, log_scale: bool = False) -> SequenceReport:
        """forward + loss + BPTT in one native call -> SequenceReport with .loss, as LSTM.step:
        x_seq (T, B, I), h0 (B, H), target (B, H) (loss="mse") or (T, B, H)
        (loss="mse_sequence")."""
        return self._step(x_seq, target, loss, h0, None, log_scale)

    def __repr__(self):
        return (f"RNN(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"nonlinearity={self.nonlinearity!r}, dtype={self.dtype.name!r})")

