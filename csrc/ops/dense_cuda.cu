#include "ops/dense_cuda.h"

#include <cmath>

#include "cuda/activation_device.cuh"
#include "cuda/context.h"
#include "cuda/device_array.h"
#include "cuda/layer_stats.cuh"

namespace vgkern {
namespace {

// ---- forward ----

template <class T, Activation K, bool Stats>
__global__ void epilogue_kernel(T* h, T* dact, T* z, const T* b, int64_t n, int64_t cols,
                                T alpha, T saturation_threshold, ForwardPartial* partials) {
  constexpr bool kCountSaturated =
      K == Activation::sigmoid || K == Activation::tanh || K == Activation::elu;
  ForwardPartial p{0, 0, 0, 0, 0};
  for (const int64_t i : grid_stride(n)) {
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

// ---- backward ----

template <class T, bool HasDact, bool Norms>
__global__ void prologue_kernel(T* delta, const T* dh, const T* dact, int64_t n,
                                SumSq<T>* dh_partials, SumSq<T>* delta_partials) {
  SumSq<T> dh_sq, delta_sq;
  for (const int64_t i : grid_stride(n)) {
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

template <class T>
__global__ void fill_kernel(T* v, int64_t n, T value) {
  for (const int64_t i : grid_stride(n)) v[i] = value;
}

}  // namespace

size_t dense_cuda_scratch_bytes(int64_t widest) { return ScratchLayout(widest).bytes; }

template <class T>
void dense_forward_epilogue_stream(T* h, T* dact, T* z, const T* b, int64_t rows, int64_t cols,
                                   ActSpec act, double* slots, void* scratch,
                                   cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  const Scratch s(scratch);
  const int blocks = blocks_for(n);
  const T alpha = static_cast<T>(act.alpha);
  const T threshold = static_cast<T>(0.01 * max_derivative(act));
  with_activation(act.kind, [&](auto kind) {
    constexpr Activation K = decltype(kind)::value;
    if (slots)
      VGKERN_LAUNCH((epilogue_kernel<T, K, true>), blocks, stream, h, dact, z, b, n, cols, alpha,
                    threshold, s.forward);
    else
      VGKERN_LAUNCH((epilogue_kernel<T, K, false>), blocks, stream, h, dact, z, b, n, cols, alpha,
                    threshold, s.forward);
  });
  if (slots)
    finish_forward_stats<T>(z, h, rows, cols, blocks, s.forward, blocks, s, slots, stream);
}

template <class T>
void dense_backward_prologue_stream(T* delta, T* db, const T* dh, const T* dact, int64_t rows,
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
  VGKERN_LAUNCH((rescale_kernel<T>), blocks, stream, delta, n, db, static_cast<T*>(nullptr), cols,
                slots);
}

template <class T>
void dense_backward_norms_stream(const T* dw, int64_t n_dw, const T* db, int64_t cols,
                                 double* slots, void* scratch, cudaStream_t stream) {
  const Scratch s(scratch);
  const int blocks = blocks_for(n_dw);
  auto* partials = static_cast<SumSq<T>*>(s.sumsq_a);
  VGKERN_LAUNCH((sum_squares_kernel<T>), blocks, stream, dw, n_dw, partials);
  VGKERN_LAUNCH((weight_norms_kernel<T>), 1, stream, partials, blocks, db,
                static_cast<int>(DenseSlot::bias_grad_norm), static_cast<const T*>(nullptr),
                static_cast<int>(DenseSlot::beta_grad_norm), cols, slots);
}

template <class T>
void dense_forward_cuda(T* h, T* dact, const T* x, const T* w, const T* b, int64_t rows,
                        int64_t in, int64_t out, ActSpec act) {
  CudaContext& context = thread_cuda_context();
  DeviceArray<T> zero_bias(b ? 0 : out);
  if (!b) {
    VGKERN_LAUNCH((fill_kernel<T>), blocks_for(out), context.stream(), zero_bias.data(), out, T(0));
    b = zero_bias.data();
  }
  // z into h, then the epilogue in place (h = act(z + b)); the identity's dact is all ones
  cuda_gemm<T>(context.cublas(), false, true, rows, out, in, T(1), x, in, w, in, T(0), h, out);
  DeviceArray<unsigned char> scratch(dense_cuda_scratch_bytes(0));
  dense_forward_epilogue_stream<T>(h, dact, h, b, rows, out, act, nullptr, scratch.data(),
                                   context.stream());
  if (act.kind == Activation::identity)
    VGKERN_LAUNCH((fill_kernel<T>), blocks_for(rows * out), context.stream(), dact, rows * out,
                  T(1));
  context.synchronize();
}

template <class T>
void dense_backward_cuda(T* dx, T* dw, T* db, const T* dh, const T* dact, const T* x, const T* w,
                         int64_t rows, int64_t in, int64_t out) {
  CudaContext& context = thread_cuda_context();
  DeviceArray<T> delta(rows * out);
  DeviceArray<unsigned char> scratch(dense_cuda_scratch_bytes(0));
  dense_backward_prologue_stream<T>(delta.data(), db, dh, dact, rows, out, false, false, nullptr,
                                    scratch.data(), context.stream());
  cuda_gemm<T>(context.cublas(), true, false, out, in, rows, T(1), delta.data(), out, x, in, T(0),
               dw, in);
  if (dx)
    cuda_gemm<T>(context.cublas(), false, false, rows, in, out, T(1), delta.data(), out, w, in,
                 T(0), dx, in);
  context.synchronize();
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void dense_forward_epilogue_stream<T>(T*, T*, T*, const T*, int64_t, int64_t,       \
                                                 ActSpec, double*, void*, cudaStream_t);        \
  template void dense_backward_prologue_stream<T>(T*, T*, const T*, const T*, int64_t, int64_t, \
                                                  bool, bool, double*, void*, cudaStream_t);    \
  template void dense_backward_norms_stream<T>(const T*, int64_t, const T*, int64_t, double*,   \
                                               void*, cudaStream_t);                            \
  template void dense_forward_cuda<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,   \
                                      int64_t, ActSpec);                                        \
  template void dense_backward_cuda<T>(T*, T*, T*, const T*, const T*, const T*, const T*,      \
                                       int64_t, int64_t, int64_t);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
