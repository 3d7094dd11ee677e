#include "ops/activation_cuda.h"

#include "cuda/activation_device.cuh"
#include "cuda/context.h"
#include "cuda/launch.cuh"

namespace vgkern {
namespace {

using cuda::blocks_for;
using cuda::grid_stride;

template <class T, Activation K>
__global__ void activation_forward_kernel(T* h, T* dact, const T* z, int64_t n, T alpha) {
  for (const int64_t i : grid_stride(n)) cuda::act_eval<K>(z[i], alpha, h[i], dact[i]);
}

template <class T, Activation K>
__global__ void activation_backward_kernel(T* dz, const T* dh, const T* z, int64_t n, T alpha) {
  for (const int64_t i : grid_stride(n)) {
    T hv, dv;
    cuda::act_eval<K>(z[i], alpha, hv, dv);
    dz[i] = dh[i] * dv;
  }
}

}  // namespace

template <class T>
void activation_forward_cuda(T* h, T* dact, const T* z, int64_t n, ActSpec act) {
  CudaContext& context = thread_cuda_context();
  with_activation(act.kind, [&](auto kind) {
    VGKERN_LAUNCH((activation_forward_kernel<T, decltype(kind)::value>), blocks_for(n),
                  context.stream(), h, dact, z, n, static_cast<T>(act.alpha));
  });
  context.synchronize();
}

template <class T>
void activation_backward_cuda(T* dz, const T* dh, const T* z, int64_t n, ActSpec act) {
  CudaContext& context = thread_cuda_context();
  with_activation(act.kind, [&](auto kind) {
    VGKERN_LAUNCH((activation_backward_kernel<T, decltype(kind)::value>), blocks_for(n),
                  context.stream(), dz, dh, z, n, static_cast<T>(act.alpha));
  });
  context.synchronize();
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void activation_forward_cuda<T>(T*, T*, const T*, int64_t, ActSpec);                \
  template void activation_backward_cuda<T>(T*, const T*, const T*, int64_t, ActSpec);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
