// A GEMM whose right operand is packed once and reused by many calls: the LSTM/RNN recurrence
// multiplies by the same W_hh at every step (T GEMMs forward, T backward), and the BLAS repacks
// it on every call (OpenBLAS's sgemm_*copy routines took about half as many samples as its
// kernel in the H=128 B=64 T=50 profile). Packing it once per call and running a register-tiled
// kernel over the packed panels is faster at those shapes (bench/README.md, "LSTM"); elsewhere
// the BLAS's gemm (core/blas.h) stays the GEMM of the project.
//
// float32 only, on CPUs with AVX2+FMA or AVX-512 (packed_gemm_available()); everything else
// (float64, older CPUs) keeps the BLAS calls. Results are deterministic: each output entry is
// summed over k in order 0..K-1 whatever M, the row block or the thread.
#pragma once
#include <cstdint>
#include <vector>

namespace vgkern {

// B (K, N) in column panels of `width` values (16 or 32, chosen for the CPU's tile): panel p
// holds B[k, p*width .. p*width+width) for k = 0..K-1 contiguously, zero-padded past column N.
struct PackedPanels {
  std::vector<float> data;
  int64_t K = 0, N = 0, width = 0;
  int64_t panels() const { return (N + width - 1) / width; }
  const float* panel(int64_t p) const { return data.data() + p * K * width; }
};

// Whether packed_gemm runs on this CPU (a vector tile for it was compiled and it has the ISA).
bool packed_gemm_available();

// B = src (K, N) row-major with row stride ld, or, with trans, B = src^T where src is (N, K)
// row-major with row stride ld (a weight matrix W (out, in) as used in x @ W^T).
void pack_panels(PackedPanels& out, bool trans, const float* src, int64_t ld, int64_t K,
                 int64_t N);

// Row-major C (M, N) = A (M, K) @ B (+ bias (N,) in every row when not null), or C += that
// with accumulate; A's and C's row strides lda, ldc. Requires packed_gemm_available().
void packed_gemm(int64_t M, const float* A, int64_t lda, const PackedPanels& B, bool accumulate,
                 float* C, int64_t ldc, const float* bias = nullptr);

}  // namespace vgkern
