// bindings/cuda_array.h without CUDA: no device arrays.
#include "bindings/cuda_array.h"

#include "core/errors.h"

namespace vgkern {

void bind_cuda_array(pybind11::module_&) {}

pybind11::object new_cuda_array(DType, const std::vector<int64_t>&, TensorView*) {
  fail<DeviceError>("device arrays: this vgkern build has no CUDA support");
}

pybind11::object borrowed_cuda_array(DType, const std::vector<int64_t>&, void*, pybind11::object) {
  fail<DeviceError>("device arrays: this vgkern build has no CUDA support");
}

}  // namespace vgkern
