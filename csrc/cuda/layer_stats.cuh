// The statistics kernels that every layer kind shares (ops/dense_cuda.cu, ops/batchnorm_cuda.cu):
// forward moments of the pre-activations in scaled float64 (as core/stats.h's scaled_mean_std),
// saturated/zero/dead counts, the backward norms and the log-scale renormalisation, all with
// cuda/reduce.cuh's deterministic reductions, and the scratch regions their partials live in.
// Internal to the .cu files that include it (also ops/norm_cuda.cu and, through
// cuda/sequence_stats.cuh, the recurrent ones): an unnamed namespace, each gets its own copy.
#pragma once
#include <algorithm>
#include <cmath>

#include "core/report.h"  // DenseSlot
#include "cuda/launch.cuh"
#include "cuda/reduce.cuh"

namespace vgkern {
namespace {

using cuda::Add;
using cuda::blocks_for;
using cuda::block_reduce;
using cuda::fold_partials;
using cuda::grid_stride;
using cuda::kMaxBlocks;
using cuda::kThreads;
using cuda::MergeSumSq;
using cuda::SumSq;

// Forward statistics, first pass (fused into a layer's epilogue, or its own pass): what decides
// the scale of the moments (as core/stats.h's scaled_mean_std: max |z|, NaN seen) and the
// counts of saturated and zero activations.
struct ForwardPartial {
  double max_abs, plain_sum;  // max |z| over non-NaN z; plain sum (the mean when z has an Inf)
  long long saturated, zeros;
  int nan;
};
struct CombineForward {
  __device__ ForwardPartial operator()(ForwardPartial a, const ForwardPartial& b) const {
    a.max_abs = fmax(a.max_abs, b.max_abs);
    a.plain_sum += b.plain_sum;
    a.saturated += b.saturated;
    a.zeros += b.zeros;
    a.nan |= b.nan;
    return a;
  }
};
struct ForwardTotals {
  ForwardPartial all;
  int exponent;  // z is summed as z * 2^-exponent (|z| * 2^-exponent < 2)
  int scaled;    // 0: NaN, Inf or all zero (no scaled passes needed)
  double scaled_mean;
};

// Scratch regions, one reduction's partials each, at fixed offsets of the net's scratch.
struct ScratchLayout {
  size_t forward = 0, counts = 0, scaled = 0, dead = 0, totals = 0, sumsq_a = 0, sumsq_b = 0,
         columns = 0, bytes = 0;
  explicit ScratchLayout(int64_t widest) {
    auto take = [this](size_t size) {
      const size_t at = bytes;
      bytes += (size + 255) / 256 * 256;
      return at;
    };
    forward = take(kMaxBlocks * sizeof(ForwardPartial));
    counts = take(kMaxBlocks * sizeof(ForwardPartial));
    scaled = take(kMaxBlocks * sizeof(double));
    dead = take(kMaxBlocks * sizeof(long long));
    totals = take(sizeof(ForwardTotals));
    sumsq_a = take(kMaxBlocks * sizeof(SumSq<double>));
    sumsq_b = take(kMaxBlocks * sizeof(SumSq<double>));
    columns = take(5 * widest * sizeof(double));
  }
};

struct Scratch {
  ForwardPartial* forward;
  ForwardPartial* counts;  // batch norm: the counts of its normalise pass
  double* scaled;      // scaled sums, then scaled squared deviations
  long long* dead;
  ForwardTotals* totals;
  void* sumsq_a;       // SumSq<T> partials: ||dh||, later ||dw||
  void* sumsq_b;       // SumSq<T> partials: ||delta||
  double* columns;     // batch norm: 5 float64-sized values per column

  explicit Scratch(void* base) {
    const ScratchLayout layout(0);  // the column region is last: its size moves no offset
    char* p = static_cast<char*>(base);
    forward = reinterpret_cast<ForwardPartial*>(p + layout.forward);
    counts = reinterpret_cast<ForwardPartial*>(p + layout.counts);
    scaled = reinterpret_cast<double*>(p + layout.scaled);
    dead = reinterpret_cast<long long*>(p + layout.dead);
    totals = reinterpret_cast<ForwardTotals*>(p + layout.totals);
    sumsq_a = p + layout.sumsq_a;
    sumsq_b = p + layout.sumsq_b;
    columns = reinterpret_cast<double*>(p + layout.columns);
  }
};

// ---- forward ----

__global__ void forward_totals_kernel(const ForwardPartial* partials, int count,
                                      ForwardTotals* totals) {
  const ForwardPartial all = fold_partials(partials, count, ForwardPartial{0, 0, 0, 0, 0},
                                           CombineForward{});
  if (threadIdx.x == 0) {
    totals->all = all;
    totals->scaled = !all.nan && isfinite(all.max_abs) && all.max_abs > 0;
    totals->exponent = totals->scaled ? ilogb(all.max_abs) : 0;
    totals->scaled_mean = 0;
  }
}

// Second pass: sums of z * 2^-e. Third pass (Center): sums of (z * 2^-e - scaled mean)^2.
template <class T, bool Center>
__global__ void scaled_moment_kernel(const T* z, int64_t n, const ForwardTotals* totals,
                                     double* partials) {
  double s = 0;
  if (totals->scaled) {
    const int e = totals->exponent;
    const double mean = Center ? totals->scaled_mean : 0.0;
    for (const int64_t i : grid_stride(n)) {
      const double c = ldexp(static_cast<double>(z[i]), -e) - mean;
      s += Center ? c * c : c;
    }
  }
  s = block_reduce(s, Add{});
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void scaled_mean_kernel(const double* partials, int count, int64_t n,
                                   ForwardTotals* totals) {
  const double sum = fold_partials(partials, count, 0.0, Add{});
  if (threadIdx.x == 0) totals->scaled_mean = sum / static_cast<double>(n);
}

// Columns of h that are zero in every row (dead units), counted per block.
template <class T>
__global__ void dead_columns_kernel(const T* h, int64_t rows, int64_t cols, long long* partials) {
  long long dead = 0;
  for (const int64_t j : grid_stride(cols)) {
    bool alive = false;
    for (int64_t i = 0; i < rows && !alive; ++i) alive = h[i * cols + j] != T(0);  // NaN: alive
    dead += alive ? 0 : 1;
  }
  dead = block_reduce(dead, Add{});
  if (threadIdx.x == 0) partials[blockIdx.x] = dead;
}

// The slots' forward statistics; the counts of saturated and zero activations come from
// count_partials (the first pass's partials, or batch norm's normalise pass).
__global__ void forward_stats_kernel(const ForwardTotals* totals, const double* m2_partials,
                                     int m2_count, const ForwardPartial* count_partials,
                                     int count_count, const long long* dead_partials,
                                     int dead_count, int64_t n, int64_t cols, double* slots) {
  const double m2 = fold_partials(m2_partials, m2_count, 0.0, Add{});
  const ForwardPartial counts = fold_partials(count_partials, count_count,
                                              ForwardPartial{0, 0, 0, 0, 0}, CombineForward{});
  const long long dead = fold_partials(dead_partials, dead_count, 0LL, Add{});
  if (threadIdx.x != 0) return;
  const ForwardTotals t = *totals;
  const double count = static_cast<double>(n);
  double mean, std;  // as scaled_mean_std (core/stats.cpp)
  if (t.all.nan) {
    mean = std = NAN;
  } else if (!isfinite(t.all.max_abs)) {
    mean = t.all.plain_sum / count;
    std = NAN;
  } else if (!t.scaled) {
    mean = std = 0;
  } else {
    mean = ldexp(t.scaled_mean, t.exponent);
    std = ldexp(sqrt(m2 / count), t.exponent);
  }
  slots[DenseSlot::preact_mean] = mean;
  slots[DenseSlot::preact_std] = std;
  slots[DenseSlot::saturated_fraction] = static_cast<double>(counts.saturated) / count;
  slots[DenseSlot::zero_fraction] = static_cast<double>(counts.zeros) / count;
  slots[DenseSlot::dead_fraction] = static_cast<double>(dead) / static_cast<double>(cols);
}


// Blocks for one thread per column.
int column_blocks(int64_t cols) {
  return static_cast<int>(std::min<int64_t>((cols + kThreads - 1) / kThreads, kMaxBlocks));
}


// After a first pass that left ForwardPartial partials (max |z|, sum, NaN) in s.forward
// (z_blocks of them) and the counts in count_partials: the moments of z (rows, cols) and the
// counts into the slots, and the dead columns of h.
template <class T>
void finish_forward_stats(const T* z, const T* h, int64_t rows, int64_t cols, int z_blocks,
                          const ForwardPartial* count_partials, int count_blocks,
                          const Scratch& s, double* slots, cudaStream_t stream) {
  const int64_t n = rows * cols;
  VGKERN_LAUNCH(forward_totals_kernel, 1, stream, s.forward, z_blocks, s.totals);
  VGKERN_LAUNCH((scaled_moment_kernel<T, false>), z_blocks, stream, z, n, s.totals, s.scaled);
  VGKERN_LAUNCH(scaled_mean_kernel, 1, stream, s.scaled, z_blocks, n, s.totals);
  VGKERN_LAUNCH((scaled_moment_kernel<T, true>), z_blocks, stream, z, n, s.totals, s.scaled);
  const int col_blocks = column_blocks(cols);
  VGKERN_LAUNCH((dead_columns_kernel<T>), col_blocks, stream, h, rows, cols, s.dead);
  VGKERN_LAUNCH(forward_stats_kernel, 1, stream, s.totals, s.scaled, z_blocks, count_partials,
                count_blocks, s.dead, col_blocks, n, cols, slots);
}

// ---- backward ----

// out[j] = sum over the rows of m[:, j] in float64, rows in order (one thread per column).
template <class T>
__global__ void column_sums_kernel(T* out, const T* m, int64_t rows, int64_t cols) {
  for (const int64_t j : grid_stride(cols)) {
    double s = 0;
    for (int64_t i = 0; i < rows; ++i) s += static_cast<double>(m[i * cols + j]);
    out[j] = static_cast<T>(s);
  }
}

template <class T>
__global__ void prologue_norms_kernel(const SumSq<T>* dh_partials, const SumSq<T>* delta_partials,
                                      int count, bool log_scale, double* slots) {
  const SumSq<T> dh = fold_partials(dh_partials, count, SumSq<T>{}, MergeSumSq<T>{});
  const SumSq<T> delta = fold_partials(delta_partials, count, SumSq<T>{}, MergeSumSq<T>{});
  if (threadIdx.x != 0) return;
  const double delta_norm = delta.norm();
  slots[DenseSlot::act_grad_norm] = dh.norm();
  slots[DenseSlot::preact_grad_norm] = delta_norm;
  // as renormalize_power_of_two (core/stats.cpp)
  const bool rescale = log_scale && isfinite(delta_norm) && delta_norm > 0;
  slots[DenseSlot::rescale_log2] = rescale ? static_cast<double>(ilogb(delta_norm)) : 0.0;
}

// delta (n) and the (cols,) vectors u, v (when not null) times 2^-e, e =
// slots[DenseSlot::rescale_log2] (exact: a power of two). n >= cols.
template <class T>
__global__ void rescale_kernel(T* delta, int64_t n, T* u, T* v, int64_t cols,
                               const double* slots) {
  const int e = static_cast<int>(slots[DenseSlot::rescale_log2]);
  if (e == 0) return;
  const T factor = static_cast<T>(ldexp(1.0, -e));
  for (const int64_t i : grid_stride(n)) {
    delta[i] *= factor;
    if (i < cols && u) u[i] *= factor;
    if (i < cols && v) v[i] *= factor;
  }
}

template <class T>
__global__ void sum_squares_kernel(const T* v, int64_t n, SumSq<T>* partials) {
  SumSq<T> acc;
  for (const int64_t i : grid_stride(n))
    acc.add(v[i]);
  acc = block_reduce(acc, MergeSumSq<T>{});
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <class T>
__device__ double vector_norm(const T* v, int64_t n) {  // every thread of the block gets it
  SumSq<T> acc;
  for (int64_t j = threadIdx.x; j < n; j += kThreads) acc.add(v[j]);
  return block_reduce(acc, MergeSumSq<T>{}).norm();
}

// slots[DenseSlot::weight_grad_norm] = ||dw|| from its partials; the norms of the (cols,)
// vectors u, v into slots[u_slot], slots[v_slot] (NaN for a null vector).
template <class T>
__global__ void weight_norms_kernel(const SumSq<T>* dw_partials, int count, const T* u,
                                    int u_slot, const T* v, int v_slot, int64_t cols,
                                    double* slots) {
  const SumSq<T> dw = fold_partials(dw_partials, count, SumSq<T>{}, MergeSumSq<T>{});
  const double u_norm = u ? vector_norm(u, cols) : NAN;
  const double v_norm = v ? vector_norm(v, cols) : NAN;
  if (threadIdx.x != 0) return;
  slots[DenseSlot::weight_grad_norm] = dw.norm();
  slots[u_slot] = u_norm;
  slots[v_slot] = v_norm;
}


}  // namespace
}  // namespace vgkern
