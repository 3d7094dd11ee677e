"""The untimed correctness check every benchmark runs first: an implementation's loss and
gradient norms against vgkern's, as a maximum relative difference."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["to_numpy", "max_rel_diff"]


def to_numpy(result: Sequence[Any]) -> tuple:
    """(loss, norms...) of any framework -> (float, float64 arrays...), copied (vgkern's report
    arrays are reused by the next step). A list of scalar tensors becomes one array."""
    loss, *norms = result

    def arr(v):
        if isinstance(v, (list, tuple)):
            return np.array([float(t) for t in v], dtype=np.float64)
        return np.array(v, dtype=np.float64, copy=True)

    return (float(loss), *(arr(v).ravel() for v in norms))


def max_rel_diff(result: Sequence[Any], reference: Sequence[Any]) -> float:
    """Largest relative difference of the loss and norms of result vs reference (both as
    to_numpy returns them); inf for a NaN or a length or shape mismatch."""
    result = to_numpy(result)
    if len(result) != len(reference):
        return float("inf")
    worst = 0.0
    for a, b in zip(result, reference):
        a, b = np.atleast_1d(a), np.atleast_1d(b)
        if a.shape != b.shape:
            return float("inf")
        d = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
        if np.isnan(d).any():
            return float("inf")
        worst = max(worst, float(np.max(d)))
    return worst
