// vgkern.ops on the GPU: the public low-level ops of ops/activation.h, ops/dense.h, ops/loss.h
// and ops/norm.h for device arrays (built with CUDA only). Each runs on the calling thread's
// default stream and cuBLAS handle (cuda/context.h) and synchronises before it returns, so its
// outputs are ready for any consumer (PyTorch, CuPy) and its float64 results on the host.
// Pointers are device pointers except the labels (host, checked by the caller's op).
#pragma once
#include <cstdint>

#include "ops/activation.h"
#include "ops/batchnorm.h"

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

// ops/batchnorm.h (running_mean/var may be null in training; gamma/beta null: affine=False).
template <class T>
void batchnorm_forward_cuda(T* y, T* mean, T* rstd, T* running_mean, T* running_var, const T* x,
                            const T* gamma, const T* beta, int64_t rows, int64_t cols,
                            BatchNormSpec bn);
template <class T>
void batchnorm_backward_cuda(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                             const T* rstd, const T* gamma, int64_t rows, int64_t cols,
                             bool training);

// ops/lstm_cell.h and ops/rnn_cell.h (G = 4H for the LSTM, H for the RNN).
template <class T>
void lstm_cell_forward_cuda(T* h, T* c, T* gates, const T* x, const T* h_prev, const T* c_prev,
                            const T* w_ih, const T* w_hh, const T* bias, int64_t rows, int64_t in,
                            int64_t hidden);
template <class T>
void lstm_cell_backward_cuda(T* dx, T* dh_prev, T* dc_prev, T* dw_ih, T* dw_hh, T* dbias,
                             const T* dh, const T* dc, const T* gates, const T* c,
                             const T* c_prev, const T* x, const T* h_prev, const T* w_ih,
                             const T* w_hh, int64_t rows, int64_t in, int64_t hidden);
template <class T>
void rnn_cell_forward_cuda(T* h, const T* x, const T* h_prev, const T* w_ih, const T* w_hh,
                           const T* bias, int64_t rows, int64_t in, int64_t hidden,
                           Activation act);
template <class T>
void rnn_cell_backward_cuda(T* dx, T* dh_prev, T* dw_ih, T* dw_hh, T* dbias, const T* dh,
                            const T* h, const T* x, const T* h_prev, const T* w_ih,
                            const T* w_hh, int64_t rows, int64_t in, int64_t hidden,
                            Activation act);

}  // namespace vgkern
