#include "ops/ops_cuda.h"

#include <memory>

#include "cuda/activation_device.cuh"
#include "cuda/context.h"
#include "cuda/device_array.h"
#include "cuda/launch.cuh"
#include "ops/batchnorm_cuda.h"
#include "ops/dense_cuda.h"
#include "ops/loss_cuda.h"
#include "ops/recurrent_cuda.h"

namespace vgkern {
namespace {

using cuda::blocks_for;
using cuda::grid_stride;

CudaContext& default_context() { return thread_cuda_context(); }

template <class T, Activation K>
__global__ void activation_forward_kernel(T* h, T* dact, const T* z, int64_t n, T alpha) {
  for (const int64_t i : grid_stride(n)) cuda::act_eval<K>(z[i], alpha, h[i], dact[i]);
}

template <class T, Activation K>
__global__ void activation_backward_kernel(T* dz, const T* dh, const T* z, int64_t n, T alpha) {
  for (const int64_t i : grid_stride(n)) {
    T hv, dv;
    cuda::act_eval<K>(z[i], alpha, hv, dv);
    dz[i] = dh[i] * dv;
  }
}

template <class T>
__global__ void fill_kernel(T* v, int64_t n, T value) {
  for (const int64_t i : grid_stride(n)) v[i] = value;
}

template <class T>
__global__ void tanh_kernel(T* out, const T* v, int64_t n) {
  for (const int64_t i : grid_stride(n)) {
    T d;
    cuda::act_eval<Activation::tanh>(v[i], T(1), out[i], d);
  }
}

// pre (rows, G) = bias + x W_ih^T + h_prev W_hh^T, as cell_preactivations_cpu.
template <class T>
void cell_preactivations(const CudaContext& context, T* pre, const T* x, const T* h_prev,
                         const T* w_ih, const T* w_hh, const T* bias, int64_t rows, int64_t in,
                         int64_t hidden, int64_t gates) {
  broadcast_rows_cuda<T>(pre, bias, rows, gates, context.stream());
  cuda_gemm<T>(context.cublas(), false, true, rows, gates, in, T(1), x, in, w_ih, in, T(1), pre,
               gates);
  cuda_gemm<T>(context.cublas(), false, true, rows, gates, hidden, T(1), h_prev, hidden, w_hh,
               hidden, T(1), pre, gates);
}

// dx, dh_prev, dw_ih, dw_hh and dbias from dpre (rows, G), as cell_weight_backward_cpu.
template <class T>
void cell_weight_backward(const CudaContext& context, T* dx, T* dh_prev, T* dw_ih, T* dw_hh,
                          T* dbias, const T* dpre, const T* x, const T* h_prev, const T* w_ih,
                          const T* w_hh, int64_t rows, int64_t in, int64_t hidden,
                          int64_t gates) {
  const CublasHandle blas = context.cublas();
  cuda_gemm<T>(blas, false, false, rows, in, gates, T(1), dpre, gates, w_ih, in, T(0), dx, in);
  cuda_gemm<T>(blas, false, false, rows, hidden, gates, T(1), dpre, gates, w_hh, hidden, T(0),
               dh_prev, hidden);
  cuda_gemm<T>(blas, true, false, gates, in, rows, T(1), dpre, gates, x, in, T(0), dw_ih, in);
  cuda_gemm<T>(blas, true, false, gates, hidden, rows, T(1), dpre, gates, h_prev, hidden, T(0),
               dw_hh, hidden);
  column_sums_cuda<T>(dbias, dpre, rows, gates, context.stream());
}

}  // namespace

template <class T>
void activation_forward_cuda(T* h, T* dact, const T* z, int64_t n, ActSpec act) {
  CudaContext& context = default_context();
  with_activation(act.kind, [&](auto kind) {
    VGKERN_LAUNCH((activation_forward_kernel<T, decltype(kind)::value>), blocks_for(n),
                  context.stream(), h, dact, z, n, static_cast<T>(act.alpha));
  });
  context.synchronize();
}

template <class T>
void activation_backward_cuda(T* dz, const T* dh, const T* z, int64_t n, ActSpec act) {
  CudaContext& context = default_context();
  with_activation(act.kind, [&](auto kind) {
    VGKERN_LAUNCH((activation_backward_kernel<T, decltype(kind)::value>), blocks_for(n),
                  context.stream(), dz, dh, z, n, static_cast<T>(act.alpha));
  });
  context.synchronize();
}

template <class T>
void dense_forward_cuda(T* h, T* dact, const T* x, const T* w, const T* b, int64_t rows,
                        int64_t in, int64_t out, ActSpec act) {
  CudaContext& context = default_context();
  DeviceArray<T> zero_bias(b ? 0 : out);
  if (!b) {
    VGKERN_LAUNCH((fill_kernel<T>), blocks_for(out), context.stream(), zero_bias.data(), out, T(0));
    b = zero_bias.data();
  }
  // z into h, then the epilogue in place (h = act(z + b)); the identity's dact is all ones
  cuda_gemm<T>(context.cublas(), false, true, rows, out, in, T(1), x, in, w, in, T(0), h, out);
  DeviceArray<unsigned char> scratch(dense_cuda_scratch_bytes(0));
  dense_forward_epilogue_cuda<T>(h, dact, h, b, rows, out, act, nullptr, scratch.data(),
                                 context.stream());
  if (act.kind == Activation::identity)
    VGKERN_LAUNCH((fill_kernel<T>), blocks_for(rows * out), context.stream(), dact, rows * out,
                  T(1));
  context.synchronize();
}

template <class T>
void dense_backward_cuda(T* dx, T* dw, T* db, const T* dh, const T* dact, const T* x, const T* w,
                         int64_t rows, int64_t in, int64_t out) {
  CudaContext& context = default_context();
  DeviceArray<T> delta(rows * out);
  DeviceArray<unsigned char> scratch(dense_cuda_scratch_bytes(0));
  dense_backward_prologue_cuda<T>(delta.data(), db, dh, dact, rows, out, false, false, nullptr,
                                  scratch.data(), context.stream());
  cuda_gemm<T>(context.cublas(), true, false, out, in, rows, T(1), delta.data(), out, x, in, T(0),
               dw, in);
  if (dx)
    cuda_gemm<T>(context.cublas(), false, false, rows, in, out, T(1), delta.data(), out, w, in,
                 T(0), dx, in);
  context.synchronize();
}

template <class T>
double mse_loss_op_cuda(T* dout, const T* out, const T* target, int64_t rows, int64_t cols) {
  CudaContext& context = default_context();
  DeviceArray<unsigned char> scratch(loss_cuda_scratch_bytes());
  DeviceArray<double> slot(1);
  check_target_finite_on(Device::cuda, target, rows, cols, slot.data(), scratch.data(),
                         context.stream());
  mse_loss_cuda<T>(dout, out, target, rows, cols, rows, slot.data(), scratch.data(),
                   context.stream());
  double loss = 0;
  copy_buffer_to_host(context, slot.data(), sizeof(double), &loss);
  return loss;
}

template <class T>
double cross_entropy_loss_op_cuda(T* dlogits, const T* logits, const int64_t* host_labels,
                                  int64_t rows, int64_t cols) {
  CudaContext& context = default_context();
  DeviceArray<unsigned char> scratch(loss_cuda_scratch_bytes());
  DeviceArray<double> slot(1), row_losses(rows);
  DeviceArray<int64_t> labels(rows);
  copy_buffer_from_host(context, labels.data(), host_labels, rows * sizeof(int64_t));
  cross_entropy_loss_cuda<T>(dlogits, logits, labels.data(), rows, cols, row_losses.data(),
                             slot.data(), scratch.data(), context.stream());
  double loss = 0;
  copy_buffer_to_host(context, slot.data(), sizeof(double), &loss);
  return loss;
}

template <class T>
double sum_squares_norm_cuda(const T* v, int64_t n) {
  CudaContext& context = default_context();
  DeviceArray<unsigned char> scratch(dense_cuda_scratch_bytes(0));
  DeviceArray<double> slot(1);
  norm_cuda<T>(slot.data(), v, n, scratch.data(), context.stream());
  double norm = 0;
  copy_buffer_to_host(context, slot.data(), sizeof(double), &norm);
  return norm;
}

template <class T>
void fill_zero_cuda(T* v, int64_t n) {
  CudaContext& context = default_context();
  VGKERN_CUDA_CHECK(cudaMemsetAsync(v, 0, n * sizeof(T), context.stream()));
  context.synchronize();
}

template <class T>
void batchnorm_forward_cuda(T* y, T* mean, T* rstd, T* running_mean, T* running_var, const T* x,
                            const T* gamma, const T* beta, int64_t rows, int64_t cols,
                            BatchNormSpec bn) {
  CudaContext& context = default_context();
  DeviceArray<T> xhat(rows * cols);
  DeviceArray<unsigned char> scratch(dense_cuda_scratch_bytes(cols));
  batchnorm_forward_op_cuda<T>(y, mean, rstd, running_mean, running_var, xhat.data(), x, gamma,
                               beta, rows, cols, bn, scratch.data(), context.stream());
  context.synchronize();
}

template <class T>
void batchnorm_backward_cuda(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                             const T* rstd, const T* gamma, int64_t rows, int64_t cols,
                             bool training) {
  CudaContext& context = default_context();
  DeviceArray<T> xhat(rows * cols);
  DeviceArray<unsigned char> scratch(dense_cuda_scratch_bytes(cols));
  batchnorm_backward_op_cuda<T>(dx, dgamma, dbeta, xhat.data(), dy, x, mean, rstd, gamma, rows,
                                cols, training, scratch.data(), context.stream());
  context.synchronize();
}

template <class T>
void lstm_cell_forward_cuda(T* h, T* c, T* gates, const T* x, const T* h_prev, const T* c_prev,
                            const T* w_ih, const T* w_hh, const T* bias, int64_t rows, int64_t in,
                            int64_t hidden) {
  CudaContext& context = default_context();
  DeviceArray<T> tanh_c(rows * hidden);
  cell_preactivations<T>(context, gates, x, h_prev, w_ih, w_hh, bias, rows, in, hidden,
                         4 * hidden);
  lstm_step_forward_cuda<T>(gates, c, h, tanh_c.data(), c_prev, rows, hidden, false, 0, nullptr,
                            context.stream());
  context.synchronize();
}

template <class T>
void lstm_cell_backward_cuda(T* dx, T* dh_prev, T* dc_prev, T* dw_ih, T* dw_hh, T* dbias,
                             const T* dh, const T* dc, const T* gates, const T* c,
                             const T* c_prev, const T* x, const T* h_prev, const T* w_ih,
                             const T* w_hh, int64_t rows, int64_t in, int64_t hidden) {
  CudaContext& context = default_context();
  const int64_t n = rows * hidden;
  DeviceArray<T> tanh_c(n), dpre(4 * n);
  VGKERN_LAUNCH((tanh_kernel<T>), blocks_for(n), context.stream(), tanh_c.data(), c, n);
  lstm_step_backward_cuda<T>(dpre.data(), dc_prev, dh, nullptr, dc, gates, c_prev, tanh_c.data(),
                             rows, hidden, false, 0, nullptr, context.stream());
  cell_weight_backward<T>(context, dx, dh_prev, dw_ih, dw_hh, dbias, dpre.data(), x, h_prev,
                          w_ih, w_hh, rows, in, hidden, 4 * hidden);
  context.synchronize();
}

template <class T>
void rnn_cell_forward_cuda(T* h, const T* x, const T* h_prev, const T* w_ih, const T* w_hh,
                           const T* bias, int64_t rows, int64_t in, int64_t hidden,
                           Activation act) {
  CudaContext& context = default_context();
  cell_preactivations<T>(context, h, x, h_prev, w_ih, w_hh, bias, rows, in, hidden, hidden);
  rnn_step_forward_cuda<T>(h, rows, hidden, act, false, 0, nullptr, context.stream());
  context.synchronize();
}

template <class T>
void rnn_cell_backward_cuda(T* dx, T* dh_prev, T* dw_ih, T* dw_hh, T* dbias, const T* dh,
                            const T* h, const T* x, const T* h_prev, const T* w_ih,
                            const T* w_hh, int64_t rows, int64_t in, int64_t hidden,
                            Activation act) {
  CudaContext& context = default_context();
  DeviceArray<T> dpre(rows * hidden);
  rnn_step_backward_cuda<T>(dpre.data(), dh, nullptr, h, rows, hidden, act, false, 0, nullptr,
                            context.stream());
  cell_weight_backward<T>(context, dx, dh_prev, dw_ih, dw_hh, dbias, dpre.data(), x, h_prev,
                          w_ih, w_hh, rows, in, hidden, hidden);
  context.synchronize();
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void activation_forward_cuda<T>(T*, T*, const T*, int64_t, ActSpec);                \
  template void activation_backward_cuda<T>(T*, const T*, const T*, int64_t, ActSpec);         \
  template void dense_forward_cuda<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,   \
                                      int64_t, ActSpec);                                        \
  template void dense_backward_cuda<T>(T*, T*, T*, const T*, const T*, const T*, const T*,      \
                                       int64_t, int64_t, int64_t);                              \
  template double mse_loss_op_cuda<T>(T*, const T*, const T*, int64_t, int64_t);               \
  template double cross_entropy_loss_op_cuda<T>(T*, const T*, const int64_t*, int64_t,         \
                                                int64_t);                                       \
  template double sum_squares_norm_cuda<T>(const T*, int64_t);                                 \
  template void fill_zero_cuda<T>(T*, int64_t);                                                \
  template void batchnorm_forward_cuda<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*,     \
                                          int64_t, int64_t, BatchNormSpec);                     \
  template void batchnorm_backward_cuda<T>(T*, T*, T*, const T*, const T*, const T*, const T*,  \
                                           const T*, int64_t, int64_t, bool);                   \
  template void lstm_cell_forward_cuda<T>(T*, T*, T*, const T*, const T*, const T*, const T*,   \
                                          const T*, const T*, int64_t, int64_t, int64_t);       \
  template void lstm_cell_backward_cuda<T>(T*, T*, T*, T*, T*, T*, const T*, const T*,          \
                                           const T*, const T*, const T*, const T*, const T*,    \
                                           const T*, const T*, int64_t, int64_t, int64_t);      \
  template void rnn_cell_forward_cuda<T>(T*, const T*, const T*, const T*, const T*, const T*,  \
                                         int64_t, int64_t, int64_t, Activation);               \
  template void rnn_cell_backward_cuda<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*,     \
                                          const T*, const T*, const T*, int64_t, int64_t,       \
                                          int64_t, Activation);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
