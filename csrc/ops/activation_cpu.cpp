#include "core/simd.h"
#include "ops/activation.h"
#include "ops/activation_math.h"

namespace vgkern {
namespace {

#define VGKERN_SIMD_KERNELS "ops/activation_simd.inc"
#include "core/simd_levels.inc"

}  // namespace

template <class T>
void activation_forward_cpu(T* h, T* dact, const T* z, int64_t n, ActSpec act) {
  with_activation(act.kind, [&](auto kind) {
    constexpr Activation K = decltype(kind)::value;
    VGKERN_SIMD(isa::forward_loop<T, K>(h, dact, z, n, static_cast<T>(act.alpha)));
  });
}

template <class T>
void activation_backward_cpu(T* dz, const T* dh, const T* z, int64_t n, ActSpec act) {
  with_activation(act.kind, [&](auto kind) {
    constexpr Activation K = decltype(kind)::value;
    VGKERN_SIMD(isa::backward_loop<T, K>(dz, dh, z, n, static_cast<T>(act.alpha)));
  });
}

template void activation_forward_cpu<float>(float*, float*, const float*, int64_t, ActSpec);
template void activation_forward_cpu<double>(double*, double*, const double*, int64_t, ActSpec);
template void activation_backward_cpu<float>(float*, const float*, const float*, int64_t, ActSpec);
template void activation_backward_cpu<double>(double*, const double*, const double*, int64_t,
                                              ActSpec);

}  // namespace vgkern
