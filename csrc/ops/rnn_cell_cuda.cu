#include "ops/rnn_cell_cuda.h"

#include "cuda/activation_device.cuh"
#include "cuda/context.h"
#include "cuda/device_array.h"
#include "cuda/sequence_stats.cuh"
#include "cuda/sequence_stats.h"

namespace vgkern {
namespace {

template <class T>
__global__ void broadcast_rows_kernel(T* pre, const T* bias, int64_t n, int64_t cols) {
  for (const int64_t i : grid_stride(n))
    pre[i] = bias[i % cols];
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

}  // namespace

template <class T>
void broadcast_rows_stream(T* pre, const T* bias, int64_t rows, int64_t cols,
                           cudaStream_t stream) {
  const int64_t n = rows * cols;
  VGKERN_LAUNCH((broadcast_rows_kernel<T>), blocks_for(n), stream, pre, bias, n, cols);
}

template <class T>
void column_sums_stream(T* out, const T* m, int64_t rows, int64_t cols, cudaStream_t stream) {
  VGKERN_LAUNCH((column_sums_kernel<T>), column_blocks(cols), stream, out, m, rows, cols);
}

template <class T>
void cell_preactivations_stream(const CudaContext& context, T* pre, const T* x, const T* h_prev,
                                const T* w_ih, const T* w_hh, const T* bias, int64_t rows,
                                int64_t in, int64_t hidden, int64_t gates) {
  broadcast_rows_stream<T>(pre, bias, rows, gates, context.stream());
  cuda_gemm<T>(context.cublas(), false, true, rows, gates, in, T(1), x, in, w_ih, in, T(1), pre,
               gates);
  cuda_gemm<T>(context.cublas(), false, true, rows, gates, hidden, T(1), h_prev, hidden, w_hh,
               hidden, T(1), pre, gates);
}

template <class T>
void cell_weight_backward_stream(const CudaContext& context, T* dx, T* dh_prev, T* dw_ih,
                                 T* dw_hh, T* dbias, const T* dpre, const T* x, const T* h_prev,
                                 const T* w_ih, const T* w_hh, int64_t rows, int64_t in,
                                 int64_t hidden, int64_t gates) {
  const CublasHandle blas = context.cublas();
  cuda_gemm<T>(blas, false, false, rows, in, gates, T(1), dpre, gates, w_ih, in, T(0), dx, in);
  cuda_gemm<T>(blas, false, false, rows, hidden, gates, T(1), dpre, gates, w_hh, hidden, T(0),
               dh_prev, hidden);
  cuda_gemm<T>(blas, true, false, gates, in, rows, T(1), dpre, gates, x, in, T(0), dw_ih, in);
  cuda_gemm<T>(blas, true, false, gates, hidden, rows, T(1), dpre, gates, h_prev, hidden, T(0),
               dw_hh, hidden);
  column_sums_stream<T>(dbias, dpre, rows, gates, context.stream());
}

template <class T>
void rnn_step_forward_stream(T* pre_h, int64_t rows, int64_t hidden, Activation act, bool stats,
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

template <class T>
void rnn_step_backward_stream(T* dpre, const T* dh_a, const T* dh_b, const T* h, int64_t rows,
                              int64_t hidden, Activation act, bool stats, int64_t t,
                              void* partials, cudaStream_t stream) {
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
void rnn_cell_forward_cuda(T* h, const T* x, const T* h_prev, const T* w_ih, const T* w_hh,
                           const T* bias, int64_t rows, int64_t in, int64_t hidden,
                           Activation act) {
  CudaContext& context = thread_cuda_context();
  cell_preactivations_stream<T>(context, h, x, h_prev, w_ih, w_hh, bias, rows, in, hidden,
                                hidden);
  rnn_step_forward_stream<T>(h, rows, hidden, act, false, 0, nullptr, context.stream());
  context.synchronize();
}

template <class T>
void rnn_cell_backward_cuda(T* dx, T* dh_prev, T* dw_ih, T* dw_hh, T* dbias, const T* dh,
                            const T* h, const T* x, const T* h_prev, const T* w_ih,
                            const T* w_hh, int64_t rows, int64_t in, int64_t hidden,
                            Activation act) {
  CudaContext& context = thread_cuda_context();
  DeviceArray<T> dpre(rows * hidden);
  rnn_step_backward_stream<T>(dpre.data(), dh, nullptr, h, rows, hidden, act, false, 0, nullptr,
                              context.stream());
  cell_weight_backward_stream<T>(context, dx, dh_prev, dw_ih, dw_hh, dbias, dpre.data(), x,
                                 h_prev, w_ih, w_hh, rows, in, hidden, hidden);
  context.synchronize();
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void broadcast_rows_stream<T>(T*, const T*, int64_t, int64_t, cudaStream_t);        \
  template void column_sums_stream<T>(T*, const T*, int64_t, int64_t, cudaStream_t);           \
  template void cell_preactivations_stream<T>(const CudaContext&, T*, const T*, const T*,       \
                                              const T*, const T*, const T*, int64_t, int64_t,   \
                                              int64_t, int64_t);                                \
  template void cell_weight_backward_stream<T>(const CudaContext&, T*, T*, T*, T*, T*,          \
                                               const T*, const T*, const T*, const T*,          \
                                               const T*, int64_t, int64_t, int64_t, int64_t);   \
  template void rnn_step_forward_stream<T>(T*, int64_t, int64_t, Activation, bool, int64_t,    \
                                           void*, cudaStream_t);                                \
  template void rnn_step_backward_stream<T>(T*, const T*, const T*, const T*, int64_t, int64_t, \
                                            Activation, bool, int64_t, void*, cudaStream_t);    \
  template void rnn_cell_forward_cuda<T>(T*, const T*, const T*, const T*, const T*, const T*,  \
                                         int64_t, int64_t, int64_t, Activation);               \
  template void rnn_cell_backward_cuda<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*,     \
                                          const T*, const T*, const T*, int64_t, int64_t,       \
                                          int64_t, Activation);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
