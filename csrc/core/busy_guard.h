// One call at a time per net (MLP, LSTM, RNN; CPU and CUDA): a net's buffers and workspaces are
// not shared between threads, so a second thread that calls into a busy net gets a clear
// DeviceError (RuntimeError in Python) instead of a data race. The guard holds the net's mutex
// for the duration of the call.
#pragma once
#include <mutex>

#include "core/errors.h"

namespace vgkern {

class BusyGuard {
 public:
  // op: the call, e.g. "MLP.step", "LSTM.forward", named first in the message.
  BusyGuard(std::mutex& busy, const char* op) : lock_(busy, std::try_to_lock) {
    if (!lock_.owns_lock())
      fail<DeviceError>(op, ": this net is already running in another thread; one net may be "
                            "used by one thread at a time (use one net per thread)");
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace vgkern
