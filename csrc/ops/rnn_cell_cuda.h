// ops/rnn_cell.h's op on the GPU; the RNN sequence kernel of one time step for
// nets/recurrent_cuda.cpp (the gate pass: the GEMMs are the caller's cuBLAS calls); and, as
// ops/rnn_cell.h on the CPU, what the LSTM cell shares with it (ops/lstm_cell_cuda.cu): the
// cell's GEMMs, the bias broadcast and the bias gradient. Names: csrc/ops/README.md. Device
// pointers; the *_stream functions run asynchronously on `stream` (or the context's stream), and
// with stats leave step t's partials in `partials` (cuda/sequence_stats.h).
#pragma once
#include <cstdint>

#include "cuda/stream.h"
#include "ops/activation.h"

namespace vgkern {

class CudaContext;  // cuda/context.h

// The op (default stream, synchronised).
template <class T>
void rnn_cell_forward_cuda(T* h, const T* x, const T* h_prev, const T* w_ih, const T* w_hh,
                           const T* bias, int64_t rows, int64_t in, int64_t hidden,
                           Activation act);
template <class T>
void rnn_cell_backward_cuda(T* dx, T* dh_prev, T* dw_ih, T* dw_hh, T* dbias, const T* dh,
                            const T* h, const T* x, const T* h_prev, const T* w_ih,
                            const T* w_hh, int64_t rows, int64_t in, int64_t hidden,
                            Activation act);

// One RNN step: pre (rows * H) -> h = act(pre) in place; with stats, saturated tanh units.
template <class T>
void rnn_step_forward_stream(T* pre_h, int64_t rows, int64_t hidden, Activation act, bool stats,
                             int64_t t, void* partials, cudaStream_t stream);
// One RNN step backward: dh = dh_a + dh_b, dpre = dh act'(.) from h; partial sums of dh^2.
template <class T>
void rnn_step_backward_stream(T* dpre, const T* dh_a, const T* dh_b, const T* h, int64_t rows,
                              int64_t hidden, Activation act, bool stats, int64_t t,
                              void* partials, cudaStream_t stream);

// pre (rows, cols) = bias (cols,) in every row (before a GEMM accumulates onto it).
template <class T>
void broadcast_rows_stream(T* pre, const T* bias, int64_t rows, int64_t cols,
                           cudaStream_t stream);
// out[j] = column sums of m (rows, cols) in float64, rows in order.
template <class T>
void column_sums_stream(T* out, const T* m, int64_t rows, int64_t cols, cudaStream_t stream);

// pre (rows, G) = bias + x W_ih^T + h_prev W_hh^T, as cell_preactivations_cpu (G = 4H for the
// LSTM, H for the RNN).
template <class T>
void cell_preactivations_stream(const CudaContext& context, T* pre, const T* x, const T* h_prev,
                                const T* w_ih, const T* w_hh, const T* bias, int64_t rows,
                                int64_t in, int64_t hidden, int64_t gates);
// dx, dh_prev, dw_ih, dw_hh and dbias from dpre (rows, G), as cell_weight_backward_cpu.
template <class T>
void cell_weight_backward_stream(const CudaContext& context, T* dx, T* dh_prev, T* dw_ih,
                                 T* dw_hh, T* dbias, const T* dpre, const T* x, const T* h_prev,
                                 const T* w_ih, const T* w_hh, int64_t rows, int64_t in,
                                 int64_t hidden, int64_t gates);

}  // namespace vgkern
