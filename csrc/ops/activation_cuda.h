// ops/activation.h's op on the GPU (names: csrc/ops/README.md). Device pointers; on the calling
// thread's default stream, synchronised before it returns.
#pragma once
#include <cstdint>

#include "ops/activation.h"

namespace vgkern {

template <class T>
void activation_forward_cuda(T* h, T* dact, const T* z, int64_t n, ActSpec act);
template <class T>
void activation_backward_cuda(T* dz, const T* dh, const T* z, int64_t n, ActSpec act);

}  // namespace vgkern
