#include "ops/batchnorm_cuda.h"

#include <cmath>

#include "cuda/activation_device.cuh"
#include "cuda/context.h"
#include "cuda/device_array.h"
#include "cuda/layer_stats.cuh"
#include "ops/dense_cuda.h"

namespace vgkern {
namespace {

// The column region of the scratch (5 float64-sized values per column): forward column mean
// and variance; backward column sums of g and g * xhat, then the coefficients a, b, c as T.
struct Columns {
  double *first, *second;
  void *a, *b, *c;
  Columns(double* base, int64_t cols)
      : first(base), second(base + cols), a(base + 2 * cols), b(base + 3 * cols),
        c(base + 4 * cols) {}
};

// ---- forward ----

// One thread per column: float64 mean and biased variance of z[:, j], rows in order (the
// deviations from the mean in a second pass, as batchnorm_cpu.cpp's column_moments).
template <class T>
__global__ void column_moments_kernel(const T* z, int64_t rows, int64_t cols, double* mean,
                                      double* var) {
  for (const int64_t j : grid_stride(cols)) {
    double s = 0;
    for (int64_t i = 0; i < rows; ++i) s += static_cast<double>(z[i * cols + j]);
    const double m = s / static_cast<double>(rows);
    double d2 = 0;
    for (int64_t i = 0; i < rows; ++i) {
      const double c = static_cast<double>(z[i * cols + j]) - m;
      d2 += c * c;
    }
    mean[j] = m;
    var[j] = d2 / static_cast<double>(rows);
  }
}

// mean, rstd as T from the batch (training, with the running update of torch.nn.BatchNorm1d:
// unbiased variance for running_var) or from the running statistics (eval).
template <class T>
__global__ void batch_statistics_kernel(T* mean, T* rstd, T* running_mean, T* running_var,
                                        const double* col_mean, const double* col_var,
                                        int64_t rows, int64_t cols, bool training,
                                        double momentum, double eps) {
  const double unbias = static_cast<double>(rows) / static_cast<double>(rows - 1);
  for (const int64_t j : grid_stride(cols)) {
    if (!training) {
      mean[j] = running_mean[j];
      rstd[j] = static_cast<T>(1.0 / sqrt(static_cast<double>(running_var[j]) + eps));
      continue;
    }
    mean[j] = static_cast<T>(col_mean[j]);
    rstd[j] = static_cast<T>(1.0 / sqrt(col_var[j] + eps));
    if (running_mean) {
      running_mean[j] = static_cast<T>((1 - momentum) * running_mean[j] + momentum * col_mean[j]);
      running_var[j] =
          static_cast<T>((1 - momentum) * running_var[j] + momentum * col_var[j] * unbias);
    }
  }
}

// xhat = (z - mean) rstd, y = gamma xhat + beta, h = act(y), dact = act'(y); counts of
// saturated and zero activations per block.
template <class T, Activation K, bool Stats>
__global__ void normalize_activate_kernel(T* h, T* dact, T* xhat, const T* z, const T* mean,
                                          const T* rstd, const T* gamma, const T* beta, int64_t n,
                                          int64_t cols, T alpha, T saturation_threshold,
                                          ForwardPartial* count_partials) {
  constexpr bool kCountSaturated =
      K == Activation::sigmoid || K == Activation::tanh || K == Activation::elu;
  ForwardPartial p{0, 0, 0, 0, 0};
  for (const int64_t i : grid_stride(n)) {
    const int64_t j = i % cols;
    const T xh = (z[i] - mean[j]) * rstd[j];
    const T y = gamma ? gamma[j] * xh + beta[j] : xh;
    T hv, dv;
    cuda::act_eval<K>(y, alpha, hv, dv);
    xhat[i] = xh;
    h[i] = hv;
    if constexpr (K != Activation::identity) dact[i] = dv;
    if constexpr (Stats) {
      if (kCountSaturated && dv < saturation_threshold) ++p.saturated;
      if (hv == T(0)) ++p.zeros;
    }
  }
  if constexpr (Stats) {
    p = block_reduce(p, CombineForward{});
    if (threadIdx.x == 0) count_partials[blockIdx.x] = p;
  }
}

// The first pass of the pre-BN statistics (max |z|, sum, NaN), which the dense layers fuse into
// their epilogue.
template <class T>
__global__ void z_partials_kernel(const T* z, int64_t n, ForwardPartial* partials) {
  ForwardPartial p{0, 0, 0, 0, 0};
  for (const int64_t i : grid_stride(n)) {
    const double v = static_cast<double>(z[i]);
    if (isnan(v)) p.nan = 1; else p.max_abs = fmax(p.max_abs, fabs(v));
    p.plain_sum += v;
  }
  p = block_reduce(p, CombineForward{});
  if (threadIdx.x == 0) partials[blockIdx.x] = p;
}

// ---- backward ----

// g = dh * dact (into g), with the partial sums of squares of dh.
template <class T, bool HasDact, bool Norms>
__global__ void gradient_at_y_kernel(T* g, const T* dh, const T* dact, int64_t n,
                                     SumSq<T>* dh_partials) {
  SumSq<T> dh_sq;
  for (const int64_t i : grid_stride(n)) {
    const T d = dh[i];
    g[i] = HasDact ? d * dact[i] : d;
    if constexpr (Norms) dh_sq.add(d);
  }
  if constexpr (Norms) {
    dh_sq = block_reduce(dh_sq, MergeSumSq<T>{});
    if (threadIdx.x == 0) dh_partials[blockIdx.x] = dh_sq;
  }
}

// One thread per column: float64 sums of g and g * xhat over the rows (-> dbeta, dgamma), and
// the coefficients of dz = a (g - b - xhat c): a = gamma rstd, b = dbeta / N, c = dgamma / N.
template <class T>
__global__ void backward_columns_kernel(T* dgamma, T* dbeta, T* a, T* b, T* c, const T* g,
                                        const T* xhat, const T* rstd, const T* gamma,
                                        int64_t rows, int64_t cols) {
  for (const int64_t j : grid_stride(cols)) {
    double sum_g = 0, sum_gx = 0;
    for (int64_t i = 0; i < rows; ++i) {
      const T gi = g[i * cols + j];
      sum_g += static_cast<double>(gi);
      sum_gx += static_cast<double>(gi) * static_cast<double>(xhat[i * cols + j]);
    }
    a[j] = gamma ? gamma[j] * rstd[j] : rstd[j];
    b[j] = static_cast<T>(sum_g / static_cast<double>(rows));
    c[j] = static_cast<T>(sum_gx / static_cast<double>(rows));
    if (dgamma) {
      dgamma[j] = static_cast<T>(sum_gx);
      dbeta[j] = static_cast<T>(sum_g);
    }
  }
}

// In place over g: training dz = a (g - b - xhat c), eval dz = a g; partial sums of squares.
template <class T, bool Training, bool Norms>
__global__ void dz_kernel(T* g_dz, const T* xhat, const T* a, const T* b, const T* c, int64_t n,
                          int64_t cols, SumSq<T>* dz_partials) {
  SumSq<T> dz_sq;
  for (const int64_t i : grid_stride(n)) {
    const int64_t j = i % cols;
    const T dz = Training ? a[j] * (g_dz[i] - b[j] - xhat[i] * c[j]) : a[j] * g_dz[i];
    g_dz[i] = dz;
    if constexpr (Norms) dz_sq.add(dz);
  }
  if constexpr (Norms) {
    dz_sq = block_reduce(dz_sq, MergeSumSq<T>{});
    if (threadIdx.x == 0) dz_partials[blockIdx.x] = dz_sq;
  }
}

// xhat = (x - mean) rstd (the standalone backward op recomputes it).
template <class T>
__global__ void xhat_kernel(T* xhat, const T* x, const T* mean, const T* rstd, int64_t n,
                            int64_t cols) {
  for (const int64_t i : grid_stride(n)) {
    const int64_t j = i % cols;
    xhat[i] = (x[i] - mean[j]) * rstd[j];
  }
}

}  // namespace

template <class T>
void batchnorm_forward_stream(T* y, T* mean, T* rstd, T* running_mean, T* running_var, T* xhat,
                              const T* x, const T* gamma, const T* beta, int64_t rows,
                              int64_t cols, BatchNormSpec bn, void* scratch,
                              cudaStream_t stream) {
  const int64_t n = rows * cols;
  const Scratch s(scratch);
  const Columns columns(s.columns, cols);
  const int col_blocks = column_blocks(cols);
  if (bn.training)
    VGKERN_LAUNCH((column_moments_kernel<T>), col_blocks, stream, x, rows, cols, columns.first,
                  columns.second);
  VGKERN_LAUNCH((batch_statistics_kernel<T>), col_blocks, stream, mean, rstd, running_mean,
                running_var, columns.first, columns.second, rows, cols, bn.training, bn.momentum,
                bn.eps);
  VGKERN_LAUNCH((normalize_activate_kernel<T, Activation::identity, false>), blocks_for(n),
                stream, y, static_cast<T*>(nullptr), xhat, x, mean, rstd, gamma, beta, n, cols,
                T(1), T(0), static_cast<ForwardPartial*>(nullptr));
}

template <class T>
void batchnorm_backward_stream(T* dx, T* dgamma, T* dbeta, T* xhat, const T* dy, const T* x,
                               const T* mean, const T* rstd, const T* gamma, int64_t rows,
                               int64_t cols, bool training, void* scratch,
                               cudaStream_t stream) {
  const int64_t n = rows * cols;
  const Scratch s(scratch);
  const Columns columns(s.columns, cols);
  const int blocks = blocks_for(n);
  T* a = static_cast<T*>(columns.a);
  T* b = static_cast<T*>(columns.b);
  T* c = static_cast<T*>(columns.c);
  VGKERN_LAUNCH((xhat_kernel<T>), blocks, stream, xhat, x, mean, rstd, n, cols);
  VGKERN_LAUNCH((gradient_at_y_kernel<T, false, false>), blocks, stream, dx, dy,
                static_cast<const T*>(nullptr), n, static_cast<SumSq<T>*>(nullptr));
  VGKERN_LAUNCH((backward_columns_kernel<T>), column_blocks(cols), stream, dgamma, dbeta, a, b, c,
                dx, xhat, rstd, gamma, rows, cols);
  if (training)
    VGKERN_LAUNCH((dz_kernel<T, true, false>), blocks, stream, dx, xhat, a, b, c, n, cols,
                  static_cast<SumSq<T>*>(nullptr));
  else
    VGKERN_LAUNCH((dz_kernel<T, false, false>), blocks, stream, dx, xhat, a, b, c, n, cols,
                  static_cast<SumSq<T>*>(nullptr));
}

template <class T>
void dense_bn_forward_stream(T* h, T* dact, T* xhat, T* mean, T* rstd, T* running_mean,
                             T* running_var, const T* z, const T* gamma, const T* beta,
                             int64_t rows, int64_t cols, ActSpec act, BatchNormSpec bn,
                             double* slots, void* scratch, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  const Scratch s(scratch);
  const Columns columns(s.columns, cols);
  const int col_blocks = column_blocks(cols), blocks = blocks_for(n);
  if (bn.training)
    VGKERN_LAUNCH((column_moments_kernel<T>), col_blocks, stream, z, rows, cols, columns.first,
                  columns.second);
  VGKERN_LAUNCH((batch_statistics_kernel<T>), col_blocks, stream, mean, rstd, running_mean,
                running_var, columns.first, columns.second, rows, cols, bn.training, bn.momentum,
                bn.eps);
  const T alpha = static_cast<T>(act.alpha);
  const T threshold = static_cast<T>(0.01 * max_derivative(act));
  with_activation(act.kind, [&](auto kind) {
    constexpr Activation K = decltype(kind)::value;
    if (slots)
      VGKERN_LAUNCH((normalize_activate_kernel<T, K, true>), blocks, stream, h, dact, xhat, z,
                    mean, rstd, gamma, beta, n, cols, alpha, threshold, s.counts);
    else
      VGKERN_LAUNCH((normalize_activate_kernel<T, K, false>), blocks, stream, h, dact, xhat, z,
                    mean, rstd, gamma, beta, n, cols, alpha, threshold, s.counts);
  });
  if (!slots) return;
  VGKERN_LAUNCH((z_partials_kernel<T>), blocks, stream, z, n, s.forward);
  finish_forward_stats<T>(z, h, rows, cols, blocks, s.counts, blocks, s, slots, stream);
}

template <class T>
void dense_bn_backward_prologue_stream(T* dz, T* dgamma, T* dbeta, const T* dh, const T* dact,
                                       const T* xhat, const T* rstd, const T* gamma, int64_t rows,
                                       int64_t cols, bool training, bool norms, bool log_scale,
                                       double* slots, void* scratch, cudaStream_t stream) {
  const int64_t n = rows * cols;
  const Scratch s(scratch);
  const Columns columns(s.columns, cols);
  const int blocks = blocks_for(n);
  auto* dh_partials = static_cast<SumSq<T>*>(s.sumsq_a);
  auto* dz_partials = static_cast<SumSq<T>*>(s.sumsq_b);
  norms = norms || log_scale;
  if (dact && norms)
    VGKERN_LAUNCH((gradient_at_y_kernel<T, true, true>), blocks, stream, dz, dh, dact, n,
                  dh_partials);
  else if (dact)
    VGKERN_LAUNCH((gradient_at_y_kernel<T, true, false>), blocks, stream, dz, dh, dact, n,
                  dh_partials);
  else if (norms)
    VGKERN_LAUNCH((gradient_at_y_kernel<T, false, true>), blocks, stream, dz, dh, dact, n,
                  dh_partials);
  else
    VGKERN_LAUNCH((gradient_at_y_kernel<T, false, false>), blocks, stream, dz, dh, dact, n,
                  dh_partials);
  T* a = static_cast<T*>(columns.a);
  T* b = static_cast<T*>(columns.b);
  T* c = static_cast<T*>(columns.c);
  VGKERN_LAUNCH((backward_columns_kernel<T>), column_blocks(cols), stream, dgamma, dbeta, a, b, c,
                dz, xhat, rstd, gamma, rows, cols);
  if (training && norms)
    VGKERN_LAUNCH((dz_kernel<T, true, true>), blocks, stream, dz, xhat, a, b, c, n, cols,
                  dz_partials);
  else if (training)
    VGKERN_LAUNCH((dz_kernel<T, true, false>), blocks, stream, dz, xhat, a, b, c, n, cols,
                  dz_partials);
  else if (norms)
    VGKERN_LAUNCH((dz_kernel<T, false, true>), blocks, stream, dz, xhat, a, b, c, n, cols,
                  dz_partials);
  else
    VGKERN_LAUNCH((dz_kernel<T, false, false>), blocks, stream, dz, xhat, a, b, c, n, cols,
                  dz_partials);
  if (!norms) return;
  VGKERN_LAUNCH((prologue_norms_kernel<T>), 1, stream, dh_partials, dz_partials, blocks,
                log_scale, slots);
  if (log_scale)
    VGKERN_LAUNCH((rescale_kernel<T>), blocks, stream, dz, n, dgamma, dbeta, cols, slots);
}

template <class T>
void dense_bn_backward_norms_stream(const T* dw, int64_t n_dw, const T* dgamma, const T* dbeta,
                                    int64_t cols, double* slots, void* scratch,
                                    cudaStream_t stream) {
  const Scratch s(scratch);
  const int blocks = blocks_for(n_dw);
  auto* partials = static_cast<SumSq<T>*>(s.sumsq_a);
  VGKERN_LAUNCH((sum_squares_kernel<T>), blocks, stream, dw, n_dw, partials);
  VGKERN_LAUNCH((weight_norms_kernel<T>), 1, stream, partials, blocks, dgamma,
                static_cast<int>(DenseSlot::gamma_grad_norm), dbeta,
                static_cast<int>(DenseSlot::beta_grad_norm), cols, slots);
}

template <class T>
void batchnorm_forward_cuda(T* y, T* mean, T* rstd, T* running_mean, T* running_var, const T* x,
                            const T* gamma, const T* beta, int64_t rows, int64_t cols,
                            BatchNormSpec bn) {
  CudaContext& context = thread_cuda_context();
  DeviceArray<T> xhat(rows * cols);
  DeviceArray<unsigned char> scratch(dense_cuda_scratch_bytes(cols));
  batchnorm_forward_stream<T>(y, mean, rstd, running_mean, running_var, xhat.data(), x, gamma,
                              beta, rows, cols, bn, scratch.data(), context.stream());
  context.synchronize();
}

template <class T>
void batchnorm_backward_cuda(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                             const T* rstd, const T* gamma, int64_t rows, int64_t cols,
                             bool training) {
  CudaContext& context = thread_cuda_context();
  DeviceArray<T> xhat(rows * cols);
  DeviceArray<unsigned char> scratch(dense_cuda_scratch_bytes(cols));
  batchnorm_backward_stream<T>(dx, dgamma, dbeta, xhat.data(), dy, x, mean, rstd, gamma, rows,
                               cols, training, scratch.data(), context.stream());
  context.synchronize();
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void dense_bn_forward_stream<T>(T*, T*, T*, T*, T*, T*, T*, const T*, const T*,      \
                                           const T*, int64_t, int64_t, ActSpec, BatchNormSpec,  \
                                           double*, void*, cudaStream_t);                       \
  template void dense_bn_backward_prologue_stream<T>(T*, T*, T*, const T*, const T*, const T*,  \
                                                     const T*, const T*, int64_t, int64_t,      \
                                                     bool, bool, bool, double*, void*,          \
                                                     cudaStream_t);                             \
  template void dense_bn_backward_norms_stream<T>(const T*, int64_t, const T*, const T*,        \
                                                  int64_t, double*, void*, cudaStream_t);       \
  template void batchnorm_forward_stream<T>(T*, T*, T*, T*, T*, T*, const T*, const T*,         \
                                            const T*, int64_t, int64_t, BatchNormSpec, void*,   \
                                            cudaStream_t);                                      \
  template void batchnorm_backward_stream<T>(T*, T*, T*, T*, const T*, const T*, const T*,      \
                                             const T*, const T*, int64_t, int64_t, bool, void*, \
                                             cudaStream_t);                                     \
  template void batchnorm_forward_cuda<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*,     \
                                          int64_t, int64_t, BatchNormSpec);                     \
  template void batchnorm_backward_cuda<T>(T*, T*, T*, const T*, const T*, const T*, const T*,  \
                                           const T*, int64_t, int64_t, bool);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
