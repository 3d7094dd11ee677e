// ops/batchnorm.h's ops on the GPU, and the fused dense -> batch norm -> activation hidden layer
// (ops/batchnorm.h's dense_bn_forward_cpu / dense_bn_backward_cpu) around the caller's cuBLAS
// GEMMs, for nets/mlp_cuda.cpp (names: csrc/ops/README.md). Device pointers; the *_stream
// functions are asynchronous on `stream`, statistics into the layer's slots (ops/dense_cuda.h);
// `scratch` holds dense_cuda_scratch_bytes(widest) bytes.
#pragma once
#include <cstdint>

#include "cuda/stream.h"
#include "ops/activation.h"
#include "ops/batchnorm.h"

namespace vgkern {

// z (rows, cols) = x W^T on entry (kept). Training: batch mean and biased variance (float64),
// running statistics updated as torch.nn.BatchNorm1d; eval: the running ones. Leaves mean, rstd
// (cols,), xhat = (z - mean) rstd, h = act(gamma xhat + beta), dact; with slots, the statistics
// of the pre-BN z. gamma/beta null: affine=False.
template <class T>
void dense_bn_forward_stream(T* h, T* dact, T* xhat, T* mean, T* rstd, T* running_mean,
                             T* running_var, const T* z, const T* gamma, const T* beta,
                             int64_t rows, int64_t cols, ActSpec act, BatchNormSpec bn,
                             double* slots, void* scratch, cudaStream_t stream);

// g = dh * dact; dgamma = sum g xhat, dbeta = sum g (when gamma); dz (rows, cols) = the BN
// backward of g (two-reduction form in training, gamma rstd g in eval), ready for the caller's
// GEMMs; ||dh||, ||dz|| into the slots (norms or log_scale), and with log_scale dz, dgamma and
// dbeta divided by 2^e as dense_backward_prologue_stream does.
template <class T>
void dense_bn_backward_prologue_stream(T* dz, T* dgamma, T* dbeta, const T* dh, const T* dact,
                                       const T* xhat, const T* rstd, const T* gamma, int64_t rows,
                                       int64_t cols, bool training, bool norms, bool log_scale,
                                       double* slots, void* scratch, cudaStream_t stream);

// After the GEMMs: ||dw||, ||dgamma||, ||dbeta|| (NaN without gamma) into the slots.
template <class T>
void dense_bn_backward_norms_stream(const T* dw, int64_t n_dw, const T* dgamma, const T* dbeta,
                                    int64_t cols, double* slots, void* scratch,
                                    cudaStream_t stream);

// The standalone ops (ops/batchnorm.h's batchnorm_forward / batchnorm_backward): y = gamma xhat +
// beta with the same statistics; the backward recomputes xhat from x, mean and rstd. xhat is
// (rows, cols) scratch.
template <class T>
void batchnorm_forward_stream(T* y, T* mean, T* rstd, T* running_mean, T* running_var, T* xhat,
                              const T* x, const T* gamma, const T* beta, int64_t rows,
                              int64_t cols, BatchNormSpec bn, void* scratch, cudaStream_t stream);
template <class T>
void batchnorm_backward_stream(T* dx, T* dgamma, T* dbeta, T* xhat, const T* dy, const T* x,
                               const T* mean, const T* rstd, const T* gamma, int64_t rows,
                               int64_t cols, bool training, void* scratch, cudaStream_t stream);

// The same ops on the default stream, synchronised (running_mean/var may be null in training;
// gamma/beta null: affine=False).
template <class T>
void batchnorm_forward_cuda(T* y, T* mean, T* rstd, T* running_mean, T* running_var, const T* x,
                            const T* gamma, const T* beta, int64_t rows, int64_t cols,
                            BatchNormSpec bn);
template <class T>
void batchnorm_backward_cuda(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                             const T* rstd, const T* gamma, int64_t rows, int64_t cols,
                             bool training);

}  // namespace vgkern
