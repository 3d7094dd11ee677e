#include "ops/norm.h"

#include "core/dispatch.h"
#include "core/stats.h"

namespace vgkern {

double sum_squares_norm(const TensorView& a) {
  return dispatch("sum_squares_norm", a.device, a.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    return frobenius_norm(a.ptr<T>(), a.numel());
  });
}

}  // namespace vgkern
