// The losses of ops/loss.h on the GPU (names: csrc/ops/README.md): the ops, and the stream-level
// kernels the CUDA nets use (device pointers, asynchronous on `stream`, the loss value written to
// *loss_slot on the device). Targets and labels are checked on the host before they are copied
// (check_target_finite, check_labels).
#pragma once
#include "cuda/stream.h"

#include <cstddef>
#include <cstdint>

#include "core/tensor.h"

namespace vgkern {

size_t loss_cuda_scratch_bytes();

// check_target_finite (ops/loss.h) for a target on the host or the device: a device target is
// counted on the device (one synchronisation; `slot` is a device double to count into) and
// copied to the host only to name its first bad entry.
template <class T>
void check_target_finite_on(Device device, const T* target, int64_t rows, int64_t cols,
                            double* slot, void* scratch, cudaStream_t stream);

// loss = 0.5 / batch * sum (out - target)^2, dout = (out - target) / batch
template <class T>
void mse_loss_stream(T* dout, const T* out, const T* target, int64_t rows, int64_t cols,
                     int64_t batch, double* loss_slot, void* scratch, cudaStream_t stream);

// loss = -1 / rows * sum_b log softmax(logits_b)[label_b], dlogits = (softmax - onehot) / rows;
// row_losses: (rows,) device scratch.
template <class T>
void cross_entropy_loss_stream(T* dlogits, const T* logits, const int64_t* labels, int64_t rows,
                               int64_t cols, double* row_losses, double* loss_slot, void* scratch,
                               cudaStream_t stream);

// The ops of ops/loss.h (the target on the device, checked here; the labels on the host, checked
// by the op), on the default stream, synchronised: return the loss.
template <class T>
double mse_loss_cuda(T* dout, const T* out, const T* target, int64_t rows, int64_t cols);
template <class T>
double cross_entropy_loss_cuda(T* dlogits, const T* logits, const int64_t* host_labels,
                               int64_t rows, int64_t cols);

}  // namespace vgkern
