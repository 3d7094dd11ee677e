#include "cuda/fill.h"

#include "cuda/context.h"
#include "cuda/cuda_check.h"

namespace vgkern {

template <class T>
void fill_zero_cuda(T* v, int64_t n) {
  CudaContext& context = thread_cuda_context();
  VGKERN_CUDA_CHECK(cudaMemsetAsync(v, 0, n * sizeof(T), context.stream()));
  context.synchronize();
}

template void fill_zero_cuda<float>(float*, int64_t);
template void fill_zero_cuda<double>(double*, int64_t);

}  // namespace vgkern
