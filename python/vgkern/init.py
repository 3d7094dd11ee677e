"""Weight initialisations. Random numbers come from numpy.random.default_rng(seed) (PCG64, the
same stream on every platform), drawn in float64 layer by layer, weight then bias.

Many nets of one seed can share one draw of that stream (NormalStream): a sweep pays for the
random numbers of a seed once, not once per configuration."""
from __future__ import annotations

import math
import numbers
import operator
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

from . import _checks

INITS = (
    "xavier_normal",
    "xavier_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "orthogonal",
    "scaled_normal",
)

# The init options and the inits that read them (any other init would ignore them).
OPTION_USERS = {
    "sigma_w": ("scaled_normal",),
    "sigma_b": ("scaled_normal",),
    "gain": ("xavier_normal", "xavier_uniform", "orthogonal"),
    "bias_init": tuple(i for i in INITS if i != "scaled_normal"),
}


def _orthogonal(rng, rows, cols):
    # As torch.nn.init.orthogonal_: QR of a Gaussian matrix, signs fixed by diag(R).
    a = rng.standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return q.T if rows < cols else q


def draw_layer(rng: np.random.Generator, init: str, fan_out: int, fan_in: int, *,
               sigma_w: float, sigma_b: float, gain: float
               ) -> Tuple[NDArray[np.float64], Optional[NDArray[np.float64]]]:
    """One layer's parameters drawn from rng with `init` (one of INITS; sigma_w, sigma_b, gain
    as for MLP) -> float64 (W, b), W: (fan_out, fan_in), b: (fan_out,) or None for 'zero
    unless bias_init'."""
    shape = (fan_out, fan_in)
    if init == "xavier_normal":
        return gain * np.sqrt(2.0 / (fan_in + fan_out)) * rng.standard_normal(shape), None
    if init == "xavier_uniform":
        a = gain * np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, shape), None
    if init == "he_normal":
        return np.sqrt(2.0 / fan_in) * rng.standard_normal(shape), None
    if init == "he_uniform":
        a = np.sqrt(6.0 / fan_in)
        return rng.uniform(-a, a, shape), None
    if init == "lecun_normal":
        return np.sqrt(1.0 / fan_in) * rng.standard_normal(shape), None
    if init == "orthogonal":
        return gain * _orthogonal(rng, fan_out, fan_in), None
    if init == "scaled_normal":  # mean-field convention: W ~ N(0, sigma_w^2 / fan_in), b ~ N(0, sigma_b^2)
        w = sigma_w / np.sqrt(fan_in) * rng.standard_normal(shape)
        return w, sigma_b * rng.standard_normal(fan_out)
    raise ValueError(f"MLP: init must be one of {', '.join(map(repr, INITS))}, got {init!r}")


# What an option not given means: sigma_w, sigma_b of scaled_normal; gain of xavier, orthogonal;
# bias_init None: zero biases.
DEFAULT_OPTIONS = {"sigma_w": 1.0, "sigma_b": 0.0, "bias_init": None, "gain": 1.0}


def redraw_options(what: str, init: str, dtype: DTypeLike,
                   current: Mapping[str, Any] = DEFAULT_OPTIONS,
                   **given: Optional[float]) -> Dict[str, Any]:
    """The options {sigma_w, sigma_b, bias_init, gain} of a draw with `init`, for MLP() and
    MLP.reinitialize(): each given one (None: not given) checked -- a finite number; sigma_w,
    sigma_b >= 0; bias_init within `dtype`; read by `init` (a ValueError naming the init
    otherwise, instead of being ignored) -- and the others as in `current` (the defaults, or the
    options the net was drawn with)."""
    options = dict(current)
    for name, value in given.items():
        if value is None:
            continue
        x = _checks.real(f"{what}: {name}", value)
        if name in ("sigma_w", "sigma_b") and x < 0:
            raise ValueError(f"{what}: {name} must be >= 0, got {value!r}")
        if init not in OPTION_USERS[name]:
            raise ValueError(f"{what}: {name} does not apply to init={init!r} (only to "
                             f"{', '.join(map(repr, OPTION_USERS[name]))}); got {name}={value!r}")
        if name == "bias_init":
            _checks.fits_dtype(f"{what}: bias_init", x, dtype)
        options[name] = x
    return options


class NormalStream:
    """The standard normals of numpy.random.default_rng(seed), drawn once and shared.

    The normal-family inits and "orthogonal" consume default_rng(seed).standard_normal layer by
    layer, so what they read depends on the seed only, not on the sizes, activation or init.
    `stream.generator()` is a numpy Generator equal to default_rng(seed) whose standard normals
    come from this stream's cache, drawn once for all: MLP(..., seed=stream.generator()) and
    net.reinitialize(stream.generator()) give bit for bit the parameters of seed=seed, and many
    nets of one seed pay for the random numbers once. Thread-safe; the cache (read-only float64,
    `nbytes` bytes) grows to the largest request and is freed with the stream."""

    def __init__(self, seed: int) -> None:
        self.seed = _checks.size("NormalStream: seed", seed, low=0, high=math.inf)
        self._rng = np.random.default_rng(self.seed)
        self._values = np.empty(0)
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """The size of the cache in bytes."""
        return self._values.nbytes

    def first(self, n: int) -> NDArray[np.float64]:
        """Returns at least the first n standard normals of the stream: values: (m,), m >= n, a
        read-only float64 array."""
        values = self._values
        if len(values) < n:
            with self._lock:
                values = self._values
                if len(values) < n:  # grow by at least 2x: few regrowths for growing nets
                    grown = np.empty(max(n, 2 * len(values)))
                    grown[:len(values)] = values
                    # drawing in pieces gives the same numbers as one draw of the whole
                    grown[len(values):] = self._rng.standard_normal(len(grown) - len(values))
                    grown.setflags(write=False)
                    self._values = values = grown
        return values

    def generator(self) -> np.random.Generator:
        """A new numpy Generator equal to default_rng(seed), its standard normals from the cache."""
        return _StreamGenerator(self)


class _StreamGenerator(np.random.Generator):
    """default_rng(stream.seed) whose float64 standard_normal reads the stream's cache (read-only
    arrays). For the draws of the inits: standard normals, or uniform numbers (those come from
    the generator's own PCG64(seed), so the two kinds cannot be mixed, which no init does)."""

    def __init__(self, stream):
        super().__init__(np.random.PCG64(stream.seed))
        self._stream = stream
        self._taken = 0     # standard normals read from the cache so far
        self._own = False   # the own bit generator has been used: the cache is out of step

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        if size is None or out is not None or self._own or (
                dtype is not np.float64 and np.dtype(dtype) != np.float64):
            self._use_own()
            return super().standard_normal(size, dtype, out)
        shape = (operator.index(size),) if isinstance(size, numbers.Integral) else tuple(size)
        start = self._taken
        end = self._taken = start + math.prod(shape)
        values = self._stream._values  # the cache, grown by first() when it is too short
        if len(values) < end:
            values = self._stream.first(end)
        return values[start:end].reshape(shape)

    def uniform(self, *args, **kwargs):
        self._use_own()
        return super().uniform(*args, **kwargs)

    def _use_own(self):
        if self._taken:
            raise RuntimeError("NormalStream.generator(): a draw after standard normals read from "
                               "the shared cache would not be default_rng(seed)'s; use one "
                               "generator per net and init")
        self._own = True
