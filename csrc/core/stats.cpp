#include "core/stats.h"

#include <algorithm>

#include "core/simd.h"

namespace vgkern {

// Start of the first block of kZeroBlock values with a nonzero (or NaN) one; n rounded down to
// a whole block when all blocks are zero. All-zero data (gradients that underflowed to 0, dead
// layers) fails the fast sums' checks; this pass lets the float64 fallbacks skip it.
constexpr int64_t kZeroBlock = 256;

template <class T>
VGKERN_SIMD_CLONES int64_t first_nonzero_block(const T* v, int64_t n) {
  int64_t start = 0;
  for (; start + kZeroBlock <= n; start += kZeroBlock) {
    int nonzero = 0;
#pragma omp simd reduction(| : nonzero)
    for (int64_t k = 0; k < kZeroBlock; ++k) nonzero |= v[start + k] != T(0);
    if (nonzero) break;
  }
  return start;
}

template <class T>
bool all_zero(const T* v, int64_t n) {
  for (int64_t i = first_nonzero_block(v, n); i < n; ++i)
    if (v[i] != T(0)) return false;
  return true;
}

// 32 independent float64 partial sums (four AVX-512 registers) hide the FMA latency; they
// are added in a fixed order at the end. Leading zero blocks are skipped (a multiple of the
// lanes: each value keeps its lane, the sum its bits).
template <class T>
VGKERN_SIMD_CLONES double sum_squares(const T* v, int64_t n) {
  constexpr int64_t kLanes = 32;
  static_assert(kZeroBlock % kLanes == 0);
  double partial[kLanes] = {};
  const int64_t bulk = n - n % kLanes;
  for (int64_t i = first_nonzero_block(v, n); i < bulk; i += kLanes)
#pragma omp simd
    for (int64_t k = 0; k < kLanes; ++k) {
      const double d = static_cast<double>(v[i + k]);
      partial[k] += d * d;
    }
  for (int64_t i = bulk; i < n; ++i) {
    const double d = static_cast<double>(v[i]);
    partial[i - bulk] += d * d;
  }
  double total = 0;
  for (int64_t k = 0; k < kLanes; ++k) total += partial[k];
  return total;
}

// Wide blocks for sum_squares_blocked: 64 lanes (four AVX-512 registers of floats, independent
// FMA chains; one register's chain made this pass half as fast on data in L2), each summing 16
// squares as a kSquareBlock block's lanes do; then folded to 16 lanes and a tree.
constexpr int64_t kWideLanes = 64;
constexpr int64_t kWideSquareBlock = 16 * kWideLanes;

VGKERN_SIMD_CLONES inline float wide_block_sum_squares(const float* v) {
  float lanes[kWideLanes] = {};
  for (int64_t i = 0; i < kWideSquareBlock; i += kWideLanes)
#pragma omp simd
    for (int64_t k = 0; k < kWideLanes; ++k) lanes[k] += v[i + k] * v[i + k];
#pragma omp simd
  for (int64_t k = 0; k < 16; ++k)
    lanes[k] = (lanes[k] + lanes[k + 16]) + (lanes[k + 32] + lanes[k + 48]);
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t k = 0; k < 16; ++k) sum += lanes[k];
  return sum;
}

template <class T>
VGKERN_SIMD_CLONES double sum_squares_blocked(const T* v, int64_t n) {
  if constexpr (!std::is_same_v<T, float>) {
    return sum_squares(v, n);
  } else {
    if (float_squares_underflow(v, n)) return sum_squares(v, n);
    double total = 0;
    const int64_t bulk = n - n % kWideSquareBlock;
    for (int64_t start = 0; start < bulk; start += kWideSquareBlock)
      total += checked_block_sum_squares(wide_block_sum_squares(v + start), v + start,
                                         kWideSquareBlock);
    for (int64_t start = bulk; start < n; start += kSquareBlock) {
      const int64_t count = std::min(kSquareBlock, n - start);
      float block = 0;
#pragma omp simd reduction(+ : block)
      for (int64_t i = start; i < start + count; ++i) block += v[i] * v[i];
      total += checked_block_sum_squares(block, v + start, count);
    }
    return total;
  }
}

template <class T>
double sum_squares_newest_first(const T* v, int64_t n) {
  double total = 0;
  for (int64_t start = (n - 1) / kNewestFirstChunk * kNewestFirstChunk; start >= 0;
       start -= kNewestFirstChunk)
    total += sum_squares_blocked(v + start, std::min(kNewestFirstChunk, n - start));
  return total;
}

// Sum of v[i] * scale (an exact power of two) over [begin, n) in kMomentLanes fixed lanes, or
// with Centered, of (v[i] * scale - center)^2.
constexpr int64_t kMomentLanes = 16;

template <class T, bool Centered>
VGKERN_SIMD_CLONES double scaled_lane_sum(const T* v, int64_t begin, int64_t n, double scale,
                                          double center) {
  double lanes[kMomentLanes] = {};
  const int64_t bulk = n - n % kMomentLanes;
  int64_t i = begin / kMomentLanes * kMomentLanes;
  for (; i < bulk; i += kMomentLanes)
#pragma omp simd
    for (int64_t k = 0; k < kMomentLanes; ++k) {
      const double c = static_cast<double>(v[i + k]) * scale - center;
      lanes[k] += Centered ? c * c : c;
    }
  for (; i < n; ++i) {
    const double c = static_cast<double>(v[i]) * scale - center;
    lanes[i - bulk] += Centered ? c * c : c;
  }
  double total = 0;
  for (int64_t k = 0; k < kMomentLanes; ++k) total += lanes[k];
  return total;
}

// The largest |v[i]| over [begin, n) (a max: order-free, vectorised), and whether a NaN (which
// never wins a comparison) was seen.
template <class T>
VGKERN_SIMD_CLONES double largest_magnitude(const T* v, int64_t begin, int64_t n,
                                            bool* nan_seen) {
  T largest = 0;
  int nan = 0;
#pragma omp simd reduction(max : largest) reduction(| : nan)
  for (int64_t i = begin; i < n; ++i) {
    const T a = std::fabs(v[i]);
    largest = a > largest ? a : largest;
    nan |= v[i] != v[i];
  }
  *nan_seen = nan != 0;
  return static_cast<double>(largest);
}

// e such that values up to `largest` (finite, > 0) times 2^-e lie in [0, 2): no overflow,
// negligible underflow. Float64 data below 2^-1000 (subnormal) is scaled by 2^1000 only: still
// far from both ends, and 2^-e stays a double.
inline int scale_exponent(double largest) { return std::max(std::ilogb(largest), -1000); }

template <class T>
double scaled_norm(const T* v, int64_t n) {
  const int64_t first = first_nonzero_block(v, n);  // zeros add nothing
  bool nan_seen = false;
  const double largest = largest_magnitude(v, first, n, &nan_seen);
  if (nan_seen) return NAN;
  if (largest == 0 || std::isinf(largest)) return largest;
  const int e = scale_exponent(largest);
  const double scaled_sumsq = scaled_lane_sum<T, true>(v, first, n, std::ldexp(1.0, -e), 0.0);
  return std::ldexp(std::sqrt(scaled_sumsq), e);
}

template <class T>
void scaled_mean_std(const T* v, int64_t n, double* mean, double* std) {
  const int64_t first = first_nonzero_block(v, n);  // zeros add nothing to the sums
  bool nan_seen = false;
  const double largest = largest_magnitude(v, first, n, &nan_seen);
  if (nan_seen || std::isinf(largest)) {
    *mean = nan_seen ? NAN : scaled_lane_sum<T, false>(v, first, n, 1.0, 0.0) / n;  // +-inf or NaN
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
  const double scaled_mean = scaled_lane_sum<T, false>(v, first, n, scale, 0.0) / n;
  const double scaled_m2 = scaled_lane_sum<T, true>(v, 0, n, scale, scaled_mean);
  *mean = std::ldexp(scaled_mean, e);
  *std = std::ldexp(std::sqrt(scaled_m2 / n), e);
}

template <class T>
VGKERN_SIMD_CLONES void scale_in_place(T* v, int64_t n, T factor) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) v[i] *= factor;
}

template <class T>
int renormalize_power_of_two(double norm, std::initializer_list<std::pair<T*, int64_t>> arrays) {
  if (!std::isfinite(norm) || norm <= 0) return 0;
  const int e = std::ilogb(norm);
  if (e == 0) return 0;
  const T factor = static_cast<T>(std::ldexp(1.0, -e));
  for (auto [data, n] : arrays)
    if (data) scale_in_place(data, n, factor);
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
