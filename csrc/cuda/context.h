// What every CUDA net holds and does per call: its device, stream and cuBLAS handle
// (CudaContext), one call at a time (CudaCall), and synchronous copies of its buffers.
#pragma once
#include <memory>
#include <mutex>

#include "core/busy_guard.h"
#include "core/errors.h"
#include "cuda/cublas.h"
#include "cuda/cuda_check.h"
#include "cuda/runtime.h"

namespace vgkern {

// The CUDA device current when the net was made, its stream and cuBLAS handle.
class CudaContext {
 public:
  CudaContext() {
    VGKERN_CUDA_CHECK(cudaGetDevice(&device_));
    VGKERN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    try {
      cublas_ = cublas_create(stream_);
    } catch (...) {
      cudaStreamDestroy(stream_);
      throw;
    }
  }
  ~CudaContext() {
    cublas_destroy(cublas_);
    cudaStreamDestroy(stream_);
  }
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  void activate() const { VGKERN_CUDA_CHECK(cudaSetDevice(device_)); }  // in the calling thread
  void synchronize() const { VGKERN_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  cudaStream_t stream() const { return stream_; }
  CublasHandle cublas() const { return cublas_; }
  int device() const { return device_; }

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  CublasHandle cublas_ = nullptr;
};

// One call at a time per net (core/busy_guard.h, as the CPU nets), on the net's device.
class CudaCall {
 public:
  CudaCall(std::mutex& busy, const CudaContext& context, const char* op) : busy_(busy, op) {
    context.activate();
  }

 private:
  BusyGuard busy_;
};

// The calling thread's stream and cuBLAS handle for vgkern.ops, on the device that was current
// when the thread first used one (made the current device again on every call).
inline CudaContext& thread_cuda_context() {
  thread_local std::unique_ptr<CudaContext> context;
  if (!context) context = std::make_unique<CudaContext>();
  context->activate();
  return *context;
}

// The host memory may go away on return, so both copies wait for the stream.
inline void copy_buffer_to_host(const CudaContext& context, const void* device, size_t bytes,
                                void* host) {
  if (bytes == 0) return;
  VGKERN_CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, context.stream()));
  context.synchronize();
}
inline void copy_buffer_from_host(const CudaContext& context, void* device, const void* host,
                                  size_t bytes) {
  if (bytes == 0) return;
  VGKERN_CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, context.stream()));
  context.synchronize();
}

}  // namespace vgkern
