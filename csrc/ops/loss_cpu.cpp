#include <cmath>
#include <vector>

#include "core/errors.h"
#include "core/vecmath.h"
#include "ops/loss.h"

namespace vgkern {

template <class T>
void check_target_finite(const T* target, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  int64_t non_finite = 0, first = -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(target[i])) {
      if (non_finite++ == 0) first = i;
    }
  if (non_finite)
    fail<ValueError>("mse_loss: target must be finite, got ", non_finite,
                     " non-finite entries, the first at [", first / cols, ", ", first % cols,
                     "] = ", target[first]);
}

void check_labels(const int64_t* labels, int64_t rows, int64_t cols) {
  for (int64_t b = 0; b < rows; ++b)
    if (labels[b] < 0 || labels[b] >= cols)
      fail<ValueError>("cross_entropy_loss: labels must be in [0, ", cols, "), got labels[", b,
                       "] = ", labels[b]);
}

template <class T>
double mse_loss_cpu(T* dout, const T* out, const T* target, int64_t rows, int64_t cols,
                    int64_t batch) {
  const T inv_batch = T(1) / static_cast<T>(batch);
  double sumsq = 0;
  int64_t non_finite = 0;
  const int64_t n = rows * cols;
#pragma omp simd reduction(+ : sumsq, non_finite)
  for (int64_t i = 0; i < n; ++i) {
    non_finite += std::isfinite(target[i]) ? 0 : 1;
    const T diff = out[i] - target[i];
    dout[i] = diff * inv_batch;
    sumsq += static_cast<double>(diff) * static_cast<double>(diff);
  }
  if (non_finite) check_target_finite(target, rows, cols);
  return 0.5 * sumsq / static_cast<double>(batch);
}

template <class T>
double cross_entropy_loss_cpu(T* dlogits, const T* logits, const int64_t* labels, int64_t rows,
                              int64_t cols) {
  check_labels(labels, rows, cols);
  const T inv_rows = T(1) / static_cast<T>(rows);
  double total = 0;
  for (int64_t b = 0; b < rows; ++b) {
    const T* x = logits + b * cols;
    T* g = dlogits + b * cols;
    T m = x[0];
    for (int64_t c = 1; c < cols; ++c) m = x[c] > m || std::isnan(x[c]) ? x[c] : m;
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < cols; ++c) {
      T e, em;
      exp_expm1_nonpositive(x[c] - m, e, em);  // x - max <= 0
      g[c] = e;
      sum += e;
    }
    const double log_sum = std::log(sum);
    const T scale = static_cast<T>(1.0 / sum) * inv_rows;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) g[c] *= scale;
    g[labels[b]] -= inv_rows;
    total += log_sum - (static_cast<double>(x[labels[b]]) - static_cast<double>(m));
  }
  return total / static_cast<double>(rows);
}

template void check_target_finite<float>(const float*, int64_t, int64_t);
template void check_target_finite<double>(const double*, int64_t, int64_t);
template double mse_loss_cpu<float>(float*, const float*, const float*, int64_t, int64_t,
                                    int64_t);
template double mse_loss_cpu<double>(double*, const double*, const double*, int64_t, int64_t,
                                     int64_t);
template double cross_entropy_loss_cpu<float>(float*, const float*, const int64_t*, int64_t,
                                              int64_t);
template double cross_entropy_loss_cpu<double>(double*, const double*, const int64_t*, int64_t,
                                               int64_t);

}  // namespace vgkern
