// Batch normalization over the rows of (N, C) inputs, as torch.nn.BatchNorm1d.
//   forward (training): mean (C,), var (C,) biased over N; rstd = 1 / sqrt(var + eps);
//                       y = gamma * (x - mean) * rstd + beta; running stats updated with momentum
//                       (running_var from the unbiased var N / (N - 1)).
//   forward (eval):     mean = running_mean, rstd = 1 / sqrt(running_var + eps).
//   backward (training, the two-reduction form), with xhat = (x - mean) * rstd:
//                       dbeta = sum_N dy, dgamma = sum_N dy * xhat,
//                       dx = gamma * rstd / N * (N dy - dbeta - xhat * dgamma)
//   backward (eval):    dx = dy * gamma * rstd
// gamma/beta absent = affine=False (gamma 1, beta 0, no dgamma/dbeta).
#pragma once
#include <cstdint>

#include "core/report.h"  // ForwardStats, BackwardStats
#include "core/tensor.h"
#include "ops/activation.h"

namespace vgkern {

struct BatchNormSpec {
  bool training = true;
  double momentum = 0.1, eps = 1e-5;
};

// ValueError for eps <= 0, momentum outside [0, 1], or a training batch of fewer than 2 rows.
void check_batchnorm_spec(const char* op, BatchNormSpec bn, int64_t rows);

void batchnorm_forward(const TensorView& y, const TensorView& mean, const TensorView& rstd,
                       const TensorView& running_mean, const TensorView& running_var,
                       const TensorView& x, const TensorView& gamma, const TensorView& beta,
                       BatchNormSpec spec);
void batchnorm_backward(const TensorView& dx, const TensorView& dgamma, const TensorView& dbeta,
                        const TensorView& dy, const TensorView& x, const TensorView& mean,
                        const TensorView& rstd, const TensorView& gamma, bool training);

template <class T>
void batchnorm_forward_cpu(T* y, T* mean, T* rstd, T* running_mean, T* running_var, const T* x,
                           const T* gamma, const T* beta, int64_t rows, int64_t cols,
                           BatchNormSpec bn);
template <class T>
void batchnorm_backward_cpu(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                            const T* rstd, const T* gamma, int64_t rows, int64_t cols,
                            bool training);

// Fused hidden layer of a batch-norm MLP: z = x W^T (no bias), y = BN(z), h = act(y).
//   forward saves xhat (B, out), mean (out,), rstd (out,) and dact (B, out); stats of the pre-BN z.
//   backward: g = dh * dact; dgamma, dbeta; dz (B, out) = BN backward of g; dw = dz^T x;
//   dx = dz W. gamma/beta/dgamma/dbeta null: affine=False. Returns rescale_log2 (log_scale).
template <class T>
void dense_bn_forward_cpu(T* h, T* dact, T* xhat, T* mean, T* rstd, T* running_mean,
                          T* running_var, const T* x, const T* w, const T* gamma, const T* beta,
                          int64_t rows, int64_t in, int64_t out, ActSpec act, BatchNormSpec bn,
                          ForwardStats* stats);
template <class T>
int dense_bn_backward_cpu(T* dx, T* dw, T* dgamma, T* dbeta, T* dz, const T* dh, const T* dact,
                          const T* xhat, const T* rstd, const T* gamma, const T* x, const T* w,
                          int64_t rows, int64_t in, int64_t out, bool training, bool log_scale,
                          BackwardStats* stats);

}  // namespace vgkern
