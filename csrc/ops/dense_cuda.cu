#include "ops/dense_cuda.h"

#include <cmath>

#include "cuda/activation_device.cuh"
#include "cuda/launch.cuh"
#include "cuda/reduce.cuh"

namespace vgkern {
namespace {

using cuda::Add;
using cuda::blocks_for;
using cuda::block_reduce;
using cuda::fold_partials;
using cuda::kMaxBlocks;
using cuda::kThreads;
using cuda::SumSq;
using cuda::MergeSumSq;

// Forward statistics, first pass (fused into the epilogue): what decides the scale of the
// moments (as core/stats.h's scaled_mean_std: max |z|, NaN seen) and the counts.
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
  size_t forward = 0, scaled = 0, dead = 0, totals = 0, sumsq_a = 0, sumsq_b = 0, bytes = 0;
  ScratchLayout() {
    auto take = [this](size_t size) {
      const size_t at = bytes;
      bytes += (size + 255) / 256 * 256;
      return at;
    };
    forward = take(kMaxBlocks * sizeof(ForwardPartial));
    scaled = take(kMaxBlocks * sizeof(double));
    dead = take(kMaxBlocks * sizeof(long long));
    totals = take(sizeof(ForwardTotals));
    sumsq_a = take(kMaxBlocks * sizeof(SumSq<double>));
    sumsq_b = take(kMaxBlocks * sizeof(SumSq<double>));
  }
};

struct Scratch {
  ForwardPartial* forward;
  double* scaled;      // scaled sums, then scaled squared deviations
  long long* dead;
  ForwardTotals* totals;
  void* sumsq_a;       // SumSq<T> partials: ||dh||, later ||dw||
  void* sumsq_b;       // SumSq<T> partials: ||delta||

  explicit Scratch(void* base) {
    const ScratchLayout layout;
    char* p = static_cast<char*>(base);
    forward = reinterpret_cast<ForwardPartial*>(p + layout.forward);
    scaled = reinterpret_cast<double*>(p + layout.scaled);
    dead = reinterpret_cast<long long*>(p + layout.dead);
    totals = reinterpret_cast<ForwardTotals*>(p + layout.totals);
    sumsq_a = p + layout.sumsq_a;
    sumsq_b = p + layout.sumsq_b;
  }
};

// ---- forward ----

template <class T, Activation K, bool Stats>
__global__ void epilogue_kernel(T* h, T* dact, T* z, const T* b, int64_t n, int64_t cols,
                                T alpha, T saturation_threshold, ForwardPartial* partials) {
  constexpr bool kCountSaturated =
      K == Activation::sigmoid || K == Activation::tanh || K == Activation::elu;
  ForwardPartial p{0, 0, 0, 0, 0};
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const T zi = z[i] + b[i % cols];
    T hv, dv;
    cuda::act_eval<K>(zi, alpha, hv, dv);
    h[i] = hv;
    if constexpr (K != Activation::identity) dact[i] = dv;
    if constexpr (Stats) {
      z[i] = zi;
      const double v = static_cast<double>(zi);
      if (isnan(v)) p.nan = 1; else p.max_abs = fmax(p.max_abs, fabs(v));
      p.plain_sum += v;
      if (kCountSaturated && dv < saturation_threshold) ++p.saturated;
      if (hv == T(0)) ++p.zeros;
    }
  }
  if constexpr (Stats) {
    p = block_reduce(p, CombineForward{});
    if (threadIdx.x == 0) partials[blockIdx.x] = p;
  }
}

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
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
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
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; j < cols; j += stride) {
    bool alive = false;
    for (int64_t i = 0; i < rows && !alive; ++i) alive = h[i * cols + j] != T(0);  // NaN: alive
    dead += alive ? 0 : 1;
  }
  dead = block_reduce(dead, Add{});
  if (threadIdx.x == 0) partials[blockIdx.x] = dead;
}

__global__ void forward_stats_kernel(const ForwardTotals* totals, const double* m2_partials,
                                     int m2_count, const long long* dead_partials, int dead_count,
                                     int64_t n, int64_t cols, double* slots) {
  const double m2 = fold_partials(m2_partials, m2_count, 0.0, Add{});
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
  slots[kSlotPreactMean] = mean;
  slots[kSlotPreactStd] = std;
  slots[kSlotSaturatedFraction] = static_cast<double>(t.all.saturated) / count;
  slots[kSlotZeroFraction] = static_cast<double>(t.all.zeros) / count;
  slots[kSlotDeadFraction] = static_cast<double>(dead) / static_cast<double>(cols);
}

// ---- backward ----

template <class T, bool HasDact, bool Norms>
__global__ void prologue_kernel(T* delta, const T* dh, const T* dact, int64_t n,
                                SumSq<T>* dh_partials, SumSq<T>* delta_partials) {
  SumSq<T> dh_sq, delta_sq;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const T g = dh[i];
    const T d = HasDact ? g * dact[i] : g;
    delta[i] = d;
    if constexpr (Norms) {
      dh_sq.add(g);
      delta_sq.add(d);
    }
  }
  if constexpr (Norms) {
    dh_sq = block_reduce(dh_sq, MergeSumSq<T>{});
    delta_sq = block_reduce(delta_sq, MergeSumSq<T>{});
    if (threadIdx.x == 0) {
      dh_partials[blockIdx.x] = dh_sq;
      delta_partials[blockIdx.x] = delta_sq;
    }
  }
}

// db[j] = sum over rows of delta[:, j], in float64, rows in order (one thread per column).
template <class T>
__global__ void column_sums_kernel(T* db, const T* delta, int64_t rows, int64_t cols) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; j < cols; j += stride) {
    double s = 0;
    for (int64_t i = 0; i < rows; ++i) s += static_cast<double>(delta[i * cols + j]);
    db[j] = static_cast<T>(s);
  }
}

template <class T>
__global__ void prologue_norms_kernel(const SumSq<T>* dh_partials, const SumSq<T>* delta_partials,
                                      int count, bool log_scale, double* slots) {
  const SumSq<T> dh = fold_partials(dh_partials, count, SumSq<T>{}, MergeSumSq<T>{});
  const SumSq<T> delta = fold_partials(delta_partials, count, SumSq<T>{}, MergeSumSq<T>{});
  if (threadIdx.x != 0) return;
  const double delta_norm = delta.norm();
  slots[kSlotActGradNorm] = dh.norm();
  slots[kSlotPreactGradNorm] = delta_norm;
  // as renormalize_power_of_two (core/stats.cpp)
  const bool rescale = log_scale && isfinite(delta_norm) && delta_norm > 0;
  slots[kSlotRescaleLog2] = rescale ? static_cast<double>(ilogb(delta_norm)) : 0.0;
}

// delta and db times 2^-e, e = slots[kSlotRescaleLog2] (exact: a power of two).
template <class T>
__global__ void rescale_kernel(T* delta, int64_t n, T* db, int64_t cols, const double* slots) {
  const int e = static_cast<int>(slots[kSlotRescaleLog2]);
  if (e == 0) return;
  const T factor = static_cast<T>(ldexp(1.0, -e));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    delta[i] *= factor;
    if (i < cols) db[i] *= factor;
  }
}

template <class T>
__global__ void sum_squares_kernel(const T* v, int64_t n, SumSq<T>* partials) {
  SumSq<T> acc;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride)
    acc.add(v[i]);
  acc = block_reduce(acc, MergeSumSq<T>{});
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <class T>
__global__ void weight_bias_norms_kernel(const SumSq<T>* dw_partials, int count, const T* db,
                                         int64_t cols, double* slots) {
  const SumSq<T> dw = fold_partials(dw_partials, count, SumSq<T>{}, MergeSumSq<T>{});
  SumSq<T> b;
  for (int64_t j = threadIdx.x; j < cols; j += kThreads) b.add(db[j]);
  b = block_reduce(b, MergeSumSq<T>{});
  if (threadIdx.x != 0) return;
  slots[kSlotWeightGradNorm] = dw.norm();
  slots[kSlotBiasGradNorm] = b.norm();
}

int column_blocks(int64_t cols) {
  return static_cast<int>(std::min<int64_t>((cols + kThreads - 1) / kThreads, kMaxBlocks));
}

}  // namespace

size_t dense_cuda_scratch_bytes() { return ScratchLayout().bytes; }

template <class T>
void dense_forward_epilogue_cuda(T* h, T* dact, T* z, const T* b, int64_t rows, int64_t cols,
                                 ActSpec act, double* slots, void* scratch, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  const Scratch s(scratch);
  const int blocks = blocks_for(n);
  const T alpha = static_cast<T>(act.alpha);
  const T threshold = static_cast<T>(0.01 * max_derivative(act));
  cuda::with_activation_kind(act.kind, [&](auto kind) {
    constexpr Activation K = decltype(kind)::value;
    if (slots)
      VGKERN_LAUNCH((epilogue_kernel<T, K, true>), blocks, stream, h, dact, z, b, n, cols, alpha,
                    threshold, s.forward);
    else
      VGKERN_LAUNCH((epilogue_kernel<T, K, false>), blocks, stream, h, dact, z, b, n, cols, alpha,
                    threshold, s.forward);
  });
  if (!slots) return;
  VGKERN_LAUNCH(forward_totals_kernel, 1, stream, s.forward, blocks, s.totals);
  VGKERN_LAUNCH((scaled_moment_kernel<T, false>), blocks, stream, z, n, s.totals, s.scaled);
  VGKERN_LAUNCH(scaled_mean_kernel, 1, stream, s.scaled, blocks, n, s.totals);
  VGKERN_LAUNCH((scaled_moment_kernel<T, true>), blocks, stream, z, n, s.totals, s.scaled);
  const int col_blocks = column_blocks(cols);
  VGKERN_LAUNCH((dead_columns_kernel<T>), col_blocks, stream, h, rows, cols, s.dead);
  VGKERN_LAUNCH(forward_stats_kernel, 1, stream, s.totals, s.scaled, blocks, s.dead, col_blocks,
                n, cols, slots);
}

template <class T>
void dense_backward_prologue_cuda(T* delta, T* db, const T* dh, const T* dact, int64_t rows,
                                  int64_t cols, bool norms, bool log_scale, double* slots,
                                  void* scratch, cudaStream_t stream) {
  const int64_t n = rows * cols;
  const Scratch s(scratch);
  const int blocks = blocks_for(n);
  auto* dh_partials = static_cast<SumSq<T>*>(s.sumsq_a);
  auto* delta_partials = static_cast<SumSq<T>*>(s.sumsq_b);
  norms = norms || log_scale;
  if (dact && norms)
    VGKERN_LAUNCH((prologue_kernel<T, true, true>), blocks, stream, delta, dh, dact, n,
                  dh_partials, delta_partials);
  else if (dact)
    VGKERN_LAUNCH((prologue_kernel<T, true, false>), blocks, stream, delta, dh, dact, n,
                  dh_partials, delta_partials);
  else if (norms)
    VGKERN_LAUNCH((prologue_kernel<T, false, true>), blocks, stream, delta, dh, dact, n,
                  dh_partials, delta_partials);
  else
    VGKERN_LAUNCH((prologue_kernel<T, false, false>), blocks, stream, delta, dh, dact, n,
                  dh_partials, delta_partials);
  VGKERN_LAUNCH((column_sums_kernel<T>), column_blocks(cols), stream, db, delta, rows, cols);
  if (!norms) return;
  VGKERN_LAUNCH((prologue_norms_kernel<T>), 1, stream, dh_partials, delta_partials, blocks,
                log_scale, slots);
  if (!log_scale) return;
  VGKERN_LAUNCH((rescale_kernel<T>), blocks_for(std::max(n, cols)), stream, delta, n, db, cols,
                slots);
}

template <class T>
void dense_backward_norms_cuda(const T* dw, int64_t n_dw, const T* db, int64_t cols,
                               double* slots, void* scratch, cudaStream_t stream) {
  const Scratch s(scratch);
  const int blocks = blocks_for(n_dw);
  auto* partials = static_cast<SumSq<T>*>(s.sumsq_a);
  VGKERN_LAUNCH((sum_squares_kernel<T>), blocks, stream, dw, n_dw, partials);
  VGKERN_LAUNCH((weight_bias_norms_kernel<T>), 1, stream, partials, blocks, db, cols, slots);
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void dense_forward_epilogue_cuda<T>(T*, T*, T*, const T*, int64_t, int64_t, ActSpec, \
                                               double*, void*, cudaStream_t);                   \
  template void dense_backward_prologue_cuda<T>(T*, T*, const T*, const T*, int64_t, int64_t,   \
                                                bool, bool, double*, void*, cudaStream_t);      \
  template void dense_backward_norms_cuda<T>(const T*, int64_t, const T*, int64_t, double*,     \
                                             void*, cudaStream_t);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
