#include "ops/norm.h"

#include "core/dispatch.h"
#include "core/stats.h"
#include "ops/norm_cuda.h"

namespace vgkern {

double sum_squares_norm(const TensorView& a) {
  return dispatch("sum_squares_norm", a.device, a.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda)
      return sum_squares_norm_cuda<T>(a.ptr<T>(), a.numel());
    else
      return frobenius_norm(a.ptr<T>(), a.numel());
  });
}

}  // namespace vgkern
