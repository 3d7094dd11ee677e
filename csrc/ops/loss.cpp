// mse_loss / cross_entropy_loss: checks and dispatch (math in loss_cpu.cpp).
#include "ops/loss.h"

#include "core/checks.h"
#include "core/dispatch.h"
#include "ops/loss_cuda.h"

namespace vgkern {

double mse_loss(const TensorView& dout, const TensorView& out, const TensorView& target) {
  const char* op = "mse_loss";
  check_shape(op, "out", out, {-1, -1});
  if (out.dim(0) == 0) fail<ValueError>(op, ": out must have at least one row, got shape (0, ", out.dim(1), ")");
  check_like(op, "target", target, "out", out);
  check_like(op, "dout", dout, "out", out);
  return dispatch(op, out.device, out.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda)
      return mse_loss_cuda<T>(dout.ptr<T>(), out.ptr<T>(), target.ptr<T>(), out.dim(0),
                              out.dim(1));
    else
      return mse_loss_cpu<T>(dout.ptr<T>(), out.ptr<T>(), target.ptr<T>(), out.dim(0),
                             out.dim(1), out.dim(0));
  });
}

double cross_entropy_loss(const TensorView& dlogits, const TensorView& logits,
                          const int64_t* labels, int64_t num_labels) {
  const char* op = "cross_entropy_loss";
  check_shape(op, "logits", logits, {-1, -1});
  if (logits.dim(0) == 0) fail<ValueError>(op, ": logits must have at least one row, got shape (0, ", logits.dim(1), ")");
  if (logits.dim(1) == 0) fail<ValueError>(op, ": logits must have at least one class, got shape (", logits.dim(0), ", 0)");
  if (num_labels != logits.dim(0))
    fail<ValueError>(op, ": labels must have shape (", logits.dim(0), ",) to match logits ",
                     logits.shape_str(), ", got (", num_labels, ",)");
  check_like(op, "dlogits", dlogits, "logits", logits);
  return dispatch(op, logits.device, logits.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda) {
      check_labels(labels, logits.dim(0), logits.dim(1));
      return cross_entropy_loss_cuda<T>(dlogits.ptr<T>(), logits.ptr<T>(), labels,
                                        logits.dim(0), logits.dim(1));
    } else {
      return cross_entropy_loss_cpu<T>(dlogits.ptr<T>(), logits.ptr<T>(), labels, logits.dim(0),
                                       logits.dim(1));
    }
  });
}

}  // namespace vgkern
