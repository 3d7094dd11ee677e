// ops/lstm_cell.h's op on the GPU, and the LSTM sequence kernels of one time step for
// nets/recurrent_cuda.cpp (the gate passes: the GEMMs are the caller's cuBLAS calls). Names:
// csrc/ops/README.md. Device pointers; the *_stream functions run asynchronously on `stream`, and
// with stats leave step t's partials in `partials` (cuda/sequence_stats.h).
#pragma once
#include <cstdint>

#include "cuda/stream.h"

namespace vgkern {

// The op (default stream, synchronised).
template <class T>
void lstm_cell_forward_cuda(T* h, T* c, T* gates, const T* x, const T* h_prev, const T* c_prev,
                            const T* w_ih, const T* w_hh, const T* bias, int64_t rows, int64_t in,
                            int64_t hidden);
template <class T>
void lstm_cell_backward_cuda(T* dx, T* dh_prev, T* dc_prev, T* dw_ih, T* dw_hh, T* dbias,
                             const T* dh, const T* dc, const T* gates, const T* c,
                             const T* c_prev, const T* x, const T* h_prev, const T* w_ih,
                             const T* w_hh, int64_t rows, int64_t in, int64_t hidden);

// One LSTM step: gates (rows, 4H) pre-activations -> activated i, f, g, o in place; c, h,
// tanh_c (rows, H). With stats, step t's partials (sum of f, saturated gate units).
template <class T>
void lstm_step_forward_stream(T* gates, T* c, T* h, T* tanh_c, const T* c_prev, int64_t rows,
                              int64_t hidden, bool stats, int64_t t, void* partials,
                              cudaStream_t stream);
// One LSTM step backward: dh = dh_a + dh_b (dh_b may be null), dc_total = dc + dh o tanh'(c);
// dpre (rows, 4H), dc_prev (rows, H); with stats, step t's partial sums of squares of dh and
// dc_total.
template <class T>
void lstm_step_backward_stream(T* dpre, T* dc_prev, const T* dh_a, const T* dh_b, const T* dc,
                               const T* gates, const T* c_prev, const T* tanh_c, int64_t rows,
                               int64_t hidden, bool stats, int64_t t, void* partials,
                               cudaStream_t stream);

}  // namespace vgkern
