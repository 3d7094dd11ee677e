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

Tile cpu_tile() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(VGKERN_NO_MULTIVERSION)
  if (masked_counts()) return Tile::avx512;  // the x86-64-v4 clones run here
  if (__builtin_cpu_supports("x86-64-v3")) return Tile::avx2;
#endif
  return Tile::none;
}

constexpr int64_t kBlockFloats = 16384;  // A's rows per block: 64 KB (a multiple of 48 rows)

int64_t tile_width(Tile tile) { return tile == Tile::avx512 ? 32 : 16; }

// C rows i..i+MR, columns of one panel (`cols` <= NV * Lanes of them valid) = or += A rows @ panel.
template <int MR, int NV, int Lanes>
VGKERN_SIMD_CLONES void gemm_tile(int64_t K, const float* A, int64_t lda, const float* panel,
                                  float* C, int64_t ldc, bool accumulate, int64_t cols,
                                  const float* bias) {
  using V = typename VecOf<Lanes>::type;
  constexpr int64_t kLanes = Lanes;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  for (int64_t k = 0; k < K; ++k) {
    V b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) std::memcpy(&b[v], panel + (k * NV + v) * kLanes, sizeof(V));
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * lda + k];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] += b[v] * a;
    }
  }
  if (cols == NV * kLanes) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        float* c = C + r * ldc + v * kLanes;
        V out = acc[r][v];
        if (bias) {
          V b_v;
          std::memcpy(&b_v, bias + v * kLanes, sizeof(V));
          out += b_v;
        }
        if (accumulate) {
          V old;
          std::memcpy(&old, c, sizeof(V));
          out += old;
        }
        std::memcpy(c, &out, sizeof(V));
      }
    return;
  }
  float tmp[NV * kLanes];  // the last panel: only `cols` columns exist in C
  for (int r = 0; r < MR; ++r) {
    std::memcpy(tmp, acc[r], sizeof(tmp));
    float* c = C + r * ldc;
    for (int64_t j = 0; j < cols; ++j) {
      const float out = bias ? tmp[j] + bias[j] : tmp[j];
      c[j] = accumulate ? c[j] + out : out;
    }
  }
}

template <int MR, int NV, int Lanes>
void gemm_rows(int64_t M, const float* A, int64_t lda, const float* panel, int64_t K, float* C,
               int64_t ldc, bool accumulate, int64_t cols, const float* bias) {
  int64_t i = 0;
  for (; i + MR <= M; i += MR)
    gemm_tile<MR, NV, Lanes>(K, A + i * lda, lda, panel, C + i * ldc, ldc, accumulate, cols, bias);
  const int64_t rest = M - i;
  A += i * lda;
  C += i * ldc;
  switch (rest) {  // fewer rows than a tile: the same kernel with a shorter tile
    case 0: break;
    case 1: gemm_tile<1, NV, Lanes>(K, A, lda, panel, C, ldc, accumulate, cols, bias); break;
    case 2: gemm_tile<2, NV, Lanes>(K, A, lda, panel, C, ldc, accumulate, cols, bias); break;
    case 3: gemm_tile<3, NV, Lanes>(K, A, lda, panel, C, ldc, accumulate, cols, bias); break;
    case 4: gemm_tile<4, NV, Lanes>(K, A, lda, panel, C, ldc, accumulate, cols, bias); break;
    case 5: gemm_tile<5, NV, Lanes>(K, A, lda, panel, C, ldc, accumulate, cols, bias); break;
    case 6: gemm_tile<6, NV, Lanes>(K, A, lda, panel, C, ldc, accumulate, cols, bias); break;
    default: gemm_tile<7, NV, Lanes>(K, A, lda, panel, C, ldc, accumulate, cols, bias); break;
  }
}

}  // namespace

bool packed_gemm_available() { return cpu_tile() != Tile::none; }

void pack_panels(PackedPanels& out, bool trans, const float* src, int64_t ld, int64_t K,
                 int64_t N) {
  const int64_t w = tile_width(cpu_tile());
  out.K = K;
  out.N = N;
  out.width = w;
  out.data.assign(out.panels() * K * w, 0.0f);
  for (int64_t p = 0; p < out.panels(); ++p) {
    float* dst = out.data.data() + p * K * w;
    const int64_t j0 = p * w, cols = std::min(w, N - j0);
    if (trans) {  // B[k, j] = src[j, k]: read src row by row, scatter into the panel
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t k = 0; k < K; ++k) dst[k * w + j] = src[(j0 + j) * ld + k];
    } else {
      for (int64_t k = 0; k < K; ++k) std::copy(src + k * ld + j0, src + k * ld + j0 + cols, dst + k * w);
    }
  }
}

void packed_gemm(int64_t M, const float* A, int64_t lda, const PackedPanels& B, bool accumulate,
                 float* C, int64_t ldc, const float* bias) {
  // Blocks of about 64 KB of A's rows (all of M at the per-step shapes), and in each, panel by
  // panel: the block stays in L1/L2 while every panel (K x width) passes over it, and a panel is
  // reused by every row tile of the block.
  const int64_t block = std::max<int64_t>(48, (kBlockFloats / std::max<int64_t>(B.K, 1)) / 48 * 48);
  for (int64_t i0 = 0; i0 < M; i0 += block) {
    const int64_t rows = std::min(block, M - i0);
    const float* a = A + i0 * lda;
    float* c = C + i0 * ldc;
    for (int64_t p = 0; p < B.panels(); ++p) {
      const int64_t j0 = p * B.width, cols = std::min(B.width, B.N - j0);
      if (B.width == 32)
        gemm_rows<8, 2, 16>(rows, a, lda, B.panel(p), B.K, c + j0, ldc, accumulate, cols,
                            bias ? bias + j0 : nullptr);
      else
        gemm_rows<6, 2, 8>(rows, a, lda, B.panel(p), B.K, c + j0, ldc, accumulate, cols,
                            bias ? bias + j0 : nullptr);
    }
  }
}

}  // namespace vgkern
