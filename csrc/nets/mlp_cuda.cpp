// The MLP of nets/mlp.h on an NVIDIA GPU (built with CUDA only). Parameters, gradients and
// workspaces stay in device memory across calls; each layer is a cuBLAS GEMM and our fused
// kernels (ops/dense_cuda.h), all queued on the net's stream with no host synchronisation. A
// step copies x (and the target) in, and one block (per-layer statistics, loss, output) out.
// Batch-norm hidden layers: ops/batchnorm_cuda.h.
#include "cuda/runtime.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "core/checks.h"
#include "core/report.h"
#include "core/errors.h"
#include "cuda/context.h"
#include "cuda/device_array.h"
#include "nets/mlp.h"
#include "nets/mlp_driver.h"
#include "ops/batchnorm_cuda.h"
#include "ops/dense_cuda.h"
#include "ops/loss.h"
#include "ops/loss_cuda.h"

namespace vgkern {
namespace {

template <class T>
class CudaMLP final : public MLPDriver {
 public:
  CudaMLP(const std::vector<int64_t>& sizes, const std::vector<ActSpec>& acts, BatchNormConfig bn)
      : MLPDriver(sizes, acts, bn) {
    std::vector<T> initial;
    int64_t running = 0;
    layout_ = mlp_layout(sizes_, bn_, initial, &running);
    const int64_t n = static_cast<int64_t>(initial.size());
    check_fits_on_device(2.0 * n + 2.0 * running, "MLP: sizes");
    params_.resize(n);
    grads_.resize(n);
    running_mean_.resize(running);
    running_var_.resize(running);
    copy_in(params_.data(), initial.data(), n);
    VGKERN_CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, n * sizeof(T), context_.stream()));
    const std::vector<T> zeros(running, T(0)), ones(running, T(1));
    copy_in(running_mean_.data(), zeros.data(), running);
    copy_in(running_var_.data(), ones.data(), running);
    scratch_.resize(std::max(dense_cuda_scratch_bytes(widest()), loss_cuda_scratch_bytes()));
    context_.synchronize();  // the host vectors go away
  }

  DType dtype() const override { return dtype_of<T>(); }
  Device device() const override { return Device::cuda; }
  int64_t num_params() const override { return params_.size(); }
  int64_t num_running() const override { return running_mean_.size(); }
  void* params() override { return params_.data(); }
  void* grads() override { return grads_.data(); }
  void* running_means() override { return running_mean_.data(); }
  void* running_vars() override { return running_var_.data(); }

  void copy_to_host(NetBuffer which, void* host) override {
    CudaCall call(busy_, context_, "MLP");
    copy_buffer_to_host(context_, buffer(which), buffer_size(which) * sizeof(T), host);
  }

  void copy_from_host(NetBuffer which, int64_t offset, int64_t count, const void* host) override {
    CudaCall call(busy_, context_, "MLP");
    check_range(which, offset, count);
    copy_buffer_from_host(context_, static_cast<T*>(buffer(which)) + offset, host,
                          count * sizeof(T));
  }

  void check_batch(int64_t rows) const override {
    // x, per layer h, dact and xhat, z and the three (B, widest) buffers, target, the results
    double elements = 2.0 * sizes_[0] + 4.0 * widest() + 2.0 * sizes_.back();
    for (size_t i = 1; i < sizes_.size(); ++i) elements += 3.0 * sizes_[i];
    check_fits_on_device(elements * rows, "MLP.forward: the GPU workspace for this batch");
  }

  void forward(const TensorView& out, const TensorView& x) override {
    const char* op = "MLP.forward";
    CudaCall call(busy_, context_, op);
    check_forward_input(op, out, x);
    run_forward(x, op);
    copy_out(out.ptr<T>(), output(), rows_ * sizes_.back());
    context_.synchronize();
  }

  void backward(const TensorView& report, const TensorView& input_grad,
                const TensorView& grad_out, bool log_scale) override {
    const char* op = "MLP.backward";
    CudaCall call(busy_, context_, op);
    state_.require(op, "forward(x)");
    check_dtype(op, "grad_out", grad_out, dtype());
    check_shape(op, "grad_out", grad_out, {rows_, sizes_.back()});
    check_backward_outputs(op, report, input_grad, -1);
    copy_in(grad_a_.data(), grad_out.ptr<T>(), rows_ * sizes_.back());
    const T* dx = run_backward(input_grad.present(), log_scale);
    finish(report, input_grad, dx, log_scale, /*with_output=*/false);
  }

  double step(const TensorView& out, const TensorView& report, const TensorView& input_grad,
              const TensorView& x, Loss loss, const TensorView& target, const int64_t* labels,
              int64_t num_labels, bool log_scale) override {
    const char* op = "MLP.step";
    CudaCall call(busy_, context_, op);
    const int64_t classes = sizes_.back();
    if (loss == Loss::mse) check_mse_target(op, target, x);
    check_forward_input(op, out, x);
    const int64_t rows = x.dim(0);
    state_.refusing([&] {  // what the CPU's losses refuse, refused before the forward
      if (loss == Loss::mse) {
        ensure_workspace(rows);
        check_target_finite_on(target.device, target.ptr<T>(), rows, classes,
                               slots() + num_layers() * DenseSlot::kCount, scratch_.data(),
                               context_.stream());
      } else {
        if (num_labels != rows)
          fail<ValueError>("cross_entropy_loss: labels must have shape (", rows,
                           ",) to match logits (", rows, ", ", classes, "), got (", num_labels,
                           ",)");
        check_labels(labels, rows, classes);
      }
    });
    check_backward_outputs(op, report, input_grad, -1);
    run_forward(x, op);
    double* loss_slot = slots() + num_layers() * DenseSlot::kCount;
    if (loss == Loss::mse) {
      copy_in(target_.data(), target.ptr<T>(), rows * classes);
      mse_loss_stream<T>(grad_a_.data(), output(), target_.data(), rows, classes, rows, loss_slot,
                         scratch_.data(), context_.stream());
    } else {
      VGKERN_CUDA_CHECK(cudaMemcpyAsync(labels_.data(), labels, rows * sizeof(int64_t),
                                        cudaMemcpyHostToDevice, context_.stream()));
      cross_entropy_loss_stream<T>(grad_a_.data(), output(), labels_.data(), rows, classes,
                                   row_losses_.data(), loss_slot, scratch_.data(),
                                   context_.stream());
    }
    const T* dx = run_backward(input_grad.present(), log_scale);
    finish(report, input_grad, dx, log_scale, /*with_output=*/true);
    std::memcpy(out.ptr<T>(), host_results_.data() + output_offset_, rows * classes * sizeof(T));
    double value;
    std::memcpy(&value, host_results_.data() + num_layers() * DenseSlot::kCount * sizeof(double),
                sizeof(double));
    return value;
  }

 private:
  void check_fits_on_device(double elements, const char* what) const {
    size_t free_bytes = 0, total_bytes = 0;
    VGKERN_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const double bytes = elements * sizeof(T);
    if (bytes > static_cast<double>(total_bytes))
      fail<MemoryError>(what, " needs ", bytes / (1 << 30), " GiB, more than the GPU's ",
                        static_cast<double>(total_bytes) / (1 << 30), " GiB");
  }

  // From the host or a device (an input with __cuda_array_interface__): cudaMemcpyDefault.
  void copy_in(T* device, const T* source, int64_t n) {
    VGKERN_CUDA_CHECK(cudaMemcpyAsync(device, source, n * sizeof(T), cudaMemcpyDefault,
                                      context_.stream()));
  }
  void copy_out(T* host, const T* device, int64_t n) {
    VGKERN_CUDA_CHECK(cudaMemcpyAsync(host, device, n * sizeof(T), cudaMemcpyDeviceToHost,
                                      context_.stream()));
  }

  void check_forward_input(const char* op, const TensorView& out, const TensorView& x) {
    const int64_t rows = check_input(op, x);
    check_dtype(op, "out", out, dtype());  // on the host (x may be on the device)
    check_shape(op, "out", out, {rows, sizes_.back()});
  }

  // The results block: per-layer slots and the loss (float64), then the output (B, d_L).
  double* slots() { return reinterpret_cast<double*>(results_.data()); }
  double* slots(int64_t l) { return slots() + l * DenseSlot::kCount; }
  T* output() { return reinterpret_cast<T*>(results_.data() + output_offset_); }
  T* hidden(int64_t l) { return l == num_layers() - 1 ? output() : h_[l].data(); }

  T* param(int64_t offset) { return offset >= 0 ? params_.data() + offset : nullptr; }
  T* grad(int64_t offset) { return offset >= 0 ? grads_.data() + offset : nullptr; }

  void ensure_workspace(int64_t rows) {
    if (rows == rows_) return;
    check_batch(rows);
    state_.invalidate();
    rows_ = 0;  // stays 0 if an allocation below throws
    const int64_t widest = this->widest(), L = num_layers();
    x_.resize(rows * sizes_[0]);
    h_.resize(L);
    dact_.resize(L);
    xhat_.resize(L);
    mean_.resize(L);
    rstd_.resize(L);
    for (int64_t l = 0; l < L; ++l) {
      const int64_t width = sizes_[l + 1];
      h_[l].resize(l == L - 1 ? 0 : rows * width);
      dact_[l].resize(acts_[l].kind == Activation::identity ? 0 : rows * width);
      xhat_[l].resize(is_batch_norm(l) ? rows * width : 0);
      mean_[l].resize(is_batch_norm(l) ? width : 0);
      rstd_[l].resize(is_batch_norm(l) ? width : 0);
    }
    z_.resize(rows * widest);
    grad_a_.resize(rows * widest);
    grad_b_.resize(rows * widest);
    delta_.resize(rows * widest);
    target_.resize(rows * sizes_.back());
    labels_.resize(rows);
    row_losses_.resize(rows);
    const size_t slot_bytes = (L * DenseSlot::kCount + 1) * sizeof(double);
    output_offset_ = (slot_bytes + 255) / 256 * 256;
    results_.resize(output_offset_ + rows * sizes_.back() * sizeof(T));
    host_results_.resize(results_.size());
    rows_ = rows;
  }

  void run_forward(const TensorView& x, const char* op) {
    const int64_t rows = x.dim(0);
    const BatchNormSpec spec{training, bn_.momentum, bn_.eps};
    if (bn_.enabled && num_layers() > 1) check_batchnorm_spec(op, spec, rows);
    ensure_workspace(rows);
    state_.begin(training);
    copy_in(x_.data(), x.ptr<T>(), rows * sizes_[0]);
    const T* input = x_.data();
    for (int64_t l = 0; l < num_layers(); ++l) {
      const LayerLayout& layer = layout_[l];
      const int64_t in = sizes_[l], out = sizes_[l + 1];
      const T* w = params_.data() + layer.weight;
      double* layer_slots = stats ? slots(l) : nullptr;
      cuda_gemm<T>(context_.cublas(), false, true, rows, out, in, T(1), input, in, w, in, T(0),
                   z_.data(), out);
      if (is_batch_norm(l))
        dense_bn_forward_stream<T>(hidden(l), dact_[l].data(), xhat_[l].data(), mean_[l].data(),
                                   rstd_[l].data(), running_mean_.data() + layer.running,
                                   running_var_.data() + layer.running, z_.data(),
                                   param(layer.gamma), param(layer.beta), rows, out, acts_[l],
                                   spec, layer_slots, scratch_.data(), context_.stream());
      else
        dense_forward_epilogue_stream<T>(hidden(l), dact_[l].data(), z_.data(),
                                         params_.data() + layer.bias, rows, out, acts_[l],
                                         layer_slots, scratch_.data(), context_.stream());
      input = hidden(l);
    }
    state_.finish(stats);
  }

  // Backward from dL/d(out) in grad_a_, last layer to first; returns where dL/dx (B, d_0) is
  // (when want_input_grad), still on the device.
  const T* run_backward(bool want_input_grad, bool log_scale) {
    T* current = grad_a_.data();  // dh of layer l
    T* below = grad_b_.data();    // dx of layer l = dh of layer l - 1
    const T* input_grad = nullptr;
    for (int64_t l = num_layers() - 1; l >= 0; --l) {
      const LayerLayout& layer = layout_[l];
      const int64_t in = sizes_[l], out = sizes_[l + 1];
      const T* x = l > 0 ? hidden(l - 1) : x_.data();
      T* dx = l > 0 || want_input_grad ? below : nullptr;
      const T* dact = acts_[l].kind == Activation::identity ? nullptr : dact_[l].data();
      const T* w = params_.data() + layer.weight;
      T* dw = grads_.data() + layer.weight;
      if (is_batch_norm(l))
        dense_bn_backward_prologue_stream<T>(delta_.data(), grad(layer.gamma), grad(layer.beta),
                                             current, dact, xhat_[l].data(), rstd_[l].data(),
                                             param(layer.gamma), rows_, out, state_.training(),
                                             stats, log_scale, slots(l), scratch_.data(),
                                             context_.stream());
      else
        dense_backward_prologue_stream<T>(delta_.data(), grad(layer.bias), current, dact, rows_,
                                          out, stats, log_scale, slots(l), scratch_.data(),
                                          context_.stream());
      cuda_gemm<T>(context_.cublas(), true, false, out, in, rows_, T(1), delta_.data(), out, x,
                   in, T(0), dw, in);
      if (dx)
        cuda_gemm<T>(context_.cublas(), false, false, rows_, in, out, T(1), delta_.data(), out,
                     w, in, T(0), dx, in);
      if (stats && is_batch_norm(l))
        dense_bn_backward_norms_stream<T>(dw, out * in, grad(layer.gamma), grad(layer.beta), out,
                                          slots(l), scratch_.data(), context_.stream());
      else if (stats)
        dense_backward_norms_stream<T>(dw, out * in, grad(layer.bias), out, slots(l),
                                       scratch_.data(), context_.stream());
      if (l == 0) input_grad = dx;
      std::swap(current, below);
    }
    return input_grad;
  }

  // One copy of the results block (slots, loss and, for a step, the output) to the host, dL/dx
  // when asked, then the report rows.
  void finish(const TensorView& report, const TensorView& input_grad, const T* dx, bool log_scale,
              bool with_output) {
    const size_t bytes = with_output ? host_results_.size()
                                     : (num_layers() * DenseSlot::kCount + 1) * sizeof(double);
    VGKERN_CUDA_CHECK(cudaMemcpyAsync(host_results_.data(), results_.data(), bytes,
                                      cudaMemcpyDeviceToHost, context_.stream()));
    if (input_grad.present()) copy_out(input_grad.ptr<T>(), dx, rows_ * sizes_[0]);
    context_.synchronize();
    const double* host_slots = reinterpret_cast<const double*>(host_results_.data());
    int64_t units = 0;  // log2 of the units the backward signal is carried in (log-scale)
    for (int64_t l = num_layers() - 1; l >= 0; --l) {
      const double* s = host_slots + l * DenseSlot::kCount;
      BackwardStats bs;
      ForwardStats fs;
      read_dense_slots(s, &bs, &fs);
      if (is_batch_norm(l)) {
        bs.bias_grad_norm = NAN;  // no dense bias before batch norm (its slot is not written)
      } else {
        bs.gamma_grad_norm = bs.beta_grad_norm = NAN;  // nor gamma and beta in a dense layer
      }
      const int rescale = log_scale ? static_cast<int>(s[DenseSlot::rescale_log2]) : 0;
      fill_report_row(report.ptr<double>() + l * LayerColumn::kCount, stats ? &bs : nullptr,
                      state_.stats_valid() ? &fs : nullptr, units, rescale);
      units += rescale;
    }
  }

  CudaContext context_;  // declared before the device arrays: destroyed after them
  DeviceArray<T> params_, grads_;
  DeviceArray<T> running_mean_, running_var_;  // (sum of BN widths,) each
  DeviceArray<unsigned char> scratch_;  // partials of the reductions (dense and loss kernels)

  // Workspaces for batches of rows_ examples.
  DeviceArray<T> x_;                     // (B, d_0) copy of the input
  std::vector<DeviceArray<T>> h_, dact_;  // per layer (B, d_{l+1}); the last h is in results_
  std::vector<DeviceArray<T>> xhat_;     // BN layers: normalised z (B, d_{l+1})
  std::vector<DeviceArray<T>> mean_, rstd_;  // BN layers: (d_{l+1},) statistics used
  DeviceArray<T> z_;                     // (B, max d) pre-activations of the current layer
  DeviceArray<T> grad_a_, grad_b_;       // (B, max d) ping-pong dh / dx buffers
  DeviceArray<T> delta_;                 // (B, max d) dL/dz of the current layer
  DeviceArray<T> target_;                // (B, d_L)
  DeviceArray<int64_t> labels_;          // (B,)
  DeviceArray<double> row_losses_;       // (B,)
  DeviceArray<unsigned char> results_;   // slots (L, DenseSlot::kCount), loss, pad, output
  std::vector<unsigned char> host_results_;
  size_t output_offset_ = 0;
};

}  // namespace

template <class T>
std::unique_ptr<MLPBase> make_cuda_mlp(const std::vector<int64_t>& sizes,
                                       const std::vector<ActSpec>& acts, BatchNormConfig bn) {
  return std::make_unique<CudaMLP<T>>(sizes, acts, bn);
}

template std::unique_ptr<MLPBase> make_cuda_mlp<float>(const std::vector<int64_t>&,
                                                       const std::vector<ActSpec>&,
                                                       BatchNormConfig);
template std::unique_ptr<MLPBase> make_cuda_mlp<double>(const std::vector<int64_t>&,
                                                        const std::vector<ActSpec>&,
                                                        BatchNormConfig);

}  // namespace vgkern
