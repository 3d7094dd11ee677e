// vgkern.ops on the GPU: the public low-level ops of ops/activation.h, ops/dense.h, ops/loss.h
// and ops/norm.h for device arrays (built with CUDA only). Each runs on the calling thread's
// default stream and cuBLAS handle (cuda/context.h) and synchronises before it returns, so its
// outputs are ready for any consumer (PyTorch, CuPy) and its float64 results on the host.
// Pointers are device pointers except the labels (host, checked by the caller's op).
#pragma once
#include <cstdint>

#include "ops/activation.h"

namespace vgkern {

template <class T>
void activation_forward_cuda(T* h, T* dact, const T* z, int64_t n, ActSpec act);
template <class T>
void activation_backward_cuda(T* dz, const T* dh, const T* z, int64_t n, ActSpec act);
// b may be null (no bias); dx may be null (not computed).
template <class T>
void dense_forward_cuda(T* h, T* dact, const T* x, const T* w, const T* b, int64_t rows,
                        int64_t in, int64_t out, ActSpec act);
template <class T>
void dense_backward_cuda(T* dx, T* dw, T* db, const T* dh, const T* dact, const T* x, const T* w,
                         int64_t rows, int64_t in, int64_t out);
template <class T>
double mse_loss_op_cuda(T* dout, const T* out, const T* target, int64_t rows, int64_t cols);
template <class T>
double cross_entropy_loss_op_cuda(T* dlogits, const T* logits, const int64_t* host_labels,
                                  int64_t rows, int64_t cols);
template <class T>
double sum_squares_norm_cuda(const T* v, int64_t n);
template <class T>
void fill_zero_cuda(T* v, int64_t n);

}  // namespace vgkern
