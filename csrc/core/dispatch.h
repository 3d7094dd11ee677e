// The one place that knows whether CUDA was compiled in. Ops call
//   dispatch(op_name, device, dtype, [&](auto tag) { ... tag.value_type ... tag.device ... });
// and get a clear error for device "cuda" where this build has no CUDA or no GPU is visible.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/denormals.h"
#include "core/errors.h"
#include "core/tensor.h"

namespace vgkern {

#ifdef VGKERN_WITH_CUDA
constexpr bool kBuiltWithCuda = true;
int cuda_device_count();  // cuda/cuda_runtime.cu; 0 without a driver or GPU
std::string load_cublas(const std::vector<std::string>& candidates);  // cuda/cublas.h
void cuda_synchronize_stream(uintptr_t stream);  // a producer's stream, by its handle
#else
constexpr bool kBuiltWithCuda = false;
inline int cuda_device_count() { return 0; }
inline std::string load_cublas(const std::vector<std::string>&) {
  fail<DeviceError>("cuBLAS: this vgkern build has no CUDA support");
}
inline void cuda_synchronize_stream(uintptr_t) {
  fail<DeviceError>("CUDA streams: this vgkern build has no CUDA support");
}
#endif

template <class T, Device D>
struct KernelTag {
  using value_type = T;
  static constexpr Device device = D;
};

// Throws DeviceError unless this build has CUDA and a CUDA GPU is visible.
inline void check_cuda_device(const char* op) {
  if (!kBuiltWithCuda)
    fail<DeviceError>(op, ": device 'cuda' requested but this vgkern build has no CUDA "
                          "support (rebuild with VGKERN_CUDA=ON where nvcc is available)");
  if (cuda_device_count() == 0)
    fail<DeviceError>(op, ": device 'cuda' requested but no CUDA GPU is visible");
}

// body gets KernelTag<T, Device::cuda> for device 'cuda' (CUDA builds with a visible GPU only:
// body's CUDA branch is not even compiled otherwise), KernelTag<T, Device::cpu> for the CPU
// (with subnormals flushed as core/denormals.h says).
template <class F>
decltype(auto) dispatch(const char* op, Device device, DType dtype, F&& body) {
  if (device == Device::cuda) {
    check_cuda_device(op);
#ifdef VGKERN_WITH_CUDA
    if (dtype == DType::f32) return body(KernelTag<float, Device::cuda>{});
    return body(KernelTag<double, Device::cuda>{});
#endif
  }
  DenormalsFlushed flushed;
  if (dtype == DType::f32) return body(KernelTag<float, Device::cpu>{});
  return body(KernelTag<double, Device::cpu>{});
}

}  // namespace vgkern
