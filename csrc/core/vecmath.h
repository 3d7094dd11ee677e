// Vectorisable exp(x) and expm1(x) for x <= 0, the only range the activations need
// (sigmoid uses exp(-|z|), tanh expm1(-2|z|), ELU expm1(min(z, 0))).
//
// Method: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2; k rounded with the 1.5*2^p
// trick, which also leaves k in the low bits of the sum), expm1(r) from its Taylor series
// (degree 7 in float: truncation < 2e-8 |r|; degree 13 in double: < 2e-17 |r|), then with
// p = 2^k: exp(x) = (2^(k + 64) + 2^(k + 64) expm1(r)) 2^-64 and expm1(x) = p expm1(r) + (p - 1),
// a fused multiply-add each where the target has FMA. 2^(k + 64) is built from exponent bits (a
// normal number for every k here; 2^k itself is not representable at k = -150 in float, where
// exp(x) still rounds to the smallest subnormal); a subnormal exp(x) is rounded by the last
// product. Measured error vs float64/long double (tests/test_ops.py): a few ulp.
// Branch-free (selects only) so that `#pragma omp simd` loops vectorise; NaN propagates (no
// float-to-int conversion: k's bits are read from the sum), -inf gives exp = 0, expm1 = -1.
#pragma once
#include <cstdint>
#include <cstring>

namespace vgkern {

template <class T> struct ExpConstants;

template <> struct ExpConstants<float> {
  using Bits = uint32_t;
  static constexpr float lowest = -104.0f;  // exp(-104) < smallest subnormal / 2
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f;  // 9 significant bits: k * ln2_hi is exact
  static constexpr float ln2_lo = -2.12194440e-4f;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: k in the low bits of the sum
  static constexpr Bits round_magic_bits = 0x4B400000u;
  static constexpr int mantissa_bits = 23, exponent_bias = 127, degree = 7;
};

template <> struct ExpConstants<double> {
  using Bits = uint64_t;
  static constexpr double lowest = -746.0;
  static constexpr double log2e = 1.44269504088896338700e+00;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;  // low 32 bits zero (fdlibm)
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr Bits round_magic_bits = 0x4338000000000000u;
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

template <class To, class From>
inline To bit_cast_value(From from) {
  static_assert(sizeof(To) == sizeof(From));
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

// exp(x) and expm1(x) for x <= 0 or NaN (every caller's argument: -|z|, -2|z|, min(z, 0),
// x - max(x)); x > 0 gives wrong results.
template <class T>
inline void exp_expm1_nonpositive(T x, T& exp_x, T& expm1_x) {
  using C = ExpConstants<T>;
  using Bits = typename C::Bits;
  constexpr int kOffset = 64;  // 2^(k + kOffset) is normal down to k = lowest
  constexpr T kUnoffset = T(0x1p-64);  // 2^-kOffset
  x = x < C::lowest ? C::lowest : x;  // NaN stays NaN
  const T rounded = x * C::log2e + C::round_magic;  // magic + k, k = round(x log2e) <= 0
  const T k_real = rounded - C::round_magic;
  const T r = (x - k_real * C::ln2_hi) - k_real * C::ln2_lo;
  // expm1(r) = r + r^2 (1/2! + r (1/3! + ... + r / degree!)) by Horner.
  const T em_r = r + r * r * taylor_tail<T, 2, C::degree>(r);
  // The exponent field of 2^(k + kOffset): k + kOffset + bias, k = bits(rounded) - bits(magic)
  // (unsigned: wraps, and only the low bits survive the shift).
  const Bits exponent = bit_cast_value<Bits>(rounded) +
                        (Bits(C::exponent_bias + kOffset) - C::round_magic_bits);
  const T big = bit_cast_value<T>(Bits(exponent << C::mantissa_bits));  // 2^(k + kOffset)
  exp_x = (big * em_r + big) * kUnoffset;  // exact unless subnormal; 2^k alone may not exist
  const T p = big * kUnoffset;
  expm1_x = p * em_r + (p - T(1));
}

}  // namespace vgkern
