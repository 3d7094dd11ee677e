#include "cuda/sequence_stats.h"

#include <algorithm>

#include "cuda/sequence_stats.cuh"

namespace vgkern {
namespace {

// Block t folds step t's partials into its sequence slots.
__global__ void fold_forward_kernel(const GatePartial* partials, int per_step, double* seq_slots) {
  const int64_t t = blockIdx.x;
  const GatePartial all =
      fold_partials(partials + t * per_step, per_step, GatePartial{0, 0}, CombineGates{});
  if (threadIdx.x != 0) return;
  double* slots = seq_slots + t * kNumSeqSlots;
  slots[kSeqForgetSum] = all.forget_sum;
  slots[kSeqSaturated] = static_cast<double>(all.saturated);
}

template <class T>
__global__ void fold_backward_kernel(const NormPartial<T>* partials, int per_step, bool lstm,
                                     double* seq_slots) {
  const int64_t t = blockIdx.x;
  const NormPartial<T> all =
      fold_partials(partials + t * per_step, per_step, NormPartial<T>{}, CombineNorms<T>{});
  if (threadIdx.x != 0) return;
  double* slots = seq_slots + t * kNumSeqSlots;
  slots[kSeqHNorm] = all.h.norm();
  slots[kSeqCNorm] = lstm ? all.c.norm() : NAN;
}

// Block t: the norm of v[t] (per_step entries).
template <class T>
__global__ void step_norms_kernel(const T* v, int64_t per_step, double* seq_slots) {
  const int64_t t = blockIdx.x;
  const double norm = vector_norm(v + t * per_step, per_step);
  if (threadIdx.x == 0) seq_slots[t * kNumSeqSlots + kSeqXNorm] = norm;
}

int grid_of_steps(int64_t steps) { return static_cast<int>(steps); }

}  // namespace

int recurrent_step_blocks(int64_t rows, int64_t hidden) { return blocks_for(rows * hidden); }

size_t recurrent_partials_bytes(int64_t steps, int64_t rows, int64_t hidden) {
  const size_t per = std::max(sizeof(GatePartial), sizeof(NormPartial<double>));
  return static_cast<size_t>(steps) * recurrent_step_blocks(rows, hidden) * per;
}

void fold_forward_steps_stream(const void* partials, int64_t steps, int64_t rows, int64_t hidden,
                               double* seq_slots, cudaStream_t stream) {
  VGKERN_LAUNCH(fold_forward_kernel, grid_of_steps(steps), stream,
                static_cast<const GatePartial*>(partials), recurrent_step_blocks(rows, hidden),
                seq_slots);
}

template <class T>
void fold_backward_steps_stream(const void* partials, int64_t steps, int64_t rows, int64_t hidden,
                                bool lstm, double* seq_slots, cudaStream_t stream) {
  VGKERN_LAUNCH((fold_backward_kernel<T>), grid_of_steps(steps), stream,
                static_cast<const NormPartial<T>*>(partials), recurrent_step_blocks(rows, hidden),
                lstm, seq_slots);
}

template <class T>
void step_norms_stream(const T* v, int64_t steps, int64_t per_step, double* seq_slots,
                       cudaStream_t stream) {
  VGKERN_LAUNCH((step_norms_kernel<T>), grid_of_steps(steps), stream, v, per_step, seq_slots);
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void fold_backward_steps_stream<T>(const void*, int64_t, int64_t, int64_t, bool,     \
                                              double*, cudaStream_t);                           \
  template void step_norms_stream<T>(const T*, int64_t, int64_t, double*, cudaStream_t);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
