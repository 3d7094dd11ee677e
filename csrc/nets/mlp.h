// Whole-network driver for a stack of dense layers: one native call runs the forward of every
// layer, one the backward (or one the whole step: forward, loss, backward), with the
// statistics fused into each layer's passes. Parameters and gradients live in two flat buffers
// owned here (Python sees numpy views of them); workspaces are sized per batch and reused.
//
// Layer l = 0..L-1 maps d_l -> d_{l+1}: W_l (d_{l+1}, d_l), then b_l (d_{l+1},) in the flat
// parameter (and gradient) buffer. With batch norm, hidden layers (l < L-1) have no bias but
// gamma_l, beta_l (d_{l+1},) (affine) after W_l, and running mean/var in two flat buffers.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/report.h"
#include "core/tensor.h"
#include "nets/net_base.h"
#include "ops/activation.h"

namespace vgkern {

enum class Loss { mse, cross_entropy };


struct LayerLayout {
  int64_t weight = 0;                     // offset of W_l in params/grads
  int64_t bias = -1, gamma = -1, beta = -1;  // offsets, -1 where the layer has none
  int64_t running = -1;                   // offset into running_means/running_vars, -1: no BN
};

struct BatchNormConfig {
  bool enabled = false, affine = true;
  double momentum = 0.1, eps = 1e-5;
};

class MLPBase : public NetBase {
 public:
  virtual int64_t num_layers() const = 0;
  virtual int64_t num_params() const = 0;
  virtual const std::vector<int64_t>& sizes() const = 0;  // d_0 .. d_L
  virtual const std::vector<LayerLayout>& layout() const = 0;
  virtual int64_t num_running() const = 0;  // entries of each running-statistics buffer
  virtual void* params() = 0;
  virtual void* grads() = 0;
  virtual void* running_means() = 0;
  virtual void* running_vars() = 0;
  int64_t buffer_size(NetBuffer which) const final {
    return which == NetBuffer::params || which == NetBuffer::grads ? num_params() : num_running();
  }
  void* buffer(NetBuffer which) final {
    switch (which) {
      case NetBuffer::params: return params();
      case NetBuffer::grads: return grads();
      case NetBuffer::running_means: return running_means();
      default: return running_vars();
    }
  }

  // x (B, d_0) -> out (B, d_L); the output stays valid until the next call.
  // MemoryError now if a batch of `rows` needs a workspace larger than physical memory
  virtual void check_batch(int64_t rows) const = 0;
  virtual void forward(const TensorView& out, const TensorView& x) = 0;
  // grad_out (B, d_L) -> weight/bias grads, report (L, LayerColumn::kCount),
  // input_grad (B, d_0) when present.
  virtual void backward(const TensorView& report, const TensorView& input_grad,
                        const TensorView& grad_out, bool log_scale) = 0;
  // forward + loss + backward; target is (B, d_L) for mse, labels (B,) int64 for cross-entropy.
  virtual double step(const TensorView& out, const TensorView& report,
                      const TensorView& input_grad, const TensorView& x, Loss loss,
                      const TensorView& target, const int64_t* labels, int64_t num_labels,
                      bool log_scale) = 0;

  bool stats = true;
  bool training = true;  // batch norm: batch statistics (true) or running ones (false)
};

// sizes: d_0..d_L (all >= 1, at least two); acts: one per layer.
std::unique_ptr<MLPBase> make_mlp(const std::vector<int64_t>& sizes,
                                  const std::vector<ActSpec>& acts, DType dtype,
                                  BatchNormConfig bn, Device device = Device::cpu);

// nets/mlp_cuda.cpp (built with CUDA only): the same net on the current CUDA device.
template <class T>
std::unique_ptr<MLPBase> make_cuda_mlp(const std::vector<int64_t>& sizes,
                                       const std::vector<ActSpec>& acts, BatchNormConfig bn);

// The flat parameter layout of a net (see the top of this file), its initial parameters (zeros;
// gamma 1 and beta 0 as torch.nn.BatchNorm1d) and the entries of each running-statistics buffer.
template <class T>
std::vector<LayerLayout> mlp_layout(const std::vector<int64_t>& sizes, BatchNormConfig bn,
                                    std::vector<T>& initial_params, int64_t* num_running);

// One report row (LayerColumn::kCount) of layer statistics; a null pointer leaves its columns
// NaN. bs's norms are measured in units of 2^units (NormUnits::signal) and 2^(units + rescale)
// (NormUnits::rescaled: the gradients, renormalised by log-scale backward); grad_log2_scale =
// units + rescale.
void fill_report_row(double* row, const BackwardStats* bs, const ForwardStats* fs, int64_t units,
                     int rescale);

}  // namespace vgkern
