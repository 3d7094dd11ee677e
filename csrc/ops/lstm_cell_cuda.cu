#include "ops/lstm_cell_cuda.h"

#include "cuda/activation_device.cuh"
#include "cuda/context.h"
#include "cuda/device_array.h"
#include "cuda/sequence_stats.cuh"
#include "cuda/sequence_stats.h"
#include "ops/rnn_cell_cuda.h"

namespace vgkern {
namespace {

template <class T>
__global__ void tanh_kernel(T* out, const T* v, int64_t n) {
  for (const int64_t i : grid_stride(n)) {
    T d;
    cuda::act_eval<Activation::tanh>(v[i], T(1), out[i], d);
  }
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

}  // namespace

template <class T>
void lstm_step_forward_stream(T* gates, T* c, T* h, T* tanh_c, const T* c_prev, int64_t rows,
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
void lstm_step_backward_stream(T* dpre, T* dc_prev, const T* dh_a, const T* dh_b, const T* dc,
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
void lstm_cell_forward_cuda(T* h, T* c, T* gates, const T* x, const T* h_prev, const T* c_prev,
                            const T* w_ih, const T* w_hh, const T* bias, int64_t rows, int64_t in,
                            int64_t hidden) {
  CudaContext& context = thread_cuda_context();
  DeviceArray<T> tanh_c(rows * hidden);
  cell_preactivations_stream<T>(context, gates, x, h_prev, w_ih, w_hh, bias, rows, in, hidden,
                                4 * hidden);
  lstm_step_forward_stream<T>(gates, c, h, tanh_c.data(), c_prev, rows, hidden, false, 0, nullptr,
                              context.stream());
  context.synchronize();
}

template <class T>
void lstm_cell_backward_cuda(T* dx, T* dh_prev, T* dc_prev, T* dw_ih, T* dw_hh, T* dbias,
                             const T* dh, const T* dc, const T* gates, const T* c,
                             const T* c_prev, const T* x, const T* h_prev, const T* w_ih,
                             const T* w_hh, int64_t rows, int64_t in, int64_t hidden) {
  CudaContext& context = thread_cuda_context();
  const int64_t n = rows * hidden;
  DeviceArray<T> tanh_c(n), dpre(4 * n);
  VGKERN_LAUNCH((tanh_kernel<T>), blocks_for(n), context.stream(), tanh_c.data(), c, n);
  lstm_step_backward_stream<T>(dpre.data(), dc_prev, dh, nullptr, dc, gates, c_prev,
                               tanh_c.data(), rows, hidden, false, 0, nullptr, context.stream());
  cell_weight_backward_stream<T>(context, dx, dh_prev, dw_ih, dw_hh, dbias, dpre.data(), x,
                                 h_prev, w_ih, w_hh, rows, in, hidden, 4 * hidden);
  context.synchronize();
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void lstm_step_forward_stream<T>(T*, T*, T*, T*, const T*, int64_t, int64_t, bool,   \
                                            int64_t, void*, cudaStream_t);                      \
  template void lstm_step_backward_stream<T>(T*, T*, const T*, const T*, const T*, const T*,    \
                                             const T*, const T*, int64_t, int64_t, bool,        \
                                             int64_t, void*, cudaStream_t);                     \
  template void lstm_cell_forward_cuda<T>(T*, T*, T*, const T*, const T*, const T*, const T*,   \
                                          const T*, const T*, int64_t, int64_t, int64_t);       \
  template void lstm_cell_backward_cuda<T>(T*, T*, T*, T*, T*, T*, const T*, const T*,          \
                                           const T*, const T*, const T*, const T*, const T*,    \
                                           const T*, const T*, int64_t, int64_t, int64_t);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
