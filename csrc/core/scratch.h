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

// An absent (null) input read as n zeros: a per-thread, per-type buffer that is only ever read,
// so several absent inputs of one call may share it.
template <class T>
const T* zeros_if_null(const T* p, int64_t n) {
  thread_local std::vector<T> zeros;
  if (p) return p;
  if (static_cast<int64_t>(zeros.size()) < n) zeros.assign(n, T(0));
  return zeros.data();
}

}  // namespace vgkern
