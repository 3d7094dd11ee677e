// How one layer's work is cut into parts that run side by side (core/parallel.h): from shapes
// only, never from thread counts, so results are the same with any number of threads.
//
//   parts:         row blocks of the elementwise passes (2 when there are 2 rows or more)
//   split_rows:    small layers, and layers with as many rows as units: the layer's GEMMs run
//                  inside the row blocks too, single-threaded BLAS each (each block's share of
//                  dw is added in block order)
//   split_columns: bigger layers (64 x 1024 x 1024): each GEMM is cut by its output columns
//                  into two single-threaded halves, side by side; no shares to add, and each
//                  half of dw is summed for ||dw|| in its own core's L2 right after its GEMM
//   neither:       each GEMM gets the BLAS's own threads (big layers too narrow to cut by columns)
//                  and the elementwise blocks run one after another on the caller (a helper
//                  would fight the BLAS's spinning threads for the cores: measured 10-20%
//                  slower at 64 x 1024 x 1024)
//   dw_blocks:     blocks of dw for its sum of squares (and the sum of the row blocks' shares)
#pragma once
#include <algorithm>
#include <cstdint>
#include <optional>

#include "core/blas.h"
#include "core/parallel.h"

namespace vgkern {

struct LayerPlan {
  int parts = 1;
  bool split_rows = false;
  bool split_columns = false;
  int dw_blocks = 1;
  bool threaded() const { return parts > 1 && (split_rows || split_columns); }
};

// A layer splits its GEMMs by rows up to this GEMM work (multiply-adds), or when it has at least
// as many rows as units in or out (then a share of dw, out x in, is no bigger than x); otherwise
// by columns. Measured on 2 cores, paired, statistics off (bench/README.md,
// "Threads"): the column split is 8 % slower at 256 x 256 x 256, 33 % at 256 x 128 x 128 and
// 6 % at 512 x 512 x 512, and the row split 50 % slower at 64 x 1024 x 1024 (adding the shares
// of a 4 MB dw); at 256 x 384 x 384 up to 1024 x 2048 x 2048 they are within 3 %.
constexpr double kMaxSplitWork = 1 << 25;
constexpr int64_t kMinBlockEntries = 1 << 15;  // below this, a hand-off costs more than it saves
// Output columns of each half of a column-split GEMM at least (a multiple of kColumnAlign).
constexpr int64_t kMinSplitColumns = 64;
constexpr int64_t kColumnAlign = 16;  // halves start on a 64-byte line in float32

inline LayerPlan layer_plan(int64_t rows, int64_t in, int64_t out) {
  LayerPlan plan;
  plan.parts = rows >= 2 ? 2 : 1;
  plan.split_rows = plan.parts == 2 && (static_cast<double>(rows) * in * out <= kMaxSplitWork ||
                                        rows >= std::max(in, out));
  plan.split_columns = plan.parts == 2 && !plan.split_rows &&
                       std::min(in, out) >= 2 * kMinSplitColumns;
  plan.dw_blocks = plan.split_rows && out * in >= 2 * kMinBlockEntries ? 2 : 1;
  return plan;
}

// First index of part p when n items are cut into `parts` contiguous blocks.
inline int64_t part_begin(int64_t n, int parts, int p) { return n * p / parts; }

// First output column of half p (0, 1 or 2 for the end) of a column-split GEMM with n columns.
inline int64_t column_begin(int64_t n, int p) {
  return p == 0 ? 0 : p == 2 ? n : n / 2 / kColumnAlign * kColumnAlign;
}

// Runs part(p) for p < parts: with split GEMMs on the caller and the helper, the BLAS held to
// one thread per call meanwhile; without (or with one thread), one after another on the
// caller, p = 0 first, which in_order() tells before they run.
class PartRunner {
 public:
  PartRunner(const LayerPlan& plan, int parts) : parts_(parts) {
    if (parts > 1 && plan.threaded()) threads_ = single_.emplace().threads();
  }
  bool in_order() const { return threads_ < 2; }
  template <class F>
  void run(F&& part) const {
    if (in_order())
      for (int p = 0; p < parts_; ++p) part(p);
    else
      run_parts(parts_, threads_, part);
  }

 private:
  std::optional<BlasSingleThreaded> single_;
  int parts_, threads_ = 1;
};

template <class F>
void for_parts(const LayerPlan& plan, int parts, F&& part) {
  PartRunner(plan, parts).run(part);
}

}  // namespace vgkern
