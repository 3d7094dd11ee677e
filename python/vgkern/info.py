"""Build and runtime information, CUDA availability, BLAS thread control."""
from __future__ import annotations

import contextlib
import os
import platform
import re
from typing import Any, Dict, Iterator, Optional

import numpy as np
import scipy

from . import _core

_PYPROJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                          "pyproject.toml")


def pyproject_version(path: str) -> Optional[str]:
    """The [project] version of the pyproject.toml at `path`, or None when there is no such
    file or it is not vgkern's (a regular expression: tomllib is Python 3.11+ only)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if project is None or not re.search(r'^name\s*=\s*"vgkern"\s*$', project.group(1), re.M):
        return None
    version = re.search(r'^version\s*=\s*"([^"]+)"\s*$', project.group(1), re.M)
    return version.group(1) if version else None


def package_version() -> str:
    """vgkern's version, written in one place: pyproject.toml's [project] version.

    Imported from a source checkout (PYTHONPATH=<checkout>/python, or an editable install), it
    is read from that checkout's pyproject.toml, which is the truth even when an older vgkern is
    also installed; installed from a wheel, it is the package metadata that pip wrote from the
    same field; "0+unknown" when neither exists (a copied package folder)."""
    version = pyproject_version(_PYPROJECT)
    if version is not None:
        return version
    from importlib import metadata

    try:
        return metadata.version("vgkern")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def cuda_available() -> bool:
    """True when this build has CUDA compiled in and a CUDA GPU is visible (or when the build
    emulates CUDA on the CPU for testing: build_info()["cuda_emulated"])."""
    return bool(_core.cuda_compiled()) and _core.cuda_device_count() > 0


def _blas_runtime():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "install threadpoolctl to see the BLAS library and its threads"}]
    keys = ("internal_api", "version", "num_threads", "threading_layer", "architecture", "filepath")
    return [{k: pool.get(k) for k in keys} for pool in threadpool_info() if pool["user_api"] == "blas"]


def build_info() -> Dict[str, Any]:
    """What was compiled (compiler, flags, SIMD, OpenMP, CUDA) and what runs (BLAS, versions)."""
    from . import __version__

    info = dict(_core.build_info())
    info.update(
        version=__version__,
        python=platform.python_version(),
        numpy=np.__version__,
        scipy=scipy.__version__,
        blas_source="scipy.linalg.cython_blas (sgemm, dgemm)",
        blas_runtime=_blas_runtime(),
        cuda_devices=_core.cuda_device_count() if _core.cuda_compiled() else 0,
        flush_denormal=flush_denormal(),
    )
    return info


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Limit vgkern's threads inside a `with` block (via threadpoolctl, the BLAS's setting).

    vgkern follows the BLAS's thread setting: with 2 or more, small layers run in two row
    blocks side by side (the caller and one helper thread, single-threaded BLAS each) and big
    layers give their GEMMs to the BLAS's threads; with 1, everything runs on the caller.
    Results are bit-identical either way."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("vgkern.blas_threads needs threadpoolctl: pip install threadpoolctl") from err
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def set_flush_denormal(mode: bool) -> bool:
    """Flush subnormal numbers to zero inside vgkern's kernels (True) or keep IEEE gradual
    underflow (False, the default), for every thread; like `torch.set_flush_denormal`. Returns
    whether this CPU supports flushing (x86 with SSE2).

    Vanishing gradients walk into the subnormal range (below 1.2e-38 in float32), where x86
    arithmetic is 20-100x slower: a float32 sigmoid MLP at depth 100 or an LSTM backward over
    300 steps runs 8-18x slower there. With flushing those values become exactly 0 and the
    step keeps its speed; norms are then exact only down to the normal range (use float64 or
    `log_scale=True` to measure below it). With more than one BLAS thread the BLAS workers
    still see the subnormals they produce themselves (their floating-point state is their own).
    """
    if not isinstance(mode, (bool, np.bool_)):
        raise TypeError(f"set_flush_denormal: mode must be a bool, got {type(mode).__name__}")
    return _core.set_flush_denormal(bool(mode))


def flush_denormal() -> bool:
    """Whether vgkern's kernels flush subnormal numbers to zero (see `set_flush_denormal`)."""
    return _core.flush_denormal()
