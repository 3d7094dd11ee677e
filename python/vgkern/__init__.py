"""vgkern: fused C++ kernels and per-layer gradient statistics for studying vanishing and
exploding gradients.

    import numpy as np, vgkern
    net = vgkern.MLP([64] * 21, activation="sigmoid", init="xavier_normal", seed=0)
    rep = net.step(np.random.default_rng(0).standard_normal((128, 64), dtype=np.float32),
                   np.zeros((128, 64), np.float32))
    print(rep.to_pandas()[["layer", "log10_preact_grad_norm"]])
"""
from typing import Any

from . import _core
from ._blas import connect_scipy_blas

connect_scipy_blas(_core)

from . import ops  # noqa: E402
from . import optim  # noqa: E402
from .info import (  # noqa: E402
    blas_threads, build_info, cuda_available, flush_denormal, set_flush_denormal)
from ._cuda import to_device  # noqa: E402

CudaArray = getattr(_core, "CudaArray", None)  # device arrays (builds with CUDA only)
from .mlp import ACTIVATIONS, INITS, LOSSES, MLP  # noqa: E402
from .recurrent import LSTM, RNN  # noqa: E402
from .report import GradReport, SequenceReport  # noqa: E402
from .history import History  # noqa: E402
from . import datasets  # noqa: E402  (vgkern.datasets.digits: sklearn's, imported when called)

# Sweeps and plots: pandas, pyarrow, matplotlib, tqdm, scikit-learn and dask are imported only
# when used (pip install 'vgkern[sweep]'), so `import vgkern` needs numpy and scipy only.
# `vgkern.sweep` is the function; the package is vgkern.sweeps.
from .sweeps import (  # noqa: E402
    SweepInterrupted, read_results, sweep, sweep_configs, sweep_summary,
)
from .plots import (  # noqa: E402
    plot_gain_vs_depth, plot_gradient_heatmap, plot_gradient_norms, plot_sweep,
)
from .plots_training import plot_training  # noqa: E402

from .info import package_version as _package_version  # noqa: E402


def __getattr__(name: str) -> Any:
    """vgkern.theory (mean-field predictions) is imported on first use: it loads SciPy's
    quadrature, which `import vgkern` does not need. So is vgkern.torch (nets as
    torch.nn.Modules), which needs PyTorch."""
    if name in ("theory", "torch"):
        import importlib

        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'vgkern' has no attribute {name!r}")


__version__ = _package_version()  # pyproject.toml's [project] version, the only copy

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "LOSSES",
    "MLP",
    "GradReport",
    "History",
    "LSTM",
    "RNN",
    "SequenceReport",
    "blas_threads",
    "build_info",
    "cuda_available",
    "CudaArray",
    "to_device",
    "flush_denormal",
    "set_flush_denormal",
    "ops",
    "optim",
    "SweepInterrupted",
    "plot_gain_vs_depth",
    "plot_gradient_heatmap",
    "plot_gradient_norms",
    "plot_sweep",
    "plot_training",
    "read_results",
    "sweep",
    "sweep_configs",
    "sweep_summary",
    "datasets",
    "theory",
]
