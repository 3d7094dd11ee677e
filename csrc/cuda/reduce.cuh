// Deterministic reductions on the GPU: every kernel that reduces runs a fixed grid (a function of
// the size alone), each thread folds its grid-stride elements in order, each block folds its
// threads in a fixed tree and writes one partial; the consumer folds the partials in index
// order. No atomics: the same inputs give bit-identical results, run after run.
#pragma once
#include "cuda/runtime.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace vgkern {
namespace cuda {

#ifdef VGKERN_CUDA_EMULATE
constexpr int kThreads = 1;  // cuda/emulation.h: blocks of one thread, run in order
#else
constexpr int kThreads = 256;     // threads per block of every kernel here
#endif
constexpr int kMaxBlocks = 1024;  // partials per reduction

// Blocks for a grid-stride pass over n elements (at least 4 elements per thread).
inline int blocks_for(int64_t n) {
  const int64_t per_block = 4 * kThreads;
  return static_cast<int>(std::clamp<int64_t>((n + per_block - 1) / per_block, 1, kMaxBlocks));
}

// This thread's indices of a grid-stride loop over [0, n), in order:
//   for (const int64_t i : grid_stride(n)) ...
struct GridStride {
  struct Index {
    int64_t i, stride;
    __device__ int64_t operator*() const { return i; }
    __device__ Index& operator++() {
      i += stride;
      return *this;
    }
    __device__ bool operator!=(const Index& end) const { return i < end.i; }
  };
  int64_t first, n, stride;
  __device__ Index begin() const { return {first, stride}; }
  __device__ Index end() const { return {n, stride}; }
};
__device__ inline GridStride grid_stride(int64_t n) {
  return {static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x, n,
          static_cast<int64_t>(gridDim.x) * kThreads};
}

// Folds v over the block in a fixed tree; every thread gets the result. V: trivially copyable.
template <class V, class Combine>
__device__ V block_reduce(V v, Combine combine) {
  static_assert(alignof(V) <= alignof(unsigned long long), "V needs more alignment");
  __shared__ unsigned long long storage[(kThreads * sizeof(V) + 7) / 8];
  V* shared = reinterpret_cast<V*>(storage);
  shared[threadIdx.x] = v;
  __syncthreads();
  for (unsigned stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride)
      shared[threadIdx.x] = combine(shared[threadIdx.x], shared[threadIdx.x + stride]);
    __syncthreads();
  }
  const V result = shared[0];
  __syncthreads();  // the storage may be reused by the next call
  return result;
}

// Folds partials[0 .. count) in a fixed order over the block; every thread gets the result.
template <class V, class Combine>
__device__ V fold_partials(const V* partials, int count, V identity, Combine combine) {
  V v = identity;
  for (int i = static_cast<int>(threadIdx.x); i < count; i += kThreads) v = combine(v, partials[i]);
  return block_reduce(v, combine);
}

// Sum of squares of T values, accumulated in float64 without over- or underflow. float: a plain
// double sum (squares of floats, and their sums, stay inside double's range). double: scaled by a
// power of two, value = ssq * 4^exp with every scaled entry below 1 (as LAPACK's nrm2, with
// exact scaling). Squares of Inf/NaN go to `special`, which then decides the norm.
template <class T>
struct SumSq {
  double ssq = 0, special = 0;
  int exp = -1100;  // below any double's exponent: the first nonzero entry sets it

  __device__ void add(T x) {
    const double v = static_cast<double>(x);
    if constexpr (std::is_same_v<T, float>) {
      ssq += v * v;
    } else {
      if (!isfinite(v)) {
        special += v * v;
        return;
      }
      if (v == 0) return;
      const int e = ilogb(v) + 1;  // |v| < 2^e
      if (e > exp) {
        ssq = ldexp(ssq, 2 * (exp - e));
        exp = e;
      }
      const double scaled = ldexp(v, -exp);
      ssq += scaled * scaled;
    }
  }
  __device__ static SumSq merge(SumSq a, SumSq b) {
    if constexpr (std::is_same_v<T, float>) {
      a.ssq += b.ssq;
    } else {
      if (b.exp > a.exp) {
        const SumSq t = a;
        a = b;
        b = t;
      }
      a.ssq += ldexp(b.ssq, 2 * (b.exp - a.exp));
      a.special += b.special;
    }
    return a;
  }
  __device__ double norm() const {
    if constexpr (std::is_same_v<T, float>) return sqrt(ssq);
    if (special != 0 || isnan(special)) return sqrt(special);  // Inf, or NaN if any NaN
    return ldexp(sqrt(ssq), exp);
  }
};

template <class T>
struct MergeSumSq {
  __device__ SumSq<T> operator()(SumSq<T> a, SumSq<T> b) const { return SumSq<T>::merge(a, b); }
};

struct Add {
  template <class V>
  __device__ V operator()(V a, V b) const { return a + b; }
};
struct Max {
  __device__ double operator()(double a, double b) const { return fmax(a, b); }
};

}  // namespace cuda
}  // namespace vgkern
