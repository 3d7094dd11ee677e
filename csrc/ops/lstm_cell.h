// LSTM cell with PyTorch's gate order i, f, g, o and layout:
//   pre (B, 4H) = x (B, I) @ w_ih (4H, I)^T + h_prev (B, H) @ w_hh (4H, H)^T + bias (4H,)
//   i, f, o = sigmoid(pre[:, 0:H], pre[:, H:2H], pre[:, 3H:4H]), g = tanh(pre[:, 2H:3H])
//   c (B, H) = f * c_prev + i * g,  h (B, H) = o * tanh(c)
// gates (B, 4H) saves the activated i, f, g, o for backward (bias = torch's bias_ih + bias_hh).
// Backward, with dh, dc the gradients arriving at h and c:
//   dc_t = dc + dh * o * (1 - tanh(c)^2); do = dh * tanh(c); di = dc_t * g; dg = dc_t * i;
//   df = dc_t * c_prev; dc_prev = dc_t * f; dpre = (di i(1-i), df f(1-f), dg (1-g^2), do o(1-o))
//   dx = dpre @ w_ih, dh_prev = dpre @ w_hh, dw_ih = dpre^T x, dw_hh = dpre^T h_prev, dbias = sum dpre
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace vgkern {

void lstm_cell_forward(const TensorView& h, const TensorView& c, const TensorView& gates,
                       const TensorView& x, const TensorView& h_prev, const TensorView& c_prev,
                       const TensorView& w_ih, const TensorView& w_hh, const TensorView& bias);
void lstm_cell_backward(const TensorView& dx, const TensorView& dh_prev,
                        const TensorView& dc_prev, const TensorView& dw_ih,
                        const TensorView& dw_hh, const TensorView& dbias, const TensorView& dh,
                        const TensorView& dc, const TensorView& gates, const TensorView& c,
                        const TensorView& c_prev, const TensorView& x, const TensorView& h_prev,
                        const TensorView& w_ih, const TensorView& w_hh);

struct GateStats {
  double forget_sum = 0;  // sum of f over B * H
  int64_t saturated = 0;  // gate units with act'(pre) < 1% of its maximum, over B * 4H
};

// In place over gates: pre-activations -> activated gates; writes c, h, tanh_c (B, H).
template <class T>
void lstm_gates_forward_cpu(T* gates, T* c, T* h, T* tanh_c, const T* c_prev, int64_t rows,
                            int64_t hidden, GateStats* stats);
// dpre (B, 4H), dc_prev (B, H), dh_total = dh_a + dh_b and dc_total (B, H) written out
// (dh_b and dc may be null: zero). Sums of squares of dh_total and dc_total when non-null.
template <class T>
void lstm_gates_backward_cpu(T* dpre, T* dc_prev, T* dh_total, T* dc_total, const T* dh_a,
                             const T* dh_b, const T* dc, const T* gates, const T* c_prev,
                             const T* tanh_c, int64_t rows, int64_t hidden, double* dh_sumsq,
                             double* dc_sumsq);

}  // namespace vgkern
