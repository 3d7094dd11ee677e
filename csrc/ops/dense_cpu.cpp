#include "ops/dense_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/blas.h"
#include "core/scratch.h"
#include "core/simd.h"
#include "core/stats.h"
#include "ops/activation_math.h"

namespace vgkern {
namespace {

thread_local std::vector<int32_t> t_col_nonzero;   // (out,) 1 where some example has h != 0
thread_local std::vector<double> t_col_sums;       // (3, out) float64 column accumulators
thread_local std::vector<float> t_preact_f32;      // (B, out) z, only for scaled_mean_std
thread_local std::vector<double> t_preact_f64;
template <class T> std::vector<T>& preact_scratch();
template <> std::vector<float>& preact_scratch<float>() { return t_preact_f32; }
template <> std::vector<double>& preact_scratch<double>() { return t_preact_f64; }

// Statistics are summed in T over blocks of this many entries (16 per AVX-512 float lane),
// then in float64: register accumulators, one horizontal reduction per block, and a float
// rounding error of at most ~kStatsBlock/16 ulp per block.
constexpr int64_t kStatsBlock = 256;

struct EpilogueSums {
  double shifted_sum = 0, shifted_sumsq = 0;  // of z - shift, shift = z[0] (less cancellation)
  int64_t saturated = 0, zeros = 0;
};

// The flat (n,) buffer h holds z = x W^T + b on entry (the bias was written before the GEMM
// accumulated into it, so no column index is needed here); leaves h = act(z), dact = act'(z).
template <class T, Activation K, bool Stats>
VGKERN_SIMD_CLONES void forward_epilogue(T* h, T* dact, int64_t n, T alpha,
                                         T saturation_threshold, T shift, EpilogueSums& sums) {
  constexpr bool kCountSaturated =
      K == Activation::sigmoid || K == Activation::tanh || K == Activation::elu;
  EpilogueSums total;
  for (int64_t start = 0; start < n; start += kStatsBlock) {
    const int64_t end = std::min(n, start + kStatsBlock);
    T s1 = 0, s2 = 0;
    int32_t saturated = 0, zeros = 0;
#pragma omp simd reduction(+ : s1, s2, saturated, zeros)
    for (int64_t i = start; i < end; ++i) {
      const T z = h[i];
      T hv, dv;
      act_eval<K>(z, alpha, hv, dv);
      h[i] = hv;
      if constexpr (K != Activation::identity) dact[i] = dv;
      if constexpr (Stats) {
        const T c = z - shift;
        s1 += c;
        s2 += c * c;
        if constexpr (kCountSaturated) saturated += dv < saturation_threshold ? 1 : 0;
        zeros += hv == T(0) ? 1 : 0;
      }
    }
    total.shifted_sum += s1;
    total.shifted_sumsq += s2;
    total.saturated += saturated;
    total.zeros += zeros;
  }
  sums = total;
}

// Number of columns of h (rows, cols) that are 0 in every row. Only run when zeros exist.
template <class T>
VGKERN_SIMD_CLONES int64_t count_dead_columns(const T* h, int64_t rows, int64_t cols,
                                              int32_t* col_nonzero) {
  std::fill(col_nonzero, col_nonzero + cols, 0);
  for (int64_t i = 0; i < rows; ++i) {
    const T* h_row = h + i * cols;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) col_nonzero[j] |= h_row[j] != T(0) ? 1 : 0;
  }
  int64_t dead = 0;
  for (int64_t j = 0; j < cols; ++j) dead += col_nonzero[j] == 0;
  return dead;
}

// Returns false when the fast moments cannot be trusted: the sum of squares in T overflowed,
// or is so small that squares below T's normal range may have been lost (or z had NaN/Inf).
// The caller then recomputes the moments with scaled_mean_std.
template <class T, bool Stats>
bool run_forward_epilogue(T* h, T* dact, int64_t rows, int64_t cols, ActSpec act,
                          ForwardStats* stats) {
  const int64_t n = rows * cols;
  const T alpha = static_cast<T>(act.alpha);
  const T threshold = static_cast<T>(0.01 * max_derivative(act));
  const T shift = n > 0 ? h[0] : T(0);
  EpilogueSums sums;
  with_activation(act.kind, [&](auto kind) {
    forward_epilogue<T, decltype(kind)::value, Stats>(h, dact, n, alpha, threshold, shift, sums);
  });
  if (!Stats) return true;
  const double count = static_cast<double>(n);
  const double mean_shifted = sums.shifted_sum / count;
  const double var = sums.shifted_sumsq / count - mean_shifted * mean_shifted;
  stats->preact_mean = static_cast<double>(shift) + mean_shifted;
  stats->preact_std = std::sqrt(var > 0 ? var : 0.0);
  const int64_t dead =
      sums.zeros > 0 ? count_dead_columns(h, rows, cols, scratch(t_col_nonzero, cols)) : 0;
  stats->saturated_fraction = sums.saturated / count;
  stats->zero_fraction = sums.zeros / count;
  stats->dead_fraction = cols > 0 ? static_cast<double>(dead) / cols : 0.0;
  // Lost squares are each below 2^(min exponent); require them to be < 2^-40 of the total.
  const double smallest_trusted =
      count * std::ldexp(1.0, std::numeric_limits<T>::min_exponent - 1 + 40);
  return std::isfinite(sums.shifted_sumsq) && sums.shifted_sumsq >= smallest_trusted;
}

// delta = dh * dact (dact null: identity), written out of place so that dh survives for the
// rare scaled-norm fallback. Column accumulators (vertical adds only, no horizontal reduction
// per row): float64 column sums of delta (-> db) and of the squares of dh and delta, reduced
// over columns once at the end, in a fixed order.
struct PrologueSums {
  double dh_sumsq = 0, delta_sumsq = 0;
};

template <class T, bool HasDact, bool Stats>
VGKERN_SIMD_CLONES void backward_prologue(T* __restrict delta, const T* __restrict dh,
                                          const T* __restrict dact, int64_t rows, int64_t cols,
                                          double* __restrict col_sums, PrologueSums& sums) {
  double* __restrict bias_sum = col_sums;
  double* __restrict dh_sq = col_sums + cols;
  double* __restrict delta_sq = col_sums + 2 * cols;
  std::fill(col_sums, col_sums + cols * (Stats ? 3 : 1), 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    const T* dh_row = dh + i * cols;
    const T* dact_row = HasDact ? dact + i * cols : nullptr;
    T* delta_row = delta + i * cols;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) {
      const T g = dh_row[j];
      T d = g;
      if constexpr (HasDact) d = g * dact_row[j];
      delta_row[j] = d;
      bias_sum[j] += d;
      if constexpr (Stats) {
        dh_sq[j] += static_cast<double>(g) * static_cast<double>(g);
        delta_sq[j] += static_cast<double>(d) * static_cast<double>(d);
      }
    }
  }
  sums = PrologueSums{};
  if constexpr (Stats)
    for (int64_t j = 0; j < cols; ++j) {
      sums.dh_sumsq += dh_sq[j];
      sums.delta_sumsq += delta_sq[j];
    }
}


}  // namespace

template <class T>
void dense_forward_cpu(T* h, T* dact, const T* x, const T* w, const T* b, int64_t rows,
                       int64_t in, int64_t out, ActSpec act, ForwardStats* stats) {
  // The GEMM accumulates onto rows of b, so the epilogue is one flat pass.
  for (int64_t i = 0; i < rows; ++i) std::copy(b, b + out, h + i * out);
  gemm<T>(false, true, rows, out, in, T(1), x, in, w, in, T(1), h, out);
  if (!stats) {
    run_forward_epilogue<T, false>(h, dact, rows, out, act, nullptr);
    return;
  }
  if (run_forward_epilogue<T, true>(h, dact, rows, out, act, stats)) return;
  // Extreme or non-finite pre-activations (exploding/vanishing nets, constant layers): z is
  // gone (h holds act(z)), so recompute it once and take the moments in scaled float64.
  T* z = scratch(preact_scratch<T>(), rows * out);
  for (int64_t i = 0; i < rows; ++i) std::copy(b, b + out, z + i * out);
  gemm<T>(false, true, rows, out, in, T(1), x, in, w, in, T(1), z, out);
  scaled_mean_std(z, rows * out, &stats->preact_mean, &stats->preact_std);
}

template <class T>
int dense_backward_cpu(T* dx, T* dw, T* db, T* delta, const T* dh, const T* dact, const T* x,
                        const T* w, int64_t rows, int64_t in, int64_t out, bool log_scale,
                        BackwardStats* stats) {
  double* col_sums = scratch(t_col_sums, 3 * out);
  PrologueSums sums;
  const bool want = stats != nullptr || log_scale;
  if (dact && want)
    backward_prologue<T, true, true>(delta, dh, dact, rows, out, col_sums, sums);
  else if (dact)
    backward_prologue<T, true, false>(delta, dh, dact, rows, out, col_sums, sums);
  else if (want)
    backward_prologue<T, false, true>(delta, dh, dact, rows, out, col_sums, sums);
  else
    backward_prologue<T, false, false>(delta, dh, dact, rows, out, col_sums, sums);
  for (int64_t j = 0; j < out; ++j) db[j] = static_cast<T>(col_sums[j]);

  const int64_t n = rows * out;
  const double delta_norm = want ? norm_from_sum_squares(sums.delta_sumsq, delta, n) : 0.0;
  // ||delta|| / 2^rescale lands in [1, 2)
  const int rescale =
      log_scale ? renormalize_power_of_two<T>(delta_norm, {{delta, n}, {db, out}}) : 0;

  // dw (out, in) = delta^T @ x in one GEMM, then its norm: measured faster than GEMM tiles
  // normed while in L2 (bench/README.md), since small tiles cost the BLAS more than the re-read.
  gemm<T>(true, false, out, in, rows, T(1), delta, out, x, in, T(0), dw, in);
  if (stats) {
    stats->act_grad_norm = norm_from_sum_squares(sums.dh_sumsq, dh, n);
    stats->preact_grad_norm = delta_norm;
    stats->bias_grad_norm = frobenius_norm(db, out);
    stats->weight_grad_norm = frobenius_norm(dw, out * in);
    stats->rescale_log2 = rescale;
  }
  if (dx) gemm<T>(false, false, rows, in, out, T(1), delta, out, w, in, T(0), dx, in);
  return rescale;
}

#define VGKERN_INSTANTIATE(T)                                                                  \
  template void dense_forward_cpu<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,   \
                                     int64_t, ActSpec, ForwardStats*);                         \
  template int dense_backward_cpu<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*,  \
                                      int64_t, int64_t, int64_t, bool, BackwardStats*);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
