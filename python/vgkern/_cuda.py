"""cuBLAS for the CUDA backend, found and loaded at run time (csrc/cuda/cublas.h says why it is
not linked). Looked for, in order: the `nvidia-cublas` wheel (`pip install vgkern[cuda]`), the
dynamic loader's search (LD_LIBRARY_PATH, ldconfig), and $CUDA_HOME, $CUDA_PATH, /usr/local/cuda."""
from __future__ import annotations

import glob
import importlib.util
import os
from typing import Any, List

import numpy as np
from numpy.typing import ArrayLike

from . import _checks, _core


def cublas_soname() -> str:
    """libcublas.so.<major>, major = that of the CUDA toolkit vgkern was built with."""
    version = _core.build_info().get("cuda_version") or "13"
    return f"libcublas.so.{version.split('.')[0]}"


def cublas_candidates() -> List[str]:
    """Where load_cublas looks for cuBLAS, in order (see the module's docstring)."""
    soname = cublas_soname()
    major = soname.rsplit(".", 1)[1]
    paths = []
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for sub in (f"cu{major}", "cublas"):  # the wheel's layouts: CUDA 13+, then CUDA 12
            paths.extend(sorted(glob.glob(os.path.join(root, sub, "lib", soname))))
    paths.append(soname)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            paths.append(os.path.join(home, "lib64", soname))
    return list(dict.fromkeys(paths))


def load_cublas() -> str:
    """Loads cuBLAS once per process; returns the path it came from (RuntimeError if none)."""
    return _core.load_cublas(cublas_candidates())


def to_device(a: ArrayLike) -> Any:
    """a: (any shape), a numpy array (float32 or float64), copied to the current GPU: a
    vgkern.CudaArray, which the CUDA ops and nets take, and PyTorch/CuPy take without a copy
    (DLPack, __cuda_array_interface__). .numpy() copies it back."""
    from .info import cuda_available

    if not cuda_available():
        raise RuntimeError("to_device: no CUDA GPU is available (vgkern.cuda_available() is False)")
    load_cublas()
    return _core.to_device(np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a)


def net_device(owner: str, device: str) -> str:
    """A net's `device` argument, checked; for "cuda" where a GPU is visible cuBLAS is loaded
    first (without one the native constructor refuses "cuda", saying so)."""
    from .info import cuda_available

    if _checks.device(owner, device) == "cuda" and cuda_available():
        load_cublas()
    return device
