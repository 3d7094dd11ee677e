// Per-element activation value and derivative, branch-free for SIMD loops. Derivatives come from
// z (not from h), so they stay accurate in saturation: tanh'(z) = 4 e / (1 + e)^2 with
// e = exp(-2|z|) is 8e-9 at z = 10 in float32 where 1 - tanh(z)^2 would round to 0.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/vecmath.h"
#include "ops/activation.h"

namespace vgkern {

// Whether act(z) == 0 only at z == 0 (ELU: unless alpha == 0), so that h == 0 is rare. The
// epilogues' statistics then keep each lane's smallest |h| (one min per entry, where a count is
// a compare and an add: those passes are bound by their vector operations; -0.7 % of a W=64
// B=128 L=50 tanh step on AMD Zen 4) and count the zeros (zeros_after_smallest_abs) only when
// it is 0.
template <Activation K>
constexpr bool kZerosRare =
    K == Activation::tanh || K == Activation::identity || K == Activation::elu;

// |h| into the running smallest; a NaN h keeps the smallest so far (a zero stays found).
template <class T>
[[gnu::always_inline]] inline void keep_smallest_abs(T h, T& smallest) {
  const T a = std::fabs(h);
  smallest = a < smallest ? a : smallest;
}

// The zeros of h (n,) after keep_smallest_abs kept each of `lanes` lanes' smallest |h|: 0 unless
// one of them is 0, else counted in a second pass (either sign; NaN is not 0).
template <class T>
inline int64_t zeros_after_smallest_abs(const T* smallest, int lanes, const T* h, int64_t n) {
  if (*std::min_element(smallest, smallest + lanes) != T(0)) return 0;
  int64_t zeros = 0;
#pragma omp simd reduction(+ : zeros)
  for (int64_t i = 0; i < n; ++i) zeros += h[i] == T(0) ? 1 : 0;
  return zeros;
}

template <Activation K, class T>
inline void act_eval(T z, T alpha, T& h, T& d) {
  if constexpr (K == Activation::identity) {
    h = z;
    d = T(1);
  } else if constexpr (K == Activation::relu) {
    h = z < T(0) ? T(0) : z;                       // NaN propagates
    d = z > T(0) ? T(1) : (z == z ? T(0) : z);     // relu'(0) = 0; NaN propagates
  } else if constexpr (K == Activation::sigmoid) {
    T e, em;
    exp_expm1_nonpositive(-std::fabs(z), e, em);   // e = exp(-|z|) in (0, 1]
    const T r = T(1) / (T(1) + e);
    h = z >= T(0) ? r : e * r;
    d = e * r * r;
  } else if constexpr (K == Activation::tanh) {
    T e, em;
    exp_expm1_nonpositive(T(-2) * std::fabs(z), e, em);  // em = expm1(-2|z|) in (-1, 0]
    const T q = T(1) / (T(2) + em);
    h = std::copysign(-em * q, z);                 // (1 - e^-2a) / (1 + e^-2a), exact near 0
    d = T(4) * e * q * q;
  } else {  // elu
    T e, em;
    const T zneg = z > T(0) ? T(0) : z;            // NaN stays NaN
    exp_expm1_nonpositive(zneg, e, em);
    h = z > T(0) ? z : alpha * em;
    d = z > T(0) ? T(1) : alpha * e;
  }
}

}  // namespace vgkern
