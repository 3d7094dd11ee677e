// ops/optim.h's op on the GPU (names: csrc/ops/README.md). Device pointers, except `stats`.
#pragma once
#include <cstdint>
#include <vector>

#include "ops/optim.h"

namespace vgkern {

// The op on the calling thread's stream (cuda/context.h), synchronised: params, state1, state2,
// grads, reference (N,) on the device (state1/state2 null where the rule has none), stats on the
// host (rows, UpdateStat::kCount), rows no segment names set to NaN.
template <class T>
void optim_update_cuda(T* params, T* state1, T* state2, const T* grads, const T* reference,
                       const std::vector<OptimSegment>& segments, const OptimConfig& config,
                       double* stats, int64_t rows);

}  // namespace vgkern
