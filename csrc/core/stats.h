// Float64 sums of squares that neither underflow nor overflow.
// float data: squares of floats always fit a double (1e-45^2 and 3.4e38^2 are representable), so
// one double accumulator is exact enough. double data: Blue's three-accumulator scheme as in
// LAPACK's dnrm2 (3.10): tiny values are scaled up, huge ones down, the rest summed as is.
// Written as element updates on plain doubles so that `#pragma omp simd reduction` loops stay
// vectorised and the summation order is fixed by the code (deterministic for any thread count).
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace vgkern {

struct SumSq {
  double small = 0, medium = 0, big = 0;
  void merge(const SumSq& o) { small += o.small; medium += o.medium; big += o.big; }
  double norm() const;  // sqrt of the total, combined without over/underflow
};

namespace blue {
constexpr double kSmallThreshold = 0x1p-511, kBigThreshold = 0x1p486;
constexpr double kSmallScale = 0x1p537, kBigScale = 0x1p-538;
}  // namespace blue

template <class T>
inline void sumsq_add(T v, double& small, double& medium, double& big) {
  if constexpr (std::is_same_v<T, float>) {
    const double d = v;
    medium += d * d;
    (void)small, (void)big;
  } else {
    const double a = std::fabs(v);
    const bool is_big = a > blue::kBigThreshold, is_small = a < blue::kSmallThreshold;
    // Select values, then update unconditionally: keeps the loop branch-free for the vectoriser.
    const double vb = is_big ? v * blue::kBigScale : 0.0;
    const double vs = is_small ? v * blue::kSmallScale : 0.0;
    const double vm = (is_big | is_small) ? 0.0 : v;  // NaN lands here and propagates
    big += vb * vb;
    small += vs * vs;
    medium += vm * vm;
  }
}

inline double SumSq::norm() const {
  using namespace blue;
  if (big > 0) {
    double total = big;
    if (medium > 0 || std::isnan(medium)) total += (medium * kBigScale) * kBigScale;
    return std::sqrt(total) / kBigScale;
  }
  if (small > 0) {
    if (medium > 0 || std::isnan(medium)) {
      const double y_med = std::sqrt(medium), y_small = std::sqrt(small) / kSmallScale;
      const double y_max = std::fmax(y_med, y_small), y_min = std::fmin(y_med, y_small);
      return y_max * std::sqrt(1.0 + (y_min / y_max) * (y_min / y_max));
    }
    return std::sqrt(small) / kSmallScale;
  }
  return std::sqrt(medium);
}

// Sum of squares of n contiguous values, fixed order.
template <class T>
SumSq sum_squares(const T* v, int64_t n) {
  double small = 0, medium = 0, big = 0;
#pragma omp simd reduction(+ : small, medium, big)
  for (int64_t i = 0; i < n; ++i) sumsq_add(v[i], small, medium, big);
  return SumSq{small, medium, big};
}

}  // namespace vgkern
