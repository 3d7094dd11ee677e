"""vgkern nets as torch.nn.Modules: `vgkern.torch.Module(net)` puts a vgkern MLP, LSTM or RNN
inside a PyTorch model, trained by torch.optim from DataLoader batches, and keeps the statistics
of every backward in `module.last_report` (a GradReport or SequenceReport).

    model = torch.nn.Sequential(torch.nn.Linear(8, 64), vgkern.torch.Module(net), ...)
    loss = F.mse_loss(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
    model[1].last_report.log10_preact_grad_norm

Imported on first use (`vgkern.torch`), as it needs PyTorch. Inside this module `import torch`
is PyTorch (imports are absolute): the name vgkern.torch does not shadow it.

Memory:
- parameters: every nn.Parameter is a torch view of the net's flat parameter buffer (CPU nets:
  torch.from_numpy; CUDA nets: torch.from_dlpack of the core's device buffer), so an
  optimizer's in-place update is the net's update and no parameter is ever copied.
  Do not rebind `param.data` (that detaches it from the net); module.to() / .double() / .cuda()
  are refused where they would copy (build the net with the dtype and device you need).
- gradients: the native backward writes the net's flat gradient buffer (net.grads) and the
  autograd Function returns views of it. With param.grad None (optimizer.zero_grad(), whose
  default is set_to_none=True, or the first backward) torch's AccumulateGrad keeps that view as
  param.grad: no copy. So param.grad IS net.grads until the next backward overwrites it: clone
  it to keep it. Accumulating over several backward calls (no zero_grad in between, or
  zero_grad(set_to_none=False)) follows torch's semantics: before the native backward
  overwrites the buffer, a param.grad that is still a view of it is replaced by a copy, which
  then accumulates (one copy per parameter and accumulating backward; the sum is exact as in
  torch). torch.autograd.grad(loss, params) gets views of net.grads, as fresh as the last
  backward.
- activations: the net keeps those of its last forward only (one native buffer per net), so a
  backward must follow the forward that produced its graph: a second forward through the same
  Module in between (another micro-batch, an evaluation pass) makes that backward raise
  RuntimeError instead of returning wrong gradients. Calling net.forward / net.step directly
  in between is not detected: don't.
- double backward (create_graph=True through the net) raises RuntimeError: vgkern's backward
  is not differentiable.
- CUDA nets take and return CUDA tensors. Parameters, gradients and running statistics are
  the net's device buffers (vgkern.CudaArray views, through DLPack: never copied); inputs and
  upstream gradients are read in place (__cuda_array_interface__). The outputs and input
  gradients come back from vgkern's CUDA nets as host arrays, which the module copies to the
  device (one (B, d_L) and one (B, d_0) copy per step for an MLP). Before each native call
  torch's current stream is synchronized (the optimizer's pending updates of the shared
  parameters must have landed); vgkern's calls return synchronized.

Threads (CPU): vgkern's helper thread and torch's intra-op (OpenMP) threads share the cores.
After a torch op big enough to run in parallel, torch's threads spin for a while; a part of a
layer that vgkern's helper cannot start then runs on the calling thread (one-thread speed,
never a wait for the helper). OMP_WAIT_POLICY=passive, set before torch is imported, makes
torch's threads sleep instead (bench/README.md, "A part the helper has not started").
"""
from typing import (Any, Callable, Iterable, List, Optional, Sequence, SupportsIndex, Tuple,
                    Union)

import numpy as np
from numpy.typing import NDArray
import torch
from torch.autograd.function import once_differentiable

from .mlp import MLP
from .recurrent import LSTM, RNN
from .report import GradReport, SequenceReport

__all__ = ["Module"]

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def _net_input(tensor: torch.Tensor, what: str, ex: "_Exchange"
               ) -> Union[NDArray[np.floating], torch.Tensor]:
    """A tensor as the net reads it, without a copy: numpy on the CPU, the (contiguous) tensor
    itself on CUDA (read in place through __cuda_array_interface__), after the checks that give
    torch users torch's words."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.device.type != ex.device:
        raise ValueError(f"{what} must be on {ex.device} (the wrapped net is a {ex.device} net), "
                         f"got a tensor on {tensor.device}; move it with .to({ex.device!r})")
    if tensor.dtype != _TORCH_DTYPES[ex.dtype]:
        raise TypeError(f"{what} must have dtype {ex.dtype.name}, got {tensor.dtype} (vgkern "
                        f"never casts silently; use .to(torch.{ex.dtype.name}))")
    if ex.device == "cpu":
        return tensor.detach().numpy()
    return tensor.detach().contiguous()


class _Exchange:
    """What a Module and its autograd Functions share: the net, its parameters as tensor views,
    the forward counter that ties a backward to its forward, and the last report."""

    def __init__(self, net: Union[MLP, LSTM, RNN]):
        self.net = net
        self.dtype = net.dtype
        self.device = net.device
        self.forwards = 0
        self.last_report: Optional[Union[GradReport, SequenceReport]] = None
        self.flat_params = self.buffer("params")  # (P,): every parameter
        self.flat_grads = self.buffer("grads")  # (P,): every gradient, laid out as params
        self.grads_begin = self.flat_grads.data_ptr()
        self.grads_end = self.grads_begin + self.flat_grads.numel() * self.flat_grads.element_size()
        # (offset, size, shape) of each parameter in the flat buffers
        self.grad_slices: List[Tuple[int, int, Tuple[int, ...]]] = []
        # the Module's parameters, in the order of grad_slices (finish())
        self.params: Tuple[torch.nn.Parameter, ...] = ()
        self.contiguous = False

    def buffer(self, name: str) -> torch.Tensor:
        """The net's flat buffer `name` as a tensor on the same memory: (P,) for params/grads."""
        if self.device == "cpu":
            return torch.from_numpy(getattr(self.net._core, name))
        return torch.from_dlpack(self.net._core.device_buffer(name))

    def tensor(self, array: Any) -> torch.Tensor:
        """A result of the net as a tensor on the net's device: a numpy array on the same memory
        (CPU), a vgkern.CudaArray through DLPack (no copy); a CUDA net's host results (its
        forward and backward return numpy arrays) are copied to the device. (`array` is typed
        Any: vgkern.CudaArray comes from the compiled extension, which has no stubs.)"""
        if not isinstance(array, np.ndarray):
            return torch.from_dlpack(array)
        t = torch.from_numpy(array)
        return t if self.device == "cpu" else t.to(self.flat_params.device)

    def synchronize(self) -> None:
        """CUDA: torch's queued work (optimizer updates of the shared buffers, the inputs) done."""
        if self.device == "cuda":
            torch.cuda.current_stream(self.flat_params.device).synchronize()

    def parameter(self, offset: int, shape: Tuple[int, ...]) -> torch.nn.Parameter:
        """An nn.Parameter viewing params[offset:offset + prod(shape)], its slice recorded."""
        size = int(np.prod(shape))
        self.grad_slices.append((offset, size, tuple(shape)))
        return torch.nn.Parameter(self.flat_params[offset:offset + size].view(shape))

    def check_backward(self, token: int, op: str) -> None:
        if token != self.forwards:
            raise RuntimeError(
                f"vgkern.torch.Module ({op}): backward through a forward that is no longer the "
                f"net's last one ({self.forwards - token} forward(s) ran through this module "
                "since): the vgkern net keeps the activations of its last forward only. Run "
                "backward before the next forward (or wrap each use in its own net)")

    def unalias_grads(self) -> None:
        """Before the native backward overwrites net.grads: a param.grad that is a view of it
        (kept by the last backward) becomes a copy, so torch accumulates into the old value."""
        for p in self.params:
            g = p.grad
            if g is not None and self.grads_begin <= g.data_ptr() < self.grads_end:
                p.grad = g.clone()

    def grad_views(self) -> Tuple[torch.Tensor, ...]:
        """Fresh views of net.grads, one per parameter (fresh: torch keeps an unshared one as
        param.grad without copying it)."""
        # one native call for all (a Python loop of slices costs ~2x); contiguous implies
        # _unflatten is not None (finish()), the test repeats it for the type checker
        if self.contiguous and _unflatten is not None:
            return tuple(_unflatten(self.flat_grads_used, self.params))
        flat = self.flat_grads
        return tuple(flat[o:o + n].view(s) for o, n, s in self.grad_slices)

    def finish(self, params: Iterable[torch.nn.Parameter]) -> None:
        """The Module's parameters, in grad_slices' order, registered: whether they tile the
        buffer's front back to back (then grad_views makes all views in one call)."""
        self.params = tuple(params)
        ends = [o + n for o, n, _ in self.grad_slices]
        starts = [o for o, _, _ in self.grad_slices]
        self.contiguous = _unflatten is not None and starts == [0] + ends[:-1]
        self.flat_grads_used = self.flat_grads[:ends[-1] if ends else 0]


# torch's helper behind torch._utils._unflatten_dense_tensors: views of `flat` shaped like the
# given tensors, back to back (private; the slicing fallback keeps working without it)
_unflatten: Optional[Callable[[torch.Tensor, Sequence[torch.Tensor]], List[torch.Tensor]]] = \
    getattr(getattr(torch._C, "_nn", None), "unflatten_dense_tensors", None)


class _MLPFunction(torch.autograd.Function):
    """x (B, d_0) and the parameters -> out (B, d_L); backward -> dL/dx and the gradients."""

    @staticmethod
    def forward(ctx: Any, ex: _Exchange, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        net = ex.net
        assert isinstance(net, MLP)  # Module.forward sends MLP nets only
        x_in = _net_input(x, "vgkern.torch.Module: x", ex)
        ex.synchronize()
        out = net.forward(x_in)
        ex.forwards += 1
        ctx.ex, ctx.token = ex, ex.forwards
        return ex.tensor(out)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        ex: _Exchange = ctx.ex
        net = ex.net
        assert isinstance(net, MLP)  # forward ran on this net
        ex.check_backward(ctx.token, "MLP")
        ex.unalias_grads()
        g = _net_input(grad_out, "vgkern.torch.Module: the gradient of the output", ex)
        ex.synchronize()
        ex.last_report = net.backward(g, compute_input_grad=ctx.needs_input_grad[1])
        dx = ex.tensor(net.input_grad) if ctx.needs_input_grad[1] else None
        return (None, dx) + ex.grad_views()


class _RecurrentFunction(torch.autograd.Function):
    """x_seq (T, B, I), h0 (B, H), c0 (B, H) (None: zeros; c0 LSTM only) and the parameters ->
    h_seq (T, B, H), h_T (B, H) and (LSTM) c_T (B, H); backward -> dL/dx_seq, dL/dh0, dL/dc0
    and the gradients."""

    @staticmethod
    def forward(ctx: Any, ex: _Exchange, x: torch.Tensor, h0: Optional[torch.Tensor],
                c0: Optional[torch.Tensor], *params: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        net = ex.net
        assert isinstance(net, (LSTM, RNN))  # Module.forward sends recurrent nets only
        what = "vgkern.torch.Module"
        x_in = _net_input(x, f"{what}: input", ex)
        h0_in = None if h0 is None else _net_input(h0, f"{what}: h0", ex)
        c0_in = None if c0 is None else _net_input(c0, f"{what}: c0", ex)
        ex.synchronize()
        outputs: Tuple[NDArray[np.floating], ...]
        if isinstance(net, LSTM):
            h_seq, (h_last, c_last) = net.forward(x_in, h0_in, c0_in)
            outputs = (h_seq, h_last, c_last)
        else:
            outputs = net.forward(x_in, h0_in)
        ex.forwards += 1
        ctx.ex, ctx.token = ex, ex.forwards
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None
        return tuple(ex.tensor(a) for a in outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_seq: Optional[torch.Tensor], g_h: Optional[torch.Tensor],
                 g_c: Optional[torch.Tensor] = None) -> Tuple[Optional[torch.Tensor], ...]:
        ex: _Exchange = ctx.ex
        net = ex.net
        assert isinstance(net, (LSTM, RNN))  # forward ran on this net
        ex.check_backward(ctx.token, type(net).__name__)
        ex.unalias_grads()
        what = "vgkern.torch.Module: the gradient of"
        seq_in, h_in, c_in = (None if g is None else _net_input(g, f"{what} {name}", ex)
                              for g, name in ((g_seq, "output"), (g_h, "h_n"), (g_c, "c_n")))
        ex.synchronize()
        if isinstance(net, LSTM):
            report = net.backward(seq_in, h_in, c_in)
        else:
            report = net.backward(seq_in, h_in)
        ex.last_report = report
        dx = ex.tensor(net.input_grad)
        dh0 = ex.tensor(net.h0_grad) if ctx.needs_input_grad[2] else None
        dc0 = (ex.tensor(net.c0_grad)
               if ctx.needs_input_grad[3] and isinstance(net, LSTM) else None)
        return (None, dx, dh0, dc0) + ex.grad_views()


# torch.autograd.Function.apply, outside functorch transforms, runs a Python loop over every
# argument (functorch's unwrap_dead_wrappers) before the C++ apply of _C._FunctionBase. An
# MLP's Function takes 102 arguments (the exchange, x, 100 parameters): that loop cost 3 % of a
# whole torch training step (W=64 L=50 B=256, 2 threads, 16 rotated blocks of 60 steps). The
# parameters are the module's own (never functorch wrappers), so only the caller's tensors are
# unwrapped here, as torch would; inside transforms, or with a torch that lacks these hooks,
# the public apply runs.
_unwrap_if_dead: Optional[Callable[[torch.Tensor], torch.Tensor]] = \
    getattr(getattr(torch._C, "_functorch", None), "unwrap_if_dead", None)
_transforms_active: Optional[Callable[[], bool]] = \
    getattr(torch._C, "_are_functorch_transforms_active", None)
_base_apply = {fn: super(torch.autograd.Function, fn).apply  # type: ignore[misc]
               for fn in (_MLPFunction, _RecurrentFunction)}


def _apply(fn: Any, ex: _Exchange, inputs: Tuple[Optional[torch.Tensor], ...],
           params: Tuple[torch.nn.Parameter, ...]) -> Any:
    """fn.apply(ex, *inputs, *params), without the Python loop over the parameters."""
    if _unwrap_if_dead is None or _transforms_active is None or _transforms_active():
        return fn.apply(ex, *inputs, *params)
    unwrap = _unwrap_if_dead
    return _base_apply[fn](ex, *(unwrap(t) if isinstance(t, torch.Tensor) else t
                                 for t in inputs), *params)


class Module(torch.nn.Module):
    """A vgkern MLP, LSTM or RNN as a torch.nn.Module, backed by a torch.autograd.Function.

    net: the vgkern net; its memory is the module's (module.net is it): parameters are
        nn.Parameters viewing net.params, gradients views of net.grads (see vgkern.torch's
        docstring for what that means for zero_grad and accumulation), batch-norm running
        statistics buffers viewing the net's. module.train() / .eval() switch the net's batch
        norm (MLP.train / eval); the module starts in the net's mode.
    batch_first (LSTM/RNN only): input and output (B, T, ...) instead of (T, B, ...); None
        takes net.torch_batch_first (recorded by LSTM/RNN.from_torch), else False, so a net
        converted from an nn.LSTM replaces it with the same calls. (B, T, I) inputs are copied
        to vgkern's (T, B, I) layout and the gradient of the output back.

    Calls (shapes as the torch module the net replaces):
    - MLP: module(x) with x: (B, d_0) -> out: (B, d_L).
    - LSTM: module(x, hx=None) with x: (T, B, I) (batch_first: (B, T, I)), hx = (h0, c0), each
      (1, B, H), None for zeros -> (output: (T, B, H) (batch_first: (B, T, H)),
      (h_n: (1, B, H), c_n: (1, B, H))), as torch.nn.LSTM.
    - RNN: module(x, hx=None), hx = h0: (1, B, H) -> (output, h_n: (1, B, H)), as torch.nn.RNN.
    Gradients flow from every output used (output sequence, h_n, c_n) to x, hx and the
    parameters. Inputs must be tensors on the net's device (CPU or CUDA) with its dtype (never
    cast silently); outputs are on the same device.

    After each backward, module.last_report holds the net's GradReport (MLP) or SequenceReport
    (LSTM/RNN) of that backward; None before the first.
    """

    def __init__(self, net: Union[MLP, LSTM, RNN], *, batch_first: Optional[bool] = None):
        super().__init__()
        if not isinstance(net, (MLP, LSTM, RNN)):
            raise TypeError("vgkern.torch.Module: net must be a vgkern.MLP, LSTM or RNN, got "
                            f"{type(net).__name__}")
        if net.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("vgkern.torch.Module: net is a CUDA net, but this PyTorch has no "
                               "CUDA device (torch.cuda.is_available() is False); use a CPU net")
        if batch_first is not None and not isinstance(net, (LSTM, RNN)):
            raise ValueError("vgkern.torch.Module: batch_first is for LSTM/RNN nets; an MLP takes "
                             "x (B, d_0)")
        if batch_first is None:
            batch_first = bool(getattr(net, "torch_batch_first", False))
        elif not isinstance(batch_first, bool):
            raise TypeError(f"vgkern.torch.Module: batch_first must be True, False or None, got "
                            f"{batch_first!r}")
        self.batch_first = batch_first
        self._ex = _Exchange(net)
        # the layout of vgkern.recurrent: weight_ih, weight_hh, bias, back to back
        if isinstance(net, (LSTM, RNN)):
            G, I, H = net._gates * net.hidden_size, net.input_size, net.hidden_size
            for name, offset, shape in (("weight_ih", 0, (G, I)), ("weight_hh", G * I, (G, H)),
                                        ("bias", G * (I + H), (G,))):
                self.register_parameter(name, self._ex.parameter(offset, shape))
        else:
            self._register_mlp(net)
        self._ex.finish(self.parameters())
        super().train(getattr(net, "training", True))

    def _register_mlp(self, net: MLP) -> None:
        """weight_l (d_{l+1}, d_l), bias_l (d_{l+1},) (none on batch-norm layers), bn_gamma_l,
        bn_beta_l (d_{l+1},) (affine batch norm) and the buffers running_mean_l, running_var_l,
        l = layer index, in the order of the flat buffer."""
        layout = net._core.layout
        kinds = {"weight": "weight", "bias": "bias", "bn_gamma": "gamma", "bn_beta": "beta"}
        entries = []  # (offset, name, l, shape)
        for l in range(net.num_layers):
            d_in, d_out = net.sizes[l], net.sizes[l + 1]
            for name, kind in kinds.items():
                if layout[l][kind] >= 0:
                    shape = (d_out, d_in) if kind == "weight" else (d_out,)
                    entries.append((layout[l][kind], name, l, shape))
        for offset, name, l, shape in sorted(entries):  # flat-buffer order
            self.register_parameter(f"{name}_{l}", self._ex.parameter(offset, shape))
        bn_layers = [l for l in range(net.num_layers) if layout[l]["running"] >= 0]
        if bn_layers:
            means, variances = self._ex.buffer("running_means"), self._ex.buffer("running_vars")
            for l in bn_layers:
                start, stop = layout[l]["running"], layout[l]["running"] + net.sizes[l + 1]
                self.register_buffer(f"running_mean_{l}", means[start:stop])
                self.register_buffer(f"running_var_{l}", variances[start:stop])

    @property
    def net(self) -> Union[MLP, LSTM, RNN]:
        """The wrapped vgkern net (its buffers are this module's parameters)."""
        return self._ex.net

    @property
    def last_report(self) -> Optional[Union[GradReport, SequenceReport]]:
        """The GradReport / SequenceReport of the last backward through this module."""
        return self._ex.last_report

    def forward(self, x: torch.Tensor, hx: Any = None) -> Any:
        """MLP: x: (B, d_0) -> (B, d_L). LSTM: x: (T, B, I) ((B, T, I) with batch_first),
        hx = (h0: (1, B, H), c0: (1, B, H)) or None -> (output: (T, B, H), (h_n: (1, B, H),
        c_n: (1, B, H))). RNN: hx = h0: (1, B, H) or None -> (output, h_n: (1, B, H))."""
        ex, params = self._ex, self._ex.params
        if isinstance(ex.net, MLP):
            if hx is not None:
                raise TypeError("vgkern.torch.Module: an MLP takes one input x (B, d_0), got hx too")
            return _apply(_MLPFunction, ex, (x,), params)
        h0, c0 = self._initial_state(hx)
        if self.batch_first and isinstance(x, torch.Tensor) and x.dim() == 3:
            x = x.transpose(0, 1).contiguous()  # (B, T, I) -> vgkern's (T, B, I)
        h_seq, *last = _apply(_RecurrentFunction, ex, (x, h0, c0), params)
        if self.batch_first:
            h_seq = h_seq.transpose(0, 1)
        last = tuple(s.unsqueeze(0) for s in last)  # (B, H) -> torch's (1, B, H)
        return (h_seq, last) if isinstance(ex.net, LSTM) else (h_seq, last[0])

    def _initial_state(self, hx: Any) -> Sequence[Optional[torch.Tensor]]:
        """hx as torch.nn.LSTM / RNN take it -> (h0 (B, H) or None, c0 (B, H) or None)."""
        name = type(self.net).__name__
        if hx is None:
            return None, None
        if isinstance(self.net, LSTM):
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"vgkern.torch.Module ({name}): hx must be a tuple (h0, c0) of "
                                f"(1, B, H) tensors or None, got {type(hx).__name__}")
            states = [("h0", hx[0]), ("c0", hx[1])]
        else:
            states = [("h0", hx)]
        out = []
        for what, s in states:
            if not isinstance(s, torch.Tensor) or s.dim() != 3 or s.shape[0] != 1:
                shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise ValueError(f"vgkern.torch.Module ({name}): {what} must be a (1, B, H) "
                                 f"tensor (one layer, one direction), got {shape}")
            out.append(s[0])
        return (out + [None])[:2]

    def train(self, mode: bool = True) -> "Module":
        """Sets the module's and the net's mode (batch norm: batch or running statistics)."""
        super().train(mode)
        if hasattr(self.net, "train"):
            self.net.train(mode)
        return self

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
               ) -> "Module":
        """.to() / .cuda() / .double() ... are allowed only where they change nothing: a new
        tensor, or new memory under the same one (share_memory_()), would no longer be the
        net's memory."""
        for name, t in list(self.named_parameters()) + list(self.named_buffers()):
            where = t.data_ptr()
            if fn(t) is not t or t.data_ptr() != where:
                raise TypeError(
                    f"vgkern.torch.Module: cannot move or convert {name} ({t.dtype}, {t.device}):"
                    " the parameters are the vgkern net's memory. Build the net with the dtype "
                    "(and device) you need, e.g. vgkern.MLP.from_torch(model, dtype='float64')")
        return self

    def __reduce_ex__(self, protocol: SupportsIndex
                      ) -> Tuple[Callable[..., "Module"], Tuple[Union[MLP, LSTM, RNN], bool, bool]]:
        """pickle / copy.deepcopy: a new Module around a copy of the net (nn.Module's own copy
        would give parameters that are no longer views of the copied net's buffers)."""
        return _rebuild, (self.net, self.batch_first, self.training)

    def extra_repr(self) -> str:
        """The wrapped net's repr (what print(model) shows inside the module's brackets)."""
        return repr(self.net) + (", batch_first=True" if self.batch_first else "")


def _rebuild(net: Union[MLP, LSTM, RNN], batch_first: bool, training: bool) -> Module:
    """What a pickled Module becomes: a Module around the (unpickled) net, in the same mode.
    Hooks and param.grad are not carried (the net's last gradients are, in net.grads)."""
    module = Module(net, batch_first=batch_first if isinstance(net, (LSTM, RNN)) else None)
    return module.train(training)
