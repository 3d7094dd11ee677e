// CUDA errors as DeviceError (RuntimeError in Python) naming the failing call, file and line.
// VGKERN_CUDA_SYNC=1 in the environment synchronises after every kernel launch, so that an
// execution error is reported at the launch that caused it (debugging; slow).
#pragma once
#include "cuda/runtime.h"

namespace vgkern {

[[noreturn]] void cuda_fail(const char* call, cudaError_t error, const char* file, int line);
// After a kernel launch: a launch error now; with VGKERN_CUDA_SYNC=1 an execution error too.
void cuda_check_launch(const char* kernel, cudaStream_t stream, const char* file, int line);

}  // namespace vgkern

// __FILE_NAME__ (no directories): no build path ends up in the binary.
#define VGKERN_CUDA_CHECK(call)                                                 \
  do {                                                                          \
    const cudaError_t vgkern_error_ = (call);                                   \
    if (vgkern_error_ != cudaSuccess)                                           \
      ::vgkern::cuda_fail(#call, vgkern_error_, __FILE_NAME__, __LINE__);       \
  } while (0)

#define VGKERN_CUDA_LAUNCHED(kernel, stream) \
  ::vgkern::cuda_check_launch(kernel, stream, __FILE_NAME__, __LINE__)
