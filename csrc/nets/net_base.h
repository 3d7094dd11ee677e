// What the Python wrappers see of every net (MLP, LSTM, RNN): its flat buffers, which are host
// memory on the CPU (numpy views) and device memory on CUDA (reached by copies in and out).
#pragma once
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>

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

// What the last forward left for a backward: the state machine every net driver follows (MLP,
// LSTM, RNN; CPU and CUDA), so that they refuse and allow the same calls.
//   begin(training)  a forward starts: no backward until it finishes (a forward that throws
//                    halfway leaves none behind)
//   finish(stats)    it is done: a backward may follow; its forward statistics are valid when
//                    they were on
//   invalidate()     the workspaces were resized, or a step refused its target after the
//                    forward: a backward needs a new forward first
//   require(op, forward_call)  DeviceError naming op and how to run a forward, unless one waits
class ForwardState {
 public:
  void begin(bool training = true) {
    done_ = false;
    training_ = training;
  }
  void finish(bool stats) {
    stats_valid_ = stats;
    done_ = true;
  }
  void invalidate() { done_ = false; }
  void require(const std::string& op, const char* forward_call) const {
    if (!done_)
      fail<DeviceError>(op, ": no forward pass to differentiate; call ", forward_call, " first");
  }
  // f(), invalidating the forward when it throws (a refused step leaves no half-used forward).
  template <class F>
  auto refusing(F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (...) {
      invalidate();
      throw;
    }
  }
  bool stats_valid() const { return stats_valid_; }  // of the last forward
  bool training() const { return training_; }         // batch norm: the last forward's mode

 private:
  bool done_ = false, stats_valid_ = false, training_ = true;
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

  // Held for the duration of every call into the net (CpuCall, CudaCall) and of vgkern.optim's
  // update of its buffers (bindings/optim_bindings.cpp): one call at a time.
  std::mutex& busy() { return busy_; }

 protected:
  std::mutex busy_;
  size_t item_size() const { return dtype() == DType::f32 ? 4 : 8; }
  void check_range(NetBuffer which, int64_t offset, int64_t count) const {
    if (offset < 0 || count < 0 || offset + count > buffer_size(which))
      fail<ValueError>("entries [", offset, ", ", offset + count,
                       ") are outside the net's buffer of ", buffer_size(which));
  }
};

}  // namespace vgkern
