// Argument checks shared by every op: dtype, device, rank/shape, and the int range at a BLAS
// boundary. Each throws the exception type the design assigns (TypeError for dtype, ValueError
// for shape/value, DeviceError -> RuntimeError for device).
#pragma once
#include <cstdint>
#include <initializer_list>

#include "core/tensor.h"

namespace vgkern {

// -1 in `expected` matches any size.
void check_shape(const char* op, const char* arg, const TensorView& t,
                 std::initializer_list<int64_t> expected);
void check_dtype(const char* op, const char* arg, const TensorView& t, DType expected);
void check_same_device(const char* op, const char* arg, const TensorView& t, Device expected);
// Checks dtype and device against `like` (the op's first input) and the exact shape.
void check_arg(const char* op, const char* arg, const TensorView& t, const TensorView& like,
               std::initializer_list<int64_t> expected);
// Same dtype, device and shape as `like`.
void check_like(const char* op, const char* arg, const TensorView& t, const char* like_name,
                const TensorView& like);
int blas_int(int64_t n, const char* what);

}  // namespace vgkern
