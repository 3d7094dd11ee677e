"""What a sweep is: its grid keys (ONE table: type, default, help text and allowed values of each
key, from which the package docstring, DEFAULTS, the value checks and the CLI's options derive)
and the columns of its table (from the report classes, which take them from _core)."""
import difflib
import math
import numbers
from typing import Optional
from dataclasses import dataclass

import numpy as np

from ..init import INITS
from ..mlp import ACTIVATIONS
from ..report import GradReport, SequenceReport

SCHEMA_VERSION = 2  # 2: optimizer keys, eval_every, test_loss/test_accuracy, digits split
INT64_MAX = 2**63 - 1
MODELS = ("mlp", "lstm", "rnn")
DATASETS = ("gaussian", "digits")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
RNN_ACTIVATIONS = ("tanh", "relu")
# sweeps train on vgkern.datasets.digits("train") and evaluate on its "test" split

# Column types of the table (Arrow: string, int64, float64, bool).
STR, INT, FLOAT, BOOL = "string", "int64", "float64", "bool"


@dataclass(frozen=True)
class Key:
    """One grid key. kind: "choice" (one of `choices`, any case), "dtype" (numpy's spellings of
    `choices`), "bool", "int" or "float"; low: the smallest allowed number (low_open: low itself
    excluded); column: False for a key that is not a column of the table (seq_len becomes the
    LSTM/RNN rows' depth); default_text: how the default reads where the value would not say it."""

    name: str
    kind: str
    default: object
    models: tuple
    help: str
    choices: tuple = ()
    low: Optional[float] = None
    low_open: bool = False
    column: bool = True
    default_text: Optional[str] = None

    @property
    def type(self):
        """The column's type."""
        return {"choice": STR, "dtype": STR, "bool": BOOL, "int": INT, "float": FLOAT}[self.kind]

    def describe(self, cli=False):
        """The help text with the allowed values and the default, for the docs or the CLI."""
        if self.kind == "bool":
            values = "off, on (or both)" if cli else "True | False"
        else:
            values = (", " if cli else " | ").join(
                c if cli else f'"{c}"' for c in self.choices)
        if self.default_text is not None:
            default = self.default_text
        elif self.kind == "bool" and cli:
            default = "on" if self.default else "off"
        elif isinstance(self.default, str) and not cli:
            default = f'"{self.default}"'
        else:
            default = str(self.default)
        return self.help + (f": {values}" if values else "") + f"; default {default}"


_RECURRENT = ("lstm", "rnn")
_KEYS = (
    Key("model", "choice", "mlp", MODELS, "the network", choices=MODELS),
    Key("data", "choice", "gaussian", MODELS,
        "the data (digits: sklearn.datasets.load_digits, cross-entropy)", choices=DATASETS),
    Key("depth", "int", 10, MODELS, "MLP: number of dense layers L", low=1),
    Key("seq_len", "int", None, _RECURRENT, "LSTM/RNN: sequence length T", low=1, column=False,
        default_text="the depth values"),
    Key("width", "int", 64, MODELS, "hidden width (MLP layers, LSTM/RNN hidden size)", low=1),
    Key("activation", "choice", "tanh", ("mlp", "rnn"),
        "MLP: the hidden activation (RNN: tanh or relu only)", choices=ACTIVATIONS),
    Key("init", "choice", "xavier_normal", ("mlp",), "MLP: the weight init", choices=INITS),
    Key("sigma_w", "float", 1.0, ("mlp",), "init scaled_normal: W ~ N(0, sigma_w^2/fan_in)",
        low=0.0, low_open=True),
    Key("sigma_b", "float", 0.0, ("mlp",), "init scaled_normal: b ~ N(0, sigma_b^2)", low=0.0),
    Key("batch_norm", "bool", False, ("mlp",), "MLP: batch norm on every hidden layer"),
    Key("batch", "int", 128, MODELS, "batch size", low=1),
    Key("dtype", "dtype", "float32", MODELS, "compute dtype", choices=("float32", "float64")),
    Key("seed", "int", 0, MODELS, "seed of the weights and the data", low=0),
    Key("steps", "int", 1, MODELS, "training steps (one optimizer update each); one row block "
        "per step", low=1),
    Key("lr", "float", 0.01, MODELS, "learning rate", low=0.0),
    Key("optimizer", "choice", "sgd", MODELS, "vgkern.optim: sgd (plain SGD), momentum (SGD with "
        "the momentum key), adam, adamw", choices=OPTIMIZERS),
    Key("momentum", "float", 0.9, MODELS, "optimizer momentum: SGD's momentum", low=0.0),
    Key("weight_decay", "float", 0.0, MODELS, "the optimizer's weight decay (adamw: decoupled)",
        low=0.0),
    Key("eval_every", "int", 0, MODELS, "data digits: test_loss/test_accuracy on the test split "
        "every N steps and at the last (0: never)", low=0),
    Key("log_scale", "bool", False, ("mlp",),
        "MLP: log-scale backward (exact log-norms where gradients underflow)"),
    Key("forget_bias", "float", 0.0, ("lstm",), "LSTM: added to the forget-gate bias"),
)
KEYS = {k.name: k for k in _KEYS}  # in the order of the docs and the CLI

# Configuration columns, in table order, with their types.
CONFIG_TYPES = {k.name: k.type for k in _KEYS if k.column}
CONFIG_COLUMNS = tuple(CONFIG_TYPES)
GRID_KEYS = CONFIG_COLUMNS + tuple(k.name for k in _KEYS if not k.column)
DEFAULTS = {k.name: k.default for k in _KEYS}
APPLIES = {m: {k.name for k in _KEYS if m in k.models} for m in MODELS}

# Statistic columns: the loss, every GradReport field, then the SequenceReport fields that are
# not GradReport fields too (per-network scalars such as weight_ih_grad_norm repeat on every row).
MLP_STATS = tuple(f for f in GradReport.fields if f != "loss")
SEQUENCE_STATS = tuple(f for f in SequenceReport.fields if f != "loss")
TEST_STATS = ("test_loss", "test_accuracy")  # held-out metrics (NaN where not evaluated)
STAT_COLUMNS = (("loss",) + MLP_STATS + tuple(f for f in SEQUENCE_STATS if f not in MLP_STATS)
                + TEST_STATS)
ROW_COLUMNS = ("step", "layer")
COLUMNS = ("config_id",) + CONFIG_COLUMNS + ROW_COLUMNS + STAT_COLUMNS


def describe_keys(indent="    "):
    """The grid keys as the package docstring lists them, one per line."""
    return "\n".join(f"{indent}{k.name:<12} {k.describe()}" for k in _KEYS)


def error(message):
    return ValueError(f"vgkern.sweep: {message}")


def require(*modules, why="vgkern.sweep"):
    """ImportError naming the missing optional dependencies and the extra that has them."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"{why} needs {', '.join(missing)}: pip install 'vgkern[sweep]'")


def to_float(x):
    """float(x), with ints beyond the float range as +-inf instead of an OverflowError."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def as_values(name, value):
    """A grid key's value: one value or a list of them -> a non-empty list."""
    if isinstance(value, dict):
        raise error(f"grid key {name!r}: expected a value or a list of values, got a dict")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or (
            isinstance(value, np.ndarray) and value.ndim == 0):
        return [value]
    values = list(value)
    if not values:
        raise error(f"grid key {name!r} has no values (an empty list gives an empty grid)")
    return values


def normalize(name, v):
    """One value of a grid key, checked against its table entry and put in canonical form."""
    key = KEYS[name]
    if isinstance(v, (np.generic, np.ndarray)) and np.ndim(v) == 0:
        v = v.item()
    bad = lambda expected: error(f"grid key {name!r}: expected {expected}, got {v!r}")
    if key.kind == "choice":
        if not isinstance(v, str) or v.lower() not in key.choices:
            hint = ""
            if isinstance(v, str):
                close = difflib.get_close_matches(v.lower(), key.choices, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise error(f"grid key {name!r}: unknown value {v!r}{hint}; "
                        f"expected one of {', '.join(map(repr, key.choices))}")
        return v.lower()
    if key.kind == "dtype":
        try:
            dtype = np.dtype(v).name if v is not None else None  # numpy reads None as float64
        except (TypeError, ValueError):
            dtype = None
        if dtype not in ("float32", "float64"):
            raise bad("'float32' or 'float64'")
        return dtype
    if key.kind == "bool":
        if isinstance(v, bool) or (isinstance(v, numbers.Integral) and v in (0, 1)):
            return bool(v)
        raise bad("True or False")
    if key.kind == "int":
        if key.default is None and v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise bad("an integer")
        if not isinstance(v, numbers.Integral):  # 2.0 is 2; 2.5, Fraction(5, 2) and inf are not
            try:
                whole = int(v)  # type: ignore[call-overload]  # any Real: float, Fraction...
            except (OverflowError, ValueError):
                raise bad("an integer") from None
            if whole != v:
                raise bad("an integer")
            v = whole
        v = int(v)
        if v < key.low:
            raise bad(f"an integer >= {key.low}")
        if v > INT64_MAX:  # the table's int64 columns
            raise bad(f"an integer <= {INT64_MAX}")
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
    if key.low is not None and (v <= key.low if key.low_open else v < key.low):
        raise bad(f"a number {'>' if key.low_open else '>='} {key.low:g}")
    return v + 0.0  # -0.0 -> 0.0


def unknown_key(name):
    close = difflib.get_close_matches(str(name), GRID_KEYS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return error(f"unknown grid key {name!r}{hint}; valid keys: {', '.join(GRID_KEYS)}")
