// Batch-norm kernels: the standalone ops and the fused dense -> BN -> activation layer.
// Every pass runs over rows with per-column accumulators (vertical adds, no per-row horizontal
// reductions), reduced over columns once, in a fixed order.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/blas.h"
#include "core/errors.h"
#include "core/scratch.h"
#include "core/simd.h"
#include "core/stats.h"
#include "ops/activation_math.h"
#include "ops/batchnorm.h"
#include "ops/dense_cpu.h"
#include "ops/layer_plan.h"

namespace vgkern {
namespace {

// One per-thread buffer per purpose, so that no two live arrays ever share storage.
enum Slot { kColMean, kColVar, kPartSums, kSumG, kSumGx, kCoefA, kCoefB, kCoefC, kXhat,
            kNonzero, kNumSlots };

template <class U>
std::vector<U>& slot_buffer(Slot which) {
  thread_local std::vector<U> buffers[kNumSlots];
  return buffers[which];
}

template <class U>
U* slot(Slot which, int64_t n) {
  return scratch(slot_buffer<U>(which), n);
}

// Per row block: one row of n values each, on its own cache lines (core/scratch.h).
template <class U>
PartRows<U> part_slot(Slot which, int parts, int64_t n) {
  return part_rows(slot_buffer<U>(which), parts, n);
}

struct alignas(64) ActivationCounts {  // of one row block; one cache line each
  int64_t saturated = 0, zeros = 0;
};

#define VGKERN_SIMD_KERNELS "ops/batchnorm_simd.inc"
#include "core/simd_levels.inc"

// Float64 column mean and biased variance of z (rows, cols): means first, then squared
// deviations from them, each pass over the row blocks of `plan` side by side; prepare_block(p)
// runs first in block p's first pass.
template <class T, class F>
void column_moments(const LayerPlan& plan, const T* z, int64_t rows, int64_t cols, double* mean,
                    double* var, F&& prepare_block) {
  const PartRows<double> part_sums = part_slot<double>(kPartSums, plan.parts, cols);
  const int parts = plan.parts;
  for_parts(plan, parts, [&](int p) {
    prepare_block(p);  // e.g. the GEMM that writes this block of z
    const int64_t begin = part_begin(rows, parts, p);
    VGKERN_SIMD(isa::column_sums(z + begin * cols, part_begin(rows, parts, p + 1) - begin, cols,
                                 part_sums[p]));
  });
  sum_part_rows(part_sums, parts, cols);
  for (int64_t j = 0; j < cols; ++j) mean[j] = part_sums[0][j] / rows;
  for_parts(plan, parts, [&](int p) {
    const int64_t begin = part_begin(rows, parts, p);
    VGKERN_SIMD(isa::column_squared_deviations(z + begin * cols,
                                               part_begin(rows, parts, p + 1) - begin, cols, mean,
                                               part_sums[p]));
  });
  sum_part_rows(part_sums, parts, cols);
  for (int64_t j = 0; j < cols; ++j) var[j] = part_sums[0][j] / rows;
}

// The batch statistics (training) or the running ones (eval) as T: mean, rstd; and the running
// update of training mode, exactly as torch.nn.BatchNorm1d (unbiased variance for running_var).
template <class T>
void batch_statistics(T* mean, T* rstd, T* running_mean, T* running_var, const double* col_mean,
                      const double* col_var, int64_t rows, int64_t cols, BatchNormSpec bn) {
  if (!bn.training) {
    for (int64_t j = 0; j < cols; ++j) {
      mean[j] = running_mean[j];
      rstd[j] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[j]) + bn.eps));
    }
    return;
  }
  const double unbias = static_cast<double>(rows) / static_cast<double>(rows - 1);
  for (int64_t j = 0; j < cols; ++j) {
    mean[j] = static_cast<T>(col_mean[j]);
    rstd[j] = static_cast<T>(1.0 / std::sqrt(col_var[j] + bn.eps));
    if (running_mean) {
      running_mean[j] = static_cast<T>((1 - bn.momentum) * running_mean[j] + bn.momentum * col_mean[j]);
      running_var[j] =
          static_cast<T>((1 - bn.momentum) * running_var[j] + bn.momentum * col_var[j] * unbias);
    }
  }
}


// The BN backward from g (rows, cols) and the column sums of g and g * xhat: dgamma, dbeta
// (when gamma), dz in place of g over the row blocks of `plan` (with sumsq, each block's sum of
// squares of dz while its rows are hot), then finish_block(p) in block p; returns ||dz||^2
// (0 without sumsq).
template <class T, class F>
double batchnorm_backward_from_g(const LayerPlan& plan, T* g_dz, T* dgamma, T* dbeta,
                                 const T* xhat, const T* rstd, const T* gamma,
                                 const double* sum_g, const double* sum_gx, int64_t rows,
                                 int64_t cols, bool training, bool sumsq, F&& finish_block) {
  T* a = slot<T>(kCoefA, cols);
  T* b = slot<T>(kCoefB, cols);
  T* c = slot<T>(kCoefC, cols);
  for (int64_t j = 0; j < cols; ++j) {
    a[j] = gamma ? gamma[j] * rstd[j] : rstd[j];
    b[j] = static_cast<T>(sum_g[j] / rows);
    c[j] = static_cast<T>(sum_gx[j] / rows);
    if (dgamma) {
      dgamma[j] = static_cast<T>(sum_gx[j]);
      dbeta[j] = static_cast<T>(sum_g[j]);
    }
  }
  const int parts = plan.parts;
  PartSum dz_sumsq[kMaxParts];
  for_parts(plan, parts, [&](int p) {
    const int64_t begin = part_begin(rows, parts, p), count = part_begin(rows, parts, p + 1) - begin;
    T* dz = g_dz + begin * cols;
    if (training)
      VGKERN_SIMD(isa::backward_dz<T, true>(dz, xhat + begin * cols, a, b, c, count, cols));
    else
      VGKERN_SIMD(isa::backward_dz<T, false>(dz, xhat + begin * cols, a, b, c, count, cols));
    if (sumsq) dz_sumsq[p].value = sum_squares_blocked(dz, count * cols);
    finish_block(p);  // e.g. the GEMMs that read this block of dz
  });
  return total_of_parts(dz_sumsq, parts);
}

}  // namespace

// Row blocks p of `plan` run side by side (ops/layer_plan.h); column sums are kept per block
// and added in block order.
template <class T>
void dense_bn_forward_cpu(T* h, T* dact, T* xhat, T* mean, T* rstd, T* running_mean,
                          T* running_var, const T* x, const T* w, const T* gamma, const T* beta,
                          int64_t rows, int64_t in, int64_t out, ActSpec act, BatchNormSpec bn,
                          ForwardStats* stats) {
  const LayerPlan plan = layer_plan(rows, in, out);
  const int parts = plan.parts;
  // z = x W^T (no bias) lands in xhat's buffer and is normalised in place.
  const ForwardPanels<T> wt(plan, w, in, out);
  auto preact_block = [&](int p) {
    preactivation<T>(xhat, x, w, nullptr, in, out, part_begin(rows, parts, p),
                     part_begin(rows, parts, p + 1), 0, out, wt);
  };
  const bool moments = bn.training || stats;
  if (plan.split_columns)  // units [c0, c1) of z, over all rows
    for_parts(plan, parts, [&](int p) {
      preactivation<T>(xhat, x, w, nullptr, in, out, 0, rows, column_begin(out, p),
                       column_begin(out, p + 1));
    });
  else if (!plan.split_rows)
    preactivation<T>(xhat, x, w, nullptr, in, out, 0, rows, 0, out);
  else if (!moments)
    for_parts(plan, parts, preact_block);
  double* col_mean = slot<double>(kColMean, out);
  double* col_var = slot<double>(kColVar, out);
  if (moments)  // a block's GEMM, then its column sums at once
    column_moments(plan, xhat, rows, out, col_mean, col_var, [&](int p) {
      if (plan.split_rows) preact_block(p);
    });
  if (stats) {
    // Pre-BN moments of all rows * out entries, combined from the column moments (Chan et al.).
    double grand_mean = 0;
    for (int64_t j = 0; j < out; ++j) grand_mean += col_mean[j];
    grand_mean /= out;
    double m2 = 0;
    for (int64_t j = 0; j < out; ++j) {
      const double d = col_mean[j] - grand_mean;
      m2 += rows * (col_var[j] + d * d);
    }
    stats->preact_mean = grand_mean;
    stats->preact_std = std::sqrt(m2 / (static_cast<double>(rows) * out));
    if (!std::isfinite(m2) || !sum_squares_trusted<T>(m2)) {
      // Extreme, constant or non-finite z (or float64 squares that may have underflowed):
      // xhat's buffer still holds z here.
      scaled_mean_std(xhat, rows * out, &stats->preact_mean, &stats->preact_std);
    }
  }
  batch_statistics(mean, rstd, running_mean, running_var, col_mean, col_var, rows, out, bn);

  const PartRows<int32_t> col_nonzero = part_slot<int32_t>(kNonzero, parts, out);  // per block
  ActivationCounts counts[kMaxParts];
  const T alpha = static_cast<T>(act.alpha);
  const T threshold = static_cast<T>(0.01 * max_derivative(act));
  with_activation(act.kind, [&](auto kind) {
    constexpr Activation K = decltype(kind)::value;
    for_parts(plan, parts, [&](int p) {
      const int64_t begin = part_begin(rows, parts, p), count = part_begin(rows, parts, p + 1) - begin;
      T* xhat_part = xhat + begin * out;
      T* dact_part = K == Activation::identity ? dact : dact + begin * out;
      if (!stats) {
        VGKERN_SIMD(isa::normalize_activate<T, K, false>(h + begin * out, dact_part, xhat_part,
                                                         xhat_part, mean, rstd, gamma, beta, count,
                                                         out, alpha, threshold, nullptr));
        return;
      }
      auto counting = [&](auto masked) {
        VGKERN_SIMD(isa::normalize_activate<T, K, true, decltype(masked)::value>(
            h + begin * out, dact_part, xhat_part, xhat_part, mean, rstd, gamma, beta, count, out,
            alpha, threshold, &counts[p]));
      };
      if (masked_counts())
        counting(std::true_type{});
      else
        counting(std::false_type{});
      if (counts[p].zeros > 0) mark_nonzero_columns(h + begin * out, count, out, col_nonzero[p]);
    });
  });
  if (!stats) return;
  int64_t saturated_total = 0, zeros_total = 0;
  int parts_with_zeros = 0;
  for (int p = 0; p < parts; ++p) {
    saturated_total += counts[p].saturated;
    zeros_total += counts[p].zeros;
    parts_with_zeros += counts[p].zeros > 0;
  }
  const double n = static_cast<double>(rows) * out;
  stats->saturated_fraction = saturated_total / n;
  stats->zero_fraction = zeros_total / n;
  stats->dead_fraction =
      static_cast<double>(dead_columns(col_nonzero, parts, parts_with_zeros, out)) / out;
}

template <class T>
int dense_bn_backward_cpu(T* dx, T* dw, T* dgamma, T* dbeta, T* dz, const T* dh, const T* dact,
                          const T* xhat, const T* rstd, const T* gamma, const T* x, const T* w,
                          int64_t rows, int64_t in, int64_t out, bool training, bool log_scale,
                          BackwardStats* stats) {
  const LayerPlan plan = layer_plan(rows, in, out);
  const int parts = plan.parts;
  const PartRows<double> sum_g = part_slot<double>(kSumG, parts, out);  // per block
  const PartRows<double> sum_gx = part_slot<double>(kSumGx, parts, out);
  PartSum dh_sumsq_parts[kMaxParts];
  for_parts(plan, parts, [&](int p) {
    const int64_t begin = part_begin(rows, parts, p), count = part_begin(rows, parts, p + 1) - begin;
    const int64_t at = begin * out;
    if (dact)
      VGKERN_SIMD(isa::backward_reduce<T, true>(dz + at, dh + at, dact + at, xhat + at, count, out,
                                                sum_g[p], sum_gx[p]));
    else
      VGKERN_SIMD(isa::backward_reduce<T, false>(dz + at, dh + at, nullptr, xhat + at, count, out,
                                                 sum_g[p], sum_gx[p]));
    if (stats) dh_sumsq_parts[p].value = sum_squares_blocked(dh + at, count * out);  // while hot
  });
  for (PartRows<double> sums : {sum_g, sum_gx}) sum_part_rows(sums, parts, out);
  const double dh_sumsq = total_of_parts(dh_sumsq_parts, parts);
  // Log-scale renormalises dz by its norm over all rows before the GEMMs; otherwise a block's
  // GEMMs follow its dz pass at once (rows still hot, one hand-off fewer).
  BackwardGemms<T> gemms(plan, dx, dw, dz, x, w, rows, in, out, stats != nullptr);
  const bool fused = plan.split_rows && !log_scale;
  const bool want = stats != nullptr || log_scale;  // ||dz||: reported, or to renormalise by
  const double dz_sumsq = batchnorm_backward_from_g(
      plan, dz, dgamma, dbeta, xhat, rstd, gamma, sum_g[0], sum_gx[0], rows, out, training, want,
      [&](int p) {
        if (fused) gemms.block(p);
      });
  const int64_t n = rows * out;
  const double dz_norm = want ? norm_from_sum_squares(dz_sumsq, dz, n) : 0.0;
  const int rescale =
      log_scale ? renormalize_power_of_two<T>(dz_norm, {{dz, n}, {dgamma, out}, {dbeta, out}}) : 0;
  if (!fused) gemms.run();
  const double dw_sumsq = gemms.finish();
  if (stats) {
    stats->act_grad_norm = norm_from_sum_squares(dh_sumsq, dh, n);
    stats->preact_grad_norm = dz_norm;
    stats->bias_grad_norm = NAN;  // no dense bias before batch norm
    stats->weight_grad_norm = norm_from_sum_squares(dw_sumsq, dw, out * in);
    stats->gamma_grad_norm = dgamma ? frobenius_norm(dgamma, out) : NAN;
    stats->beta_grad_norm = dgamma ? frobenius_norm(dbeta, out) : NAN;
    stats->rescale_log2 = rescale;
  }
  return rescale;
}

// The standalone ops: one block (one thread), as a single layer of the nets would with 1 row.
template <class T>
void batchnorm_forward_cpu(T* y, T* mean, T* rstd, T* running_mean, T* running_var, const T* x,
                           const T* gamma, const T* beta, int64_t rows, int64_t cols,
                           BatchNormSpec bn) {
  double* col_mean = slot<double>(kColMean, cols);
  double* col_var = slot<double>(kColVar, cols);
  if (bn.training) column_moments(LayerPlan{}, x, rows, cols, col_mean, col_var, [](int) {});
  batch_statistics(mean, rstd, running_mean, running_var, col_mean, col_var, rows, cols, bn);
  T* xhat = slot<T>(kXhat, rows * cols);
  VGKERN_SIMD(isa::normalize_activate<T, Activation::identity, false>(
      y, nullptr, xhat, x, mean, rstd, gamma, beta, rows, cols, T(1), T(0), nullptr));
}

template <class T>
void batchnorm_backward_cpu(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                            const T* rstd, const T* gamma, int64_t rows, int64_t cols,
                            bool training) {
  T* xhat = slot<T>(kXhat, rows * cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) xhat[i * cols + j] = (x[i * cols + j] - mean[j]) * rstd[j];
  double* sum_g = slot<double>(kSumG, cols);
  double* sum_gx = slot<double>(kSumGx, cols);
  VGKERN_SIMD(isa::backward_reduce<T, false>(dx, dy, nullptr, xhat, rows, cols, sum_g, sum_gx));
  batchnorm_backward_from_g(LayerPlan{}, dx, dgamma, dbeta, xhat, rstd, gamma, sum_g, sum_gx,
                            rows, cols, training, false, [](int) {});
}

#define VGKERN_INSTANTIATE(T)                                                                 \
  template void dense_bn_forward_cpu<T>(T*, T*, T*, T*, T*, T*, T*, const T*, const T*,       \
                                        const T*, const T*, int64_t, int64_t, int64_t, ActSpec, \
                                        BatchNormSpec, ForwardStats*);                        \
  template int dense_bn_backward_cpu<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*,     \
                                        const T*, const T*, const T*, const T*, int64_t,      \
                                        int64_t, int64_t, bool, bool, BackwardStats*);        \
  template void batchnorm_forward_cpu<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*,    \
                                         int64_t, int64_t, BatchNormSpec);                    \
  template void batchnorm_backward_cpu<T>(T*, T*, T*, const T*, const T*, const T*, const T*, \
                                          const T*, int64_t, int64_t, bool);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
