#include "ops/norm_cuda.h"

#include "cuda/context.h"
#include "cuda/device_array.h"
#include "cuda/layer_stats.cuh"
#include "ops/dense_cuda.h"

namespace vgkern {
namespace {

template <class T>
__global__ void norm_from_partials_kernel(const SumSq<T>* partials, int count, double* norm) {
  const SumSq<T> all = fold_partials(partials, count, SumSq<T>{}, MergeSumSq<T>{});
  if (threadIdx.x == 0) *norm = all.norm();
}

}  // namespace

template <class T>
void sum_squares_norm_stream(double* norm, const T* v, int64_t n, void* scratch,
                             cudaStream_t stream) {
  const Scratch s(scratch);
  auto* partials = static_cast<SumSq<T>*>(s.sumsq_a);
  const int blocks = blocks_for(n);
  VGKERN_LAUNCH((sum_squares_kernel<T>), blocks, stream, v, n, partials);
  VGKERN_LAUNCH((norm_from_partials_kernel<T>), 1, stream, partials, blocks, norm);
}

template <class T>
double sum_squares_norm_cuda(const T* v, int64_t n) {
  CudaContext& context = thread_cuda_context();
  DeviceArray<unsigned char> scratch(dense_cuda_scratch_bytes(0));
  DeviceArray<double> slot(1);
  sum_squares_norm_stream<T>(slot.data(), v, n, scratch.data(), context.stream());
  double norm = 0;
  copy_buffer_to_host(context, slot.data(), sizeof(double), &norm);
  return norm;
}

#define VGKERN_INSTANTIATE(T)                                                                   \
  template void sum_squares_norm_stream<T>(double*, const T*, int64_t, void*, cudaStream_t);   \
  template double sum_squares_norm_cuda<T>(const T*, int64_t);
VGKERN_INSTANTIATE(float)
VGKERN_INSTANTIATE(double)
#undef VGKERN_INSTANTIATE

}  // namespace vgkern
