// vgkern._core.CudaArray: a device array that vgkern's CUDA ops return, handed to PyTorch, CuPy,
// JAX or Numba without a copy through __cuda_array_interface__ or DLPack (__dlpack__). Built from
// bindings/cuda_array.cpp with CUDA, from bindings/no_cuda_array.cpp without (where creating one
// is a RuntimeError).
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace vgkern {

void bind_cuda_array(pybind11::module_& m);
// A new C-contiguous device array and its view (device memory, current device).
pybind11::object new_cuda_array(DType dtype, const std::vector<int64_t>& shape, TensorView* view);
// A C-contiguous device array over memory that `owner` owns (a net's device buffer): no copy;
// the array keeps `owner` alive (current device).
pybind11::object borrowed_cuda_array(DType dtype, const std::vector<int64_t>& shape, void* data,
                                     pybind11::object owner);

}  // namespace vgkern
