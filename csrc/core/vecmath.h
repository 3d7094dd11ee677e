// Vectorisable exp(x) and expm1(x) for x <= 0, the only range the activations need
// (sigmoid uses exp(-|z|), tanh expm1(-2|z|), ELU expm1(min(z, 0))).
//
// Method: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2, k rounded with the 1.5*2^p
// trick), expm1(r) from its Taylor series (degree 7 in float: truncation < 2e-8 |r|; degree 13
// in double: < 2e-17 |r|), then exp(x) = 2^k (1 + expm1(r)) and expm1(x) = 2^k expm1(r) + (2^k - 1).
// 2^k is built from exponent bits as two factors 2^k1 2^k2 so results that are subnormal round
// correctly. Measured error vs float64/long double (tests/test_ops.py): a few ulp.
// Branch-free (selects only) so that `#pragma omp simd` loops vectorise; NaN propagates, -inf
// gives exp = 0, expm1 = -1.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace vgkern {

template <class T> struct ExpConstants;

template <> struct ExpConstants<float> {
  using Int = int32_t;
  static constexpr float lowest = -104.0f;  // exp(-104) < smallest subnormal / 2
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f;  // 9 significant bits: k * ln2_hi is exact
  static constexpr float ln2_lo = -2.12194440e-4f;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23
  static constexpr int mantissa_bits = 23, exponent_bias = 127, degree = 7;
};

template <> struct ExpConstants<double> {
  using Int = int64_t;
  static constexpr double lowest = -746.0;
  static constexpr double log2e = 1.44269504088896338700e+00;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;  // low 32 bits zero (fdlibm)
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr int mantissa_bits = 52, exponent_bias = 1023, degree = 13;
};

constexpr double inverse_factorial(int n) {
  double f = 1.0;
  for (int i = 2; i <= n; ++i) f *= i;
  return 1.0 / f;
}

// 1/N! + r (1/(N+1)! + r (... + r / Degree!)), unrolled at compile time (a loop here would
// stop the vectoriser: "multiple nested loops").
template <class T, int N, int Degree>
inline T taylor_tail(T r) {
  if constexpr (N == Degree)
    return T(inverse_factorial(N));
  else
    return taylor_tail<T, N + 1, Degree>(r) * r + T(inverse_factorial(N));
}

// 2^k from its exponent bits; k must give a normal number (k > -exponent_bias).
template <class T>
inline T pow2_normal(int32_t k) {
  using C = ExpConstants<T>;
  using Int = typename C::Int;
  using UInt = std::make_unsigned_t<Int>;
  const UInt bits = static_cast<UInt>(k + C::exponent_bias) << C::mantissa_bits;
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// exp(x) and expm1(x) for x <= 0 (x > 0 is clamped to 0 by callers that select it away).
template <class T>
inline void exp_expm1_nonpositive(T x, T& exp_x, T& expm1_x) {
  using C = ExpConstants<T>;
  const T nan_or_zero = x == x ? T(0) : x;  // added at the end: NaN propagates
  x = x > C::lowest ? x : C::lowest;  // NaN -> lowest: the int conversion below stays defined
  x = x > T(0) ? T(0) : x;
  const T k_real = (x * C::log2e + C::round_magic) - C::round_magic;  // round to nearest
  const T r = (x - k_real * C::ln2_hi) - k_real * C::ln2_lo;
  // expm1(r) = r + r^2 (1/2! + r (1/3! + ... + r / degree!)) by Horner.
  const T em_r = r + r * r * taylor_tail<T, 2, C::degree>(r);
  const int32_t k = static_cast<int32_t>(k_real);
  const int32_t k1 = k >> 1, k2 = k - k1;  // both >= lowest/2 / ln2: normal numbers
  const T s1 = pow2_normal<T>(k1), s2 = pow2_normal<T>(k2);
  exp_x = ((T(1) + em_r) * s1) * s2 + nan_or_zero;
  expm1_x = (em_r * s1) * s2 + (s1 * s2 - T(1)) + nan_or_zero;
}

}  // namespace vgkern
