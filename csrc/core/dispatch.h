// The one place that knows whether CUDA was compiled in. Ops call
//   dispatch(op_name, device, dtype, [&](auto tag) { ... tag.value_type ... tag.device ... });
// and get a clear error for a device that this build (or this op) does not support.
#pragma once
#include <utility>

#include "core/denormals.h"
#include "core/errors.h"
#include "core/tensor.h"

namespace vgkern {

#ifdef VGKERN_WITH_CUDA
constexpr bool kBuiltWithCuda = true;
int cuda_device_count();  // cuda/cuda_runtime.cu; 0 without a driver or GPU
#else
constexpr bool kBuiltWithCuda = false;
inline int cuda_device_count() { return 0; }
#endif

template <class T, Device D>
struct KernelTag {
  using value_type = T;
  static constexpr Device device = D;
};

template <class F>
decltype(auto) dispatch(const char* op, Device device, DType dtype, F&& body) {
  if (device == Device::cuda) {
    if (!kBuiltWithCuda)
      fail<DeviceError>(op, ": device 'cuda' requested but this vgkern build has no CUDA "
                            "support (rebuild with VGKERN_CUDA=ON where nvcc is available)");
    if (cuda_device_count() == 0)
      fail<DeviceError>(op, ": device 'cuda' requested but no CUDA GPU is visible");
    fail<DeviceError>(op, ": no CUDA kernel for this op in vgkern ", "0.1 (CPU only so far)");
  }
  DenormalsFlushed flushed;
  if (dtype == DType::f32) return body(KernelTag<float, Device::cpu>{});
  return body(KernelTag<double, Device::cpu>{});
}

}  // namespace vgkern
