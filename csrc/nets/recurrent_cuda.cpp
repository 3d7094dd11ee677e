// The LSTM / RNN sequence drivers of nets/recurrent.h on an NVIDIA GPU (built with CUDA only).
// Same algorithm as the CPU driver: the input projection of all T steps is one cuBLAS GEMM, then
// per step one GEMM (h_{t-1} W_hh^T, or dpre_t W_hh backward) and one fused gate kernel
// (ops/*_cell_cuda.h); weight gradients and dx of all steps are GEMMs over T * B rows after
// the loop. Parameters, gradients and workspaces stay on the GPU; per-step statistics are folded
// on the device and copied out with the weight norms (and the loss) in one block per call.
#include <algorithm>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/checks.h"
#include "core/errors.h"
#include "cuda/context.h"
#include "cuda/device_array.h"
#include "cuda/sequence_stats.h"
#include "nets/recurrent.h"
#include "ops/dense_cuda.h"
#include "ops/loss.h"
#include "ops/loss_cuda.h"
#include "ops/lstm_cell_cuda.h"
#include "ops/norm_cuda.h"
#include "ops/rnn_cell_cuda.h"

namespace vgkern {
namespace {

// The results block: kNumSeqSlots per step, then the three weight norms and the loss.
enum ResultSlot : int { kResultWeightIh, kResultWeightHh, kResultBias, kResultLoss, kNumResults };

template <class T>
class CudaRecurrent final : public RecurrentBase {
 public:
  CudaRecurrent(CellKind kind, int64_t in, int64_t hidden, Activation act)
      : kind_(kind), in_(in), hidden_(hidden), gates_(kind == CellKind::lstm ? 4 * hidden : hidden),
        act_(act) {
    const int64_t n = gates_ * (in_ + hidden_ + 1);
    params_.resize(n);
    grads_.resize(n);
    VGKERN_CUDA_CHECK(cudaMemsetAsync(params_.data(), 0, n * sizeof(T), context_.stream()));
    VGKERN_CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, n * sizeof(T), context_.stream()));
    scratch_.resize(std::max(dense_cuda_scratch_bytes(0), loss_cuda_scratch_bytes()));
    context_.synchronize();
  }

  DType dtype() const override { return dtype_of<T>(); }
  Device device() const override { return Device::cuda; }
  int64_t num_params() const override { return params_.size(); }
  void* params() override { return params_.data(); }
  void* grads() override { return grads_.data(); }
  int64_t last_steps() const override { return steps_; }
  int64_t last_batch() const override { return rows_; }

  void copy_to_host(NetBuffer which, void* host) override {
    CudaCall call(busy_, context_, name("params").c_str());
    copy_buffer_to_host(context_, buffer(which), buffer_size(which) * sizeof(T), host);
  }
  void copy_from_host(NetBuffer which, int64_t offset, int64_t count, const void* host) override {
    CudaCall call(busy_, context_, name("params").c_str());
    check_range(which, offset, count);
    copy_buffer_from_host(context_, static_cast<T*>(buffer(which)) + offset, host,
                          count * sizeof(T));
  }

  void check_sequence(const char* op, int64_t steps, int64_t rows) const override {
    // x and dx, gates and their gradients, then h, c, tanh c, loss gradient, target per (T, B)
    const double per_step = static_cast<double>(rows) * (2.0 * in_ + 2.0 * gates_ + 5.0 * hidden_);
    size_t free_bytes = 0, total_bytes = 0;
    VGKERN_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const double bytes = per_step * (steps + 1) * sizeof(T);
    if (bytes > static_cast<double>(total_bytes))
      fail<MemoryError>(op, ": the GPU workspace for x_seq needs ", bytes / (1 << 30),
                        " GiB, more than the GPU's ", static_cast<double>(total_bytes) / (1 << 30),
                        " GiB");
  }

  void forward(const SequenceOutputs& out, const TensorView& x_seq, const TensorView& h0,
               const TensorView& c0) override {
    const std::string op = name("forward");
    CudaCall call(busy_, context_, op.c_str());
    run_forward(x_seq, h0, c0, op.c_str());
    copy_forward_outputs(out);
    context_.synchronize();
  }

  void backward(const SequenceOutputs& out, const TensorView& grad_h_seq,
                const TensorView& grad_h_last, const TensorView& grad_c_last) override {
    const std::string op = name("backward");
    CudaCall call(busy_, context_, op.c_str());
    state_.require(op, "forward(x_seq)");
    const int64_t n = rows_ * hidden_;
    check_sequence_grads(op.c_str(), spec(), steps_, rows_, grad_h_seq, grad_h_last, grad_c_last);
    check_sequence_outputs(op.c_str(), spec(), out, steps_, rows_);
    if (grad_h_seq.present()) copy_in(loss_grad_.data(), grad_h_seq.ptr<T>(), steps_ * n);
    if (grad_h_last.present()) copy_in(dh_last_.data(), grad_h_last.ptr<T>(), n);
    if (grad_c_last.present()) copy_in(dc_last_.data(), grad_c_last.ptr<T>(), n);
    run_backward(grad_h_seq.present() ? loss_grad_.data() : nullptr,
                 grad_h_last.present() ? dh_last_.data() : nullptr,
                 grad_c_last.present() ? dc_last_.data() : nullptr);
    finish(out);
  }

  double step(const SequenceOutputs& out, const TensorView& x_seq, const TensorView& h0,
              const TensorView& c0, const TensorView& target, bool every_step) override {
    const std::string op = name("step");
    CudaCall call(busy_, context_, op.c_str());
    check_sequence_target(op.c_str(), spec(), x_seq, target, every_step);
    check_sequence_input(op.c_str(), spec(), x_seq, h0, c0);
    state_.refusing([&] {  // what mse_loss refuses, refused before the forward
      ensure_workspace(op.c_str(), x_seq.dim(0), x_seq.dim(1));
      check_target_finite_on(target.device, target.ptr<T>(), target.numel() / hidden_, hidden_,
                             result_slot(kResultLoss), scratch_.data(), context_.stream());
    });
    run_forward(x_seq, h0, c0, op.c_str());
    check_sequence_outputs(op.c_str(), spec(), out, steps_, rows_);
    const int64_t n = rows_ * hidden_, rows = every_step ? steps_ * rows_ : rows_;
    copy_in(target_.data(), target.ptr<T>(), rows * hidden_);
    const T* prediction = every_step ? h_all_.data() + n : h_all_.data() + steps_ * n;
    mse_loss_stream<T>(loss_grad_.data(), prediction, target_.data(), rows, hidden_, rows_,
                       result_slot(kResultLoss), scratch_.data(), context_.stream());
    run_backward(every_step ? loss_grad_.data() : nullptr, every_step ? nullptr : loss_grad_.data(),
                 nullptr);
    copy_forward_outputs(out);
    finish(out);
    return host_results_[steps_ * kNumSeqSlots + kResultLoss];
  }

 private:
  SequenceSpec spec() const { return SequenceSpec{kind_, dtype(), in_, hidden_}; }
  std::string name(const char* method) const { return spec().op(method); }

  // From the host or a device (an input with __cuda_array_interface__): cudaMemcpyDefault.
  void copy_in(T* device, const T* source, int64_t n) {
    VGKERN_CUDA_CHECK(cudaMemcpyAsync(device, source, n * sizeof(T), cudaMemcpyDefault,
                                      context_.stream()));
  }
  void copy_out(const TensorView& host, const T* device, int64_t n) {
    if (!host.present()) return;
    VGKERN_CUDA_CHECK(cudaMemcpyAsync(host.ptr<T>(), device, n * sizeof(T),
                                      cudaMemcpyDeviceToHost, context_.stream()));
  }
  void zero(T* device, int64_t n) {
    VGKERN_CUDA_CHECK(cudaMemsetAsync(device, 0, n * sizeof(T), context_.stream()));
  }
  double* seq_slots() { return results_.data(); }
  double* result_slot(int which) { return results_.data() + steps_ * kNumSeqSlots + which; }

  void ensure_workspace(const char* op, int64_t steps, int64_t rows) {
    if (steps == steps_ && rows == rows_) return;
    const int64_t n = rows * hidden_;
    check_sequence(op, steps, rows);
    state_.invalidate();
    steps_ = rows_ = 0;  // stay 0 if an allocation below throws
    x_.resize(steps * rows * in_);
    x_grad_.resize(steps * rows * in_);
    h_all_.resize((steps + 1) * n);
    gates_all_.resize(kind_ == CellKind::lstm ? steps * rows * gates_ : 0);
    c_all_.resize(kind_ == CellKind::lstm ? (steps + 1) * n : 0);
    tanh_c_.resize(kind_ == CellKind::lstm ? steps * n : 0);
    dpre_.resize(steps * rows * gates_);
    loss_grad_.resize(steps * n);
    target_.resize(steps * n);
    for (DeviceArray<T>* v : {&dh_a_, &dh_b_, &dc_a_, &dc_b_, &dh_last_, &dc_last_}) v->resize(n);
    partials_.resize(recurrent_partials_bytes(steps, rows, hidden_));
    results_.resize(steps * kNumSeqSlots + kNumResults);
    host_results_.resize(results_.size());
    steps_ = steps;
    rows_ = rows;
  }

  void run_forward(const TensorView& x_seq, const TensorView& h0, const TensorView& c0,
                   const char* op) {
    check_sequence_input(op, spec(), x_seq, h0, c0);
    const int64_t steps = x_seq.dim(0), rows = x_seq.dim(1);
    ensure_workspace(op, steps, rows);
    state_.begin();
    const int64_t n = rows * hidden_, all_rows = steps * rows;
    cudaStream_t stream = context_.stream();
    copy_in(x_.data(), x_seq.ptr<T>(), all_rows * in_);
    if (h0.present()) copy_in(h_all_.data(), h0.ptr<T>(), n); else zero(h_all_.data(), n);
    if (kind_ == CellKind::lstm) {
      if (c0.present()) copy_in(c_all_.data(), c0.ptr<T>(), n); else zero(c_all_.data(), n);
    }
    const T* w_ih = params_.data();
    const T* w_hh = w_ih + gates_ * in_;
    const T* bias = w_hh + gates_ * hidden_;
    // The input projection of all steps at once: pre (T * B, G) = bias + X W_ih^T. The RNN's
    // pre-activations become its hidden states in place (h_all_ rows 1..T).
    T* pre = kind_ == CellKind::lstm ? gates_all_.data() : h_all_.data() + n;
    broadcast_rows_stream<T>(pre, bias, all_rows, gates_, stream);
    cuda_gemm<T>(context_.cublas(), false, true, all_rows, gates_, in_, T(1), x_.data(), in_, w_ih,
                 in_, T(1), pre, gates_);
    for (int64_t t = 0; t < steps; ++t) {
      T* pre_t = pre + t * rows * gates_;
      cuda_gemm<T>(context_.cublas(), false, true, rows, gates_, hidden_, T(1),
                   h_all_.data() + t * n, hidden_, w_hh, hidden_, T(1), pre_t, gates_);
      if (kind_ == CellKind::lstm)
        lstm_step_forward_stream<T>(pre_t, c_all_.data() + (t + 1) * n, h_all_.data() + (t + 1) * n,
                                    tanh_c_.data() + t * n, c_all_.data() + t * n, rows, hidden_,
                                    stats, t, partials_.data(), stream);
      else
        rnn_step_forward_stream<T>(pre_t, rows, hidden_, act_, stats, t, partials_.data(), stream);
    }
    if (stats)
      fold_forward_steps_stream(partials_.data(), steps, rows, hidden_, seq_slots(), stream);
    state_.finish(stats);
  }

  void copy_forward_outputs(const SequenceOutputs& out) {
    const int64_t n = rows_ * hidden_;
    copy_out(out.h_seq, h_all_.data() + n, steps_ * n);
    copy_out(out.h_last, h_all_.data() + steps_ * n, n);
    if (kind_ == CellKind::lstm) copy_out(out.c_last, c_all_.data() + steps_ * n, n);
  }

  // BPTT from device gradients (each may be null: zero): at every h_t (T, B, H), at h_T, c_T.
  void run_backward(const T* grad_h_seq, const T* grad_h_last, const T* grad_c_last) {
    const int64_t n = rows_ * hidden_, all_rows = steps_ * rows_;
    cudaStream_t stream = context_.stream();
    const T* w_ih = params_.data();
    const T* w_hh = w_ih + gates_ * in_;
    T* dw_ih = grads_.data();
    T* dw_hh = dw_ih + gates_ * in_;
    T* dbias = dw_hh + gates_ * hidden_;
    T* dh_next = dh_a_.data();  // dL/dh_t arriving through the recurrence
    T* dh_spare = dh_b_.data();
    T* dc_next = dc_a_.data();  // dL/dc_t arriving from step t + 1 (LSTM)
    T* dc_spare = dc_b_.data();
    if (grad_h_last) {
      VGKERN_CUDA_CHECK(cudaMemcpyAsync(dh_next, grad_h_last, n * sizeof(T),
                                        cudaMemcpyDeviceToDevice, stream));
    } else {
      zero(dh_next, n);
    }
    if (grad_c_last) {
      VGKERN_CUDA_CHECK(cudaMemcpyAsync(dc_next, grad_c_last, n * sizeof(T),
                                        cudaMemcpyDeviceToDevice, stream));
    } else if (kind_ == CellKind::lstm) {
      zero(dc_next, n);
    }
    for (int64_t t = steps_ - 1; t >= 0; --t) {
      const T* g_seq = grad_h_seq ? grad_h_seq + t * n : nullptr;
      T* dpre_t = dpre_.data() + t * rows_ * gates_;
      if (kind_ == CellKind::lstm) {
        lstm_step_backward_stream<T>(dpre_t, dc_spare, dh_next, g_seq, dc_next,
                                     gates_all_.data() + t * rows_ * gates_, c_all_.data() + t * n,
                                     tanh_c_.data() + t * n, rows_, hidden_, stats, t,
                                     partials_.data(), stream);
        std::swap(dc_next, dc_spare);
      } else {
        rnn_step_backward_stream<T>(dpre_t, dh_next, g_seq, h_all_.data() + (t + 1) * n, rows_,
                                    hidden_, act_, stats, t, partials_.data(), stream);
      }
      cuda_gemm<T>(context_.cublas(), false, false, rows_, hidden_, gates_, T(1), dpre_t, gates_,
                   w_hh, hidden_, T(0), dh_spare, hidden_);
      std::swap(dh_next, dh_spare);
    }
    h0_grad_ = dh_next;
    c0_grad_ = dc_next;
    if (stats)
      fold_backward_steps_stream<T>(partials_.data(), steps_, rows_, hidden_,
                                    kind_ == CellKind::lstm, seq_slots(), stream);
    // Weight gradients and dx of all steps at once: dw_ih = dpre^T X, dx = dpre W_ih,
    // dw_hh = dpre^T H_prev (h_0 .. h_{T-1}), dbias = column sums of dpre.
    cuda_gemm<T>(context_.cublas(), true, false, gates_, in_, all_rows, T(1), dpre_.data(), gates_,
                 x_.data(), in_, T(0), dw_ih, in_);
    cuda_gemm<T>(context_.cublas(), false, false, all_rows, in_, gates_, T(1), dpre_.data(),
                 gates_, w_ih, in_, T(0), x_grad_.data(), in_);
    cuda_gemm<T>(context_.cublas(), true, false, gates_, hidden_, all_rows, T(1), dpre_.data(),
                 gates_, h_all_.data(), hidden_, T(0), dw_hh, hidden_);
    column_sums_stream<T>(dbias, dpre_.data(), all_rows, gates_, stream);
    if (!stats) return;
    step_norms_stream<T>(x_grad_.data(), steps_, rows_ * in_, seq_slots(), stream);
    sum_squares_norm_stream<T>(result_slot(kResultWeightIh), dw_ih, gates_ * in_, scratch_.data(),
                               stream);
    sum_squares_norm_stream<T>(result_slot(kResultWeightHh), dw_hh, gates_ * hidden_,
                               scratch_.data(), stream);
    sum_squares_norm_stream<T>(result_slot(kResultBias), dbias, gates_, scratch_.data(), stream);
  }

  // One copy of the results block (and dx, dL/dh_0, dL/dc_0), then the report.
  void finish(const SequenceOutputs& out) {
    const int64_t n = rows_ * hidden_;
    VGKERN_CUDA_CHECK(cudaMemcpyAsync(host_results_.data(), results_.data(),
                                      results_.size() * sizeof(double), cudaMemcpyDeviceToHost,
                                      context_.stream()));
    copy_out(out.x_grad, x_grad_.data(), steps_ * rows_ * in_);
    copy_out(out.h0_grad, h0_grad_, n);
    if (kind_ == CellKind::lstm) copy_out(out.c0_grad, c0_grad_, n);
    context_.synchronize();
    const bool lstm = kind_ == CellKind::lstm;
    for (int64_t t = 0; t < steps_; ++t) {
      const double* s = host_results_.data() + t * kNumSeqSlots;
      StepStats step;  // NaN: not measured
      if (stats) {
        step.h_grad_norm = s[kSeqHNorm];
        if (lstm) step.c_grad_norm = s[kSeqCNorm];
        step.x_grad_norm = s[kSeqXNorm];
      }
      if (state_.stats_valid()) {
        if (lstm) step.forget_gate_mean = s[kSeqForgetSum] / n;
        step.saturated_fraction = s[kSeqSaturated] / (rows_ * gates_);
      }
      fill_step_row(out.report.ptr<double>() + t * StepColumn::kCount, step);
    }
    if (out.weight_report.present()) {
      const double* r = host_results_.data() + steps_ * kNumSeqSlots;
      NetworkStats network;  // NaN: not measured
      if (stats) {
        network.weight_ih_grad_norm = r[kResultWeightIh];
        network.weight_hh_grad_norm = r[kResultWeightHh];
        network.bias_grad_norm = r[kResultBias];
      }
      fill_network_row(out.weight_report.ptr<double>(), network);
    }
  }

  const CellKind kind_;
  const int64_t in_, hidden_, gates_;
  const Activation act_;
  CudaContext context_;  // declared before the device arrays: destroyed after them
  DeviceArray<T> params_, grads_;
  DeviceArray<unsigned char> scratch_;  // partials of the weight-norm reductions and the loss

  // Workspaces for steps_ x rows_ (sequence length x batch).
  int64_t steps_ = 0, rows_ = 0;
  DeviceArray<T> x_, x_grad_;  // (T, B, I) the input and dL/dx
  DeviceArray<T> h_all_;       // (T + 1, B, H): h_0 (initial state), h_1 .. h_T
  DeviceArray<T> c_all_;       // (T + 1, B, H) LSTM cell states
  DeviceArray<T> gates_all_;   // (T, B, 4H) LSTM activated gates
  DeviceArray<T> tanh_c_;      // (T, B, H) LSTM tanh(c_t)
  DeviceArray<T> dpre_;        // (T, B, G) gradients of the pre-activations
  DeviceArray<T> loss_grad_, target_;  // (T, B, H) dL/dh of every step (or of h_T), target
  DeviceArray<T> dh_a_, dh_b_, dc_a_, dc_b_, dh_last_, dc_last_;  // (B, H)
  const T* h0_grad_ = nullptr;  // where dL/dh_0, dL/dc_0 are after the last backward
  const T* c0_grad_ = nullptr;
  DeviceArray<unsigned char> partials_;  // per step and block (cuda/sequence_stats.h)
  DeviceArray<double> results_;          // (T, kNumSeqSlots) then kNumResults
  std::vector<double> host_results_;
  ForwardState state_;  // nets/net_base.h
};

}  // namespace

template <class T>
std::unique_ptr<RecurrentBase> make_cuda_recurrent(CellKind kind, int64_t input_size,
                                                   int64_t hidden_size, Activation nonlinearity) {
  return std::make_unique<CudaRecurrent<T>>(kind, input_size, hidden_size, nonlinearity);
}

template std::unique_ptr<RecurrentBase> make_cuda_recurrent<float>(CellKind, int64_t, int64_t,
                                                                   Activation);
template std::unique_ptr<RecurrentBase> make_cuda_recurrent<double>(CellKind, int64_t, int64_t,
                                                                    Activation);

}  // namespace vgkern
