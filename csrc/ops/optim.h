// The optimizer step of vgkern.optim (SGD, Adam, AdamW with torch.optim's semantics) over a net's
// flat parameter buffer, in one pass: each gradient entry is read once, the optimizer state and
// the parameter are updated in place, and the per-tensor update statistics (float64, exact
// range as core/stats.h's norms) come from the same pass.
//
// The buffers are flat (N,) arrays of one dtype on one device: params, grads, the optimizer
// state (state1: SGD's momentum buffer or Adam's exp_avg; state2: Adam's exp_avg_sq; absent
// where the rule has none) and reference, the weights W0 that `change` is measured against.
// `segments` cut them into tensors (a layer's W, b, gamma, beta; an LSTM's weight_ih, ...).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace vgkern {

enum class OptimRule { sgd, adam, adamw };

// Hyperparameters of one step, as torch.optim names them.
struct OptimConfig {
  OptimRule rule = OptimRule::sgd;
  double lr = 0, weight_decay = 0;
  double momentum = 0, dampening = 0;  // SGD
  bool nesterov = false;               // SGD
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam, AdamW
  int64_t step = 1;  // 1 for the first step: SGD's momentum buffer starts as the gradient there;
                     // Adam's bias corrections use it
};

// One tensor inside the flat buffers.
struct OptimSegment {
  int64_t offset = 0, count = 0;
  int grad_log2_scale = 0;  // stored gradient = true gradient * 2^-grad_log2_scale (log-scale
                            // MLP backward): the update unscales it on the fly
  int64_t stats_row = -1;   // row of `stats` for this tensor, -1: no statistics (gamma, beta)
};

// The columns of a stats row (float64): ||dW|| (dW = W after - W before, as stored), ||dW|| /
// ||W before||, ||W after||, ||W after - W0|| / ||W0||.
struct UpdateStat {
  enum : int { update_norm, update_ratio, norm, change, kCount };
};

// params, state1, state2, grads, reference: (N,) as above (state1/state2 may be absent:
// ndim 0); stats: host (rows, UpdateStat::kCount) float64, rows no segment names set to NaN.
// Segments must lie inside [0, N) and not overlap (the caller's layout guarantees it).
void optim_update(const TensorView& params, const TensorView& state1, const TensorView& state2,
                  const TensorView& grads, const TensorView& reference,
                  const std::vector<OptimSegment>& segments, const OptimConfig& config,
                  const TensorView& stats);

// The CPU backend (ops/optim_cpu.cpp); host pointers, arguments checked.
template <class T>
void optim_update_cpu(T* params, T* state1, T* state2, const T* grads, const T* reference,
                      const std::vector<OptimSegment>& segments, const OptimConfig& config,
                      double* stats, int64_t rows);

}  // namespace vgkern
