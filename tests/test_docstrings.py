"""Every public callable of vgkern has type hints and a docstring that states the shapes of its
array arguments and of the arrays it returns (issue 21; COMMON rule for new public API).

Public callables (public_callables() collects them; nothing here lists them by hand, so a new
module or function is checked as soon as it exists):
  * the functions and classes in vgkern.__all__; the modules in it (vgkern.ops, vgkern.theory)
    are walked as the submodules below;
  * every public submodule: vgkern.<name> for each module or package directly under vgkern
    whose name does not start with "_" (pkgutil.iter_modules); in it, the names in its __all__
    (a module listed there is walked in turn), or, without __all__, the functions and classes
    defined in that module (their __module__ is the module) whose names do not start with "_";
  * for each such class: every method, classmethod, staticmethod, property and
    functools.cached_property reachable on it whose name does not start with "_" (plus
    __init__, checked together with the class docstring, and __call__), where the class that
    defines it is vgkern's (methods inherited from object, Exception or numpy are not).
  Objects of the compiled extension (vgkern._core, e.g. vgkern.CudaArray) are left out: their
  documentation lives in the C++ bindings.

The rules, for each public callable:
  1. Docstring: its own __doc__ is a non-empty string (a class: the class docstring; a property:
     its getter's). An inherited docstring does not count.
  2. Type hints: every parameter other than self/cls has an annotation, and so does the return
     (__init__ may leave out its `-> None`; a property: its getter's return).
  3. Array arguments: a parameter is an array when its annotation names an array type
     (ArrayLike, NDArray, ndarray, Tensor, CudaArray; not Dict/Mapping annotations, a dict of
     arrays being described in prose, nor Callable ones) or, when it is not annotated or
     annotated Any, when its name is in ARRAY_NAMES. Its shape must be stated in the docstring
     (for __init__: the class docstring and __init__'s own, together) as the name, optionally
     in backquotes and followed by an index such as [l], then ":" or a space, then the shape in
     parentheses:
         x: (B, sizes[0])      x (B, sizes[0])      weights[l]: (sizes[l+1], sizes[l])
     Several names may share one shape when listed with ",", "/", "and" or "or" before it:
         h0, c0 (B, H)      gamma/beta (C,)
     A shape is "(any shape)" or comma-separated dimensions with an optional trailing comma:
     each dimension a word (B, 4H, sizes[0], len(COLUMNS)) or words joined by + - * /
     (steps * L). "(the default)" or "(a copy)" are not shapes. The rule is textual: a
     parenthesised list of words after a name, such as "x (a, b)", reads as a shape.
  4. Returned arrays: when the return annotation is an array type, or a Tuple/Optional/Union
     of them (not a Dict or List: described in prose), the docstring states at least one
     returned shape: after the first "->" or a word starting with "return" (any case), some
     `name: (shape)` / `name (shape)` as in rule 3 (a bare "-> (h, dact)" names the results, it
     does not give their shapes). For a property, `name: (shape)` anywhere in its docstring.
"""
import functools
import importlib
import inspect
import pkgutil
import re
import types

import numpy as np
import pytest
from numpy.typing import ArrayLike, NDArray

import vgkern

# Parameters that are arrays whatever their (missing) annotation says.
ARRAY_NAMES = frozenset({
    "x", "x_seq", "target", "labels", "logits", "grad_out", "grad_h_seq", "grad_hT", "grad_cT",
    "h0", "c0", "dh", "dy", "dact", "z", "w", "b", "weights", "biases", "table",
})

# (an annotation that is not a string, without `from __future__ import annotations`, reads as
# numpy.ndarray[...] or, for ArrayLike, a Union[..., _SupportsArray[...], ...])
_ARRAY_TYPE = re.compile(r"\b(ArrayLike|NDArray|ndarray|Tensor|CudaArray|_SupportsArray)\b")
_NOT_ARRAY = re.compile(
    r"^\s*(typing\.|collections\.abc\.)?(Dict|Mapping|MutableMapping|dict|Callable)\b")
_CONTAINER = re.compile(
    r"^\s*(typing\.)?(Dict|Mapping|dict|List|list|Sequence|Iterable|Iterator)\b")

_WORD = r"\w+(?:\[[^\]]*\])?(?:\([^()]*\))?"  # B, 4H, sizes[0], len(STAT_COLUMNS)
_DIM = rf"{_WORD}(?:\s*[-+*/]\s*{_WORD})*"  # steps * L, d_0 + 1
SHAPE = rf"\((?:any shape|{_DIM}(?:\s*,\s*{_DIM})*\s*,?)\)"
_LISTED = r"(?:\s*(?:,|/|\band\b|\bor\b)\s*`?\w+(?:\[[^\]]*\])?`?)*"  # h0, c0 / gamma/beta
_SEP = r"(?::\s*|\s+)"  # ": " or " " between a name and its shape ("act(z)" is a call)
_NAMED_SHAPE = re.compile(rf"(?<![\w.])`?\w+(?:\[[^\]]*\])?`?{_SEP}{SHAPE}")
_RETURN_MARK = re.compile(r"->|\breturn", re.IGNORECASE)


def shape_mentioned(name, doc):
    """Whether `doc` states the shape of parameter `name` (rule 3 of the module docstring)."""
    pattern = rf"(?<![\w.])`?{re.escape(name)}(?:\[[^\]]*\])?`?{_LISTED}{_SEP}{SHAPE}"
    return re.search(pattern, doc) is not None


def returned_shape_mentioned(doc, is_property=False):
    """Whether `doc` states a returned shape (rule 4)."""
    if is_property:
        return _NAMED_SHAPE.search(doc) is not None
    mark = _RETURN_MARK.search(doc)
    return mark is not None and _NAMED_SHAPE.search(doc, mark.end()) is not None


def _text(annotation):
    if annotation is inspect.Parameter.empty:
        return ""
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def is_array_parameter(param):
    text = _text(param.annotation)
    if text in ("", "Any", "typing.Any"):
        return param.name in ARRAY_NAMES
    return bool(_ARRAY_TYPE.search(text)) and not _NOT_ARRAY.match(text)


def returns_array(annotation):
    text = _text(annotation)
    return bool(_ARRAY_TYPE.search(text)) and not _CONTAINER.match(text)


def problems(obj, qualname, *, class_doc=None, is_property=False):
    """The rule violations of one callable, as readable strings (empty: it complies)."""
    out = []
    doc = obj.__doc__ if isinstance(obj.__doc__, str) else ""
    is_init = qualname.endswith(".__init__")
    text = (class_doc or "") + "\n" + doc if is_init else doc
    if not text.strip():
        out.append(f"{qualname}: no docstring")
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # pragma: no cover - a callable without a signature
        return out + [f"{qualname}: no inspectable signature"]
    params = list(sig.parameters.values())
    if (params and params[0].name in ("self", "cls")
            and params[0].annotation is inspect.Parameter.empty):
        params = params[1:]
    for p in params:
        if p.annotation is inspect.Parameter.empty:
            out.append(f"{qualname}: parameter {p.name!r} has no type hint")
        if is_array_parameter(p) and not shape_mentioned(p.name, text):
            out.append(f"{qualname}: the docstring does not state the shape of array argument "
                       f"{p.name!r} (write '{p.name}: (shape)')")
    if sig.return_annotation is inspect.Signature.empty:
        if not is_init:
            out.append(f"{qualname}: no return type hint")
    elif returns_array(sig.return_annotation) and not returned_shape_mentioned(text, is_property):
        out.append(f"{qualname}: returns {_text(sig.return_annotation)} but the docstring does "
                   "not state a returned shape (write '-> name: (shape)')")
    return out


def _is_vgkern(obj):
    module = getattr(obj, "__module__", None) or ""
    return (module == "vgkern" or module.startswith("vgkern.")) and module != "vgkern._core"


def _class_members(cls):
    """(name, callable, is_property) of a class's public members defined in vgkern."""
    seen = set()
    for klass in cls.__mro__:
        if not _is_vgkern(klass):
            continue
        for name, raw in vars(klass).items():
            if name in seen or (name.startswith("_") and name not in ("__init__", "__call__")):
                continue
            seen.add(name)
            if isinstance(raw, property):
                if raw.fget is not None:
                    yield name, raw.fget, True
            elif isinstance(raw, functools.cached_property):
                yield name, raw.func, True
            elif isinstance(raw, (staticmethod, classmethod)):
                yield name, raw.__func__, False
            elif inspect.isfunction(raw):
                yield name, raw, False


def _module_names(module):
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n, v in vars(module).items() if not n.startswith("_")
            and (inspect.isfunction(v) or inspect.isclass(v))
            and getattr(v, "__module__", None) == module.__name__]


def public_modules():
    """vgkern's public submodules: those directly under the package, not named _*."""
    return [importlib.import_module(f"vgkern.{info.name}")
            for info in pkgutil.iter_modules(vgkern.__path__) if not info.name.startswith("_")]


def public_callables():
    """{qualified name: (callable, class docstring or None, is_property)}, every public callable."""
    found = {}
    seen_modules, seen = set(), set()  # an object reached twice is checked once, first name

    def add(qualname, obj, class_doc=None, is_property=False):
        if id(obj) not in seen:
            seen.add(id(obj))
            found[qualname] = (obj, class_doc, is_property)

    def add_object(qualname, obj):
        if not _is_vgkern(obj) or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            return
        add(qualname, obj)
        if inspect.isclass(obj):
            for name, member, is_property in _class_members(obj):
                add(f"{qualname}.{name}", member,
                    obj.__doc__ if name == "__init__" else None, is_property)

    def add_module(module):
        if module.__name__ in seen_modules:
            return
        seen_modules.add(module.__name__)
        for name in _module_names(module):
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                if value.__name__.startswith("vgkern."):
                    add_module(value)
            else:
                add_object(f"{module.__name__}.{name}", value)

    for name in vgkern.__all__:
        value = getattr(vgkern, name)
        if isinstance(value, types.ModuleType):
            add_module(value)
        elif value is not None:  # CudaArray is None on builds without CUDA
            add_object(f"vgkern.{name}", value)
    for module in public_modules():
        add_module(module)
    return found


def _check(qualname, entry):
    obj, class_doc, is_property = entry
    if inspect.isclass(obj):  # the class docstring; __init__ is its own entry
        return [] if (obj.__doc__ or "").strip() else [f"{qualname}: no docstring"]
    return problems(obj, qualname, class_doc=class_doc, is_property=is_property)


def test_the_walk_finds_the_public_api():
    found = public_callables()
    for name in ("vgkern.MLP", "vgkern.MLP.__init__", "vgkern.MLP.forward", "vgkern.MLP.params",
                 "vgkern.LSTM.step", "vgkern.LSTM.from_torch", "vgkern.RNN.forward",
                 "vgkern.GradReport.to_pandas",
                 "vgkern.ops.dense_forward", "vgkern.theory.mean_field",
                 "vgkern.theory.gaussian.phi", "vgkern.theory.MeanField.c_star",
                 "vgkern.sweep", "vgkern.sweeps.run_config", "vgkern.plot_sweep", "vgkern.cli.main",
                 "vgkern.info.package_version", "vgkern.init.NormalStream.first",
                 "vgkern.torch_convert.state_dict"):
        assert name in found, name
    assert not any(".__" in n and not n.endswith(("__init__", "__call__")) for n in found)
    assert not any(n.rsplit(".", 1)[-1].startswith("_") and not n.endswith("__")
                   for n in found), sorted(found)
    assert {m.__name__ for m in public_modules()} >= {
        "vgkern.mlp", "vgkern.recurrent", "vgkern.ops", "vgkern.report", "vgkern.init",
        "vgkern.info", "vgkern.plots", "vgkern.sweeps", "vgkern.theory", "vgkern.torch_convert",
        "vgkern.cli"}


def test_every_public_callable_has_a_docstring_type_hints_and_array_shapes():
    found = public_callables()
    failures = [p for name, entry in sorted(found.items()) for p in _check(name, entry)]
    assert not failures, (f"{len(failures)} problems in {len(found)} public callables (rules: "
                          "tests/test_docstrings.py's docstring):\n" + "\n".join(failures))


# The checker itself: planted violations must be caught, and the documented forms accepted.

def _planted_no_shape(x: ArrayLike, n: int) -> NDArray[np.float64]:
    """Scales x by n -> y: (B, C)."""


def _planted_bad_shape(x: ArrayLike) -> float:
    """x (the input): the norm."""


def _planted_no_returned_shape(x: ArrayLike) -> NDArray[np.float64]:
    """x: (B, C) -> the rows summed."""


def _planted_no_hints(x, n: int):
    """x: (B, C)."""


def _planted_undocumented(n: int) -> int:
    pass


def _compliant(x: ArrayLike, h0: "ArrayLike | None" = None, c0: ArrayLike = None,
               weights: "list[ArrayLike]" = (), gamma: ArrayLike = None,
               beta: ArrayLike = None, state: "dict[str, ArrayLike]" = None
               ) -> "tuple[NDArray[np.float64], float]":
    """x: (B, sizes[0]); h0, c0 (B, H); weights[l]: (sizes[l+1], sizes[l]); gamma/beta (4H,)
    -> (out, norm), out (steps * L, len(COLUMNS)) and a float."""


@pytest.mark.parametrize("fn, expected", [
    (_planted_no_shape, ["shape of array argument 'x'"]),
    (_planted_bad_shape, ["shape of array argument 'x'"]),
    (_planted_no_returned_shape, ["does not state a returned shape"]),
    (_planted_no_hints, ["parameter 'x' has no type hint", "no return type hint"]),
    (_planted_undocumented, ["no docstring"]),
    (_compliant, []),
])
def test_the_rules_catch_planted_violations(fn, expected):
    found = problems(fn, fn.__name__)
    assert len(found) == len(expected), found
    for message, part in zip(found, expected):
        assert part in message, (message, part)


def test_shape_forms():
    assert shape_mentioned("x", "x: (B, sizes[0]) with the net's dtype")
    assert shape_mentioned("x", "takes `x` (B, C)")
    assert shape_mentioned("c0", "h0, c0 (B, H) default to zeros")
    assert shape_mentioned("h0", "h0, c0 (B, H) default to zeros")
    assert shape_mentioned("bias", "bias: (4H,)")
    assert shape_mentioned("u", "u: (any shape)")
    assert not shape_mentioned("x", "x_seq: (T, B, I)")
    assert not shape_mentioned("x", "net.x (B, C)")
    assert not shape_mentioned("x", "x (the default)")
    assert not shape_mentioned("x", "x: (a copy)")
    assert not shape_mentioned("x", "x is an array")
    assert not shape_mentioned("x", "x(B, C)")  # a call, not a shape
    assert returned_shape_mentioned("z: (N, C) -> dz: (N, C)")
    assert not returned_shape_mentioned("x: (N, C) -> (h, dact)")
    assert not returned_shape_mentioned("x: (N, C) -> h = act(z)")
    assert returned_shape_mentioned("params: (P,), writes take effect", is_property=True)
