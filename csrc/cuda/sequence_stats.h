// The per-step statistics of the recurrent nets on the GPU (nets/recurrent_cuda.cpp). They land
// in "sequence slots" (kNumSeqSlots doubles per step): each step's kernel (ops/lstm_cell_cuda.h,
// ops/rnn_cell_cuda.h) leaves one partial per block, and one fold kernel over all steps fills the
// slots, so nothing is reduced per step on the host. Device pointers, asynchronous on `stream`
// (names: csrc/ops/README.md).
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda/stream.h"

namespace vgkern {

enum SeqSlot : int { kSeqForgetSum, kSeqSaturated, kSeqHNorm, kSeqCNorm, kSeqXNorm, kNumSeqSlots };

// Blocks of one step's gate kernel for `rows` sequences of `hidden` units (its partials per step).
int recurrent_step_blocks(int64_t rows, int64_t hidden);
// Bytes of per-step partials for `steps` steps (forward and backward share them).
size_t recurrent_partials_bytes(int64_t steps, int64_t rows, int64_t hidden);

// seq_slots[t][kSeqForgetSum], [kSeqSaturated] for every step from the forward's partials.
void fold_forward_steps_stream(const void* partials, int64_t steps, int64_t rows, int64_t hidden,
                               double* seq_slots, cudaStream_t stream);
// seq_slots[t][kSeqHNorm], [kSeqCNorm] (LSTM) from the backward's partials.
template <class T>
void fold_backward_steps_stream(const void* partials, int64_t steps, int64_t rows, int64_t hidden,
                                bool lstm, double* seq_slots, cudaStream_t stream);

// seq_slots[t][kSeqXNorm] = ||v[t]|| for v (steps, per_step).
template <class T>
void step_norms_stream(const T* v, int64_t steps, int64_t per_step, double* seq_slots,
                       cudaStream_t stream);

}  // namespace vgkern
