// batchnorm_forward / batchnorm_backward: checks and dispatch (math in batchnorm_cpu.cpp).
#include "ops/batchnorm.h"

#include <cmath>

#include "core/checks.h"
#include "core/dispatch.h"
#include "ops/batchnorm_cuda.h"
#include "core/errors.h"

namespace vgkern {

void check_batchnorm_spec(const char* op, BatchNormSpec bn, int64_t rows) {
  if (!(bn.eps > 0) || !std::isfinite(bn.eps))
    fail<ValueError>(op, ": eps must be a finite number > 0, got ", bn.eps);
  if (!(bn.momentum >= 0 && bn.momentum <= 1))
    fail<ValueError>(op, ": momentum must be in [0, 1], got ", bn.momentum);
  if (bn.training && rows < 2)
    fail<ValueError>(op, ": training-mode batch norm needs a batch of at least 2 rows of x "
                         "(batch statistics of one row are undefined), got a batch of ", rows);
}

void batchnorm_forward(const TensorView& y, const TensorView& mean, const TensorView& rstd,
                       const TensorView& running_mean, const TensorView& running_var,
                       const TensorView& x, const TensorView& gamma, const TensorView& beta,
                       BatchNormSpec bn) {
  const char* op = "batchnorm_forward";
  check_shape(op, "x", x, {-1, -1});
  const int64_t rows = x.dim(0), cols = x.dim(1);
  check_batchnorm_spec(op, bn, rows);
  if (gamma.present() != beta.present())
    fail<ValueError>(op, ": gamma and beta must both be given (affine) or both be None");
  if (gamma.present()) {
    check_arg(op, "gamma", gamma, x, {cols});
    check_arg(op, "beta", beta, x, {cols});
  }
  if (running_mean.present() != running_var.present())
    fail<ValueError>(op, ": running_mean and running_var must both be given or both be None");
  if (!bn.training && !running_mean.present())
    fail<ValueError>(op, ": eval mode (training=False) needs running_mean and running_var");
  if (running_mean.present()) {
    check_arg(op, "running_mean", running_mean, x, {cols});
    check_arg(op, "running_var", running_var, x, {cols});
  }
  check_arg(op, "y", y, x, {rows, cols});
  check_arg(op, "mean", mean, x, {cols});
  check_arg(op, "rstd", rstd, x, {cols});
  // No features: every output is empty. Return before the kernels, whose loops over the rows
  // would be all that is left (minutes for an empty (10**12, 0) input).
  if (cols == 0) return;
  dispatch(op, x.device, x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda)
      batchnorm_forward_cuda<T>(y.ptr<T>(), mean.ptr<T>(), rstd.ptr<T>(), running_mean.ptr<T>(),
                                running_var.ptr<T>(), x.ptr<T>(), gamma.ptr<T>(), beta.ptr<T>(),
                                rows, cols, bn);
    else
      batchnorm_forward_cpu<T>(y.ptr<T>(), mean.ptr<T>(), rstd.ptr<T>(), running_mean.ptr<T>(),
                             running_var.ptr<T>(), x.ptr<T>(), gamma.ptr<T>(), beta.ptr<T>(),
                             rows, cols, bn);
  });
}

void batchnorm_backward(const TensorView& dx, const TensorView& dgamma, const TensorView& dbeta,
                        const TensorView& dy, const TensorView& x, const TensorView& mean,
                        const TensorView& rstd, const TensorView& gamma, bool training) {
  const char* op = "batchnorm_backward";
  check_shape(op, "x", x, {-1, -1});
  const int64_t rows = x.dim(0), cols = x.dim(1);
  if (training && rows < 2)
    fail<ValueError>(op, ": training-mode batch norm needs a batch of at least 2 rows of x, "
                         "got ", rows);
  check_arg(op, "dy", dy, x, {rows, cols});
  check_arg(op, "mean", mean, x, {cols});
  check_arg(op, "rstd", rstd, x, {cols});
  if (gamma.present()) {
    check_arg(op, "gamma", gamma, x, {cols});
    check_arg(op, "dgamma", dgamma, x, {cols});
    check_arg(op, "dbeta", dbeta, x, {cols});
  }
  check_arg(op, "dx", dx, x, {rows, cols});
  if (cols == 0) return;  // every output is empty (see batchnorm_forward)
  dispatch(op, x.device, x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda)
      batchnorm_backward_cuda<T>(dx.ptr<T>(), dgamma.ptr<T>(), dbeta.ptr<T>(), dy.ptr<T>(),
                                 x.ptr<T>(), mean.ptr<T>(), rstd.ptr<T>(), gamma.ptr<T>(), rows,
                                 cols, training);
    else
      batchnorm_backward_cpu<T>(dx.ptr<T>(), dgamma.ptr<T>(), dbeta.ptr<T>(), dy.ptr<T>(),
                              x.ptr<T>(), mean.ptr<T>(), rstd.ptr<T>(), gamma.ptr<T>(), rows,
                              cols, training);
  });
}

}  // namespace vgkern
