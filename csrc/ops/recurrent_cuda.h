// The LSTM and Elman RNN sequence kernels on the GPU (ops/lstm_cell.h and ops/rnn_cell.h's
// math), for nets/recurrent_cuda.cpp: the gate passes of one time step (the GEMMs are the
// caller's cuBLAS calls) and the per-step statistics. Device pointers, asynchronous on
// `stream`. Per-step statistics land in "sequence slots" (kNumSeqSlots doubles per step): each
// step's kernel leaves one partial per block, and one fold kernel over all steps fills the
// slots, so nothing is reduced per step on the host.
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda/runtime.h"
#include "ops/activation.h"

namespace vgkern {

enum SeqSlot : int { kSeqForgetSum, kSeqSaturated, kSeqHNorm, kSeqCNorm, kSeqXNorm, kNumSeqSlots };

// Blocks of one step's gate kernel for `rows` sequences of `hidden` units (its partials per step).
int recurrent_step_blocks(int64_t rows, int64_t hidden);
// Bytes of per-step partials for `steps` steps (forward and backward share them).
size_t recurrent_partials_bytes(int64_t steps, int64_t rows, int64_t hidden);

// pre (rows, cols) = bias (cols,) in every row (before a GEMM accumulates onto it).
template <class T>
void broadcast_rows_cuda(T* pre, const T* bias, int64_t rows, int64_t cols, cudaStream_t stream);

// One LSTM step: gates (rows, 4H) pre-activations -> activated i, f, g, o in place; c, h,
// tanh_c (rows, H). With stats, step t's partials (sum of f, saturated gate units).
template <class T>
void lstm_step_forward_cuda(T* gates, T* c, T* h, T* tanh_c, const T* c_prev, int64_t rows,
                            int64_t hidden, bool stats, int64_t t, void* partials,
                            cudaStream_t stream);
// One RNN step: pre (rows * H) -> h = act(pre) in place; with stats, saturated tanh units.
template <class T>
void rnn_step_forward_cuda(T* pre_h, int64_t rows, int64_t hidden, Activation act, bool stats,
                           int64_t t, void* partials, cudaStream_t stream);
// seq_slots[t][kSeqForgetSum], [kSeqSaturated] for every step from the forward's partials.
void fold_forward_steps_cuda(const void* partials, int64_t steps, int64_t rows, int64_t hidden,
                             double* seq_slots, cudaStream_t stream);

// One LSTM step backward: dh = dh_a + dh_b (dh_b may be null), dc_total = dc + dh o tanh'(c);
// dpre (rows, 4H), dc_prev (rows, H); with stats, step t's partial sums of squares of dh and
// dc_total.
template <class T>
void lstm_step_backward_cuda(T* dpre, T* dc_prev, const T* dh_a, const T* dh_b, const T* dc,
                             const T* gates, const T* c_prev, const T* tanh_c, int64_t rows,
                             int64_t hidden, bool stats, int64_t t, void* partials,
                             cudaStream_t stream);
// One RNN step backward: dh = dh_a + dh_b, dpre = dh act'(.) from h; partial sums of dh^2.
template <class T>
void rnn_step_backward_cuda(T* dpre, const T* dh_a, const T* dh_b, const T* h, int64_t rows,
                            int64_t hidden, Activation act, bool stats, int64_t t, void* partials,
                            cudaStream_t stream);
// seq_slots[t][kSeqHNorm], [kSeqCNorm] (LSTM) from the backward's partials.
template <class T>
void fold_backward_steps_cuda(const void* partials, int64_t steps, int64_t rows, int64_t hidden,
                              bool lstm, double* seq_slots, cudaStream_t stream);

// seq_slots[t][kSeqXNorm] = ||v[t]|| for v (steps, per_step).
template <class T>
void step_norms_cuda(const T* v, int64_t steps, int64_t per_step, double* seq_slots,
                     cudaStream_t stream);
// out[j] = column sums of m (rows, cols) in float64, rows in order.
template <class T>
void column_sums_cuda(T* out, const T* m, int64_t rows, int64_t cols, cudaStream_t stream);
// *norm = ||v|| (n entries); scratch: dense_cuda_scratch_bytes(0) bytes.
template <class T>
void norm_cuda(double* norm, const T* v, int64_t n, void* scratch, cudaStream_t stream);

}  // namespace vgkern
