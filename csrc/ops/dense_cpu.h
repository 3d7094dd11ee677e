// CPU kernels of the dense layer, with the statistics fused into the passes that produce or
// consume the data. Used by ops/dense.cpp (one layer) and nets/mlp.cpp (whole networks).
//
//   forward:  z (B, out) = x (B, in) @ w (out, in)^T     GEMM, written into h
//             h = act(z + b), dact = act'(z + b)          one epilogue pass over rows of h,
//                                                          forward statistics in the same pass
//   backward: delta (B, out) = dh * dact                  one prologue pass: ||dh||, ||delta||, db
//             dw (out, in) = delta^T @ x                  GEMM, then ||dw|| while it is hot
//             dx (B, in) = delta @ w                      GEMM (skipped when dx is null)
#pragma once
#include <cmath>
#include <cstdint>

#include "core/report.h"  // ForwardStats, BackwardStats
#include "core/scratch.h"
#include "ops/activation.h"
#include "ops/layer_plan.h"

namespace vgkern {

// Lanes of the activation passes' statistics: entry j of a run of kStatLanes entries goes to
// lane j (one AVX-512 vector of floats), so hot loops carry no horizontal reduction. Counts
// stay in int32 lanes for at most kCountChunk entries, then are added to int64 totals.
constexpr int kStatLanes = 16;
constexpr int64_t kCountChunk = int64_t{1} << 28;

// col_nonzero (cols,) = 1 where column j of h (rows, cols) is nonzero in some row, else 0: run
// by a row block that has zeros, for dead_columns.
template <class T>
void mark_nonzero_columns(const T* h, int64_t rows, int64_t cols, int32_t* col_nonzero);

// Columns that are zero in every row of every block, from the blocks' mark_nonzero_columns
// rows. A column can only be dead when every block has zeros (and so marked its row).
int64_t dead_columns(PartRows<int32_t> col_nonzero, int parts, int parts_with_zeros,
                     int64_t cols);

// z (rows, out) = x (rows, in) @ w^T, plus b when not null, on rows [row_begin, row_end) and
// columns [col_begin, col_end) of z: a row block, or a column half (ops/layer_plan.h). b is
// written first and the GEMM accumulates onto it, so the epilogue is one flat pass.
template <class T>
void preactivation(T* z, const T* x, const T* w, const T* b, int64_t in, int64_t out,
                   int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end);

// dact may be null only for the identity activation (act' = 1 is not stored).
// stats may be null (no statistics computed).
template <class T>
void dense_forward_cpu(T* h, T* dact, const T* x, const T* w, const T* b, int64_t rows,
                       int64_t in, int64_t out, ActSpec act, ForwardStats* stats);

// delta (B, out) must not alias dh: dh is kept for the rare scaled-norm fallback of float64.
// dact may be null (identity).
// dx may be null (not needed below the first layer). log_scale renormalises delta by a power of
// two so that ||delta|| is in [1, 2): exact, and keeps the signal inside the float range.
// Returns rescale_log2 (0 without log_scale).
template <class T>
int dense_backward_cpu(T* dx, T* dw, T* db, T* delta, const T* dh, const T* dact, const T* x,
                        const T* w, int64_t rows, int64_t in, int64_t out, bool log_scale,
                        BackwardStats* stats);

// The GEMMs of a layer's backward, cut as `plan` says: dw (out, in) = delta^T @ x and, when dx
// is not null, dx (B, in) = delta @ w, and the sum of squares of dw when sumsq.
// - split rows: row block p computes dx_p = delta_p @ w and its share delta_p^T x_p of dw (into
//   dw for block 0, scratch for the others: each block keeps its rows in its core's cache);
//   finish() adds the shares in block order.
// - split columns: half p computes dx's columns p and dw's rows p (its output units), then sums
//   those rows' squares while they are in its core's L2.
template <class T>
class BackwardGemms {
 public:
  BackwardGemms(const LayerPlan& plan, T* dx, T* dw, const T* delta, const T* x, const T* w,
                int64_t rows, int64_t in, int64_t out, bool sumsq);
  void block(int p) const;  // split rows: block p's GEMMs, from inside for_parts
  void run();               // all parts side by side (split), or each GEMM whole on BLAS threads
  double finish() const;    // the sum of squares of dw when sumsq, else 0

 private:
  // dx rows [begin, begin + count) and those rows' share delta^T x of dw, into dw_target
  void rows_gemms(int64_t begin, int64_t count, T* dw_target) const;
  void column_half(int p);  // split columns: half p's GEMMs and sum of squares
  LayerPlan plan_;
  T *dx_, *dw_;
  const T *delta_, *x_, *w_;
  int64_t rows_, in_, out_;
  bool sumsq_;
  T* dw_rest_;  // (parts - 1, out, in) the other row blocks' shares of dw
  double column_sumsq_[kMaxParts] = {0, 0};
};

// BackwardGemms run, then finished.
template <class T>
double weight_and_input_grads(const LayerPlan& plan, T* dx, T* dw, const T* delta, const T* x,
                              const T* w, int64_t rows, int64_t in, int64_t out, bool sumsq);

}  // namespace vgkern
