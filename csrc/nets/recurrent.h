// Whole-sequence drivers for the LSTM and the Elman RNN: one native call runs the forward over
// all T steps, one the whole backpropagation through time, with per-step statistics.
// The input projection x_t W_ih^T of every step is one GEMM over all T * B rows (likewise
// dW_ih, dW_hh and dx after BPTT); only h_{t-1} W_hh^T and dpre_t W_hh run per step.
//
// Parameters (flat): weight_ih (G, I), weight_hh (G, H), bias (G,), with G = 4H (LSTM, gates
// i, f, g, o as PyTorch) or H (RNN).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/report.h"  // StepColumn, NetworkColumn
#include "core/tensor.h"
#include "nets/net_base.h"
#include "ops/activation.h"

namespace vgkern {

enum class CellKind { lstm, rnn };

struct SequenceOutputs {  // where results land; absent views are not written
  TensorView h_seq, h_last, c_last;                  // (T, B, H), (B, H), (B, H)
  TensorView report, weight_report;                  // (T, StepColumn), (NetworkColumn,)
  TensorView x_grad, h0_grad, c0_grad;               // (T, B, I), (B, H), (B, H)
};

class RecurrentBase : public NetBase {
 public:
  virtual int64_t num_params() const = 0;
  virtual void* params() = 0;
  virtual void* grads() = 0;
  int64_t buffer_size(NetBuffer which) const final {
    return which == NetBuffer::params || which == NetBuffer::grads ? num_params() : 0;
  }
  void* buffer(NetBuffer which) final {
    return which == NetBuffer::params ? params() : which == NetBuffer::grads ? grads() : nullptr;
  }
  virtual int64_t last_steps() const = 0;  // T and B of the last forward (0 before any)
  virtual int64_t last_batch() const = 0;
  // MemoryError now if a (steps, rows) sequence needs a workspace larger than physical memory
  virtual void check_sequence(const char* op, int64_t steps, int64_t rows) const = 0;
  virtual void forward(const SequenceOutputs& out, const TensorView& x_seq, const TensorView& h0,
                       const TensorView& c0) = 0;
  // grad_h_seq (T, B, H), grad_h_last, grad_c_last (B, H): each may be absent (zero).
  virtual void backward(const SequenceOutputs& out, const TensorView& grad_h_seq,
                        const TensorView& grad_h_last, const TensorView& grad_c_last) = 0;
  // forward + mse loss on the last hidden state (target (B, H)) or on every step
  // (target (T, B, H), every_step) + backward. Returns the loss.
  virtual double step(const SequenceOutputs& out, const TensorView& x_seq, const TensorView& h0,
                      const TensorView& c0, const TensorView& target, bool every_step) = 0;
  bool stats = true;
};

// What the CPU and CUDA sequence drivers check alike (nets/recurrent.cpp), with the same messages.
struct SequenceSpec {
  CellKind kind;
  DType dtype;
  int64_t in, hidden;
  std::string op(const char* method) const;  // "LSTM.forward", "RNN.step", ...
};
// x_seq (T, B, I) with T, B >= 1 (T * B within a BLAS int); h0, c0 (B, H) when present; no c0
// for an RNN.
void check_sequence_input(const char* op, const SequenceSpec& net, const TensorView& x_seq,
                          const TensorView& h0, const TensorView& c0);
// step's target: (B, H), or (T, B, H) for a loss on every step; refused before the forward.
void check_sequence_target(const char* op, const SequenceSpec& net, const TensorView& x_seq,
                           const TensorView& target, bool every_step);
// backward's gradients (each may be absent) for the last forward's (T, B); no grad_cT for an RNN.
void check_sequence_grads(const char* op, const SequenceSpec& net, int64_t steps, int64_t rows,
                          const TensorView& grad_h_seq, const TensorView& grad_h_last,
                          const TensorView& grad_c_last);
// The outputs the caller sized from the last forward before the call took the net's lock; a
// forward from another thread in between would make them too small: refused.
void check_sequence_outputs(const char* op, const SequenceSpec& net, const SequenceOutputs& out,
                            int64_t steps, int64_t rows);
double log10_norm(double norm);  // -inf for 0, NaN for NaN
// A report row (StepColumn::kCount; the norms' log10_ twins from them) and the per-network
// norms (NetworkColumn::kCount) from what a driver measured.
void fill_step_row(double* row, const StepStats& step);
void fill_network_row(double* row, const NetworkStats& network);

std::unique_ptr<RecurrentBase> make_recurrent(CellKind kind, int64_t input_size,
                                              int64_t hidden_size, Activation nonlinearity,
                                              DType dtype, Device device = Device::cpu);

// nets/recurrent_cuda.cpp (built with CUDA only): the same net on the current CUDA device.
template <class T>
std::unique_ptr<RecurrentBase> make_cuda_recurrent(CellKind kind, int64_t input_size,
                                                   int64_t hidden_size, Activation nonlinearity);

}  // namespace vgkern
