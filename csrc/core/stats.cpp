#include "core/stats.h"

#include <algorithm>

#include "core/simd.h"

namespace vgkern {
namespace {

#define VGKERN_SIMD_KERNELS "core/stats_simd.inc"
#include "core/simd_levels.inc"

}  // namespace

template <class T>
double sum_squares(const T* v, int64_t n) {
  return VGKERN_SIMD(isa::sum_squares(v, n));
}

template <class T>
double sum_squares_blocked(const T* v, int64_t n) {
  return VGKERN_SIMD(isa::sum_squares_blocked(v, n));
}

template <class T>
bool all_zero(const T* v, int64_t n) {
  for (int64_t i = VGKERN_SIMD(isa::first_nonzero_block(v, n)); i < n; ++i)
    if (v[i] != T(0)) return false;
  return true;
}

template <class T>
double sum_squares_newest_first(const T* v, int64_t n) {
  double total = 0;
  for (int64_t start = (n - 1) / kNewestFirstChunk * kNewestFirstChunk; start >= 0;
       start -= kNewestFirstChunk)
    total += sum_squares_blocked(v + start, std::min(kNewestFirstChunk, n - start));
  return total;
}

// e such that values up to `largest` (finite, > 0) times 2^-e lie in [0, 2): no overflow,
// negligible underflow. Float64 data below 2^-1000 (subnormal) is scaled by 2^1000 only: still
// far from both ends, and 2^-e stays a double.
inline int scale_exponent(double largest) { return std::max(std::ilogb(largest), -1000); }

template <class T>
double scaled_norm(const T* v, int64_t n) {
  const int64_t first = VGKERN_SIMD(isa::first_nonzero_block(v, n));  // zeros add nothing
  bool nan_seen = false;
  const double largest = VGKERN_SIMD(isa::largest_magnitude(v, first, n, &nan_seen));
  if (nan_seen) return NAN;
  if (largest == 0 || std::isinf(largest)) return largest;
  const int e = scale_exponent(largest);
  const double scaled_sumsq = VGKERN_SIMD(
      isa::scaled_lane_sum<T, true>(v, first, n, std::ldexp(1.0, -e), 0.0));
  return std::ldexp(std::sqrt(scaled_sumsq), e);
}

template <class T>
void scaled_mean_std(const T* v, int64_t n, double* mean, double* std) {
  // zeros add nothing to the sums
  const int64_t first = VGKERN_SIMD(isa::first_nonzero_block(v, n));
  bool nan_seen = false;
  const double largest = VGKERN_SIMD(isa::largest_magnitude(v, first, n, &nan_seen));
  if (nan_seen || std::isinf(largest)) {
    *mean = nan_seen ? NAN  // +-inf or NaN
                     : VGKERN_SIMD(isa::scaled_lane_sum<T, false>(v, first, n, 1.0, 0.0)) / n;
    *std = NAN;
    return;
  }
  if (largest == 0) {
    *mean = 0;
    *std = 0;
    return;
  }
  const int e = scale_exponent(largest);
  const double scale = std::ldexp(1.0, -e);
  const double scaled_mean =
      VGKERN_SIMD(isa::scaled_lane_sum<T, false>(v, first, n, scale, 0.0)) / n;
  const double scaled_m2 =
      VGKERN_SIMD(isa::scaled_lane_sum<T, true>(v, 0, n, scale, scaled_mean));
  *mean = std::ldexp(scaled_mean, e);
  *std = std::ldexp(std::sqrt(scaled_m2 / n), e);
}

template <class T>
int renormalize_power_of_two(double norm, std::initializer_list<std::pair<T*, int64_t>> arrays) {
  if (!std::isfinite(norm) || norm <= 0) return 0;
  const int e = std::ilogb(norm);
  if (e == 0) return 0;
  const T factor = static_cast<T>(std::ldexp(1.0, -e));
  for (const std::pair<T*, int64_t>& array : arrays)  // (data, n)
    if (array.first) VGKERN_SIMD(isa::scale_in_place(array.first, array.second, factor));
  return e;
}

template bool all_zero<float>(const float*, int64_t);
template bool all_zero<double>(const double*, int64_t);
template double sum_squares<float>(const float*, int64_t);
template double sum_squares<double>(const double*, int64_t);
template double sum_squares_blocked<float>(const float*, int64_t);
template double sum_squares_blocked<double>(const double*, int64_t);
template double sum_squares_newest_first<float>(const float*, int64_t);
template double sum_squares_newest_first<double>(const double*, int64_t);
template double scaled_norm<float>(const float*, int64_t);
template double scaled_norm<double>(const double*, int64_t);
template void scaled_mean_std<float>(const float*, int64_t, double*, double*);
template void scaled_mean_std<double>(const double*, int64_t, double*, double*);
template int renormalize_power_of_two<float>(double, std::initializer_list<std::pair<float*, int64_t>>);
template int renormalize_power_of_two<double>(double,
                                              std::initializer_list<std::pair<double*, int64_t>>);

}  // namespace vgkern
