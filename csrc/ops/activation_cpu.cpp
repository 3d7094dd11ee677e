#include "core/simd.h"
#include "ops/activation.h"
#include "ops/activation_math.h"

namespace vgkern {
namespace {

template <class T, Activation K>
VGKERN_SIMD_CLONES void forward_loop(T* h, T* dact, const T* z, int64_t n, T alpha) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) act_eval<K>(z[i], alpha, h[i], dact[i]);
}

template <class T, Activation K>
VGKERN_SIMD_CLONES void backward_loop(T* dz, const T* dh, const T* z, int64_t n, T alpha) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    T h, d;
    act_eval<K>(z[i], alpha, h, d);
    dz[i] = dh[i] * d;
  }
}

}  // namespace

template <class T>
void activation_forward_cpu(T* h, T* dact, const T* z, int64_t n, ActSpec act) {
  with_activation(act.kind, [&](auto kind) {
    forward_loop<T, decltype(kind)::value>(h, dact, z, n, static_cast<T>(act.alpha));
  });
}

template <class T>
void activation_backward_cpu(T* dz, const T* dh, const T* z, int64_t n, ActSpec act) {
  with_activation(act.kind, [&](auto kind) {
    backward_loop<T, decltype(kind)::value>(dz, dh, z, n, static_cast<T>(act.alpha));
  });
}

template void activation_forward_cpu<float>(float*, float*, const float*, int64_t, ActSpec);
template void activation_forward_cpu<double>(double*, double*, const double*, int64_t, ActSpec);
template void activation_backward_cpu<float>(float*, const float*, const float*, int64_t, ActSpec);
template void activation_backward_cpu<double>(double*, const double*, const double*, int64_t,
                                              ActSpec);

}  // namespace vgkern
