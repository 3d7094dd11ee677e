// Register-tiled GEMMs for the shapes where the BLAS spends its time packing: a right operand
// packed once and reused by many calls (the LSTM/RNN recurrence multiplies by the same W_hh at
// every step, T GEMMs forward, T backward, and the BLAS repacks it on every call: OpenBLAS's
// sgemm_*copy routines took about half as many samples as its kernel in the H=128 B=64 T=50
// profile), and the small MLP layers' GEMMs (ops/dense_cpu.h, packed_layer_gemms), whose
// operands fit in L1/L2 and are read in place. Faster at those shapes (bench/README.md, "LSTM"
// and "Own GEMMs for small layers"); elsewhere the BLAS's gemm (core/blas.h) stays the GEMM of
// the project.
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

// packed_gemm on B's panels [panel_begin, panel_end) only: C's columns panel_begin * width up
// to (panel_end * width, N), the others untouched. Complementary ranges, on any threads, give
// the bits of one packed_gemm (no entry's sum depends on the panels around it).
void packed_gemm_panels(int64_t M, const float* A, int64_t lda, const PackedPanels& B,
                        int64_t panel_begin, int64_t panel_end, bool accumulate, float* C,
                        int64_t ldc);

// Row-major C (M, N) = A (M, K) @ B (K, N) with B read in place (row stride ldb; packed first
// only when N is not a multiple of the panel width), A row-major with row stride lda, or stored
// transposed with trans_a (At (K, M), row stride lda). A layer's backward GEMMs take their
// operands as they lie: dx = delta @ w and dw = delta^T @ x. With accumulate, C += that.
// Requires packed_gemm_available().
void gemm_in_place(bool trans_a, int64_t M, int64_t K, int64_t N, const float* A, int64_t lda,
                   const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate = false);

// Whether C += A @ B with this K adds each entry's whole sum onto C once (one pass over K), so
// that it gives the bits of computing A @ B alone and adding it to C afterwards.
bool gemm_adds_once(int64_t K);

}  // namespace vgkern
