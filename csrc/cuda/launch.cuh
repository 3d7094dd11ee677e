// Kernel launches: kernel<<<blocks, cuda::kThreads, 0, stream>>>(args...) and the launch check
// (cuda/cuda_check.h), or under emulation the blocks one after another on the CPU.
#pragma once
#include "cuda/cuda_check.h"
#include "cuda/reduce.cuh"
#include "cuda/runtime.h"

namespace vgkern {
namespace cuda {

template <class... Params, class... Args>
void launch(const char* name, const char* file, int line, void (*kernel)(Params...), int blocks,
            cudaStream_t stream, Args... args) {
#ifdef VGKERN_CUDA_EMULATE
  gridDim.x = static_cast<unsigned>(blocks);
  blockDim.x = kThreads;
  threadIdx.x = 0;
  for (int b = 0; b < blocks; ++b) {
    blockIdx.x = static_cast<unsigned>(b);
    kernel(static_cast<Params>(args)...);
  }
#else
  kernel<<<blocks, kThreads, 0, stream>>>(static_cast<Params>(args)...);
#endif
  cuda_check_launch(name, stream, file, line);
}

}  // namespace cuda
}  // namespace vgkern

#define VGKERN_LAUNCH(kernel, blocks, stream, ...) \
  ::vgkern::cuda::launch(#kernel, __FILE_NAME__, __LINE__, kernel, blocks, stream, __VA_ARGS__)
