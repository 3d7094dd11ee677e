// A device allocation owned like a std::vector (cudaMalloc / cudaFree), resized only when the
// size changes; contents are not kept across a resize.
#pragma once
#include "cuda/runtime.h"

#include <cstdint>
#include <utility>

#include "core/errors.h"
#include "cuda/cuda_check.h"

namespace vgkern {

template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(int64_t n) { resize(n); }
  ~DeviceArray() { release(); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceArray& operator=(DeviceArray&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  void resize(int64_t n) {
    if (n == size_) return;
    release();
    if (n == 0) return;
    void* p = nullptr;
    const cudaError_t error = cudaMalloc(&p, static_cast<size_t>(n) * sizeof(T));
    if (error == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      fail<MemoryError>("CUDA: cannot allocate ", static_cast<double>(n) * sizeof(T) / (1 << 20),
                        " MiB on the GPU");
    }
    VGKERN_CUDA_CHECK(error);
    data_ = static_cast<T*>(p);
    size_ = n;
  }

  T* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  void release() noexcept {
    if (data_) cudaFree(data_);
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace vgkern
