// ops/norm.h's op on the GPU, and its stream-level kernel for the CUDA nets (names:
// csrc/ops/README.md). Device pointers.
#pragma once
#include <cstdint>

#include "cuda/stream.h"

namespace vgkern {

// The op: ||v|| (n entries) in float64, on the default stream, synchronised.
template <class T>
double sum_squares_norm_cuda(const T* v, int64_t n);

// *norm (device) = ||v|| (n entries), asynchronous on `stream`; scratch:
// dense_cuda_scratch_bytes(0) bytes (ops/dense_cuda.h).
template <class T>
void sum_squares_norm_stream(double* norm, const T* v, int64_t n, void* scratch,
                             cudaStream_t stream);

}  // namespace vgkern
