"""Argument checks shared by the Python API. Each names the argument, what was expected and what
was given, and raises TypeError for a wrong kind of value and ValueError for a wrong value --
never the IndexError / OverflowError / AttributeError of whatever happened to use it first."""
import math
import numbers

import numpy as np

INT_MAX = 2**31 - 1  # layer widths reach a 32-bit BLAS
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # the only dtypes vgkern computes in
DEVICES = ("cpu", "cuda")


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
        x = math.inf if value > 0 else -math.inf  # type: ignore[operator]  # (an int here)
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
    """One of `options` (strings), compared exactly: "TANH" is not "tanh"."""
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
    if name not in [d.name for d in FLOAT_DTYPES]:
        raise ValueError(f"{what} must be 'float32' or 'float64', got {dtype!r}")
    return name


def device(owner, value, optional=False):
    """'cpu' or 'cuda' (None too where `optional`: the ops then run where their inputs live)."""
    if optional and value is None:
        return None
    if not isinstance(value, str) or value not in DEVICES:
        raise ValueError(f"{owner}: device must be 'cpu' or 'cuda', got {value!r}")
    return value


def fits_dtype(what, value, dtype):
    """A finite float that stays finite in `dtype` (1e300 would be inf in float32)."""
    if abs(value) > float(np.finfo(dtype).max):
        raise ValueError(f"{what} = {value!r} overflows {np.dtype(dtype).name}")
    return value


def is_device_array(value):
    """A GPU array from any library: CuPy, PyTorch, Numba, JAX, vgkern.CudaArray (anything with
    __cuda_array_interface__ that is not a numpy array)."""
    return not isinstance(value, np.ndarray) and hasattr(value, "__cuda_array_interface__")


def shape_of(value):
    """The shape of a numpy array or of a device array (__cuda_array_interface__)."""
    if isinstance(value, np.ndarray):
        return value.shape
    return tuple(value.__cuda_array_interface__["shape"])


_DLPACK_HOST_DEVICES = (1, 3)  # kDLCPU, kDLCUDAHost (pinned host memory)


def as_array(value, what, keep_device_arrays=False, refuse_others=True):
    """`value` as an array vgkern reads: a numpy array as it is; a device array
    (__cuda_array_interface__: CuPy, PyTorch, Numba, vgkern.CudaArray) as it is where
    `keep_device_arrays` (refused otherwise); any other array on the host as a numpy array,
    without a copy where its producer allows: through DLPack (np.from_dlpack: CPU torch
    tensors, JAX, ...) or else __array__ (np.asarray). dtype and layout are kept as they are,
    so that the caller's checks refuse what they refuse for numpy (no silent casts). Tensors
    that require grad are refused, as torch's own .numpy() refuses them: vgkern's plain API is
    outside torch's autograd (vgkern.torch.Module is the way in). Anything else (a list, a str)
    is refused (TypeError), or returned as it is where not `refuse_others`, for the native
    checks to name."""
    if isinstance(value, np.ndarray):
        return value
    if getattr(value, "requires_grad", False) is True:
        raise ValueError(f"{what} requires grad: vgkern's arrays are outside torch's autograd, so "
                         "gradients would not flow through it. Pass .detach() (no copy), or wrap "
                         "the net in vgkern.torch.Module to backpropagate through it")
    if is_device_array(value):
        if keep_device_arrays:
            return value
        raise TypeError(f"{what} must be a numpy.ndarray or another array in host memory, got a "
                        f"device array ({type(value).__name__}); copy it to the host (e.g. "
                        "tensor.cpu()), or use a net or op on device='cuda'")
    if hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__"):
        device_type = int(value.__dlpack_device__()[0])
        if device_type not in _DLPACK_HOST_DEVICES:
            raise TypeError(f"{what} must be a numpy.ndarray or another array in host memory, "
                            f"got a {type(value).__name__} on DLPack device type {device_type} "
                            "(vgkern reads device arrays through __cuda_array_interface__ only); "
                            "copy it to the host first")
        try:
            return np.from_dlpack(value)
        except (BufferError, TypeError, RuntimeError, ValueError) as err:
            if not hasattr(value, "__array__"):
                raise TypeError(f"{what}: cannot read the {type(value).__name__} through DLPack "
                                f"({err}); pass a float32 or float64 numpy array") from None
    if hasattr(value, "__array__"):
        try:
            return np.asarray(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{what}: cannot read the {type(value).__name__} as an array ({err}); "
                            "pass a numpy array") from None
    if not refuse_others:
        return value
    raise TypeError(f"{what} must be a numpy.ndarray, got {type(value).__name__} (or another "
                    "array exposing __dlpack__ or __array__, e.g. a CPU torch.Tensor)")


def array_input(value, what, ndim=2, dtype=None, shape=None, before_copy=None, device="cpu"):
    """A numpy array, C-contiguous (copied on purpose if not). A non-contiguous array is checked
    first (dtype; shape, where `shape` gives a size, None for any; then `before_copy(shape)`,
    e.g. the net's workspace check) so that a refused one is never copied; contiguous ones are
    checked natively. For a CUDA net also a device array (__cuda_array_interface__: CuPy,
    PyTorch, Numba, JAX), used in place (C-contiguous, dtype and shape checked natively).
    Other host arrays (CPU torch tensors, anything with __dlpack__ or __array__) are read as
    numpy arrays first, without a copy where they allow it (as_array)."""
    if not isinstance(value, np.ndarray):
        value = as_array(value, what, keep_device_arrays=device == "cuda")
        if not isinstance(value, np.ndarray):  # a device array, for a CUDA net
            if len(shape_of(value)) != ndim:
                raise ValueError(f"{what} must have {ndim} dimensions, got shape {shape_of(value)}")
            return value
    if value.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {value.shape}")
    if dtype is not None and value.dtype != dtype and (
            value.dtype in FLOAT_DTYPES or not value.flags.c_contiguous):
        raise wrong_dtype(what, value.dtype, dtype)  # other dtypes: refused natively
    if value.flags.c_contiguous:
        return value
    if shape is not None and any(e is not None and e != d for e, d in zip(shape, value.shape)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ")"
        raise ValueError(f"{what} must have shape {want}, got {value.shape}")
    if before_copy is not None:
        before_copy(value.shape)
    return np.ascontiguousarray(value)


def wrong_dtype(what, got, want):
    """The TypeError for an array of another dtype than the net's, with the two ways out (the
    trap of every sklearn user: scikit-learn and numpy give float64, nets default to float32)."""
    want, got = np.dtype(want), np.dtype(got)
    name = what.rsplit(": ", 1)[-1]
    fix = f"cast it with {name}.astype(np.{want.name})"
    if got in FLOAT_DTYPES:
        fix += f", or build the net with dtype=\"{got.name}\""
    return TypeError(f"{what} must have dtype {want.name}, got {got} (vgkern never casts "
                     f"silently): {fix}")


def integer_target(what, target):
    """The ValueError for integer class labels given to loss="mse" (which needs (B, outputs)
    float targets): point to the loss that takes labels."""
    if isinstance(target, np.ndarray) and target.dtype.kind in "iub":
        return ValueError(f"{what} holds integer class labels (dtype {target.dtype}, shape "
                          f"{target.shape}), but loss=\"mse\" needs float targets of shape "
                          f"(B, outputs): for classification pass loss=\"cross_entropy\"")
    return None
