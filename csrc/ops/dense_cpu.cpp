#include "ops/dense_cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/blas.h"
#include "core/simd.h"
#include "core/stats.h"
#include "ops/activation_math.h"

namespace vgkern {
namespace {

// Per-thread scratch that grows to the largest layer seen: no allocation in steady state.
template <class U>
U* scratch(std::vector<U>& buffer, int64_t n) {
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}
thread_local std::vector<int32_t> t_col_nonzero;  // (out,) 1 where some example has h != 0
thread_local std::vector<double> t_bias_sum;      // (out,) float64 column sums of delta

struct EpilogueSums {
  double shifted_sum = 0, shifted_sumsq = 0;  // of z - shift, shift = first entry (less cancellation)
  int64_t saturated = 0, zeros = 0;
};

// h (rows, cols) holds z without bias on entry; leaves h = act(z + b), dact = act'(z + b).
template <class T, Activation K, bool Stats>
VGKERN_SIMD_CLONES void forward_epilogue(T* h, T* dact, const T* b, int64_t rows, int64_t cols,
                                         T alpha, T saturation_threshold, double shift,
                                         EpilogueSums& sums, int32_t* col_nonzero) {
  constexpr bool kCountSaturated =
      K == Activation::sigmoid || K == Activation::tanh || K == Activation::elu;
  double s1 = 0, s2 = 0;
  int64_t saturated = 0, zeros = 0;
  for (int64_t i = 0; i < rows; ++i) {
    T* h_row = h + i * cols;
    T* dact_row = K == Activation::identity ? nullptr : dact + i * cols;
#pragma omp simd reduction(+ : s1, s2, saturated, zeros)
    for (int64_t j = 0; j < cols; ++j) {
      const T z = h_row[j] + b[j];
      T hv, dv;
      act_eval<K>(z, alpha, hv, dv);
      h_row[j] = hv;
      if constexpr (K != Activation::identity) dact_row[j] = dv;
      if constexpr (Stats) {
        const double c = static_cast<double>(z) - shift;
        s1 += c;
        s2 += c * c;
        if constexpr (kCountSaturated) saturated += dv < saturation_threshold ? 1 : 0;
        zeros += hv == T(0) ? 1 : 0;
        col_nonzero[j] |= hv != T(0) ? 1 : 0;
      }
    }
  }
  sums = EpilogueSums{s1, s2, saturated, zeros};
}

template <class T, bool Stats>
void run_forward_epilogue(T* h, T* dact, const T* b, int64_t rows, int64_t cols, ActSpec act,
                          ForwardStats* stats) {
  const T alpha = static_cast<T>(act.alpha);
  const T threshold = static_cast<T>(0.01 * max_derivative(act));
  const double shift = rows * cols > 0 ? static_cast<double>(h[0] + b[0]) : 0.0;
  int32_t* col_nonzero = nullptr;
  if (Stats) {
    col_nonzero = scratch(t_col_nonzero, cols);
    std::fill(col_nonzero, col_nonzero + cols, 0);
  }
  EpilogueSums sums;
  switch (act.kind) {
#define VGKERN_EPILOGUE_CASE(KIND)                                                          \
  case Activation::KIND:                                                                    \
    forward_epilogue<T, Activation::KIND, Stats>(h, dact, b, rows, cols, alpha, threshold, \
                                                 shift, sums, col_nonzero);                 \
    break;
    VGKERN_EPILOGUE_CASE(identity)
    VGKERN_EPILOGUE_CASE(sigmoid)
    VGKERN_EPILOGUE_CASE(tanh)
    VGKERN_EPILOGUE_CASE(relu)
    VGKERN_EPILOGUE_CASE(elu)
#undef VGKERN_EPILOGUE_CASE
  }
  if (!Stats) return;
  const double n = static_cast<double>(rows) * static_cast<double>(cols);
  const double mean_shifted = sums.shifted_sum / n;
  const double var = std::max(0.0, sums.shifted_sumsq / n - mean_shifted * mean_shifted);
  int64_t dead = 0;
  for (int64_t j = 0; j < cols; ++j) dead += col_nonzero[j] == 0;
  stats->preact_mean = shift + mean_shifted;
  stats->preact_std = std::isnan(sums.shifted_sumsq) ? NAN : std::sqrt(var);
  stats->saturated_fraction = sums.saturated / n;
  stats->zero_fraction = sums.zeros / n;
  stats->dead_fraction = cols > 0 ? static_cast<double>(dead) / cols : 0.0;
}

// delta = dh * dact (dact null: identity), float64 column sums of delta, sums of squares.
template <class T, bool HasDact, bool Stats>
VGKERN_SIMD_CLONES void backward_prologue(T* delta, const T* dh, const T* dact, int64_t rows,
                                          int64_t cols, double* bias_sum, SumSq& dh_sumsq,
                                          SumSq& delta_sumsq) {
  std::fill(bias_sum, bias_sum + cols, 0.0);
  double g_small = 0, g_medium = 0, g_big = 0, d_small = 0, d_medium = 0, d_big = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const T* dh_row = dh + i * cols;
    const T* dact_row = HasDact ? dact + i * cols : nullptr;
    T* delta_row = delta + i * cols;
#pragma omp simd reduction(+ : g_small, g_medium, g_big, d_small, d_medium, d_big)
    for (int64_t j = 0; j < cols; ++j) {
      const T g = dh_row[j];
      T d = g;
      if constexpr (HasDact) d = g * dact_row[j];
      delta_row[j] = d;
      bias_sum[j] += d;
      if constexpr (Stats) {
        sumsq_add(g, g_small, g_medium, g_big);
        sumsq_add(d, d_small, d_medium, d_big);
      }
    }
  }
  dh_sumsq = SumSq{g_small, g_medium, g_big};
  delta_sumsq = SumSq{d_small, d_medium, d_big};
}

template <class T>
VGKERN_SIMD_CLONES void scale_in_place(T* v, int64_t n, T factor) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) v[i] *= factor;
}

template <class T>
VGKERN_SIMD_CLONES SumSq sum_squares_clone(const T* v, int64_t n) {
  return sum_squares(v, n);
}

// Rows of dw per GEMM tile: the tile (about 256 KiB) is still in L2 when its norm is taken.
template <class T>
int64_t dw_tile_rows(int64_t in, int64_t out) {
  const int64_t target_bytes = 256 * 1024;
  const int64_t rows = std::max<int64_t>(16, target_bytes / (std::max<int64_t>(in, 1) * sizeof(T)));
  return std::min(rows, out);
}

}  // namespace

template <class T>
void dense_forward_cpu(T* h, T* dact, const T* x, const T* w, const T* b, int64_t rows,
                       int64_t in, int64_t out, ActSpec act, ForwardStats* stats) {
  gemm<T>(false, true, rows, out, in, T(1), x, in, w, in, T(0), h, out);
  if (stats)
    run_forward_epilogue<T, true>(h, dact, b, rows, out, act, stats);
  else
    run_forward_epilogue<T, false>(h, dact, b, rows, out, act, nullptr);
}

template <class T>
int dense_backward_cpu(T* dx, T* dw, T* db, T* delta, const T* dh, const T* dact, const T* x,
                        const T* w, int64_t rows, int64_t in, int64_t out, bool log_scale,
                        BackwardStats* stats) {
  double* bias_sum = scratch(t_bias_sum, out);
  SumSq dh_sumsq, delta_sumsq;
  const bool want = stats != nullptr || log_scale;
  if (dact && want)
    backward_prologue<T, true, true>(delta, dh, dact, rows, out, bias_sum, dh_sumsq, delta_sumsq);
  else if (dact)
    backward_prologue<T, true, false>(delta, dh, dact, rows, out, bias_sum, dh_sumsq, delta_sumsq);
  else if (want)
    backward_prologue<T, false, true>(delta, dh, dact, rows, out, bias_sum, dh_sumsq, delta_sumsq);
  else
    backward_prologue<T, false, false>(delta, dh, dact, rows, out, bias_sum, dh_sumsq, delta_sumsq);
  for (int64_t j = 0; j < out; ++j) db[j] = static_cast<T>(bias_sum[j]);

  int rescale = 0;
  const double delta_norm = delta_sumsq.norm();
  if (log_scale && std::isfinite(delta_norm) && delta_norm > 0) {
    rescale = std::ilogb(delta_norm);  // ||delta|| / 2^rescale in [1, 2): exact power-of-two scaling
    if (rescale != 0) {
      const T factor = static_cast<T>(std::ldexp(1.0, -rescale));
      scale_in_place(delta, rows * out, factor);
      scale_in_place(db, out, factor);
    }
  }
  if (stats) {
    stats->act_grad_norm = dh_sumsq.norm();
    stats->preact_grad_norm = delta_norm;
    stats->bias_grad_norm = sum_squares_clone(db, out).norm();
    stats->rescale_log2 = rescale;
  }

  // dw (out, in) = delta^T @ x, tile by tile so each tile's norm is taken while it is in cache.
  SumSq dw_sumsq;
  const int64_t tile = dw_tile_rows<T>(in, out);
  for (int64_t j0 = 0; j0 < out; j0 += tile) {
    const int64_t nj = std::min(tile, out - j0);
    gemm<T>(true, false, nj, in, rows, T(1), delta + j0, out, x, in, T(0), dw + j0 * in, in);
    if (stats) dw_sumsq.merge(sum_squares_clone(dw + j0 * in, nj * in));
  }
  if (stats) stats->weight_grad_norm = dw_sumsq.norm();
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
