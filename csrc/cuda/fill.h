// Zero-filling device memory for the ops' empty-batch paths (ops/dense.cpp, ops/lstm_cell.cpp),
// in the ops' CUDA naming (csrc/ops/README.md): on the calling thread's default stream, and
// synchronised before it returns. Included by every build (no CUDA header here).
#pragma once
#include <cstdint>

namespace vgkern {

// v[0 .. n) = 0 (device pointer).
template <class T>
void fill_zero_cuda(T* v, int64_t n);

}  // namespace vgkern
