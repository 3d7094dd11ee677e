// Frobenius norm of any array in float64 without under/overflow (see core/stats.h).
#pragma once
#include "core/tensor.h"

namespace vgkern {

double sum_squares_norm(const TensorView& a);

}  // namespace vgkern
