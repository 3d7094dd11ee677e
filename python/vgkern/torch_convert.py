"""Models both ways between vgkern and PyTorch, and torch-compatible state dicts.

MLP.from_torch / LSTM.from_torch / RNN.from_torch copy a torch module's configuration and
parameters into a new vgkern net; net.to_torch() builds the equivalent torch module (on the CPU,
float32 or float64 as the net). net.state_dict() / net.load_state_dict(state) use the keys and
shapes of to_torch()'s module, with numpy arrays as values, so that
`torch_module.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})`
and `net.load_state_dict(torch_module.state_dict())` move weights without code.

torch is imported inside the functions that build or read torch modules only: `import vgkern`
never imports it, and state_dict()/load_state_dict() do not need it.

What maps to what:
- MLP: nn.Sequential of Linear, an optional BatchNorm1d right after a Linear, and one of the
  activations Sigmoid, Tanh, ReLU, ELU(alpha), Identity after it. Hidden layers share one
  activation (a Linear followed by no activation is "identity"), the last one's is
  output_activation; all ELUs share one alpha. Batch norm is on every hidden layer or on none
  (never on the last), with one eps, momentum, affine and train/eval mode, and the Linear before
  it has no bias (bias=False: vgkern's batch-norm layers have no dense bias; folding one in is
  not exact in eval mode). Every other Linear has a bias (vgkern's dense layers always train one).
  to_torch() writes no module for an "identity" activation.
- LSTM / RNN: one layer, unidirectional, no proj_size, with biases; vgkern's one bias is torch's
  bias_ih + bias_hh (to_torch() and state_dict() split it as bias_ih = bias, bias_hh = 0).
  batch_first is recorded in net.torch_batch_first and given back by to_torch(); vgkern's own
  forward always takes x_seq (T, B, I). The conversion is of the weights, not of the layout.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ._params import _checked

if TYPE_CHECKING:
    import torch

    from .mlp import MLP
    from .recurrent import _Recurrent

_Net = TypeVar("_Net", bound="_Recurrent")
# The functions below that take any net (`net: Any`) dispatch on its class at run time; the
# typed entry points are the methods MLP/LSTM/RNN.from_torch, to_torch, state_dict, ...

_TORCH_ACTIVATIONS = ("Sigmoid", "Tanh", "ReLU", "ELU", "Identity")  # nn class names, in order
_VGKERN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu", "identity")


def _import_torch(what):
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"{what} needs PyTorch (pip install torch)") from err
    return torch


def _numpy(value):
    """A torch tensor (any device) or array-like as a numpy array (tensors copied to the host)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _net_dtype(what, tensors, dtype):
    """The vgkern dtype: `dtype` if given, else the tensors' common torch dtype."""
    if dtype is not None:
        return dtype
    names = sorted({str(t.dtype).replace("torch.", "") for t in tensors})
    if len(names) != 1 or names[0] not in ("float32", "float64"):
        raise TypeError(f"{what}: the module's parameters must all be float32 or all float64 "
                        f"(or pass dtype=), got {names}")
    return names[0]


# --- MLP -----------------------------------------------------------------------------------

def _parse_sequential(what, module, nn):
    """nn.Sequential -> one dict per Linear: {"linear": (position, module), "bn": ..., "act": ...}
    ((position, module) or None)."""
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"{what}: module must be a torch.nn.Sequential, got {type(module).__name__}")
    activations = {getattr(nn, name): name for name in _TORCH_ACTIVATIONS}
    layers = []
    for i, m in enumerate(module):
        name = type(m).__name__
        if type(m) is nn.Linear:
            layers.append({"linear": (i, m), "bn": None, "act": None})
        elif type(m) is nn.BatchNorm1d:
            if not layers or layers[-1]["bn"] is not None or layers[-1]["act"] is not None:
                raise ValueError(f"{what}: BatchNorm1d at position {i} must directly follow a "
                                 "Linear (vgkern normalizes between the GEMM and the activation)")
            layers[-1]["bn"] = (i, m)
        elif type(m) in activations:
            if not layers or layers[-1]["act"] is not None:
                raise ValueError(f"{what}: {name} at position {i} must follow a Linear (or its "
                                 "BatchNorm1d); vgkern applies one activation per layer")
            layers[-1]["act"] = (i, m)
        else:
            raise ValueError(f"{what}: unsupported module {name} at position {i} (supported: "
                             f"Linear, BatchNorm1d, {', '.join(_TORCH_ACTIVATIONS)})")
    if not layers:
        raise ValueError(f"{what}: module has no Linear layer")
    return layers


def _activation(entry):
    """(vgkern name, ELU alpha or None, position or None) of a layer's activation entry."""
    if entry is None:
        return "identity", None, None
    i, m = entry
    name = _VGKERN_ACTIVATIONS[_TORCH_ACTIVATIONS.index(type(m).__name__)]
    return name, (float(m.alpha) if name == "elu" else None), i


def _check_mlp_layers(what, layers):
    """The options MLP(...) takes for these layers, or an error naming the offending position."""
    sizes = [layers[0]["linear"][1].in_features]
    for layer in layers:
        i, lin = layer["linear"]
        if lin.in_features != sizes[-1]:
            raise ValueError(f"{what}: Linear at position {i} has in_features={lin.in_features}, "
                             f"the layer before gives {sizes[-1]}")
        sizes.append(lin.out_features)
        bn = layer["bn"]
        if bn is not None and lin.bias is not None:
            raise ValueError(f"{what}: Linear at position {i} has a bias before the BatchNorm1d "
                             f"at position {bn[0]}; vgkern's batch-norm layers have no dense bias "
                             "(train mode cancels it, eval mode does not): use bias=False")
        if bn is None and lin.bias is None:
            raise ValueError(f"{what}: Linear at position {i} has no bias; vgkern's dense layers "
                             "always train one (use bias=True, with zeros if you want none)")
    hidden, last = layers[:-1], layers[-1]
    if last["bn"] is not None:
        raise ValueError(f"{what}: BatchNorm1d at position {last['bn'][0]} is on the last layer; "
                         "vgkern normalizes hidden layers only")
    with_bn = [layer["bn"] is not None for layer in hidden]
    if any(with_bn) and not all(with_bn):
        j = with_bn.index(False)
        raise ValueError(f"{what}: the Linear at position {hidden[j]['linear'][0]} has no "
                         "BatchNorm1d while others do; vgkern normalizes every hidden layer or none")
    alphas = {}  # position -> alpha of every ELU
    for layer in layers:
        _, alpha, i = _activation(layer["act"])
        if alpha is not None:
            alphas[i] = alpha
    activation = _activation(hidden[0]["act"])[0] if hidden else "identity"
    for layer in hidden[1:]:
        name = _activation(layer["act"])[0]
        if name != activation:
            raise ValueError(f"{what}: the Linear at position {layer['linear'][0]} is followed by "
                             f"{name!r}, the first hidden layer by {activation!r}; vgkern's "
                             "hidden layers share one activation")
    output_activation = _activation(last["act"])[0]
    if len(set(alphas.values())) > 1:
        raise ValueError(f"{what}: the ELUs at positions {sorted(alphas)} have different alphas "
                         f"{sorted(set(alphas.values()))}; vgkern's MLP has one alpha")
    options = dict(sizes=sizes, activation=activation, output_activation=output_activation,
                   alpha=next(iter(alphas.values()), 1.0), batch_norm=any(with_bn))
    if options["batch_norm"]:
        options.update(_check_batch_norms(what, [layer["bn"] for layer in hidden]))
    return options


def _check_batch_norms(what, bns):
    """One eps, momentum, affine and mode for every BatchNorm1d (vgkern has one of each)."""
    for i, bn in bns:
        if bn.momentum is None:
            raise ValueError(f"{what}: BatchNorm1d at position {i} has momentum=None (a cumulative "
                             "average); vgkern's running statistics use a momentum in [0, 1]")
        if not bn.track_running_stats:
            raise ValueError(f"{what}: BatchNorm1d at position {i} has track_running_stats=False; "
                             "vgkern's batch norm keeps running statistics")
    first_i, first = bns[0]
    for i, bn in bns[1:]:
        for attr in ("eps", "momentum", "affine", "training"):
            if getattr(bn, attr) != getattr(first, attr):
                raise ValueError(f"{what}: BatchNorm1d at position {i} has {attr}="
                                 f"{getattr(bn, attr)!r}, the one at position {first_i} "
                                 f"{getattr(first, attr)!r}; vgkern's batch-norm layers share one")
    return dict(bn_eps=float(first.eps), bn_momentum=float(first.momentum),
                bn_affine=bool(first.affine), training=bool(first.training))


def mlp_from_torch(cls: Type[MLP], module: torch.nn.Sequential, *,
                   dtype: Optional[DTypeLike] = None, device: str = "cpu",
                   stats: bool = True) -> MLP:
    """vgkern.MLP.from_torch: a new MLP with `module`'s configuration and parameters."""
    what = f"{cls.__name__}.from_torch"
    torch = _import_torch(what)
    layers = _parse_sequential(what, module, torch.nn)
    options = _check_mlp_layers(what, layers)
    training = options.pop("training", True)
    running = [t for layer in layers if layer["bn"] is not None
               for t in (layer["bn"][1].running_mean, layer["bn"][1].running_var)]
    dtype = _net_dtype(what, list(module.parameters()) + running, dtype)
    net = cls(options.pop("sizes"), dtype=dtype, device=device, stats=stats, **options)
    np_dtype = net.dtype

    def host(t):
        return _numpy(t).astype(np_dtype)

    net.weights = [host(layer["linear"][1].weight) for layer in layers]
    net.biases = [np.empty(0, np_dtype) if layer["bn"] is not None
                  else host(layer["linear"][1].bias) for layer in layers]
    bns = [layer["bn"][1] for layer in layers if layer["bn"] is not None]
    if bns:
        if net._config["bn_affine"]:
            net.bn_gammas = [host(bn.weight) for bn in bns]
            net.bn_betas = [host(bn.bias) for bn in bns]
        net.running_means = [host(bn.running_mean) for bn in bns]
        net.running_vars = [host(bn.running_var) for bn in bns]
    net.train(training)
    return net


def _mlp_layout(net):
    """The modules to_torch() builds, in order: (position, kind, layer) with kind "linear",
    "bn" or an activation name; shared by to_torch() and state_dict() so their keys agree."""
    layout, position = [], 0
    L = net.num_layers
    for l in range(L):
        layout.append((position, "linear", l))
        position += 1
        if net.batch_norm and l < L - 1:
            layout.append((position, "bn", l))
            position += 1
        act = net.activation if l < L - 1 else net.output_activation
        if act != "identity":
            layout.append((position, act, l))
            position += 1
    return layout


def _mlp_state_entries(net):
    """{key: (shape, getter)} of an MLP's state dict, in to_torch()'s key order."""
    entries: Dict[str, Tuple[Optional[str], int]] = {}  # key -> (attribute or None, index)
    bn_index: Dict[int, int] = {}
    for l in range(net.num_layers - 1):
        if net.batch_norm:
            bn_index[l] = len(bn_index)
    affine = net.batch_norm and net._config["bn_affine"]
    for position, kind, l in _mlp_layout(net):
        if kind == "linear":
            entries[f"{position}.weight"] = ("weights", l)
            if not (net.batch_norm and l < net.num_layers - 1):
                entries[f"{position}.bias"] = ("biases", l)
        elif kind == "bn":
            j = bn_index[l]
            if affine:
                entries[f"{position}.weight"] = ("bn_gammas", j)
                entries[f"{position}.bias"] = ("bn_betas", j)
            entries[f"{position}.running_mean"] = ("running_means", j)
            entries[f"{position}.running_var"] = ("running_vars", j)
            entries[f"{position}.num_batches_tracked"] = (None, j)
    return entries


def mlp_to_torch(net: MLP) -> torch.nn.Sequential:
    """vgkern.MLP.to_torch: the equivalent torch.nn.Sequential (CPU, the net's dtype and mode)."""
    torch = _import_torch("MLP.to_torch")
    nn = torch.nn
    modules = []
    for _, kind, l in _mlp_layout(net):
        d_in, d_out = net.sizes[l], net.sizes[l + 1]
        if kind == "linear":
            modules.append(nn.Linear(d_in, d_out, bias=not (net.batch_norm and l < net.num_layers - 1)))
        elif kind == "bn":
            modules.append(nn.BatchNorm1d(d_out, eps=net._config["bn_eps"],
                                          momentum=net._config["bn_momentum"],
                                          affine=net._config["bn_affine"]))
        elif kind == "elu":
            modules.append(nn.ELU(alpha=net.alpha))
        else:
            modules.append(getattr(nn, _TORCH_ACTIVATIONS[_VGKERN_ACTIVATIONS.index(kind)])())
    module = nn.Sequential(*modules).to(getattr(torch, net.dtype.name))
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in net.state_dict().items()})
    return module.train(net.training)


# --- LSTM and RNN --------------------------------------------------------------------------

def recurrent_from_torch(cls: Type[_Net], module: Union[torch.nn.LSTM, torch.nn.RNN], *,
                         dtype: Optional[DTypeLike] = None, device: str = "cpu",
                         stats: bool = True) -> _Net:
    """vgkern.LSTM.from_torch / RNN.from_torch: a new net with `module`'s parameters."""
    what = f"{cls.__name__}.from_torch"
    torch = _import_torch(what)
    expected = getattr(torch.nn, cls.__name__)  # nn.LSTM for LSTM, nn.RNN for RNN
    if not isinstance(module, expected):
        raise TypeError(f"{what}: module must be a torch.nn.{cls.__name__}, got "
                        f"{type(module).__name__}")
    for attr, ok, why in (("num_layers", 1, "vgkern's recurrent nets have one layer"),
                          ("bidirectional", False, "vgkern's recurrent nets are unidirectional"),
                          ("proj_size", 0, "vgkern's LSTM has no projection"),
                          ("bias", True, "vgkern's recurrent nets always train a bias")):
        value = getattr(module, attr, ok)
        if value != ok:
            raise ValueError(f"{what}: unsupported {type(module).__name__} with {attr}={value!r} "
                             f"(needs {attr}={ok!r}: {why})")
    options = {} if cls.__name__ == "LSTM" else {"nonlinearity": module.nonlinearity}
    dtype = _net_dtype(what, list(module.parameters()), dtype)
    net = cls(module.input_size, module.hidden_size, dtype=dtype, device=device, stats=stats,
              **options)
    net.load_state_dict({name: _numpy(getattr(module, name)).astype(net.dtype)
                         for name in _RECURRENT_KEYS})
    net.torch_batch_first = bool(module.batch_first)
    return net


def recurrent_to_torch(net: Any) -> Union[torch.nn.LSTM, torch.nn.RNN]:
    """vgkern.LSTM.to_torch / RNN.to_torch: the equivalent one-layer torch module (CPU, the
    net's dtype, batch_first as recorded by from_torch, else False)."""
    name = type(net).__name__
    torch = _import_torch(f"{name}.to_torch")
    options = {} if name == "LSTM" else {"nonlinearity": net.nonlinearity}
    module = getattr(torch.nn, name)(net.input_size, net.hidden_size,
                                     batch_first=getattr(net, "torch_batch_first", False),
                                     **options).to(getattr(torch, net.dtype.name))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    return module


_RECURRENT_KEYS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


# --- state dicts ---------------------------------------------------------------------------

def state_dict(net: Any) -> Dict[str, NDArray[Any]]:
    """{key: numpy array (a copy)} with the keys and shapes of net.to_torch().state_dict()."""
    if type(net).__name__ == "MLP":
        out = {}
        for key, (attr, i) in _mlp_state_entries(net).items():
            out[key] = (np.array(0, np.int64) if attr is None  # vgkern does not count batches
                        else np.array(getattr(net, attr)[i]))
        return out
    bias = np.array(net.bias)
    return {"weight_ih_l0": np.array(net.weight_ih), "weight_hh_l0": np.array(net.weight_hh),
            "bias_ih_l0": bias, "bias_hh_l0": np.zeros_like(bias)}


def _check_keys(what, state, expected):
    if not hasattr(state, "keys"):
        raise TypeError(f"{what}: state must be a mapping of names to arrays, got "
                        f"{type(state).__name__}")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise KeyError(f"{what}: missing keys {missing}, unexpected keys {unexpected} "
                       f"(expected {list(expected)})")


def load_state_dict(net: Any, state: Mapping[str, Any]) -> Any:
    """Writes a state dict (numpy arrays or torch tensors, the keys of state_dict()) into the net;
    every entry is checked (keys, shapes, dtypes: no silent cast) before any is written.
    num_batches_tracked is read and ignored (vgkern's momentum never needs it); an LSTM/RNN gets
    bias = bias_ih + bias_hh."""
    what = f"{type(net).__name__}.load_state_dict"
    current = state_dict(net)
    _check_keys(what, state, current)
    values = {}
    for key, target in current.items():
        value = _numpy(state[key])
        if key.endswith("num_batches_tracked"):
            if value.shape != () or value.dtype.kind not in "iu":
                raise ValueError(f"{what}: state[{key!r}] must be an integer scalar, got "
                                 f"{value.dtype} of shape {value.shape}")
            continue
        values[key] = _checked(f"{what}: state[{key!r}]", target, value)
    if type(net).__name__ != "MLP":
        net.weight_ih, net.weight_hh = values["weight_ih_l0"], values["weight_hh_l0"]
        net.bias = values["bias_ih_l0"] + values["bias_hh_l0"]
        return net
    lists: Dict[str, List[Any]] = {}
    for key, (attr, i) in _mlp_state_entries(net).items():
        if attr is not None:
            lists.setdefault(attr, list(getattr(net, attr)))[i] = values[key]
    for attr, arrays in lists.items():
        setattr(net, attr, arrays)
    return net
