// Elman RNN cell: h (B, H) = act(x (B, I) @ w_ih (H, I)^T + h_prev (B, H) @ w_hh (H, H)^T + bias),
// act tanh (default) or relu. Backward takes act' from the output h (1 - h^2, or h > 0), as
// PyTorch does: dpre = dh * act'(h); dx = dpre @ w_ih, dh_prev = dpre @ w_hh,
// dw_ih = dpre^T x, dw_hh = dpre^T h_prev, dbias = sum dpre.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "ops/activation.h"

namespace vgkern {

struct CellShape {
  int64_t rows, in, hidden;
};
// Checks x (B, I), h_prev (B, H), w_ih (G, I), w_hh (G, H), bias (G,) (if present) with
// G = gates * H: same dtype and device, shapes; returns B, I, H.
CellShape check_cell(const char* op, const TensorView& x, const TensorView& h_prev,
                     const TensorView& w_ih, const TensorView& w_hh, const TensorView& bias,
                     int64_t gates);

// Throws ValueError for anything but "tanh" and "relu".
Activation parse_rnn_nonlinearity(const std::string& name, const char* arg);

void rnn_cell_forward(const TensorView& h, const TensorView& x, const TensorView& h_prev,
                      const TensorView& w_ih, const TensorView& w_hh, const TensorView& bias,
                      Activation act);
void rnn_cell_backward(const TensorView& dx, const TensorView& dh_prev, const TensorView& dw_ih,
                       const TensorView& dw_hh, const TensorView& dbias, const TensorView& dh,
                       const TensorView& h, const TensorView& x, const TensorView& h_prev,
                       const TensorView& w_ih, const TensorView& w_hh, Activation act);

// In place over pre (B, H): pre -> h = act(pre). Saturated count (tanh' < 0.01) when non-null.
template <class T>
void rnn_forward_cpu(T* pre_h, int64_t n, Activation act, int64_t* saturated);
// dpre = (dh_a + dh_b) * act'(h); dh_total = dh_a + dh_b written out (dh_b may be null);
// sum of squares of dh_total when non-null.
template <class T>
void rnn_backward_cpu(T* dpre, T* dh_total, const T* dh_a, const T* dh_b, const T* h, int64_t n,
                      Activation act, double* dh_sumsq);

// The shared cell step used by the ops and the sequence drivers:
// pre (B, G) = x @ w_ih^T + h_prev @ w_hh^T + bias, with G = 4H (LSTM) or H (RNN).
template <class T>
void cell_preactivations_cpu(T* pre, const T* x, const T* h_prev, const T* w_ih, const T* w_hh,
                             const T* bias, int64_t rows, int64_t in, int64_t hidden,
                             int64_t gates);
// dx = dpre @ w_ih, dh_prev = dpre @ w_hh, dw_ih = dpre^T x, dw_hh = dpre^T h_prev, dbias.
template <class T>
void cell_weight_backward_cpu(T* dx, T* dh_prev, T* dw_ih, T* dw_hh, T* dbias, const T* dpre,
                              const T* x, const T* h_prev, const T* w_ih, const T* w_hh,
                              int64_t rows, int64_t in, int64_t hidden, int64_t gates);

// out (cols,) = float64 column sums of m (rows, cols), in a fixed order.
template <class T>
void column_sums_into(T* out, const T* m, int64_t rows, int64_t cols, double* scratch_sums);
// sums (cols,) += float64 column sums of m (rows, cols), row by row.
template <class T>
void add_column_sums_cpu(double* sums, const T* m, int64_t rows, int64_t cols);

}  // namespace vgkern
