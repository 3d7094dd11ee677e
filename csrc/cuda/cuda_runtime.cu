// CUDA runtime queries. Compiled whenever nvcc is found (VGKERN_CUDA=AUTO|ON) so that CI checks
// the CUDA toolchain; kernels for the ops arrive with the CUDA backend issue.
#include <cuda_runtime.h>

namespace vgkern {

int cuda_device_count() {
  int count = 0;
  // No driver or no GPU is not an error here: it means "no CUDA device".
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error state
    return 0;
  }
  return count;
}

}  // namespace vgkern
