#include "core/packed_gemm.h"

#include <algorithm>
#include <cstring>

#include "core/simd.h"

namespace vgkern {
namespace {

// GCC vector extensions (b * s broadcasts the scalar s): 16 floats, one zmm, for the AVX-512
// tile; 8 floats, one ymm, for the AVX2 tile (a 64-byte vector split into ymm halves compiles to
// shuffles through the stack).
template <int Lanes>
struct VecOf;
template <>
struct VecOf<8> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<16> {
  typedef float type __attribute__((vector_size(64)));
};

// The register tile per ISA: MR rows x NV vectors of accumulators, fed by NV vector loads of the
// packed panel and one broadcast of A per row and k. AVX-512 (32 zmm): 8 x 32 = 16 accumulators.
// AVX2 (16 ymm): 6 x 16 = 12 ymm accumulators + 2 for B + 1 broadcast. Panel width NV * Lanes.
enum class Tile { none, avx2, avx512 };

Tile cpu_tile() {  // the level VGKERN_SIMD runs (baseline, also the sanitizer build's: BLAS)
  switch (simd_level()) {
    case SimdLevel::x86_64_v4: return Tile::avx512;
    case SimdLevel::x86_64_v3: return Tile::avx2;
    default: return Tile::none;
  }
}

constexpr int64_t kBlockFloats = 16384;  // A's rows per block: 64 KB (a multiple of 48 rows)
constexpr int64_t kChunkK = 256;        // K per pass: a 32-wide panel's chunk is 32 KB

int64_t tile_width(Tile tile) { return tile == Tile::avx512 ? 32 : 16; }

#define VGKERN_SIMD_KERNELS "core/packed_gemm_simd.inc"
#include "core/simd_levels.inc"

}  // namespace

bool packed_gemm_available() { return cpu_tile() != Tile::none; }

void pack_panels(PackedPanels& out, bool trans, const float* src, int64_t ld, int64_t K,
                 int64_t N) {
  const int64_t w = tile_width(cpu_tile());
  out.K = K;
  out.N = N;
  out.width = w;
  out.data.resize(out.panels() * K * w);  // (no fill: every entry is written below)
  for (int64_t p = 0; p < out.panels(); ++p) {
    float* dst = out.data.data() + p * K * w;
    const int64_t j0 = p * w, cols = std::min(w, N - j0);
    if (trans) {  // B[k, j] = src[j, k]
      VGKERN_SIMD(isa::pack_transposed_panel(dst, w, src + j0 * ld, ld, K, cols));
    } else {
      for (int64_t k = 0; k < K; ++k) std::copy(src + k * ld + j0, src + k * ld + j0 + cols, dst + k * w);
    }
    if (cols < w)  // the last panel's padding
      for (int64_t k = 0; k < K; ++k) std::fill(dst + k * w + cols, dst + (k + 1) * w, 0.f);
  }
}

namespace {

// C (M, N) = or += A @ B over panels of B: panel p at b + p * panel_step, its row k at + k * ldb
// (packed panels: panel_step K * width, ldb width; B in place: panel_step width, ldb its row
// stride). A (M, K) row-major, or stored transposed (TransA: At (K, M)), row stride lda.
template <bool TransA>
void gemm_panels(int64_t M, int64_t K, int64_t N, const float* A, int64_t lda, const float* b,
                 int64_t panel_step, int64_t ldb, int64_t width, bool accumulate, float* C,
                 int64_t ldc, const float* bias) {
  // K in chunks of kChunkK (a panel's chunk, kChunkK x width, stays in L1 while every row tile
  // passes over it; the later chunks add onto C). In each, blocks of about 64 KB of A's rows (all
  // of M at the per-step shapes), and in each, panel by panel: the block stays in L1/L2 while
  // every panel passes over it, and a panel is reused by every row tile of the block.
  for (int64_t k0 = 0; k0 < K; k0 += kChunkK) {
    const int64_t kc = std::min(kChunkK, K - k0);
    const bool add = accumulate || k0 > 0;
    const float* bias_k = k0 == 0 ? bias : nullptr;
    // (all M rows when they fit: at the per-step shape, 64 rows x 256, a 48-row block and a
    // 16-row one would stream every panel twice: measured 30 % slower at H=512 on 2 threads)
    const int64_t fit = kBlockFloats / kc;
    const int64_t block = M <= fit ? M : std::max<int64_t>(48, fit / 48 * 48);
    for (int64_t i0 = 0; i0 < M; i0 += block) {
      const int64_t rows = std::min(block, M - i0);
      const float* a = TransA ? A + k0 * lda + i0 : A + i0 * lda + k0;
      float* c = C + i0 * ldc;
      for (int64_t p = 0; p * width < N; ++p) {
        const int64_t j0 = p * width, cols = std::min(width, N - j0);
        const float* panel = b + p * panel_step + k0 * ldb;
        const float* bias_p = bias_k ? bias_k + j0 : nullptr;
        if (width == 32)
          VGKERN_SIMD(isa::gemm_rows<8, 2, 16, TransA>(rows, a, lda, panel, ldb, kc, c + j0, ldc,
                                                       add, cols, bias_p));
        else
          VGKERN_SIMD(isa::gemm_rows<6, 2, 8, TransA>(rows, a, lda, panel, ldb, kc, c + j0, ldc,
                                                      add, cols, bias_p));
      }
    }
  }
}

}  // namespace

void packed_gemm(int64_t M, const float* A, int64_t lda, const PackedPanels& B, bool accumulate,
                 float* C, int64_t ldc, const float* bias) {
  gemm_panels<false>(M, B.K, B.N, A, lda, B.data.data(), B.K * B.width, B.width, B.width,
                     accumulate, C, ldc, bias);
}

void packed_gemm_panels(int64_t M, const float* A, int64_t lda, const PackedPanels& B,
                        int64_t panel_begin, int64_t panel_end, bool accumulate, float* C,
                        int64_t ldc) {
  const int64_t j0 = panel_begin * B.width, j1 = std::min(B.N, panel_end * B.width);
  if (j1 <= j0) return;
  const int64_t panel_step = B.K * B.width;
  gemm_panels<false>(M, B.K, j1 - j0, A, lda, B.data.data() + panel_begin * panel_step,
                     panel_step, B.width, B.width, accumulate, C + j0, ldc, nullptr);
}

void gemm_in_place(bool trans_a, int64_t M, int64_t K, int64_t N, const float* A, int64_t lda,
                   const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  const int64_t w = tile_width(cpu_tile());
  const float* panels = B;
  int64_t panel_step = w;
  if (N % w != 0) {  // a last panel would read past B's rows: pack B, zero-padded
    thread_local PackedPanels packed;
    pack_panels(packed, false, B, ldb, K, N);
    panels = packed.data.data();
    panel_step = K * w;
    ldb = w;
  }
  if (trans_a)
    gemm_panels<true>(M, K, N, A, lda, panels, panel_step, ldb, w, accumulate, C, ldc, nullptr);
  else
    gemm_panels<false>(M, K, N, A, lda, panels, panel_step, ldb, w, accumulate, C, ldc, nullptr);
}

bool gemm_adds_once(int64_t K) { return K <= kChunkK; }

}  // namespace vgkern
