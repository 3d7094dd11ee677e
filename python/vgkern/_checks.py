"""Argument checks shared by the Python API. Each names the argument, what was expected and what
was given, and raises TypeError for a wrong kind of value and ValueError for a wrong value --
never the IndexError / OverflowError / AttributeError of whatever happened to use it first."""
import math
import numbers

import numpy as np

INT_MAX = 2**31 - 1  # layer widths reach a 32-bit BLAS


def flag(what, value):
    """A yes/no argument: True/False (numpy.bool_, 0 and 1 too). Anything else is refused instead
    of being read by its truthiness ("False", "no" and None would otherwise mean something)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{what} must be True or False, got {value!r} ({type(value).__name__})")


def real(what, value, finite=True):
    """A real number (int, float, numpy scalar; not bool, str or array) as a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {value!r} ({type(value).__name__})")
    try:
        x = float(value)
    except OverflowError:  # an int beyond the float range
        x = math.inf if value > 0 else -math.inf
    if finite and not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return x


def size(what, value, low=1, high=INT_MAX):
    """A size: an integer (numpy integers too; not bool, float or str) in [low, high]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < low:
        raise ValueError(f"{what} must be a positive integer, got {value}" if low == 1 else
                         f"{what} must be an integer >= {low}, got {value}")
    if value > high:
        raise ValueError(f"{what} must be at most {high} (widths reach a 32-bit BLAS), got {value}")
    return value


def rng(what, seed):
    """numpy.random.default_rng(seed), with an error that names the argument."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{what} must be None or an integer >= 0 (anything "
                        f"numpy.random.default_rng takes), got {seed!r}: {err}") from None


def choice(what, value, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def dtype_name(what, dtype):
    """'float32' or 'float64' from anything numpy.dtype takes, except None (which numpy reads as
    float64: a missing dtype should not silently pick one)."""
    name = None
    if dtype is not None:
        try:
            name = np.dtype(dtype).name
        except (TypeError, ValueError):
            name = None
    if name not in ("float32", "float64"):
        raise ValueError(f"{what} must be 'float32' or 'float64', got {dtype!r}")
    return name


def device(owner, value):
    if not isinstance(value, str) or value not in ("cpu", "cuda"):
        raise ValueError(f"{owner}: device must be 'cpu' or 'cuda', got {value!r}")
    return value


def fits_dtype(what, value, dtype):
    """A finite float that stays finite in `dtype` (1e300 would be inf in float32)."""
    if abs(value) > float(np.finfo(dtype).max):
        raise ValueError(f"{what} = {value!r} overflows {np.dtype(dtype).name}")
    return value
