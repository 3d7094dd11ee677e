// Activation value and derivative on the GPU: the formulas of ops/activation_math.h (derivatives
// from z, accurate in saturation; NaN propagates), with CUDA's exp/expm1.
#pragma once
#include "cuda/runtime.h"

#include "core/activation_kind.h"

namespace vgkern {
namespace cuda {

__device__ inline float dev_exp(float x) { return expf(x); }
__device__ inline double dev_exp(double x) { return exp(x); }
__device__ inline float dev_expm1(float x) { return expm1f(x); }
__device__ inline double dev_expm1(double x) { return expm1(x); }

template <Activation K, class T>
__device__ inline void act_eval(T z, T alpha, T& h, T& d) {
  if constexpr (K == Activation::identity) {
    h = z;
    d = T(1);
  } else if constexpr (K == Activation::relu) {
    h = z < T(0) ? T(0) : z;                    // NaN propagates
    d = z > T(0) ? T(1) : (z == z ? T(0) : z);  // relu'(0) = 0; NaN propagates
  } else if constexpr (K == Activation::sigmoid) {
    const T e = dev_exp(-fabs(z));  // exp(-|z|) in (0, 1]
    const T r = T(1) / (T(1) + e);
    h = z >= T(0) ? r : e * r;
    d = e * r * r;
  } else if constexpr (K == Activation::tanh) {
    const T a = T(-2) * fabs(z);
    const T e = dev_exp(a), em = dev_expm1(a);  // e separately: 1 + em loses e's digits
    const T q = T(1) / (T(2) + em);
    h = copysign(-em * q, z);
    d = T(4) * e * q * q;
  } else {  // elu
    const T zneg = z > T(0) ? T(0) : z;  // NaN stays NaN
    h = z > T(0) ? z : alpha * dev_expm1(zneg);
    d = z > T(0) ? T(1) : alpha * dev_exp(zneg);
  }
}

}  // namespace cuda
}  // namespace vgkern
