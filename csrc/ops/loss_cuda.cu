#include "ops/loss_cuda.h"

#include <vector>

#include "ops/loss.h"

#include "cuda/activation_device.cuh"
#include "cuda/context.h"
#include "cuda/device_array.h"
#include "cuda/launch.cuh"
#include "cuda/reduce.cuh"

namespace vgkern {
namespace {

using cuda::Add;
using cuda::blocks_for;
using cuda::block_reduce;
using cuda::fold_partials;
using cuda::grid_stride;
using cuda::kMaxBlocks;
using cuda::kThreads;

template <class T>
__global__ void mse_kernel(T* dout, const T* out, const T* target, int64_t n, T inv_batch,
                           double* partials) {
  double s = 0;
  for (const int64_t i : grid_stride(n)) {
    const T diff = out[i] - target[i];
    dout[i] = diff * inv_batch;
    s += static_cast<double>(diff) * static_cast<double>(diff);
  }
  s = block_reduce(s, Add{});
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// One thread per row, as cross_entropy_loss_cpu: max (NaN wins), exp(x - max) summed in float64.
template <class T>
__global__ void cross_entropy_kernel(T* dlogits, const T* logits, const int64_t* labels,
                                     int64_t rows, int64_t cols, T inv_rows, double* row_losses) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (b >= rows) return;
  const T* x = logits + b * cols;
  T* g = dlogits + b * cols;
  T m = x[0];
  for (int64_t c = 1; c < cols; ++c) m = x[c] > m || isnan(x[c]) ? x[c] : m;
  double sum = 0;
  for (int64_t c = 0; c < cols; ++c) {
    const T e = cuda::dev_exp(x[c] - m);
    g[c] = e;
    sum += static_cast<double>(e);
  }
  const T scale = static_cast<T>(1.0 / sum) * inv_rows;
  for (int64_t c = 0; c < cols; ++c) g[c] *= scale;
  const int64_t label = labels[b];
  g[label] -= inv_rows;
  row_losses[b] = log(sum) - (static_cast<double>(x[label]) - static_cast<double>(m));
}

__global__ void sum_kernel(const double* v, int64_t n, double* partials) {
  double s = 0;
  for (const int64_t i : grid_stride(n))
    s += v[i];
  s = block_reduce(s, Add{});
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

template <class T>
__global__ void count_non_finite_kernel(const T* v, int64_t n, double* partials) {
  double count = 0;
  for (const int64_t i : grid_stride(n)) count += isfinite(v[i]) ? 0 : 1;
  count = block_reduce(count, Add{});
  if (threadIdx.x == 0) partials[blockIdx.x] = count;
}

// *loss_slot = scale * (sum of the partials)
__global__ void finish_kernel(const double* partials, int count, double scale, double* loss_slot) {
  const double total = fold_partials(partials, count, 0.0, Add{});
  if (threadIdx.x == 0) *loss_slot = scale * total;
}

}  // namespace

size_t loss_cuda_scratch_bytes() { return kMaxBlocks * sizeof(double); }

template <class T>
void mse_loss_stream(T* dout, const T* out, const T* target, int64_t rows, int64_t cols,
                     int64_t batch, double* loss_slot, void* scratch, cudaStream_t stream) {
  const int64_t n = rows * cols;
  const int blocks = blocks_for(n);
  auto* partials = static_cast<double*>(scratch);
  VGKERN_LAUNCH((mse_kernel<T>), blocks, stream, dout, out, target, n,
                T(1) / static_cast<T>(batch), partials);
  VGKERN_LAUNCH(finish_kernel, 1, stream, partials, blocks, 0.5 / static_cast<double>(batch),
                loss_slot);
}

template <class T>
void cross_entropy_loss_stream(T* dlogits, const T* logits, const int64_t* labels, int64_t rows,
                               int64_t cols, double* row_losses, double* loss_slot, void* scratch,
                               cudaStream_t stream) {
  const int row_blocks = static_cast<int>((rows + kThreads - 1) / kThreads);
  VGKERN_LAUNCH((cross_entropy_kernel<T>), row_blocks, stream, dlogits, logits, labels, rows, cols,
                T(1) / static_cast<T>(rows), row_losses);
  const int blocks = blocks_for(rows);
  auto* partials = static_cast<double*>(scratch);
  VGKERN_LAUNCH(sum_kernel, blocks, stream, row_losses, rows, partials);
  VGKERN_LAUNCH(finish_kernel, 1, stream, partials, blocks, 1.0 / static_cast<double>(rows),
                loss_slot);
}

template <class T>
void check_target_finite_on(Device device, const T* target, int64_t rows, int64_t cols,
                            double* slot, void* scratch, cudaStream_t stream) {
  if (device == Device::cpu) return check_target_finite(target, rows, cols);
  const int64_t n = rows * cols;
  const int blocks = blocks_for(n);
  auto* partials = static_cast<double*>(scratch);
  VGKERN_LAUNCH((count_non_finite_kernel<T>), blocks, stream, target, n, partials);
  VGKERN_LAUNCH(finish_kernel, 1, stream, partials, blocks, 1.0, slot);
  double count = 0;
  VGKERN_CUDA_CHECK(cudaMemcpyAsync(&count, slot, sizeof(double), cudaMemcpyDeviceToHost, stream));
  VGKERN_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (count == 0) return;
  std::vector<T> host(n);
  VGKERN_CUDA_CHECK(cudaMemcpyAsync(host.data(), target, n * sizeof(T), cudaMemcpyDeviceToHost,
                                    stream));
  VGKERN_CUDA_CHECK(cudaStreamSynchronize(stream));
  check_target_finite(host.data(), rows, cols);
}

template <class T>
double mse_loss_cuda(T* dout, const T* out, const T* target, int64_t rows, int64_t cols) {
  CudaContext& context = thread_cuda_context();
  DeviceArray<unsigned char> scratch(loss_cuda_scratch_bytes());
  DeviceArray<double> slot(1);
  check_target_finite_on(Device::cuda, target, rows, cols, slot.data(), scratch.data(),
                         context.stream());
  mse_loss_stream<T>(dout, out, target, rows, cols, rows, slot.data(), scratch.data(),
                     context.stream());
  double loss = 0;
  copy_buffer_to_host(context, slot.data(), sizeof(double), &loss);
  return loss;
}

template <class T>
double cross_entropy_loss_cuda(T* dlogits, const T* logits, const int64_t* host_labels,
                               int64_t rows, int64_t cols) {
  CudaContext& context = thread_cuda_context();
  DeviceArray<unsigned char> scratch(loss_cuda_scratch_bytes());
  DeviceArray<double> slot(1), row_losses(rows);
  DeviceArray<int64_t> labels(rows);
  copy_buffer_from_host(context, labels.data(), host_labels, rows * sizeof(int64_t));
  cross_entropy_loss_stream<T>(dlogits, logits, labels.data(), rows, cols, row_losses.data(),
                               slot.data(), scratch.data(), context.stream());
  double loss = 0;
  copy_buffer_to_host(context, slot.data(), sizeof(double), &loss);
  return loss;
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void check_target_finite_on<T>(Device, const T*, int64_t, int64_t, double*, void*,  \
                                          cudaStream_t);                                        \
  template void mse_loss_stream<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, double*,  \
                                   void*, cudaStream_t);                                        \
  template void cross_entropy_loss_stream<T>(T*, const T*, const int64_t*, int64_t, int64_t,    \
                                             double*, double*, void*, cudaStream_t);            \
  template double mse_loss_cuda<T>(T*, const T*, const T*, int64_t, int64_t);                  \
  template double cross_entropy_loss_cuda<T>(T*, const T*, const int64_t*, int64_t, int64_t);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
