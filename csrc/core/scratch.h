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

// `parts` rows of n values in one scratch buffer, each row starting on its own 64-byte cache
// line: threads writing neighbouring rows (core/parallel.h) never share a line.
template <class U>
struct PartRows {
  U* base;
  int64_t stride;
  U* operator[](int p) const { return base + p * stride; }
};

template <class U>
PartRows<U> part_rows(std::vector<U>& buffer, int parts, int64_t n) {
  static_assert(64 % sizeof(U) == 0, "a cache line must hold whole values");
  constexpr int64_t per_line = 64 / sizeof(U);
  const int64_t stride = (n + per_line - 1) / per_line * per_line;
  U* data = scratch(buffer, parts * stride + per_line);
  const auto address = reinterpret_cast<std::uintptr_t>(data);
  return {reinterpret_cast<U*>((address + 63) & ~std::uintptr_t(63)), stride};
}

// Per-block column sums -> their total, added in block order, into the first row.
inline void sum_part_rows(PartRows<double> sums, int parts, int64_t cols) {
  for (int p = 1; p < parts; ++p)
    for (int64_t j = 0; j < cols; ++j) sums[0][j] += sums[p][j];
}

// One block's scalar sum, on its own cache line (written by different threads).
struct alignas(64) PartSum {
  double value = 0;
};

// The blocks' sums added in block order.
inline double total_of_parts(const PartSum* sums, int parts) {
  double total = 0;
  for (int p = 0; p < parts; ++p) total += sums[p].value;
  return total;
}

}  // namespace vgkern
