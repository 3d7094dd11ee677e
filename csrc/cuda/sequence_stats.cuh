// The per-block partials of the recurrent nets' per-step statistics: what the step kernels
// (ops/lstm_cell_cuda.cu, ops/rnn_cell_cuda.cu) leave and the fold kernels (cuda/sequence_stats.cu)
// turn into sequence slots (cuda/sequence_stats.h). Internal to those files (an unnamed
// namespace: each gets its own copy).
#pragma once
#include "cuda/layer_stats.cuh"

namespace vgkern {
namespace {

struct GatePartial {
  double forget_sum;
  long long saturated;
};
struct CombineGates {
  __device__ GatePartial operator()(GatePartial a, const GatePartial& b) const {
    a.forget_sum += b.forget_sum;
    a.saturated += b.saturated;
    return a;
  }
};
template <class T>
struct NormPartial {
  SumSq<T> h, c;
};
template <class T>
struct CombineNorms {
  __device__ NormPartial<T> operator()(NormPartial<T> a, const NormPartial<T>& b) const {
    a.h = SumSq<T>::merge(a.h, b.h);
    a.c = SumSq<T>::merge(a.c, b.c);
    return a;
  }
};

constexpr float kSigmoidSaturated = 0.01f * 0.25f;  // 1% of sigmoid's largest derivative
constexpr float kTanhSaturated = 0.01f;

}  // namespace
}  // namespace vgkern
