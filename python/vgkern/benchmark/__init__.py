"""Benchmarks of one training step, vgkern against PyTorch, JAX, NumPy and the bare GEMMs:
the timing method (`timing`), the implementations (`vgkern_steps`, `numpy_loop`,
`torch_eager`, `jax_jit`, `gemm`), the runner (`run`) and `vgkern bench` (`command`).
The bench/ scripts are front ends over the same modules."""
from .configs import LstmConfig, MlpConfig
from .timing import QUICK, Method

__all__ = ["LstmConfig", "MlpConfig", "Method", "QUICK"]
