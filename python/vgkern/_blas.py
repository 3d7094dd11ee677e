"""GEMM from SciPy's BLAS: hand the C function pointers that scipy.linalg.cython_blas exports to
the native core (the way scikit-learn gets BLAS), so no BLAS is linked at build time."""
from scipy.linalg import cython_blas


def connect_scipy_blas(core):
    capi = cython_blas.__pyx_capi__
    core.set_blas(capi["sgemm"], capi["dgemm"])
