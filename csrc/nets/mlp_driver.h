// What the CPU and CUDA MLP drivers (nets/mlp.cpp, nets/mlp_cuda.cpp) share: the configuration
// and its flat layout, the batch their workspaces are sized for, the forward state machine
// (nets/net_base.h), the lock of one call at a time, and the checks of the calls' arguments,
// with the same messages. Each driver adds its buffers, workspaces and kernels.
#pragma once
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

#include "core/tensor.h"
#include "nets/mlp.h"
#include "nets/net_base.h"

namespace vgkern {

class MLPDriver : public MLPBase {
 public:
  int64_t num_layers() const final { return static_cast<int64_t>(sizes_.size()) - 1; }
  const std::vector<int64_t>& sizes() const final { return sizes_; }
  const std::vector<LayerLayout>& layout() const final { return layout_; }

 protected:
  MLPDriver(const std::vector<int64_t>& sizes, const std::vector<ActSpec>& acts,
            BatchNormConfig bn)
      : sizes_(sizes), acts_(acts), bn_(bn) {}

  bool is_batch_norm(int64_t l) const { return bn_.enabled && l < num_layers() - 1; }
  int64_t widest() const { return *std::max_element(sizes_.begin(), sizes_.end()); }

  // x (B, d_0) with the net's dtype and B >= 1 (within a BLAS int); returns B.
  int64_t check_input(const char* op, const TensorView& x) const;
  // step's mse target (B, d_L), refused before the forward overwrites the last one.
  void check_mse_target(const char* op, const TensorView& target, const TensorView& x) const;
  // report (L, LayerColumn::kCount) float64; input_grad, when present, (rows, d_0) (rows -1:
  // any) with the net's dtype.
  void check_backward_outputs(const char* op, const TensorView& report,
                              const TensorView& input_grad, int64_t rows) const;

  std::vector<int64_t> sizes_;  // d_0 .. d_L
  std::vector<ActSpec> acts_;   // one per layer
  BatchNormConfig bn_;
  std::vector<LayerLayout> layout_;  // set by the driver with its initial parameters
  int64_t rows_ = 0;                 // the batch the workspaces are sized for (0: none)
  ForwardState state_;
};

}  // namespace vgkern
