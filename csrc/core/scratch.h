// Per-thread scratch buffers that grow to the largest size seen: no allocation in steady state.
#pragma once
#include <cstdint>
#include <vector>

namespace vgkern {

template <class U>
U* scratch(std::vector<U>& buffer, int64_t n) {
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

}  // namespace vgkern
