#include "ops/recurrent_cuda.h"

#include "cuda/activation_device.cuh"
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

template <class T>
__global__ void broadcast_rows_kernel(T* pre, const T* bias, int64_t n, int64_t cols) {
  for (const int64_t i : grid_stride(n))
    pre[i] = bias[i % cols];
}

// Element e = (b, j) of a (rows, H) step, as lstm_forward_rows (ops/lstm_cell_cpu.cpp).
template <class T, bool Stats>
__global__ void lstm_forward_kernel(T* gates, T* c, T* h, T* tanh_c, const T* c_prev, int64_t n,
                                    int64_t hidden, GatePartial* partials) {
  GatePartial p{0, 0};
  for (const int64_t e : grid_stride(n)) {
    const int64_t b = e / hidden, j = e % hidden;
    T* gi = gates + b * 4 * hidden + j;  // i; f, g, o follow at strides of H
    T i, di, f, df, g, dg, o, dout, tc, dtc;
    cuda::act_eval<Activation::sigmoid>(gi[0], T(1), i, di);
    cuda::act_eval<Activation::sigmoid>(gi[hidden], T(1), f, df);
    cuda::act_eval<Activation::tanh>(gi[2 * hidden], T(1), g, dg);
    cuda::act_eval<Activation::sigmoid>(gi[3 * hidden], T(1), o, dout);
    const T cc = f * c_prev[e] + i * g;
    cuda::act_eval<Activation::tanh>(cc, T(1), tc, dtc);
    gi[0] = i;
    gi[hidden] = f;
    gi[2 * hidden] = g;
    gi[3 * hidden] = o;
    c[e] = cc;
    tanh_c[e] = tc;
    h[e] = o * tc;
    if constexpr (Stats) {
      p.forget_sum += static_cast<double>(f);
      p.saturated += (di < T(kSigmoidSaturated) ? 1 : 0) + (df < T(kSigmoidSaturated) ? 1 : 0) +
                     (dg < T(kTanhSaturated) ? 1 : 0) + (dout < T(kSigmoidSaturated) ? 1 : 0);
    }
  }
  if constexpr (Stats) {
    p = block_reduce(p, CombineGates{});
    if (threadIdx.x == 0) partials[blockIdx.x] = p;
  }
}

template <class T, Activation K, bool Stats>
__global__ void rnn_forward_kernel(T* pre_h, int64_t n, GatePartial* partials) {
  GatePartial p{0, 0};
  for (const int64_t i : grid_stride(n)) {
    T hv, d;
    cuda::act_eval<K>(pre_h[i], T(1), hv, d);
    pre_h[i] = hv;
    if constexpr (Stats && K == Activation::tanh) p.saturated += d < T(kTanhSaturated) ? 1 : 0;
  }
  if constexpr (Stats) {
    p = block_reduce(p, CombineGates{});
    if (threadIdx.x == 0) partials[blockIdx.x] = p;
  }
}

// As lstm_backward_rows (ops/lstm_cell_cpu.cpp).
template <class T, bool Stats>
__global__ void lstm_backward_kernel(T* dpre, T* dc_prev, const T* dh_a, const T* dh_b,
                                     const T* dc, const T* gates, const T* c_prev,
                                     const T* tanh_c, int64_t n, int64_t hidden,
                                     NormPartial<T>* partials) {
  NormPartial<T> p;
  for (const int64_t e : grid_stride(n)) {
    const int64_t b = e / hidden, j = e % hidden;
    const T* g4 = gates + b * 4 * hidden + j;
    T* d4 = dpre + b * 4 * hidden + j;
    const T i = g4[0], f = g4[hidden], g = g4[2 * hidden], o = g4[3 * hidden], tc = tanh_c[e];
    const T dh = dh_b ? dh_a[e] + dh_b[e] : dh_a[e];
    const T dct = dc[e] + dh * o * (T(1) - tc * tc);
    d4[0] = dct * g * i * (T(1) - i);
    d4[hidden] = dct * c_prev[e] * f * (T(1) - f);
    d4[2 * hidden] = dct * i * (T(1) - g * g);
    d4[3 * hidden] = dh * tc * o * (T(1) - o);
    dc_prev[e] = dct * f;
    if constexpr (Stats) {
      p.h.add(dh);
      p.c.add(dct);
    }
  }
  if constexpr (Stats) {
    p = block_reduce(p, CombineNorms<T>{});
    if (threadIdx.x == 0) partials[blockIdx.x] = p;
  }
}

// As rnn_backward_loop (ops/rnn_cell_cpu.cpp): the derivative from h.
template <class T, Activation K, bool Stats>
__global__ void rnn_backward_kernel(T* dpre, const T* dh_a, const T* dh_b, const T* h, int64_t n,
                                    NormPartial<T>* partials) {
  NormPartial<T> p;
  for (const int64_t i : grid_stride(n)) {
    const T g = dh_b ? dh_a[i] + dh_b[i] : dh_a[i];
    const T d = K == Activation::tanh ? T(1) - h[i] * h[i] : (h[i] > T(0) ? T(1) : T(0));
    dpre[i] = g * d;
    if constexpr (Stats) p.h.add(g);
  }
  if constexpr (Stats) {
    p = block_reduce(p, CombineNorms<T>{});
    if (threadIdx.x == 0) partials[blockIdx.x] = p;
  }
}

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

template <class T>
__global__ void norm_from_partials_kernel(const SumSq<T>* partials, int count, double* norm) {
  const SumSq<T> all = fold_partials(partials, count, SumSq<T>{}, MergeSumSq<T>{});
  if (threadIdx.x == 0) *norm = all.norm();
}

int grid_of_steps(int64_t steps) { return static_cast<int>(steps); }

}  // namespace

int recurrent_step_blocks(int64_t rows, int64_t hidden) { return blocks_for(rows * hidden); }

size_t recurrent_partials_bytes(int64_t steps, int64_t rows, int64_t hidden) {
  const size_t per = std::max(sizeof(GatePartial), sizeof(NormPartial<double>));
  return static_cast<size_t>(steps) * recurrent_step_blocks(rows, hidden) * per;
}

template <class T>
void broadcast_rows_cuda(T* pre, const T* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  const int64_t n = rows * cols;
  VGKERN_LAUNCH((broadcast_rows_kernel<T>), blocks_for(n), stream, pre, bias, n, cols);
}

template <class T>
void lstm_step_forward_cuda(T* gates, T* c, T* h, T* tanh_c, const T* c_prev, int64_t rows,
                            int64_t hidden, bool stats, int64_t t, void* partials,
                            cudaStream_t stream) {
  const int blocks = recurrent_step_blocks(rows, hidden);
  GatePartial* step = static_cast<GatePartial*>(partials) + t * blocks;
  if (stats)
    VGKERN_LAUNCH((lstm_forward_kernel<T, true>), blocks, stream, gates, c, h, tanh_c, c_prev,
                  rows * hidden, hidden, step);
  else
    VGKERN_LAUNCH((lstm_forward_kernel<T, false>), blocks, stream, gates, c, h, tanh_c, c_prev,
                  rows * hidden, hidden, step);
}

template <class T>
void rnn_step_forward_cuda(T* pre_h, int64_t rows, int64_t hidden, Activation act, bool stats,
                           int64_t t, void* partials, cudaStream_t stream) {
  const int blocks = recurrent_step_blocks(rows, hidden);
  GatePartial* step = static_cast<GatePartial*>(partials) + t * blocks;
  const int64_t n = rows * hidden;
  if (act == Activation::relu && stats)
    VGKERN_LAUNCH((rnn_forward_kernel<T, Activation::relu, true>), blocks, stream, pre_h, n, step);
  else if (act == Activation::relu)
    VGKERN_LAUNCH((rnn_forward_kernel<T, Activation::relu, false>), blocks, stream, pre_h, n,
                  step);
  else if (stats)
    VGKERN_LAUNCH((rnn_forward_kernel<T, Activation::tanh, true>), blocks, stream, pre_h, n, step);
  else
    VGKERN_LAUNCH((rnn_forward_kernel<T, Activation::tanh, false>), blocks, stream, pre_h, n,
                  step);
}

void fold_forward_steps_cuda(const void* partials, int64_t steps, int64_t rows, int64_t hidden,
                             double* seq_slots, cudaStream_t stream) {
  VGKERN_LAUNCH(fold_forward_kernel, grid_of_steps(steps), stream,
                static_cast<const GatePartial*>(partials), recurrent_step_blocks(rows, hidden),
                seq_slots);
}

template <class T>
void lstm_step_backward_cuda(T* dpre, T* dc_prev, const T* dh_a, const T* dh_b, const T* dc,
                             const T* gates, const T* c_prev, const T* tanh_c, int64_t rows,
                             int64_t hidden, bool stats, int64_t t, void* partials,
                             cudaStream_t stream) {
  const int blocks = recurrent_step_blocks(rows, hidden);
  NormPartial<T>* step = static_cast<NormPartial<T>*>(partials) + t * blocks;
  if (stats)
    VGKERN_LAUNCH((lstm_backward_kernel<T, true>), blocks, stream, dpre, dc_prev, dh_a, dh_b, dc,
                  gates, c_prev, tanh_c, rows * hidden, hidden, step);
  else
    VGKERN_LAUNCH((lstm_backward_kernel<T, false>), blocks, stream, dpre, dc_prev, dh_a, dh_b, dc,
                  gates, c_prev, tanh_c, rows * hidden, hidden, step);
}

template <class T>
void rnn_step_backward_cuda(T* dpre, const T* dh_a, const T* dh_b, const T* h, int64_t rows,
                            int64_t hidden, Activation act, bool stats, int64_t t, void* partials,
                            cudaStream_t stream) {
  const int blocks = recurrent_step_blocks(rows, hidden);
  NormPartial<T>* step = static_cast<NormPartial<T>*>(partials) + t * blocks;
  const int64_t n = rows * hidden;
  if (act == Activation::relu && stats)
    VGKERN_LAUNCH((rnn_backward_kernel<T, Activation::relu, true>), blocks, stream, dpre, dh_a,
                  dh_b, h, n, step);
  else if (act == Activation::relu)
    VGKERN_LAUNCH((rnn_backward_kernel<T, Activation::relu, false>), blocks, stream, dpre, dh_a,
                  dh_b, h, n, step);
  else if (stats)
    VGKERN_LAUNCH((rnn_backward_kernel<T, Activation::tanh, true>), blocks, stream, dpre, dh_a,
                  dh_b, h, n, step);
  else
    VGKERN_LAUNCH((rnn_backward_kernel<T, Activation::tanh, false>), blocks, stream, dpre, dh_a,
                  dh_b, h, n, step);
}

template <class T>
void fold_backward_steps_cuda(const void* partials, int64_t steps, int64_t rows, int64_t hidden,
                              bool lstm, double* seq_slots, cudaStream_t stream) {
  VGKERN_LAUNCH((fold_backward_kernel<T>), grid_of_steps(steps), stream,
                static_cast<const NormPartial<T>*>(partials), recurrent_step_blocks(rows, hidden),
                lstm, seq_slots);
}

template <class T>
void step_norms_cuda(const T* v, int64_t steps, int64_t per_step, double* seq_slots,
                     cudaStream_t stream) {
  VGKERN_LAUNCH((step_norms_kernel<T>), grid_of_steps(steps), stream, v, per_step, seq_slots);
}

template <class T>
void column_sums_cuda(T* out, const T* m, int64_t rows, int64_t cols, cudaStream_t stream) {
  VGKERN_LAUNCH((column_sums_kernel<T>), column_blocks(cols), stream, out, m, rows, cols);
}

template <class T>
void norm_cuda(double* norm, const T* v, int64_t n, void* scratch, cudaStream_t stream) {
  const Scratch s(scratch);
  auto* partials = static_cast<SumSq<T>*>(s.sumsq_a);
  const int blocks = blocks_for(n);
  VGKERN_LAUNCH((sum_squares_kernel<T>), blocks, stream, v, n, partials);
  VGKERN_LAUNCH((norm_from_partials_kernel<T>), 1, stream, partials, blocks, norm);
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void broadcast_rows_cuda<T>(T*, const T*, int64_t, int64_t, cudaStream_t);          \
  template void lstm_step_forward_cuda<T>(T*, T*, T*, T*, const T*, int64_t, int64_t, bool,     \
                                          int64_t, void*, cudaStream_t);                        \
  template void rnn_step_forward_cuda<T>(T*, int64_t, int64_t, Activation, bool, int64_t,      \
                                         void*, cudaStream_t);                                  \
  template void lstm_step_backward_cuda<T>(T*, T*, const T*, const T*, const T*, const T*,      \
                                           const T*, const T*, int64_t, int64_t, bool, int64_t, \
                                           void*, cudaStream_t);                                \
  template void rnn_step_backward_cuda<T>(T*, const T*, const T*, const T*, int64_t, int64_t,   \
                                          Activation, bool, int64_t, void*, cudaStream_t);      \
  template void fold_backward_steps_cuda<T>(const void*, int64_t, int64_t, int64_t, bool,       \
                                            double*, cudaStream_t);                             \
  template void step_norms_cuda<T>(const T*, int64_t, int64_t, double*, cudaStream_t);         \
  template void column_sums_cuda<T>(T*, const T*, int64_t, int64_t, cudaStream_t);             \
  template void norm_cuda<T>(double*, const T*, int64_t, void*, cudaStream_t);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
