// Float64 norms that neither underflow nor overflow, at the cost of one FMA per element.
//
// Fast path: squares summed in float64. For float data this is always exact enough: the square
// of any float (1e-45 .. 3.4e38) is a normal double, so nothing under- or overflows. Hot passes
// over float data go faster still (no conversions, twice the lanes): squares summed in float
// per lane over blocks of kSquareBlock entries, each block (float_block_sum_squares_trusted) or
// the float64 total of a pass (float_sum_squares_trusted) checked and summed again in float64
// when some of its squares may have under- or overflowed; data too small to square in float
// (float_squares_underflow) is scaled by a power of two first, or summed in float64. For double
// data the fast sum is trusted when it lies in [2^-900, 2^900]: then every square lost to
// underflow (< 2^-1074) is below 2^-170 of the total. Outside that range (vanishing or exploding
// float64 gradients, NaN/Inf, all zeros) the norm is recomputed in two passes scaled by the
// largest magnitude. Sums run in a fixed order, so results do not depend on thread counts.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <utility>
#include <type_traits>

namespace vgkern {

// Sum of squares of n contiguous values, accumulated in float64 (vectorised, fixed order).
template <class T>
double sum_squares(const T* v, int64_t n);

// Whether every value is zero (+-0; a NaN is not), skipping zero blocks fast.
template <class T>
bool all_zero(const T* v, int64_t n);

// sqrt(sum of squares) in two passes scaled by 2^-ilogb(max |v|): exact range, slow path.
template <class T>
double scaled_norm(const T* v, int64_t n);

// Whether a float64 sum of squares of T values can be trusted as is.
template <class T>
inline bool sum_squares_trusted(double sumsq) {
  if constexpr (std::is_same_v<T, float>) return !std::isnan(sumsq);  // float: always in range
  return sumsq >= 0x1p-900 && sumsq <= 0x1p900;
}

// Squares of floats summed in float over one short block (kSquareBlock entries: at most 16 per
// AVX-512 lane, then a tree over the lanes) are within ~20 ulp of the exact sum, unless some
// squares under- or overflowed. Trusted when the block sum is finite and >= count * 2^-102:
// the squares lost to underflow (each < 2^-126, also with flush-to-zero) are then below 2^-24
// of it. An untrusted block (tiny, huge, zero or NaN entries) is summed again in float64.
constexpr int64_t kSquareBlock = 256;

inline bool float_block_sum_squares_trusted(float sumsq, int64_t count) {
  return sumsq <= std::numeric_limits<float>::max() &&
         sumsq >= static_cast<float>(count) * 0x1p-102f;
}

// A float64 total of such per-block lane sums over a whole pass of count values (the backward
// prologue's): trusted by the same bound (the lost squares, each < 2^-126, below 2^-24 of it),
// else the caller sums the values again in float64. One check per pass, no reduction per block.
inline bool float_sum_squares_trusted(double sumsq, int64_t count) {
  return sumsq <= std::numeric_limits<double>::max() &&
         sumsq >= static_cast<double>(count) * 0x1p-102;
}

// x * 2^e, exact; e is 0 except on extreme data, and then no libm call (through the PLT: several
// per layer and step) is made.
template <class T>
inline T times_power_of_two(T x, int e) {
  return e == 0 ? x : std::ldexp(x, e);
}

// Float squares of tiny values come out subnormal, and each such operation takes a microcode
// assist (~100x slower: a 50-layer sigmoid net's backward spent 1 ms per step in them). The
// largest |v| of 8 entries spread over v (NaNs skipped) tells: below 2^-45, passes square
// v * 2^k instead, k = tiny_float_scale_log2(v, n) (exact: a power of two), or square in float64.
inline float sampled_largest_magnitude(const float* v, int64_t n, float shift = 0) {
  // Few samples: each is a cache line the GEMM may still be writing, and 32 of them, before
  // each row block's epilogue and prologue, took ~15 us of a W=64 B=128 L=50 step on one thread
  // (perf). A wrong guess only costs time: the sums are checked afterwards.
  const int64_t step = n > 8 ? n / 8 : 1;
  float largest = 0;
  for (int64_t i = 0; i < n; i += step) {  // (not std::fmax: a libm call through the PLT)
    const float m = std::fabs(v[i] - shift);
    if (m > largest) largest = m;  // false for NaN: skipped
  }
  return largest;
}

inline bool float_squares_underflow(const float* v, int64_t n) {
  return sampled_largest_magnitude(v, n) < 0x1p-45f;
}

// k with the sampled largest |v - shift| * 2^k in [1, 2) (at most 2^126: 2^k stays a float)
// when that magnitude is below `below` (and not 0), else 0.
inline int tiny_float_scale_log2(const float* v, int64_t n, float below = 0x1p-45f,
                                 float shift = 0) {
  const float largest = sampled_largest_magnitude(v, n, shift);
  return largest > 0 && largest < below ? std::min(-std::ilogb(largest), 126) : 0;
}

// One block's float sum of squares `fast` of v[0 .. count) when trusted, else the block summed
// again in float64.
inline double checked_block_sum_squares(float fast, const float* v, int64_t count) {
  return float_block_sum_squares_trusted(fast, count) ? fast : sum_squares(v, count);
}

// Sum of squares of n contiguous values for a separate pass over data still in cache: float in
// float per block of 1024 entries in 64 lanes, the rest per kSquareBlock block (checked as
// above, untrusted blocks in float64), double as sum_squares. On float data: no conversions.
template <class T>
double sum_squares_blocked(const T* v, int64_t n);

// sum_squares_blocked over chunks of kNewestFirstChunk entries, the last chunk first, their sums
// added in that fixed order. For a buffer just written front to back (a GEMM's dw), whose
// newest lines are still in L2: read oldest first, each line fetched evicts a newer one before
// it is read (LRU). Measured on a 2 MB half of dw right after its GEMM: 43 us, not 56 us.
constexpr int64_t kNewestFirstChunk = 1 << 14;
template <class T>
double sum_squares_newest_first(const T* v, int64_t n);

// The norm from a fast sum of squares of v, falling back to scaled_norm(v) where needed.
template <class T>
inline double norm_from_sum_squares(double sumsq, const T* v, int64_t n) {
  return sum_squares_trusted<T>(sumsq) ? std::sqrt(sumsq) : scaled_norm(v, n);
}

// Float64 mean and population std of n values in two passes scaled by a power of two, so that
// neither sums nor squares over- or underflow (any finite values). A NaN gives NaN; an infinity
// gives mean +-inf (or NaN) and std NaN, as in NumPy and PyTorch.
template <class T>
void scaled_mean_std(const T* v, int64_t n, double* mean, double* std);

// Log-scale backward: multiplies each (pointer, length) array by 2^-e with e = ilogb(norm), so
// that a signal of this norm lands in [1, 2); exact (a power of two). Returns e (0 when the
// norm is 0 or not finite: nothing to renormalise).
template <class T>
int renormalize_power_of_two(double norm, std::initializer_list<std::pair<T*, int64_t>> arrays);

// sqrt(a^2 + b^2) of two norms (>= 0, or NaN) without over- or underflow: the norm of two
// blocks joined. Not std::hypot, whose glibc 2.35 symbol would raise the wheel's manylinux tag.
inline double joined_norm(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  const double larger = a > b ? a : b;
  if (larger == 0 || std::isinf(larger)) return larger;
  const int e = std::ilogb(larger);  // scale by 2^-e: exact
  const double x = std::ldexp(a, -e), y = std::ldexp(b, -e);
  return std::ldexp(std::sqrt(x * x + y * y), e);
}

template <class T>
inline double frobenius_norm(const T* v, int64_t n) {
  return norm_from_sum_squares(sum_squares(v, n), v, n);
}

}  // namespace vgkern
