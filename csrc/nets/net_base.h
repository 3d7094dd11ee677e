// What the Python wrappers see of every net (MLP, LSTM, RNN): its flat buffers, which are host
// memory on the CPU (numpy views) and device memory on CUDA (reached by copies in and out).
#pragma once
#include <cstdint>
#include <cstring>
#include <mutex>

#include "core/busy_guard.h"
#include "core/denormals.h"
#include "core/errors.h"
#include "core/tensor.h"

namespace vgkern {

// What a CPU net holds for the duration of one call: the net (one call at a time,
// core/busy_guard.h) and, when enabled, flushed subnormals in the calling thread
// (core/denormals.h). CUDA nets hold a CudaCall (cuda/context.h).
class CpuCall {
 public:
  CpuCall(std::mutex& busy, const char* op) : busy_(busy, op) {}

 private:
  BusyGuard busy_;
  DenormalsFlushed flushed_;
};

enum class NetBuffer { params, grads, running_means, running_vars };

class NetBase {
 public:
  virtual ~NetBase() = default;
  virtual DType dtype() const = 0;
  virtual Device device() const { return Device::cpu; }
  virtual int64_t buffer_size(NetBuffer which) const = 0;
  virtual void* buffer(NetBuffer which) = 0;  // host memory on the CPU, device memory on CUDA

  // The whole buffer to the host, or host values into entries [offset, offset + count).
  virtual void copy_to_host(NetBuffer which, void* host) {
    std::memcpy(host, buffer(which), buffer_size(which) * item_size());
  }
  virtual void copy_from_host(NetBuffer which, int64_t offset, int64_t count, const void* host) {
    check_range(which, offset, count);
    std::memcpy(static_cast<char*>(buffer(which)) + offset * item_size(), host,
                count * item_size());
  }

 protected:
  size_t item_size() const { return dtype() == DType::f32 ? 4 : 8; }
  void check_range(NetBuffer which, int64_t offset, int64_t count) const {
    if (offset < 0 || count < 0 || offset + count > buffer_size(which))
      fail<ValueError>("entries [", offset, ", ", offset + count,
                       ") are outside the net's buffer of ", buffer_size(which));
  }
};

}  // namespace vgkern
