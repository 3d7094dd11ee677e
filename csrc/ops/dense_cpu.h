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
#include <type_traits>

#include "core/packed_gemm.h"
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

// Small float32 layers (split by rows, weights of at most kMaxPackedWeights entries) run their
// GEMMs on core/packed_gemm.h's register tiles: the forward's w^T packed once per layer call
// and thread, the backward's operands read in place. The BLAS calls they replace each pack both
// operands again (OpenBLAS's copy routines: a fifth of the samples at W = 64), and from two
// threads at once they contend inside OpenBLAS. Measured faster from W = 64 to 256 on 1 and 2
// threads (bench/README.md, "Own GEMMs for small layers"); bigger layers keep the BLAS.
constexpr int64_t kMaxPackedWeights = 256 * 256;

template <class T>
bool packed_layer_gemms(const LayerPlan& plan, int64_t in, int64_t out) {
  return std::is_same_v<T, float> && plan.split_rows && in * out <= kMaxPackedWeights &&
         packed_gemm_available();
}

// w^T (in, out) packed for the forward GEMM of a packed_layer_gemms layer (inactive otherwise:
// the BLAS). Each thread running a row block packs its own copy when it first needs it in this
// layer call: two threads pack side by side (no serial section while the helper waits), one
// thread running both blocks packs once.
template <class T>
class ForwardPanels {
 public:
  ForwardPanels() = default;  // inactive
  ForwardPanels(const LayerPlan& plan, const T* w, int64_t in, int64_t out)
      : w_(packed_layer_gemms<T>(plan, in, out) ? w : nullptr), in_(in), out_(out),
        call_(next_call()) {}
  bool active() const { return w_ != nullptr; }
  const PackedPanels& get() const;  // this thread's copy (float only)

 private:
  static uint64_t next_call();  // a number no other layer call has
  const T* w_ = nullptr;
  int64_t in_ = 0, out_ = 0;
  uint64_t call_ = 0;
};

// z (rows, out) = x (rows, in) @ w^T, plus b when not null, on rows [row_begin, row_end) and
// columns [col_begin, col_end) of z: a row block, or a column half (ops/layer_plan.h). b is
// written first and the GEMM accumulates onto it, so the epilogue is one flat pass. With active
// panels (whole rows only) the packed GEMM computes it, b added in its tile.
template <class T>
void preactivation(T* z, const T* x, const T* w, const T* b, int64_t in, int64_t out,
                   int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
                   const ForwardPanels<T>& wt = ForwardPanels<T>());

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
// - packed_layer_gemms: the split-rows GEMMs on the packed kernels, w and x read in place.
template <class T>
class BackwardGemms {
 public:
  // dw_shares: (parts - 1, out, in) for the other row blocks' shares of dw; null: a
  // per-thread scratch (one layer at a time)
  BackwardGemms(const LayerPlan& plan, T* dx, T* dw, const T* delta, const T* x, const T* w,
                int64_t rows, int64_t in, int64_t out, bool sumsq, T* dw_shares = nullptr);
  // Split rows, blocks run in order on one thread (PartRunner::in_order): block p > 0 adds its
  // share onto dw inside its GEMM where that gives the bits of adding it afterwards
  // (gemm_adds_once), so no share is stored, read back and added by finish().
  void add_shares_in_place();
  void block(int p) const;  // split rows: block p's GEMMs, from inside for_parts
  void run();               // all parts side by side (split), or each GEMM whole on BLAS threads
  double finish() const;    // the sum of squares of dw when sumsq, else 0

 private:
  // dx rows [begin, begin + count) and those rows' share delta^T x of dw, into dw_target (or
  // added onto it: add_to_dw)
  void rows_gemms(int64_t begin, int64_t count, T* dw_target, bool add_to_dw = false) const;
  void column_half(int p);  // split columns: half p's GEMMs and sum of squares
  LayerPlan plan_;
  T *dx_, *dw_;
  const T *delta_, *x_, *w_;
  int64_t rows_, in_, out_;
  bool sumsq_;
  bool shares_in_place_ = false;
  T* dw_rest_;  // (parts - 1, out, in) the other row blocks' shares of dw
  double column_sumsq_[kMaxParts] = {0, 0};
};

// The pieces of dense_forward_cpu / dense_backward_cpu, for drivers that run a row block
// through many layers in one hand-off (nets/mlp.cpp: a split-rows stack). Each block's sums are
// combined in block order, so a layer gives the same bits whichever way its blocks ran.

// The statistics sums of one row block: the forward epilogue's moments and counts
// (PartMoments) and the backward prologue's sums of squares (PrologueSums), one cache line
// each (written by different threads).
struct EpilogueSums {
  double shifted_sum = 0, shifted_sumsq = 0;  // of z - shift, shift = z[0] (less cancellation)
  int64_t saturated = 0, zeros = 0;
};
struct alignas(64) PartMoments {
  double count = 0, shift = 0;
  EpilogueSums sums;
  bool trusted = true;  // the sum of squares neither overflowed nor lost squares to underflow
};
struct alignas(64) PrologueSums {
  double dh_sumsq = 0, delta_sumsq = 0;
};

// Row block p of a layer's forward: with plan.split_rows its rows of z (GEMM) first, then
// h = act(z), dact = act'(z) on its rows, and with col_nonzero (this block's (out,) row; null:
// no statistics) its moments and counts.
template <class T>
PartMoments forward_block(const LayerPlan& plan, int p, T* h, T* dact, const T* x, const T* w,
                          const T* b, int64_t rows, int64_t in, int64_t out, ActSpec act,
                          const ForwardPanels<T>& wt, int32_t* col_nonzero);

// The layer's statistics from its blocks' sums; z recomputed once (x, w, b) where they cannot
// be trusted (extreme or non-finite pre-activations).
template <class T>
void forward_statistics(const LayerPlan& plan, const PartMoments* moments,
                        PartRows<int32_t> col_nonzero, const T* x, const T* w, const T* b,
                        int64_t rows, int64_t in, int64_t out, const ForwardPanels<T>& wt,
                        ForwardStats* stats);

// Row block p of a layer's backward prologue: its rows of delta = dh * dact (dact null:
// identity), their sums of squares when `want`, the column sums of delta into bias_sum (out,);
// then, with gemms, the block's GEMMs while its rows are hot.
template <class T>
PrologueSums backward_block(const LayerPlan& plan, int p, T* delta, const T* dh, const T* dact,
                            int64_t rows, int64_t out, bool want, double* bias_sum,
                            const BackwardGemms<T>* gemms);

// What follows the blocks: db, log-scale renormalisation, the GEMMs unless the blocks ran them
// (gemms_in_blocks), dw's shares added, the norms. Returns rescale_log2. delta and dh null:
// gone (overwritten by lower layers); then only float data, whose blocks' sums were checked
// in the prologue: a total that is still untrusted (NaN) gives NaN, as scaled_norm would.
template <class T>
int finish_backward(const LayerPlan& plan, BackwardGemms<T>& gemms, bool gemms_in_blocks,
                    const PrologueSums* part_sums, PartRows<double> bias_sums, T* db, T* delta,
                    const T* dh, int64_t rows, int64_t in, int64_t out, const T* dw,
                    bool log_scale, BackwardStats* stats);

// BackwardGemms run, then finished.
template <class T>
double weight_and_input_grads(const LayerPlan& plan, T* dx, T* dw, const T* delta, const T* x,
                              const T* w, int64_t rows, int64_t in, int64_t out, bool sumsq);

}  // namespace vgkern
