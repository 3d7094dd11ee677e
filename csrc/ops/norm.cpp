#include "ops/norm.h"

#include "core/dispatch.h"
#include "core/stats.h"

namespace vgkern {

double sum_squares_norm(const TensorView& a) {
  return dispatch("sum_squares_norm", a.device, a.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    return sum_squares(a.ptr<T>(), a.numel()).norm();
  });
}

}  // namespace vgkern
