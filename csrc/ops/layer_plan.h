// How one layer's work is cut into parts that run side by side (core/parallel.h): from shapes
// only, never from thread counts, so results are the same with any number of threads.
//
//   parts:      row blocks of the elementwise passes (2 when there are 2 rows or more)
//   split_gemm: the layer's GEMMs run inside the row blocks too, single-threaded BLAS each;
//               otherwise each GEMM gets the BLAS's own threads and the elementwise blocks run
//               one after another on the caller (a helper would fight the BLAS's spinning
//               threads for the cores: measured 10-20% slower at 64 x 1024 x 1024)
//   dw_blocks:  blocks of dw for its sum of squares (and the sum of the row blocks' shares)
#pragma once
#include <cstdint>

#include "core/blas.h"
#include "core/parallel.h"

namespace vgkern {

struct LayerPlan {
  int parts = 1;
  bool split_gemm = false;
  int dw_blocks = 1;
};

// GEMM work (multiply-adds) up to which a layer splits its GEMMs. Measured on 2 cores
// (bench/README.md, "Threads"): 256 x 256 x 256 gains from the split, 64 x 1024 x 1024 loses.
constexpr double kMaxSplitWork = 1 << 25;
constexpr int64_t kMinBlockEntries = 1 << 15;  // below this, a hand-off costs more than it saves

inline LayerPlan layer_plan(int64_t rows, int64_t in, int64_t out) {
  LayerPlan plan;
  plan.parts = rows >= 2 ? 2 : 1;
  plan.split_gemm = plan.parts == 2 && static_cast<double>(rows) * in * out <= kMaxSplitWork;
  plan.dw_blocks = plan.split_gemm && out * in >= 2 * kMinBlockEntries ? 2 : 1;
  return plan;
}

// First index of part p when n items are cut into `parts` contiguous blocks.
inline int64_t part_begin(int64_t n, int parts, int p) { return n * p / parts; }

// Runs part(p) for p < parts: with split GEMMs on the caller and the helper, the BLAS held to
// one thread per call meanwhile; without, one after another on the caller.
template <class F>
void for_parts(const LayerPlan& plan, int parts, F&& part) {
  if (parts == 1 || !plan.split_gemm) {
    for (int p = 0; p < parts; ++p) part(p);
    return;
  }
  BlasSingleThreaded single;
  run_parts(parts, single.threads(), part);
}

}  // namespace vgkern
