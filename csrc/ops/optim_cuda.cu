// ops/optim.h on the GPU: the segments are cut into chunks of kChunk entries, one block each
// (a chunk never spans two segments). A block updates its chunk with the rule of optim_rule.h
// and folds five float64 sums of squares (update, before, after, after - reference, reference;
// cuda/reduce.cuh's SumSq: exact range for double data) into one partial per chunk; a second
// kernel folds each segment's partials in chunk order (deterministic: no atomics) into its
// statistics row. One upload of the chunk table, one download of the rows.
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cuda/context.h"
#include "cuda/device_array.h"
#include "cuda/launch.cuh"
#include "cuda/reduce.cuh"
#include "ops/optim_cuda.h"
#include "ops/optim_rule.h"

namespace vgkern {
namespace {

using cuda::block_reduce;
using cuda::kThreads;
using cuda::SumSq;

constexpr int64_t kChunk = 8 * kThreads;  // entries per block

// The sum of squares of differences of two T values, taken in double: for float data a plain
// double sum (never under- or overflows), for double data SumSq<double> (scaled).
struct PlainSumSq {
  double ssq = 0;
  __device__ void add(double v) { ssq += v * v; }
  __device__ static PlainSumSq merge(PlainSumSq a, PlainSumSq b) {
    a.ssq += b.ssq;
    return a;
  }
  __device__ double norm() const { return sqrt(ssq); }
};
template <class T>
using DiffSumSq = std::conditional_t<std::is_same_v<T, float>, PlainSumSq, SumSq<double>>;

template <class T>
struct UpdatePartial {
  DiffSumSq<T> update, moved;      // after - before, after - reference
  SumSq<T> before, after, reference;
  __device__ void add(T old, T now, T ref) {
    update.add(static_cast<double>(now) - static_cast<double>(old));
    moved.add(static_cast<double>(now) - static_cast<double>(ref));
    before.add(old);
    after.add(now);
    reference.add(ref);
  }
};
template <class T>
struct MergeUpdate {
  __device__ UpdatePartial<T> operator()(UpdatePartial<T> a, const UpdatePartial<T>& b) const {
    a.update = DiffSumSq<T>::merge(a.update, b.update);
    a.moved = DiffSumSq<T>::merge(a.moved, b.moved);
    a.before = SumSq<T>::merge(a.before, b.before);
    a.after = SumSq<T>::merge(a.after, b.after);
    a.reference = SumSq<T>::merge(a.reference, b.reference);
    return a;
  }
};

// The chunk table (int64): per chunk [segment, first entry in the segment, entries]; per segment
// [offset, grad_log2_scale, stats row, first chunk, chunks].
constexpr int kChunkFields = 3, kSegmentFields = 5;

enum class Kind { sgd_plain, sgd_momentum, adam, adamw };

template <class T, Kind kKind>
__global__ void optim_update_kernel(T* params, T* state1, T* state2, const T* grads,
                                    const T* reference, const int64_t* chunks,
                                    const int64_t* segments, OptimCoefficients<T> k,
                                    UpdatePartial<T>* partials) {
  const int64_t* chunk = chunks + kChunkFields * blockIdx.x;
  const int64_t* segment = segments + kSegmentFields * chunk[0];
  const int64_t first = segment[0] + chunk[1], n = chunk[2];
  const int e = static_cast<int>(segment[1]);
  const bool multiply = e >= std::numeric_limits<T>::min_exponent - 1 &&
                        e < std::numeric_limits<T>::max_exponent;
  const T scale = multiply ? static_cast<T>(ldexp(1.0, e)) : T(1);
  UpdatePartial<T> acc;
  for (int64_t j = threadIdx.x; j < n; j += kThreads) {
    const int64_t i = first + j;
    const T g = multiply ? grads[i] * scale : static_cast<T>(ldexp(grads[i], e));
    const T old = params[i];
    T now;
    if constexpr (kKind == Kind::sgd_plain) now = sgd_update<T>(k, old, g, nullptr);
    if constexpr (kKind == Kind::sgd_momentum) now = sgd_update<T>(k, old, g, state1 + i);
    if constexpr (kKind == Kind::adam)
      now = adam_update<T, false>(k, old, g, state1 + i, state2 + i);
    if constexpr (kKind == Kind::adamw)
      now = adam_update<T, true>(k, old, g, state1 + i, state2 + i);
    params[i] = now;
    acc.add(old, now, reference[i]);
  }
  acc = block_reduce(acc, MergeUpdate<T>{});
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// One block per segment: its partials folded in chunk order into its stats row.
template <class T>
__global__ void optim_stats_kernel(const UpdatePartial<T>* partials, const int64_t* segments,
                                   double* stats) {
  const int64_t* segment = segments + kSegmentFields * blockIdx.x;
  const int64_t row = segment[2];
  if (row < 0) return;
  const UpdatePartial<T> all =
      cuda::fold_partials(partials + segment[3], static_cast<int>(segment[4]),
                          UpdatePartial<T>{}, MergeUpdate<T>{});
  if (threadIdx.x != 0) return;
  double* out = stats + row * UpdateStat::kCount;
  const double update = all.update.norm();
  out[UpdateStat::update_norm] = update;
  out[UpdateStat::update_ratio] = update / all.before.norm();
  out[UpdateStat::norm] = all.after.norm();
  out[UpdateStat::change] = all.moved.norm() / all.reference.norm();
}

// Scratch that grows and stays (per thread: the calling thread's stream owns its use).
template <class T>
T* thread_scratch(int64_t count, int slot) {
  thread_local DeviceArray<unsigned char> buffers[3];
  DeviceArray<unsigned char>& b = buffers[slot];
  const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
  if (b.size() < bytes) b.resize(bytes);
  return reinterpret_cast<T*>(b.data());
}

}  // namespace

template <class T>
void optim_update_cuda(T* params, T* state1, T* state2, const T* grads, const T* reference,
                       const std::vector<OptimSegment>& segments, const OptimConfig& config,
                       double* stats, int64_t rows) {
  // the tables: chunks, then segments (int64)
  std::vector<int64_t> table;
  int64_t num_chunks = 0;
  for (const OptimSegment& s : segments) num_chunks += (s.count + kChunk - 1) / kChunk;
  table.reserve(kChunkFields * num_chunks + kSegmentFields * segments.size());
  for (size_t i = 0; i < segments.size(); ++i)
    for (int64_t start = 0; start < segments[i].count; start += kChunk)
      table.insert(table.end(), {static_cast<int64_t>(i), start,
                                 std::min(kChunk, segments[i].count - start)});
  int64_t chunk = 0;
  for (const OptimSegment& s : segments) {
    const int64_t count = (s.count + kChunk - 1) / kChunk;
    table.insert(table.end(), {s.offset, s.grad_log2_scale, s.stats_row, chunk, count});
    chunk += count;
  }
  for (int64_t i = 0; i < rows * UpdateStat::kCount; ++i)
    stats[i] = std::numeric_limits<double>::quiet_NaN();
  if (segments.empty()) return;

  CudaContext& context = thread_cuda_context();
  const cudaStream_t stream = context.stream();
  int64_t* device_table = thread_scratch<int64_t>(static_cast<int64_t>(table.size()), 0);
  const int64_t* device_segments = device_table + kChunkFields * num_chunks;
  auto* partials = thread_scratch<UpdatePartial<T>>(std::max<int64_t>(num_chunks, 1), 1);
  double* slots = thread_scratch<double>(std::max<int64_t>(rows * UpdateStat::kCount, 1), 2);
  VGKERN_CUDA_CHECK(cudaMemcpyAsync(device_table, table.data(), table.size() * sizeof(int64_t),
                                    cudaMemcpyHostToDevice, stream));
  if (rows > 0)
    VGKERN_CUDA_CHECK(cudaMemcpyAsync(slots, stats, rows * UpdateStat::kCount * sizeof(double),
                                      cudaMemcpyHostToDevice, stream));
  const OptimCoefficients<T> k = OptimCoefficients<T>::make(config);
  const int blocks = static_cast<int>(num_chunks);
  if (num_chunks > 0) {
    switch (config.rule) {
      case OptimRule::sgd:
        if (k.momentum_on)
          VGKERN_LAUNCH((optim_update_kernel<T, Kind::sgd_momentum>), blocks, stream, params,
                        state1, state2, grads, reference, device_table, device_segments, k,
                        partials);
        else
          VGKERN_LAUNCH((optim_update_kernel<T, Kind::sgd_plain>), blocks, stream, params, state1,
                        state2, grads, reference, device_table, device_segments, k, partials);
        break;
      case OptimRule::adam:
        VGKERN_LAUNCH((optim_update_kernel<T, Kind::adam>), blocks, stream, params, state1,
                      state2, grads, reference, device_table, device_segments, k, partials);
        break;
      case OptimRule::adamw:
        VGKERN_LAUNCH((optim_update_kernel<T, Kind::adamw>), blocks, stream, params, state1,
                      state2, grads, reference, device_table, device_segments, k, partials);
        break;
    }
    VGKERN_LAUNCH((optim_stats_kernel<T>), static_cast<int>(segments.size()), stream, partials,
                  device_segments, slots);
  }
  if (rows > 0)
    copy_buffer_to_host(context, slots, rows * UpdateStat::kCount * sizeof(double), stats);
  else
    context.synchronize();
}

#define VGKERN_INSTANTIATE(T)                                                                    \
  template void optim_update_cuda<T>(T*, T*, T*, const T*, const T*,                             \
                                     const std::vector<OptimSegment>&, const OptimConfig&,       \
                                     double*, int64_t);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
