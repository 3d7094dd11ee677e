"""core/packed_gemm.h, against float64 products: the GEMM with its right operand packed once
(the recurrence's W_hh, the small layers' forward W^T) and the GEMM reading both operands in
place (the small layers' backward: dx = delta @ W, dW = delta^T @ x).

Shapes cover every row tail of both tiles (8 rows on AVX-512, 6 on AVX2), a last panel narrower
than the tile's width (16 or 32 columns) and odd K, with W used as is and transposed (W^T, the
forward's x @ W^T)."""
import numpy as np
import pytest

from vgkern import _core

pytestmark = pytest.mark.skipif(not _core._packed_gemm_available(),
                                reason="no AVX2+FMA / AVX-512: the packed GEMM is not used")


@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 5, 3), (13, 33, 47), (17, 64, 96),
                                   (32, 128, 512), (9, 3, 65), (10, 300, 33)])
def test_packed_gemm_matches_float64(trans, M, K, N):
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    a = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K) if trans else (K, N), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32)
    got = _core._packed_gemm(a, w, trans, bias)
    want = a.astype(np.float64) @ (w.T if trans else w).astype(np.float64) + bias
    assert got.shape == (M, N)
    # float32 sums of K products: |error| <= K * eps * sum |a||w| (per entry)
    bound = K * np.finfo(np.float32).eps * (np.abs(a).astype(np.float64) @
                                            np.abs(w.T if trans else w).astype(np.float64))
    assert np.all(np.abs(got - want) <= bound + np.abs(want) * np.finfo(np.float32).eps)
    no_bias = _core._packed_gemm(a, w, trans)
    assert np.all(np.abs(no_bias + bias - want) <= bound + 2 * np.abs(want) * 1.2e-7)


def float32_bound(a, b, K):
    """|error| of a float32 sum of K products, per entry: K * eps * sum |a||b|."""
    return K * np.finfo(np.float32).eps * (np.abs(a).astype(np.float64) @
                                           np.abs(b).astype(np.float64))


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 5, 3), (13, 33, 47), (17, 64, 96),
                                   (64, 128, 64), (9, 3, 65), (5, 2, 32), (3, 7, 16),
                                   (21, 600, 40)])  # K in 256-deep chunks
def test_gemm_in_place_matches_float64(trans_a, M, K, N):
    """N a multiple of the panel width: B read in place; otherwise packed first (no read past
    B's rows: the last row of b ends the allocation)."""
    rng = np.random.default_rng(M * 1000 + K * 10 + N + trans_a)
    a = rng.standard_normal((K, M) if trans_a else (M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    op_a = a.T if trans_a else a
    got = _core._gemm_in_place(a, b, trans_a)
    want = op_a.astype(np.float64) @ b.astype(np.float64)
    assert got.shape == (M, N)
    assert np.all(np.abs(got - want) <= float32_bound(op_a, b, K))


def test_packed_gemm_checks_arguments():
    a = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="w"):
        _core._packed_gemm(a, np.ones((4, 2), np.float32), False)  # K mismatch
    with pytest.raises(TypeError, match="a"):
        _core._packed_gemm(a.astype(np.float64), np.ones((3, 2), np.float32), False)
