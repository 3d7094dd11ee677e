"""MLP: a stack of dense layers whose forward, backward and whole training step each run in one
native call, reporting per-layer gradient statistics (GradReport)."""
from __future__ import annotations

from collections.abc import Mapping, Set
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _checks, _core, _cuda, _deprecated
from .init import INITS, draw_layer, redraw_options
from .ops import ACTIVATIONS
from ._params import Bound, NativeParameters, ParameterList
from .report import GradReport

if TYPE_CHECKING:
    import torch

LOSSES = ("mse", "cross_entropy")


def _check_sizes(sizes):
    if isinstance(sizes, (str, bytes, Mapping, Set)) or not hasattr(sizes, "__len__") or (
            isinstance(sizes, np.ndarray) and sizes.ndim != 1):
        raise TypeError("MLP: sizes must be a list of layer widths [d_0, ..., d_L], got "
                        f"{type(sizes).__name__}" + (f" of shape {sizes.shape}"
                                                     if isinstance(sizes, np.ndarray) else ""))
    if len(sizes) < 2:
        raise ValueError(f"MLP: sizes must list at least two widths [d_0, ..., d_L], got {list(sizes)!r}")
    out = []
    for i, d in enumerate(sizes):
        if type(d) is int and 1 <= d <= _checks.INT_MAX:  # the common case, fast for deep nets
            out.append(d)
        else:
            out.append(_checks.size(f"MLP: sizes[{i}]", d))
    return out


class MLP(NativeParameters):
    """Dense network sizes[0] -> ... -> sizes[-1]: L = len(sizes) - 1 layers, W_l (d_{l+1}, d_l)
    as in torch.nn.Linear. Hidden layers apply `activation`, the last `output_activation`.

    Every option is a keyword: MLP([64] * 11, activation="relu", init="he_normal").

    init: one of INITS; "scaled_normal" draws W ~ N(0, sigma_w^2 / fan_in), b ~ N(0, sigma_b^2)
    (sigma_w = 1 and sigma_b = 0 unless given); other inits give zero biases unless bias_init (a
    constant) is given. `gain` (default 1) scales the xavier and orthogonal inits. An option
    that `init` does not read is refused, never silently ignored (vgkern.init.OPTION_USERS).
    `alpha` is the ELU parameter. stats=False skips the statistics.

    batch_norm=True puts batch normalization (as torch.nn.BatchNorm1d: bn_momentum, bn_eps,
    bn_affine) between the GEMM and the activation of every hidden layer. Those layers have no
    dense bias (it is redundant before BN: biases[l] is an empty array); their gamma and beta
    live in bn_gammas / bn_betas (views into params), running statistics in running_means /
    running_vars. train() / eval() switch between batch and running statistics.

    Gradients: weight_grads, bias_grads, bn_gamma_grads, bn_beta_grads (the gradient of X is
    X_grad(s)) and input_grad = dL/dx, as LSTM and RNN name theirs. pickle and copy.deepcopy
    give an independent net (see NativeParameters.__getstate__).
    """

    # per-layer views into params (and the running statistics); `net.weights = [...]` copies in
    weights, biases, bn_gammas, bn_betas = Bound(), Bound(), Bound(), Bound()
    running_means, running_vars = Bound(), Bound()

    def __init__(self, sizes: Sequence[int], *, activation: str = "tanh",
                 init: str = "xavier_normal", output_activation: str = "identity",
                 dtype: DTypeLike = "float32", seed: Any = 0, sigma_w: Optional[float] = None,
                 sigma_b: Optional[float] = None, bias_init: Optional[float] = None,
                 gain: Optional[float] = None, alpha: float = 1.0, device: str = "cpu",
                 stats: bool = True, batch_norm: bool = False, bn_momentum: float = 0.1,
                 bn_eps: float = 1e-5, bn_affine: bool = True) -> None:
        sizes = _check_sizes(sizes)
        activation = _checks.choice("MLP: activation", activation, ACTIVATIONS)
        output_activation = _checks.choice("MLP: output_activation", output_activation,
                                           ACTIVATIONS)
        init = _checks.choice("MLP: init", init, INITS)
        dtype = _checks.dtype_name("MLP: dtype", dtype)
        options = redraw_options("MLP", init, dtype, sigma_w=sigma_w, sigma_b=sigma_b,
                                 bias_init=bias_init, gain=gain)
        alpha = _checks.real("MLP: alpha", alpha)
        _checks.rng("MLP: seed", seed)  # refused before anything is allocated
        device = _cuda.net_device("MLP", device)
        batch_norm = _checks.flag("MLP: batch_norm", batch_norm)
        bn_momentum = _checks.real("MLP: bn_momentum", bn_momentum, finite=False)
        bn_eps = _checks.real("MLP: bn_eps", bn_eps, finite=False)
        if batch_norm and not 0 <= bn_momentum <= 1:
            raise ValueError(f"MLP: bn_momentum must be in [0, 1], got {bn_momentum!r}")
        if batch_norm and not 0 < bn_eps < float("inf"):
            raise ValueError(f"MLP: bn_eps must be a finite number > 0, got {bn_eps!r}")
        bn_affine = _checks.flag("MLP: bn_affine", bn_affine)
        self._build(sizes=sizes, activation=activation, output_activation=output_activation,
                    init=init, dtype=dtype, alpha=alpha, device=device, batch_norm=batch_norm,
                    bn_affine=bn_affine, bn_momentum=bn_momentum, bn_eps=bn_eps)
        self._core.stats = _checks.flag("MLP: stats", stats)
        self._initialize(seed, **options)

    def _build(self, **config: Any) -> None:
        """The native core and the Python views on it, from checked arguments (`config`, kept
        for pickling: see NativeParameters.__getstate__). Parameters are left to the caller."""
        self._config = config
        self.sizes = config["sizes"]
        self.activation = config["activation"]
        self.output_activation = config["output_activation"]
        self.init = config["init"]
        self.dtype = np.dtype(config["dtype"])
        self.alpha = config["alpha"]
        self.device = config["device"]
        self.batch_norm = config["batch_norm"]
        L = len(self.sizes) - 1
        acts = [self.activation] * (L - 1) + [self.output_activation]
        self._core = _core.MLPCore(self.sizes, acts, [self.alpha] * L, self.dtype.name,
                                   self.batch_norm, config["bn_affine"], config["bn_momentum"],
                                   config["bn_eps"], self.device)
        if self.device == "cpu":
            self._params = self._core.params  # flat views; the core owns the memory
            self._grads = self._core.grads
        layout = self._core.layout
        every = list(range(L))
        # Batch norm (hidden layers only): one entry per BN layer, in layer order.
        bn_layers = [l for l in every if layout[l]["running"] >= 0]
        affine = [l for l in bn_layers if layout[l]["gamma"] >= 0]
        lists = self._parameter_list
        self._weights = lists("params", "weight", "weights", every)
        self._biases = lists("params", "bias", "biases", every)
        self.weight_grads = lists("grads", "weight", "weight_grads", every)
        self.bias_grads = lists("grads", "bias", "bias_grads", every)
        self._bn_gammas = lists("params", "gamma", "bn_gammas", affine)
        self._bn_betas = lists("params", "beta", "bn_betas", affine)
        self.bn_gamma_grads = lists("grads", "gamma", "bn_gamma_grads", affine)
        self.bn_beta_grads = lists("grads", "beta", "bn_beta_grads", affine)
        self._running_means = lists("running_means", "running", "running_means", bn_layers)
        self._running_vars = lists("running_vars", "running", "running_vars", bn_layers)
        self.input_grad = None

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        """`net.weights = weights` as a method: every W_l checked, then written (any device).

        weights: L arrays, weights[l]: (sizes[l+1], sizes[l]) with the net's dtype."""
        self.weights = weights

    def set_biases(self, biases: Sequence[ArrayLike]) -> None:
        """`net.biases = biases` as a method: biases[l]: (sizes[l+1],), or (0,) for a layer
        with batch norm (it has no dense bias)."""
        self.biases = biases

    def _parameter_list(self, buffer, kind, name, layers):
        """ParameterList of `kind` entries of the given layers of a core buffer: views on the
        CPU; on CUDA host copies made at each access, written back through the core."""
        layout = self._core.layout
        if self.device == "cpu":
            views = self._layer_views(getattr(self._core, buffer), layout, kind)
            return ParameterList(name, [views[l] for l in layers])

        def source():
            views = self._layer_views(getattr(self._core, buffer), layout, kind)
            return [views[l] for l in layers]

        def write(i, value):
            if value.size:
                self._core.write(buffer, layout[layers[i]][kind], np.ascontiguousarray(value).ravel())

        return ParameterList(name, source, write)

    def _layer_views(self, flat, layout, kind):
        """Per-layer views of `kind` into a flat buffer; empty (0,) arrays where a layer has none
        (the bias of a batch-norm layer)."""
        views = []
        for l, offsets in enumerate(layout):
            fan_in, fan_out = self.sizes[l], self.sizes[l + 1]
            start = offsets[kind]
            if start < 0:
                views.append(flat[:0])
            elif kind == "weight":
                views.append(flat[start:start + fan_out * fan_in].reshape(fan_out, fan_in))
            else:
                views.append(flat[start:start + fan_out])
        return views

    def _initialize(self, seed, sigma_w, sigma_b, bias_init, gain):
        self._init_options = dict(sigma_w=sigma_w, sigma_b=sigma_b, bias_init=bias_init,
                                  gain=gain)  # what reinitialize() redraws with by default
        rng = np.random.default_rng(seed)
        # CPU: into the net's memory; CUDA: into a host copy, written to the device at the end
        flat = self._params if self.device == "cpu" else self._core.params.copy()
        layout = self._core.layout
        weights = self._layer_views(flat, layout, "weight")
        biases = self._layer_views(flat, layout, "bias")
        with np.errstate(over="ignore"):  # checked below, once for all layers (a sweep redraws
            for w, b in zip(weights, biases):  # nets often), with a message that says why
                w_value, b_value = draw_layer(rng, self.init, w.shape[0], w.shape[1],
                                              sigma_w=sigma_w, sigma_b=sigma_b, gain=gain)
                w[...] = w_value
                if b.size:  # batch-norm layers have no bias (beta plays its role)
                    b[...] = b_value if b_value is not None else (0.0 if bias_init is None else bias_init)
        if not (np.isfinite(flat.min()) and np.isfinite(flat.max())):  # inf (or NaN) parameters
            l = next(l for l, (w, b) in enumerate(zip(weights, biases))
                     if not (np.isfinite(w).all() and np.isfinite(b).all()))
            raise ValueError(f"MLP: the initial parameters of layer {l} overflow {self.dtype.name} "
                             f"(init={self.init!r}, gain={gain!r}, sigma_w={sigma_w!r}, "
                             f"sigma_b={sigma_b!r}); use a smaller scale")
        if self.device != "cpu":
            self._core.write("params", 0, flat)
        self.set_reference()  # the weights vgkern.optim's weight_change compares against

    @property
    def num_layers(self) -> int:
        """L = len(sizes) - 1, the number of dense layers."""
        return len(self.sizes) - 1

    @property
    def training(self) -> bool:
        """Batch norm uses batch statistics (True, the default) or the running ones (False)."""
        return self._core.training

    def train(self, mode: bool = True) -> MLP:
        """Batch norm uses batch statistics (mode=True) or the running ones (False), as
        torch.nn.Module.train. Returns the net."""
        self._core.training = _checks.flag("MLP.train: mode", mode)
        return self

    def eval(self) -> MLP:
        """train(False): batch norm uses its running statistics. Returns the net."""
        return self.train(False)

    def _check_batch(self, shape):  # before copying a non-contiguous x of this shape
        self._core.check_batch(shape[0])

    def forward(self, x: ArrayLike) -> NDArray[np.floating]:
        """x: (B, sizes[0]) with the net's dtype -> output: (B, sizes[-1]), a new array."""
        x = _checks.array_input(x, "MLP.forward: x", dtype=self.dtype,
                                shape=(None, self.sizes[0]), before_copy=self._check_batch,
                                device=self.device)
        return self._core.forward(x)

    def backward(self, grad_out: ArrayLike, log_scale: bool = False,
                 compute_input_grad: bool = False, *, input_grad: Any = _deprecated.UNSET
                 ) -> GradReport:
        """grad_out: (B, sizes[-1]), dL/d(out) for the last forward -> GradReport.

        Gradients land in weight_grads / bias_grads (overwritten, not accumulated); with
        compute_input_grad=True dL/dx lands in self.input_grad (B, sizes[0]) (else it is None).
        log_scale=True renormalises the backward signal at every layer by a power of two: the
        log10_ norms stay exact where the gradients underflow, and stored gradients are the true
        ones times 2**-report.grad_log2_scale[l]. `input_grad=` is the deprecated name of
        compute_input_grad=."""
        compute_input_grad = _deprecated.renamed_keyword(
            "MLP.backward", "input_grad", input_grad, "compute_input_grad", compute_input_grad,
            False)
        log_scale = _checks.flag("MLP.backward: log_scale", log_scale)
        compute_input_grad = _checks.flag("MLP.backward: compute_input_grad", compute_input_grad)
        grad_out = _checks.array_input(grad_out, "MLP.backward: grad_out", dtype=self.dtype,
                                       shape=(None, self.sizes[-1]), device=self.device)
        table, self.input_grad = self._core.backward(grad_out, log_scale, compute_input_grad)
        return self._issued(GradReport(table))

    def step(self, x: ArrayLike, target: ArrayLike, loss: str = "mse", log_scale: bool = False,
             compute_input_grad: bool = False, *, input_grad: Any = _deprecated.UNSET
             ) -> GradReport:
        """forward + loss + backward in one native call -> GradReport with .loss; the output
        lands in self.last_output (B, sizes[-1]), log_scale and compute_input_grad as in
        backward(). x: (B, sizes[0]) with the net's dtype.

        loss="mse": target: (B, sizes[-1]) with the net's dtype, loss = 0.5 * mean over the batch
        of the squared error summed over outputs. loss="cross_entropy": target = integer class
        labels, target: (B,), softmax cross-entropy averaged over the batch."""
        compute_input_grad = _deprecated.renamed_keyword(
            "MLP.step", "input_grad", input_grad, "compute_input_grad", compute_input_grad, False)
        _checks.choice("MLP: loss", loss, LOSSES)
        log_scale = _checks.flag("MLP.step: log_scale", log_scale)
        compute_input_grad = _checks.flag("MLP.step: compute_input_grad", compute_input_grad)
        x = _checks.array_input(x, "MLP.step: x", dtype=self.dtype, shape=(None, self.sizes[0]),
                                before_copy=self._check_batch, device=self.device)
        rows = _checks.shape_of(x)[0]
        if loss == "mse":
            labels_error = _checks.integer_target("MLP.step: target", target)
            if labels_error is not None:
                raise labels_error
            target = _checks.array_input(target, "MLP.step: target", dtype=self.dtype,
                                         shape=(rows, self.sizes[-1]), device=self.device)
        else:  # integer labels of any integer dtype (converted natively), on the host
            target = _checks.array_input(target, "MLP.step: target", ndim=1, shape=(rows,))
        value, self.last_output, table, self.input_grad = self._core.step(
            x, target, loss, log_scale, compute_input_grad)
        return self._issued(GradReport(table, loss=value))

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """Held-out loss and accuracy, without gradients or statistics -> (loss, accuracy).

        x: (B, sizes[0]) with the net's dtype; labels: (B,) integer classes in [0, sizes[-1]).
        loss: the mean softmax cross entropy of the outputs (float64); accuracy: the fraction of
        examples whose largest output is the label. Batch norm uses its running statistics; the
        parameters, gradients, mode and running statistics stay as they were, but the
        activations saved for a backward are overwritten (vgkern._evaluation says more)."""
        from ._evaluation import evaluate_mlp

        return evaluate_mlp(self, x, labels)

    def __repr__(self):
        return (f"MLP(sizes={self.sizes}, activation={self.activation!r}, init={self.init!r}, "
                f"dtype={self.dtype.name!r}, batch_norm={self.batch_norm})")

    # Redrawing in place and the log-scale contract (a sweep reuses one net per architecture).

    def reinitialize(self, seed: Any, *, init: Optional[str] = None,
                     sigma_w: Optional[float] = None, sigma_b: Optional[float] = None,
                     bias_init: Optional[float] = None, gain: Optional[float] = None) -> MLP:
        """Redraw every parameter in this net's buffers, bit for bit as a new MLP with this net's
        configuration and `seed` would draw them: weights and biases from `init`, batch-norm
        gamma = 1 and beta = 0, running means 0 and variances 1. The gradients (which every
        backward overwrites), the train/eval mode and the statistics switch stay as they are.
        Returns the net.

        seed: as for MLP (an integer, a numpy Generator, ...; vgkern.init.NormalStream(seed)
            .generator() shares one draw of the seed's normals among many nets).
        init, sigma_w, sigma_b, bias_init, gain: as for MLP; not given (None), the ones this net
            was drawn with. An option that `init` does not read is refused (ValueError), as are
            non-finite values and negative sigmas. A ValueError for parameters that overflow the
            dtype (a huge sigma_w) comes after some layers were redrawn."""
        what = "MLP.reinitialize"
        init = self.init if init is None else _checks.choice(f"{what}: init", init, INITS)
        options = redraw_options(what, init, self.dtype, self._init_options, sigma_w=sigma_w,
                                 sigma_b=sigma_b, bias_init=bias_init, gain=gain)
        _checks.rng(f"{what}: seed", seed)  # refused before anything is written
        self._fill_fresh_buffers()
        self.init = init
        self._initialize(seed, **options)
        return self

    def _fill_fresh_buffers(self):
        """params and the running statistics as a new net holds them before its weights are
        drawn: zeros, except gamma = 1 and the running variances 1 (torch.nn.BatchNorm1d's
        defaults). In place on the CPU; on CUDA written from host arrays."""
        if self.device == "cpu":  # the views the net keeps (a sweep redraws nets very often)
            self._params[...] = 0
            for views, value in ((self._bn_gammas, 1), (self._running_means, 0),
                                 (self._running_vars, 1)):
                for view in views:
                    view[...] = value
            return
        for name, value in (("params", 0), ("running_means", 0), ("running_vars", 1)):
            flat = np.full_like(getattr(self._core, name), value)  # host copies of the buffers
            if name == "params":
                for gamma in self._layer_views(flat, self._core.layout, "gamma"):
                    gamma[...] = 1
            if flat.size:
                self._core.write(name, 0, flat)

    def unscale_grads(self, report: GradReport) -> MLP:
        """The log-scale contract: after backward or step with log_scale=True, the stored
        gradients of layer l (dW_l, db_l and, with batch norm, dgamma_l and dbeta_l) are the true
        ones times 2**-report.grad_log2_scale[l]. This multiplies them by 2**grad_log2_scale[l]
        in place, so that they are the true gradients, rounded to the net's dtype (where those
        underflow it, they become subnormal or 0). `report`: the GradReport of this net's last
        backward or step, applied once (a plain backward's scales are all 0: nothing changes).
        Returns the net."""
        what = "MLP.unscale_grads"
        if not isinstance(report, GradReport):
            raise TypeError(f"{what}: report must be the GradReport of this net's last backward "
                            f"or step, got {type(report).__name__}")
        scales = np.asarray(report.grad_log2_scale, dtype=np.float64)
        if scales.shape != (self.num_layers,):
            raise ValueError(f"{what}: report has {scales.size} layers, this net "
                             f"{self.num_layers}; pass the report of this net's last backward")
        if not (np.isfinite(scales).all() and (scales == np.round(scales)).all()):
            raise ValueError(f"{what}: report.grad_log2_scale must hold integers, got {scales}")
        exponents = [int(e) for e in scales]
        if not any(exponents):
            return self
        flat = self._grads if self.device == "cpu" else self._core.grads.copy()
        layout = self._core.layout
        for kind in ("weight", "bias", "gamma", "beta"):
            for grad, e in zip(self._layer_views(flat, layout, kind), exponents):
                if e and grad.size:
                    np.ldexp(grad, e, out=grad)  # exact, unless the result underflows
        if self.device != "cpu":
            self._core.write("grads", 0, flat)
        return self

    # PyTorch interop and the nn.Module conventions (vgkern.torch_convert does the work).
    @classmethod
    def from_torch(cls, module: torch.nn.Sequential, *, dtype: Optional[DTypeLike] = None,
                   device: str = "cpu", stats: bool = True) -> MLP:
        """A new MLP with the configuration and parameters of `module`, a torch.nn.Sequential of
        Linear, BatchNorm1d (optional, after a hidden Linear without bias; mode, eps, momentum,
        affine and running statistics carried over) and Sigmoid/Tanh/ReLU/ELU/Identity.
        dtype: the module's (float32 or float64) unless given. Anything else is refused with
        an error naming the module and its position (vgkern.torch_convert lists the rules)."""
        from . import torch_convert

        net = torch_convert.mlp_from_torch(cls, module, dtype=dtype, device=device, stats=stats)
        return net.set_reference()  # the module's weights are W0 (vgkern.optim)

    def to_torch(self) -> torch.nn.Sequential:
        """The equivalent torch.nn.Sequential (CPU, this net's dtype and train/eval mode)."""
        from . import torch_convert

        return torch_convert.mlp_to_torch(self)

    def state_dict(self) -> Dict[str, NDArray[Any]]:
        """{key: numpy array} with the keys and shapes of self.to_torch().state_dict() (copies;
        "<i>.num_batches_tracked" is 0: vgkern does not count batches): "<i>.weight":
        (sizes[l+1], sizes[l]), "<i>.bias", "<i>.running_mean", ...: (sizes[l+1],)."""
        from . import torch_convert

        return torch_convert.state_dict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> MLP:
        """Writes a state dict (numpy arrays or torch tensors, keyed as state_dict()) into this
        net after checking every key, shape and dtype. Returns the net."""
        from . import torch_convert

        return torch_convert.load_state_dict(self, state)

    def __call__(self, x: ArrayLike) -> NDArray[np.floating]:
        """net(x) is net.forward(x): x: (B, sizes[0]) -> output: (B, sizes[-1])."""
        return self.forward(x)
