// CUDA runtime queries and error reporting. Compiled whenever nvcc is found (VGKERN_CUDA=AUTO|ON).
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "core/errors.h"
#include "cuda/cuda_check.h"

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

void cuda_synchronize_stream(uintptr_t stream) {
  VGKERN_CUDA_CHECK(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)));
}

void cuda_fail(const char* call, cudaError_t error, const char* file, int line) {
  fail<DeviceError>("CUDA error in ", call, " at ", file, ":", line, ": ",
                    cudaGetErrorName(error), " (", cudaGetErrorString(error), ")");
}

namespace {
bool sync_after_launch() {
  static const bool on = [] {
    const char* v = std::getenv("VGKERN_CUDA_SYNC");
    return v != nullptr && std::strcmp(v, "") != 0 && std::strcmp(v, "0") != 0;
  }();
  return on;
}
}  // namespace

void cuda_check_launch(const char* kernel, cudaStream_t stream, const char* file, int line) {
  cudaError_t error = cudaGetLastError();
  if (error == cudaSuccess && sync_after_launch()) error = cudaStreamSynchronize(stream);
  if (error != cudaSuccess) cuda_fail(kernel, error, file, line);
}

}  // namespace vgkern
