// Losses with their gradient, in one pass (float64 accumulation).
//   mse_loss:           loss = 0.5 / B * sum (out - target)^2,  dout (B, C) = (out - target) / B
//   cross_entropy_loss: loss = -1 / B * sum_b log softmax(logits_b)[label_b],
//                       dlogits (B, C) = (softmax(logits) - onehot(labels)) / B
// Non-finite targets and labels outside [0, C) are ValueErrors.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace vgkern {

double mse_loss(const TensorView& dout, const TensorView& out, const TensorView& target);
// labels: (B,) int64 on the host.
double cross_entropy_loss(const TensorView& dlogits, const TensorView& logits,
                          const int64_t* labels, int64_t num_labels);

// ValueErrors with the messages of the losses above (the CUDA nets check on the host first).
template <class T>
void check_target_finite(const T* target, int64_t rows, int64_t cols);
void check_labels(const int64_t* labels, int64_t rows, int64_t cols);

// rows * cols entries; loss = 0.5 / batch * sum (out - target)^2, dout = (out - target) / batch
// (batch = rows for a plain batch; the number of sequences for a loss over every time step).
template <class T>
double mse_loss_cpu(T* dout, const T* out, const T* target, int64_t rows, int64_t cols,
                    int64_t batch);
template <class T>
double cross_entropy_loss_cpu(T* dlogits, const T* logits, const int64_t* labels, int64_t rows,
                              int64_t cols);

}  // namespace vgkern
