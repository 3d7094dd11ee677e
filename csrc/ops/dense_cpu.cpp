#include "ops/dense_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/blas.h"
#include "core/scratch.h"
#include "core/simd.h"
#include "core/stats.h"
#include "ops/activation_math.h"
#include "ops/layer_plan.h"

namespace vgkern {
namespace {

thread_local std::vector<int32_t> t_col_nonzero;   // (parts, out) 1 where some row has h != 0
thread_local std::vector<double> t_bias_sums;      // (parts, out) float64 column sums of delta
thread_local std::vector<float> t_preact_f32;      // (B, out) z, only for scaled_mean_std
thread_local std::vector<double> t_preact_f64;
template <class T> std::vector<T>& preact_scratch();
template <> std::vector<float>& preact_scratch<float>() { return t_preact_f32; }
template <> std::vector<double>& preact_scratch<double>() { return t_preact_f64; }
thread_local std::vector<float> t_dw_f32;          // (parts - 1, out, in) partial weight grads
thread_local std::vector<double> t_dw_f64;
template <class T> std::vector<T>& dw_scratch();
template <> std::vector<float>& dw_scratch<float>() { return t_dw_f32; }
template <> std::vector<double>& dw_scratch<double>() { return t_dw_f64; }

#define VGKERN_SIMD_KERNELS "ops/dense_simd.inc"
#include "core/simd_levels.inc"

// A forward signal that vanishes with depth (small weights): below about 2^-63, the float
// squares of z - shift come out subnormal (a microcode assist each) and fail the trust check
// below, whose fallback recomputes z. When 32 sampled |z - shift| all lie below this, the moments
// are taken of (z - shift) * 2^k instead (k from tiny_float_scale_log2; exact, a power of two).
constexpr float kTinyShiftedPreact = 0x1p-30f;

// One part of a forward epilogue: rows of h (rows, cols) in place, with its statistics sums.
template <class T, bool Stats>
PartMoments run_forward_epilogue(T* h, T* dact, int64_t rows, int64_t cols, ActSpec act,
                                 int32_t* col_nonzero) {
  const int64_t n = rows * cols;
  const T alpha = static_cast<T>(act.alpha);
  const T threshold = static_cast<T>(0.01 * max_derivative(act));
  const T shift = n > 0 ? h[0] : T(0);  // shifted sums: less cancellation in the variance
  int scale_log2 = 0;
  if constexpr (Stats && std::is_same_v<T, float>)
    scale_log2 = tiny_float_scale_log2(h, n, kTinyShiftedPreact, shift);
  const T scale = times_power_of_two(T(1), scale_log2);
  PartMoments part;
  with_activation(act.kind, [&](auto kind) {
    constexpr Activation K = decltype(kind)::value;
    if constexpr (Stats && std::is_same_v<T, float>)
      if (scale_log2 != 0)
        return VGKERN_SIMD(isa::forward_epilogue<T, K, true, false, true>(
            h, dact, n, alpha, threshold, shift, scale, part.sums));
    if constexpr (Stats)
      if (masked_counts())
        return VGKERN_SIMD(isa::forward_epilogue<T, K, true, true>(h, dact, n, alpha, threshold,
                                                                   shift, scale, part.sums));
    VGKERN_SIMD(
        isa::forward_epilogue<T, K, Stats>(h, dact, n, alpha, threshold, shift, scale, part.sums));
  });
  if (!Stats) return part;
  part.count = static_cast<double>(n);
  part.shift = static_cast<double>(shift);
  if (part.sums.zeros > 0) mark_nonzero_columns(h, rows, cols, col_nonzero);
  // Lost squares are each below 2^(min exponent); require them to be < 2^-40 of the total.
  const double smallest_trusted =
      part.count * (static_cast<double>(std::numeric_limits<T>::min()) * 0x1p40);
  part.trusted = std::isfinite(part.sums.shifted_sumsq) && part.sums.shifted_sumsq >= smallest_trusted;
  part.sums.shifted_sum = times_power_of_two(part.sums.shifted_sum, -scale_log2);
  part.sums.shifted_sumsq = times_power_of_two(part.sums.shifted_sumsq, -2 * scale_log2);
  return part;
}

// Combines the parts' moments in part order (Chan et al.'s pairwise update). Returns false when
// some part's fast moments cannot be trusted; the caller then recomputes them in scaled float64.
bool combine_forward_stats(const PartMoments* parts, int num_parts, PartRows<int32_t> col_nonzero,
                           int64_t cols, ForwardStats* stats) {
  double count = 0, mean = 0, m2 = 0;
  int64_t saturated = 0, zeros = 0;
  int parts_with_zeros = 0;
  bool trusted = true;
  for (int p = 0; p < num_parts; ++p) {
    const PartMoments& part = parts[p];
    trusted = trusted && part.trusted;
    saturated += part.sums.saturated;
    zeros += part.sums.zeros;
    parts_with_zeros += part.sums.zeros > 0;
    if (part.count == 0) continue;
    const double part_offset = part.sums.shifted_sum / part.count;  // part mean - shift
    const double part_m2 = std::max(0.0, part.sums.shifted_sumsq - part.sums.shifted_sum * part_offset);
    const double part_mean = part.shift + part_offset;
    const double total = count + part.count, d = part_mean - mean;
    mean += d * (part.count / total);
    m2 += part_m2 + d * d * (count * part.count / total);
    count = total;
  }
  const int64_t dead = dead_columns(col_nonzero, num_parts, parts_with_zeros, cols);
  stats->preact_mean = mean;
  stats->preact_std = count > 0 ? std::sqrt(m2 / count) : 0.0;
  stats->saturated_fraction = count > 0 ? saturated / count : 0.0;
  stats->zero_fraction = count > 0 ? zeros / count : 0.0;
  stats->dead_fraction = cols > 0 ? static_cast<double>(dead) / cols : 0.0;
  return trusted;
}

// delta = dh * dact (dact null: identity), written out of place so that dh survives for the
// rare scaled-norm fallback, with the sums of the squares of dh and delta: one flat pass
// (per-lane sums as in forward_epilogue, no reduction inside the loop; the float total checked
// once, see float_sum_squares_trusted), then the float64 column sums of delta (-> db) in a
// second pass over the rows while they are in L1/L2.
template <class T>
PrologueSums run_backward_prologue(T* delta, const T* dh, const T* dact, int64_t rows,
                                   int64_t cols, bool want, double* bias_sum) {
  int k = 0;
  if constexpr (std::is_same_v<T, float>) k = want ? tiny_float_scale_log2(dh, rows * cols) : 0;
  return VGKERN_SIMD([&] {  // one dispatch, then the variant
    if (k != 0) {
      if (dact)
        return isa::backward_prologue<T, true, true, true>(delta, dh, dact, rows, cols, k,
                                                           bias_sum);
      return isa::backward_prologue<T, false, true, true>(delta, dh, dact, rows, cols, k, bias_sum);
    }
    if (dact && want)
      return isa::backward_prologue<T, true, true>(delta, dh, dact, rows, cols, 0, bias_sum);
    if (dact)
      return isa::backward_prologue<T, true, false>(delta, dh, dact, rows, cols, 0, bias_sum);
    if (want)
      return isa::backward_prologue<T, false, true>(delta, dh, dact, rows, cols, 0, bias_sum);
    return isa::backward_prologue<T, false, false>(delta, dh, dact, rows, cols, 0, bias_sum);
  }());
}

}  // namespace

template <class T>
void mark_nonzero_columns(const T* h, int64_t rows, int64_t cols, int32_t* col_nonzero) {
  VGKERN_SIMD(isa::mark_nonzero_columns(h, rows, cols, col_nonzero));
}

int64_t dead_columns(PartRows<int32_t> col_nonzero, int parts, int parts_with_zeros,
                     int64_t cols) {
  int64_t dead = 0;
  if (parts_with_zeros == parts)
    for (int64_t j = 0; j < cols; ++j) {
      int32_t alive = 0;
      for (int p = 0; p < parts; ++p) alive |= col_nonzero[p][j];
      dead += alive == 0;
    }
  return dead;
}

template <class T>
BackwardGemms<T>::BackwardGemms(const LayerPlan& plan, T* dx, T* dw, const T* delta, const T* x,
                                const T* w, int64_t rows, int64_t in, int64_t out, bool sumsq,
                                T* dw_shares)
    : plan_(plan), dx_(dx), dw_(dw), delta_(delta), x_(x), w_(w), rows_(rows), in_(in),
      out_(out), sumsq_(sumsq),
      dw_rest_(!plan.split_rows ? nullptr
               : dw_shares      ? dw_shares
                                : scratch(dw_scratch<T>(), (plan.parts - 1) * out * in)) {}

template <class T>
void BackwardGemms<T>::add_shares_in_place() {
  bool once = true;
  for (int p = 1; p < plan_.parts; ++p)
    once = once && gemm_adds_once(part_begin(rows_, plan_.parts, p + 1) -
                                  part_begin(rows_, plan_.parts, p));
  shares_in_place_ = packed_layer_gemms<T>(plan_, in_, out_) && once;  // (split rows, float)
}

template <class T>
void BackwardGemms<T>::rows_gemms(int64_t begin, int64_t count, T* dw_target,
                                  bool add_to_dw) const {
  const T* delta = delta_ + begin * out_;
  if constexpr (std::is_same_v<T, float>) {
    if (packed_layer_gemms<T>(plan_, in_, out_)) {
      gemm_in_place(true, out_, count, in_, delta, out_, x_ + begin * in_, in_, dw_target, in_,
                    add_to_dw);
      if (dx_) gemm_in_place(false, count, out_, in_, delta, out_, w_, in_, dx_ + begin * in_, in_);
      return;
    }
  }
  gemm<T>(true, false, out_, in_, count, T(1), delta, out_, x_ + begin * in_, in_, T(0),
          dw_target, in_);
  if (dx_)
    gemm<T>(false, false, count, in_, out_, T(1), delta, out_, w_, in_, T(0), dx_ + begin * in_,
            in_);
}

template <class T>
void BackwardGemms<T>::block(int p) const {
  const int64_t begin = part_begin(rows_, plan_.parts, p);
  const int64_t count = part_begin(rows_, plan_.parts, p + 1) - begin;
  if (p == 0 || shares_in_place_)
    rows_gemms(begin, count, dw_, p > 0);
  else
    rows_gemms(begin, count, dw_rest_ + (p - 1) * out_ * in_);
}

template <class T>
void BackwardGemms<T>::column_half(int p) {
  const int64_t in_begin = column_begin(in_, p), in_count = column_begin(in_, p + 1) - in_begin;
  const int64_t out_begin = column_begin(out_, p);
  const int64_t out_count = column_begin(out_, p + 1) - out_begin;
  if (dx_)
    gemm<T>(false, false, rows_, in_count, out_, T(1), delta_, out_, w_ + in_begin, in_, T(0),
            dx_ + in_begin, in_);
  T* dw_rows = dw_ + out_begin * in_;  // (out_count, in), contiguous
  gemm<T>(true, false, out_count, in_, rows_, T(1), delta_ + out_begin, out_, x_, in_, T(0),
          dw_rows, in_);
  if (sumsq_) column_sumsq_[p] = sum_squares_newest_first(dw_rows, out_count * in_);  // L2
}

template <class T>
void BackwardGemms<T>::run() {
  if (plan_.split_rows)
    for_parts(plan_, plan_.parts, [this](int p) { block(p); });
  else if (plan_.split_columns)
    for_parts(plan_, plan_.parts, [this](int p) { column_half(p); });
  else
    rows_gemms(0, rows_, dw_);  // each GEMM whole, on the BLAS's threads
}

template <class T>
double BackwardGemms<T>::finish() const {
  if (plan_.split_columns) return column_sumsq_[0] + column_sumsq_[1];
  // The shares summed, then the squares of dw while it is hot (measured faster than GEMM tiles
  // normed while in L2: small tiles cost the BLAS more than the re-read), in blocks.
  const int64_t n = out_ * in_;
  double block_sumsq[kMaxParts] = {0, 0};
  const bool add_shares = plan_.split_rows && !shares_in_place_;
  if (add_shares || sumsq_)
    for_parts(plan_, plan_.dw_blocks, [&](int p) {
      const int64_t begin = part_begin(n, plan_.dw_blocks, p);
      const int64_t count = part_begin(n, plan_.dw_blocks, p + 1) - begin;
      for (int q = 1; add_shares && q < plan_.parts; ++q)
        VGKERN_SIMD(isa::add_into(dw_ + begin, dw_rest_ + (q - 1) * n + begin, count));
      if (sumsq_) block_sumsq[p] = sum_squares_newest_first(dw_ + begin, count);
    });
  return block_sumsq[0] + block_sumsq[1];
}

template <class T>
double weight_and_input_grads(const LayerPlan& plan, T* dx, T* dw, const T* delta, const T* x,
                              const T* w, int64_t rows, int64_t in, int64_t out, bool sumsq) {
  BackwardGemms<T> gemms(plan, dx, dw, delta, x, w, rows, in, out, sumsq);
  gemms.run();
  return gemms.finish();
}

template <class T>
uint64_t ForwardPanels<T>::next_call() {
  static std::atomic<uint64_t> calls{0};
  return ++calls;
}

template <class T>
const PackedPanels& ForwardPanels<T>::get() const {
  struct Copy {
    PackedPanels panels;
    uint64_t call = 0;
  };
  thread_local Copy mine;
  if (mine.call != call_) {
    pack_panels(mine.panels, true, w_, in_, in_, out_);
    mine.call = call_;
  }
  return mine.panels;
}

template <class T>
void preactivation(T* z, const T* x, const T* w, const T* b, int64_t in, int64_t out,
                   int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
                   const ForwardPanels<T>& wt) {
  T* corner = z + row_begin * out + col_begin;
  if constexpr (std::is_same_v<T, float>) {
    if (wt.active()) {  // whole rows (col_begin 0, col_end out)
      packed_gemm(row_end - row_begin, x + row_begin * in, in, wt.get(), false, corner, out, b);
      return;
    }
  }
  if (b)
    for (int64_t i = 0; i < row_end - row_begin; ++i)
      std::copy(b + col_begin, b + col_end, corner + i * out);
  gemm<T>(false, true, row_end - row_begin, col_end - col_begin, in, T(1), x + row_begin * in, in,
          w + col_begin * in, in, b ? T(1) : T(0), corner, out);
}

template <class T>
PartMoments forward_block(const LayerPlan& plan, int p, T* h, T* dact, const T* x, const T* w,
                          const T* b, int64_t rows, int64_t in, int64_t out, ActSpec act,
                          const ForwardPanels<T>& wt, int32_t* col_nonzero) {
  const int64_t begin = part_begin(rows, plan.parts, p);
  const int64_t count = part_begin(rows, plan.parts, p + 1) - begin;
  if (plan.split_rows) preactivation(h, x, w, b, in, out, begin, begin + count, 0, out, wt);
  T* h_part = h + begin * out;
  T* dact_part = act.kind == Activation::identity ? dact : dact + begin * out;
  return col_nonzero
             ? run_forward_epilogue<T, true>(h_part, dact_part, count, out, act, col_nonzero)
             : run_forward_epilogue<T, false>(h_part, dact_part, count, out, act, nullptr);
}

template <class T>
void forward_statistics(const LayerPlan& plan, const PartMoments* moments,
                        PartRows<int32_t> col_nonzero, const T* x, const T* w, const T* b,
                        int64_t rows, int64_t in, int64_t out, const ForwardPanels<T>& wt,
                        ForwardStats* stats) {
  if (combine_forward_stats(moments, plan.parts, col_nonzero, out, stats)) return;
  // Input all zeros (above a dead relu layer) and no NaN or infinity met: z = b in every row
  // exactly, so the moments are those of b, without a GEMM.
  bool finite = true;
  for (int p = 0; p < plan.parts; ++p)
    finite = finite && std::isfinite(moments[p].sums.shifted_sum + moments[p].sums.shifted_sumsq);
  if (finite && all_zero(x, rows * in)) {
    if (b) {
      scaled_mean_std(b, out, &stats->preact_mean, &stats->preact_std);
    } else {
      stats->preact_mean = 0;
      stats->preact_std = 0;
    }
    return;
  }
  // Extreme or non-finite pre-activations (exploding nets), constant layers: z is gone (h holds
  // act(z)), so recompute it once, by row blocks as the epilogue ran (the BLAS's own threads
  // would fight the spinning helper: 11x slower forward through a dead relu net, before the
  // case above), and take the moments in scaled float64.
  T* z = scratch(preact_scratch<T>(), rows * out);
  for_parts(plan, plan.parts, [&](int p) {
    preactivation(z, x, w, b, in, out, part_begin(rows, plan.parts, p),
                  part_begin(rows, plan.parts, p + 1), 0, out, wt);
  });
  scaled_mean_std(z, rows * out, &stats->preact_mean, &stats->preact_std);
}

template <class T>
void dense_forward_cpu(T* h, T* dact, const T* x, const T* w, const T* b, int64_t rows,
                       int64_t in, int64_t out, ActSpec act, ForwardStats* stats) {
  const LayerPlan plan = layer_plan(rows, in, out);
  const ForwardPanels<T> wt(plan, w, in, out);
  if (plan.split_columns)  // units [c0, c1) of z, over all rows
    for_parts(plan, plan.parts, [&](int p) {
      preactivation(h, x, w, b, in, out, 0, rows, column_begin(out, p), column_begin(out, p + 1));
    });
  else if (!plan.split_rows)
    preactivation(h, x, w, b, in, out, 0, rows, 0, out);
  const PartRows<int32_t> col_nonzero = part_rows(t_col_nonzero, plan.parts, out);
  PartMoments moments[kMaxParts];
  for_parts(plan, plan.parts, [&](int p) {
    moments[p] = forward_block(plan, p, h, dact, x, w, b, rows, in, out, act, wt,
                               stats ? col_nonzero[p] : nullptr);
  });
  if (stats) forward_statistics(plan, moments, col_nonzero, x, w, b, rows, in, out, wt, stats);
}

template <class T>
PrologueSums backward_block(const LayerPlan& plan, int p, T* delta, const T* dh, const T* dact,
                            int64_t rows, int64_t out, bool want, double* bias_sum,
                            const BackwardGemms<T>* gemms) {
  const int64_t begin = part_begin(rows, plan.parts, p);
  const int64_t count = part_begin(rows, plan.parts, p + 1) - begin;
  const PrologueSums sums = run_backward_prologue<T>(delta + begin * out, dh + begin * out,
                                                     dact ? dact + begin * out : nullptr, count,
                                                     out, want, bias_sum);
  if (gemms) gemms->block(p);
  return sums;
}

template <class T>
int finish_backward(const LayerPlan& plan, BackwardGemms<T>& gemms, bool gemms_in_blocks,
                    const PrologueSums* part_sums, PartRows<double> bias_sums, T* db, T* delta,
                    const T* dh, int64_t rows, int64_t in, int64_t out, const T* dw,
                    bool log_scale, BackwardStats* stats) {
  double dh_sumsq = 0, delta_sumsq = 0;
  for (int p = 0; p < plan.parts; ++p) {
    dh_sumsq += part_sums[p].dh_sumsq;
    delta_sumsq += part_sums[p].delta_sumsq;
  }
  sum_part_rows(bias_sums, plan.parts, out);
  for (int64_t j = 0; j < out; ++j) db[j] = static_cast<T>(bias_sums[0][j]);

  const int64_t n = rows * out;
  const auto norm = [n](double sumsq, const T* v) {
    if (v) return norm_from_sum_squares(sumsq, v, n);
    return std::is_same_v<T, float> && sum_squares_trusted<T>(sumsq)
               ? std::sqrt(sumsq) : std::numeric_limits<double>::quiet_NaN();
  };
  const bool want = stats != nullptr || log_scale;
  const double delta_norm = want ? norm(delta_sumsq, delta) : 0.0;
  // ||delta|| / 2^rescale lands in [1, 2)
  const int rescale =
      log_scale ? renormalize_power_of_two<T>(delta_norm, {{delta, n}, {db, out}}) : 0;
  if (!gemms_in_blocks) gemms.run();
  const double dw_sumsq = gemms.finish();
  if (stats) {
    stats->act_grad_norm = norm(dh_sumsq, dh);
    stats->preact_grad_norm = delta_norm;
    stats->bias_grad_norm = frobenius_norm(db, out);
    stats->weight_grad_norm = norm_from_sum_squares(dw_sumsq, dw, out * in);
    stats->rescale_log2 = rescale;
  }
  return rescale;
}

template <class T>
int dense_backward_cpu(T* dx, T* dw, T* db, T* delta, const T* dh, const T* dact, const T* x,
                        const T* w, int64_t rows, int64_t in, int64_t out, bool log_scale,
                        BackwardStats* stats) {
  const LayerPlan plan = layer_plan(rows, in, out);
  const bool want = stats != nullptr || log_scale;
  BackwardGemms<T> gemms(plan, dx, dw, delta, x, w, rows, in, out, stats != nullptr);
  // Log-scale renormalises delta by its norm over all rows before the GEMMs; otherwise a
  // block's GEMMs follow its own prologue at once (one hand-off per layer, rows still hot).
  const bool fused = plan.split_rows && !log_scale;
  const PartRows<double> bias_sums = part_rows(t_bias_sums, plan.parts, out);
  PrologueSums part_sums[kMaxParts];
  const PartRunner runner(plan, plan.parts);
  if (fused && runner.in_order()) gemms.add_shares_in_place();
  runner.run([&](int p) {
    part_sums[p] = backward_block(plan, p, delta, dh, dact, rows, out, want, bias_sums[p],
                                  fused ? &gemms : nullptr);
  });
  return finish_backward(plan, gemms, fused, part_sums, bias_sums, db, delta, dh, rows, in, out,
                         dw, log_scale, stats);
}

#define VGKERN_INSTANTIATE(T)                                                                  \
  template void dense_forward_cpu<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,   \
                                     int64_t, ActSpec, ForwardStats*);                         \
  template int dense_backward_cpu<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*,  \
                                      int64_t, int64_t, int64_t, bool, BackwardStats*);       \
  template double weight_and_input_grads<T>(const LayerPlan&, T*, T*, const T*, const T*,      \
                                            const T*, int64_t, int64_t, int64_t, bool);      \
  template class BackwardGemms<T>;                                                             \
  template uint64_t ForwardPanels<T>::next_call();                                             \
  template void preactivation<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t,   \
                                 int64_t, int64_t, int64_t, const ForwardPanels<T>&);          \
  template void mark_nonzero_columns<T>(const T*, int64_t, int64_t, int32_t*);              \
  template PartMoments forward_block<T>(const LayerPlan&, int, T*, T*, const T*, const T*,    \
                                        const T*, int64_t, int64_t, int64_t, ActSpec,         \
                                        const ForwardPanels<T>&, int32_t*);                   \
  template void forward_statistics<T>(const LayerPlan&, const PartMoments*, PartRows<int32_t>, \
                                      const T*, const T*, const T*, int64_t, int64_t, int64_t, \
                                      const ForwardPanels<T>&, ForwardStats*);                \
  template PrologueSums backward_block<T>(const LayerPlan&, int, T*, const T*, const T*,       \
                                          int64_t, int64_t, bool, double*,                    \
                                          const BackwardGemms<T>*);                           \
  template int finish_backward<T>(const LayerPlan&, BackwardGemms<T>&, bool,                  \
                                  const PrologueSums*, PartRows<double>, T*, T*, const T*,    \
                                  int64_t, int64_t, int64_t, const T*, bool, BackwardStats*);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE
template const PackedPanels& ForwardPanels<float>::get() const;  // (double keeps the BLAS)

}  // namespace vgkern
