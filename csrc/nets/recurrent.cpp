#include "nets/recurrent.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <initializer_list>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/blas.h"
#include "core/checks.h"
#include "core/dispatch.h"
#include "core/memory.h"
#include "core/packed_gemm.h"
#include "core/errors.h"
#include "core/scratch.h"
#include "core/stats.h"
#include "ops/layer_plan.h"
#include "ops/dense_cpu.h"
#include "ops/loss.h"
#include "ops/lstm_cell.h"
#include "ops/rnn_cell.h"

namespace vgkern {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

template <class T>
class Recurrent final : public RecurrentBase {
 public:
  Recurrent(CellKind kind, int64_t in, int64_t hidden, Activation act)
      : kind_(kind), in_(in), hidden_(hidden), gates_(kind == CellKind::lstm ? 4 * hidden : hidden),
        act_(act) {
    params_.assign(gates_ * (in_ + hidden_ + 1), T(0));
    grads_.assign(params_.size(), T(0));
  }

  DType dtype() const override { return dtype_of<T>(); }
  int64_t num_params() const override { return static_cast<int64_t>(params_.size()); }
  void* params() override { return params_.data(); }
  void* grads() override { return grads_.data(); }
  int64_t last_steps() const override { return steps_; }
  int64_t last_batch() const override { return rows_; }

  void forward(const SequenceOutputs& out, const TensorView& x_seq, const TensorView& h0,
               const TensorView& c0) override {
    const std::string op = name("forward");
    CpuCall call(busy_, op.c_str());
    run_forward(out, x_seq, h0, c0, op);
  }

  void backward(const SequenceOutputs& out, const TensorView& grad_h_seq,
                const TensorView& grad_h_last, const TensorView& grad_c_last) override {
    const std::string op = name("backward");
    CpuCall call(busy_, op.c_str());
    state_.require(op, "forward(x_seq)");
    check_sequence_grads(op.c_str(), spec(), steps_, rows_, grad_h_seq, grad_h_last, grad_c_last);
    run_backward(out, present_or_null(grad_h_seq), present_or_null(grad_h_last),
                 present_or_null(grad_c_last), op);
  }

  double step(const SequenceOutputs& out, const TensorView& x_seq, const TensorView& h0,
              const TensorView& c0, const TensorView& target, bool every_step) override {
    const std::string op = name("step");
    CpuCall call(busy_, op.c_str());
    check_sequence_target(op.c_str(), spec(), x_seq, target, every_step);
    run_forward(out, x_seq, h0, c0, op);
    const int64_t rows = every_step ? steps_ * rows_ : rows_;
    const T* prediction = every_step ? h_all_.data() + rows_ * hidden_ : last_hidden();
    T* grad = loss_grad_.data();
    const double loss = state_.refusing(
        [&] { return mse_loss_cpu<T>(grad, prediction, target.ptr<T>(), rows, hidden_, rows_); });
    run_backward(out, every_step ? grad : nullptr, every_step ? nullptr : grad, nullptr, op);
    return loss;
  }

 private:
  SequenceSpec spec() const { return SequenceSpec{kind_, dtype(), in_, hidden_}; }
  static const T* present_or_null(const TensorView& g) { return g.present() ? g.ptr<T>() : nullptr; }
  std::string name(const char* method) const { return spec().op(method); }
  const T* last_hidden() const { return h_all_.data() + steps_ * rows_ * hidden_; }

  // Blocks of sequences for the time loop: two when each step's GEMM is small enough to split
  // (ops/layer_plan.h). Otherwise the time loop keeps the whole batch and each step's GEMM runs
  // in two halves of its columns side by side (step_halves), the GEMMs over all steps in two
  // row blocks: single-threaded GEMMs throughout, so that the bits do not depend on the thread
  // count and no BLAS thread is woken in the call (they would spin on the core the helper
  // needs: measured at H=512 B=64, the forward 1.3x slower).
  LayerPlan recurrence_plan(int64_t rows) const {
    LayerPlan plan = layer_plan(rows, hidden_, gates_);
    if (!plan.split_rows) plan.split_rows = plan.parts == 2;  // (step_halves)
    plan.split_columns = false;  // the step's GEMMs are row blocks or halves
    return plan;
  }

  // Whether each step's GEMM with W_hh runs in two halves of its columns over the whole batch
  // (step_gemm_half), from shapes only.
  bool step_halves(int64_t rows) const { return !layer_plan(rows, hidden_, gates_).split_rows; }

  void check_sequence(const char* op, int64_t steps, int64_t rows) const override {
    // x copy, gates and their gradients, then h (and c, tanh c) for every step, per (T, B)
    const double per_step = static_cast<double>(rows) * (in_ + 2.0 * gates_ + 4.0 * hidden_);
    check_fits_in_memory(per_step * (steps + 1), sizeof(T),
                         concat(op, ": the workspace for x_seq").c_str());
  }

  void ensure_workspace(const char* op, int64_t steps, int64_t rows) {
    if (steps == steps_ && rows == rows_) return;
    const int64_t n = rows * hidden_;
    check_sequence(op, steps, rows);
    state_.invalidate();
    steps_ = rows_ = 0;  // stay 0 if an allocation below throws
    x_.resize(steps * rows * in_);
    h_all_.resize((steps + 1) * n);
    gates_all_.resize(steps * rows * gates_);
    dpre_.resize(steps * rows * gates_);
    loss_grad_.resize(steps * n);
    for (auto* v : {&dh_next_, &dh_spare_, &dh_total_, &dc_total_, &dc_next_, &dc_spare_})
      v->resize(n);
    if (kind_ == CellKind::lstm) {
      c_all_.resize((steps + 1) * n);
      tanh_c_.resize(steps * n);
    }
    forget_sum_.resize(steps);
    saturated_.resize(steps);
    steps_ = steps;
    rows_ = rows;
  }

  void run_forward(const SequenceOutputs& out, const TensorView& x_seq, const TensorView& h0,
                   const TensorView& c0, const std::string& name) {
    const char* op = name.c_str();
    check_sequence_input(op, spec(), x_seq, h0, c0);
    const int64_t steps = x_seq.dim(0), rows = x_seq.dim(1);
    ensure_workspace(op, steps, rows);
    state_.begin();
    const int64_t n = rows * hidden_;
    std::copy(x_seq.ptr<T>(), x_seq.ptr<T>() + steps * rows * in_, x_.data());
    copy_or_zero(h_all_.data(), h0, n);
    if (kind_ == CellKind::lstm) copy_or_zero(c_all_.data(), c0, n);

    const T* w_ih = params_.data();
    const T* w_hh = w_ih + gates_ * in_;
    const T* bias = w_hh + gates_ * hidden_;
    // The recurrence runs in blocks of sequences (rows) side by side with no hand-off between
    // steps: each block's rows depend only on themselves (ops/layer_plan.h). With split GEMMs
    // every GEMM of the call runs in the blocks, so that the BLAS's own threads never wake up
    // (they would spin on the core the helper needs).
    const LayerPlan plan = recurrence_plan(rows);
    // The input projection of all steps at once: pre (T * B, G) = bias + X W_ih^T.
    T* pre = kind_ == CellKind::lstm ? gates_all_.data() : h_all_.data() + n;
    const int64_t all_rows = steps * rows;
    const bool packed_ih = pack_w_ih(/*backward=*/false, w_ih);
    auto project = [&](int64_t begin, int64_t count) {
      if (packed_ih) {  // the bias added as each tile is stored: no pass writing it first
        packed_input_gemm(count, x_.data() + begin * in_, in_, false, pre + begin * gates_,
                          gates_, bias);
        return;
      }
      for (int64_t r = begin; r < begin + count; ++r) std::copy(bias, bias + gates_, pre + r * gates_);
      gemm<T>(false, true, count, gates_, in_, T(1), x_.data() + begin * in_, in_, w_ih, in_,
              T(1), pre + begin * gates_, gates_);
    };
    for_parts(plan, plan.parts, [&](int p) {
      const int64_t begin = part_begin(all_rows, plan.parts, p);
      project(begin, part_begin(all_rows, plan.parts, p + 1) - begin);
    });
    // W_hh^T (H, G) packed once for the T per-step GEMMs (core/packed_gemm.h), else the BLAS.
    const bool packed = pack_w_hh(/*backward=*/false, w_hh);
    const bool halves = step_halves(rows);
    const int parts = halves ? cell_blocks(rows) : plan.parts;
    const PartRows<double> forget = part_rows(part_forget_, parts, steps);
    const PartRows<int64_t> saturated = part_rows(part_saturated_, parts, steps);
    // Step t's cell on rows [begin, begin + count), block p: h_t (and c_t) from pre_t.
    auto cell = [&](int p, int64_t t, int64_t begin, int64_t count) {
      T* pre_t = pre + (t * rows + begin) * gates_;
      const int64_t at = begin * hidden_;  // the block's offset in a (B, H) array
      if (kind_ == CellKind::lstm) {
        GateStats gs;
        lstm_gates_forward_cpu<T>(pre_t, c_all_.data() + (t + 1) * n + at,
                                  h_all_.data() + (t + 1) * n + at, tanh_c_.data() + t * n + at,
                                  c_all_.data() + t * n + at, count, hidden_,
                                  stats ? &gs : nullptr);
        forget[p][t] = gs.forget_sum;
        saturated[p][t] = gs.saturated;
      } else {  // pre_t is h_t
        rnn_forward_cpu<T>(pre_t, count * hidden_, act_, stats ? &saturated[p][t] : nullptr);
      }
    };
    if (halves) {
      BlasSingleThreaded single;  // the BLAS on one thread; threads() is the setting
      for (int64_t t = 0; t < steps; ++t) {
        run_parts(2, single.threads(), [&](int q) {  // pre_t += h_{t-1} W_hh^T, all rows
          step_gemm_half(q, packed, false, rows, h_all_.data() + t * n, hidden_, w_hh,
                         pre + t * rows * gates_, gates_);
        });
        run_parts(parts, single.threads(), [&](int p) {
          const int64_t begin = part_begin(rows, parts, p);
          cell(p, t, begin, part_begin(rows, parts, p + 1) - begin);
        });
      }
    } else {
      for_parts(plan, plan.parts, [&](int p) {
        const int64_t begin = part_begin(rows, plan.parts, p);
        const int64_t count = part_begin(rows, plan.parts, p + 1) - begin;
        for (int64_t t = 0; t < steps; ++t) {
          T* pre_t = pre + (t * rows + begin) * gates_;
          const T* h_prev = h_all_.data() + t * n + begin * hidden_;
          if (packed)
            packed_recurrent_gemm(count, h_prev, hidden_, true, pre_t, gates_);
          else
            gemm<T>(false, true, count, gates_, hidden_, T(1), h_prev, hidden_, w_hh, hidden_,
                    T(1), pre_t, gates_);
          cell(p, t, begin, count);
        }
      });
    }
    for (int64_t t = 0; t < steps; ++t) {
      forget_sum_[t] = 0;
      saturated_[t] = 0;
      for (int p = 0; p < parts; ++p) {
        forget_sum_[t] += forget[p][t];
        saturated_[t] += saturated[p][t];
      }
    }
    if (out.h_seq.present()) std::copy(h_all_.data() + n, h_all_.data() + (steps + 1) * n, out.h_seq.ptr<T>());
    if (out.h_last.present()) std::copy(last_hidden(), last_hidden() + n, out.h_last.ptr<T>());
    if (out.c_last.present()) std::copy(c_all_.data() + steps * n, c_all_.data() + (steps + 1) * n, out.c_last.ptr<T>());
    state_.finish(stats);
  }

  // The per-step GEMMs with W_hh, packed once per call where core/packed_gemm.h has a tile for
  // this CPU (float32; measured faster than the BLAS calls, which repack W_hh at every step:
  // bench/README.md, "LSTM"). Forward: pre_t += h_{t-1} W_hh^T (B = W_hh^T, H x G); backward:
  // dh = dpre_t W_hh (B = W_hh, G x H). Returns whether the packed path is taken. Where the
  // time loop runs in row blocks (`plan`, from shapes) each block multiplies its rows; where it
  // keeps the whole batch (big H: 64 x 512 x 2048 at H=512 B=64), each step's GEMM runs as two
  // halves of the panels side by side, each core streaming half of W_hh, then the cell in two
  // row blocks (step_gemm_half, cell_blocks).
  bool pack_w_hh(bool backward, const T* w_hh) {
    return pack_weight(w_hh_packed_, backward, w_hh, hidden_);
  }

  // Row blocks of a whole-batch step's cell (and of its per-step statistics).
  static int cell_blocks(int64_t rows) { return rows >= 2 ? 2 : 1; }

  // Half q (0 or 1) of a whole-batch step's GEMM, dst's columns in that half: forward
  // dst (rows, G) += src (rows, H) W_hh^T, backward dst (rows, H) = src (rows, G) W_hh. With
  // the packed W_hh (`packed`) the halves of its panels, else two single-threaded BLAS calls.
  void step_gemm_half(int q, bool packed, bool backward, int64_t rows, const T* src,
                      int64_t ld_src, const T* w_hh, T* dst, int64_t ld_dst) const {
    if constexpr (std::is_same_v<T, float>) {
      if (packed) {
        const int64_t panels = w_hh_packed_.panels(), half = (panels + 1) / 2;
        packed_gemm_panels(rows, src, ld_src, w_hh_packed_, q == 0 ? 0 : half,
                           q == 0 ? half : panels, !backward, dst, ld_dst);
        return;
      }
    }
    const int64_t cols = backward ? hidden_ : gates_;
    const int64_t c0 = column_begin(cols, q), c1 = column_begin(cols, q + 1);
    if (c1 <= c0) return;
    if (backward)
      gemm<T>(false, false, rows, c1 - c0, gates_, T(1), src, ld_src, w_hh + c0, hidden_, T(0),
              dst + c0, ld_dst);
    else
      gemm<T>(false, true, rows, c1 - c0, hidden_, T(1), src, ld_src, w_hh + c0 * hidden_,
              hidden_, T(1), dst + c0, ld_dst);
  }

  // The GEMMs over all steps with W_ih, the input projection pre += X W_ih^T and dx = dpre W_ih,
  // on the packed kernel too where it was measured faster than the BLAS: input_size <= 256 (1
  // thread, 1600 rows: 1.06x and 1.18x at I = 128; at I = 512 0.85x and 1.07x, so the BLAS).
  bool pack_w_ih(bool backward, const T* w_ih) {
    return in_ <= 256 && pack_weight(w_ih_packed_, backward, w_ih, in_);
  }

  // A gate weight w: (G, cols) packed as the right operand, where the packed kernel has a tile
  // for this CPU (float32 only): forward B = w^T (cols x G), backward B = w (G x cols).
  bool pack_weight(PackedPanels& out, bool backward, const T* w, int64_t cols) {
    if constexpr (std::is_same_v<T, float>) {
      if (!packed_gemm_available()) return false;
      if (backward)
        pack_panels(out, false, w, cols, gates_, cols);
      else
        pack_panels(out, true, w, cols, cols, gates_);
      return true;
    } else {
      (void)out, (void)backward, (void)w, (void)cols;
      return false;
    }
  }

  void packed_input_gemm(int64_t rows, const T* src, int64_t ld_src, bool accumulate, T* dst,
                         int64_t ld_dst, const T* bias = nullptr) const {
    if constexpr (std::is_same_v<T, float>)
      packed_gemm(rows, src, ld_src, w_ih_packed_, accumulate, dst, ld_dst, bias);
  }

  // dst (rows, N) = src (rows, K) @ the packed W_hh (+= with accumulate).
  void packed_recurrent_gemm(int64_t rows, const T* src, int64_t ld_src, bool accumulate, T* dst,
                             int64_t ld_dst) const {
    if constexpr (std::is_same_v<T, float>)
      packed_gemm(rows, src, ld_src, w_hh_packed_, accumulate, dst, ld_dst);
  }

  static void copy_or_zero(T* dst, const TensorView& src, int64_t n) {
    if (src.present())
      std::copy(src.ptr<T>(), src.ptr<T>() + n, dst);
    else
      std::fill(dst, dst + n, T(0));
  }

  void run_backward(const SequenceOutputs& out, const T* grad_h_seq, const T* grad_h_last,
                    const T* grad_c_last, const std::string& name) {
    const char* op = name.c_str();
    check_sequence_outputs(op, spec(), out, steps_, rows_);
    const int64_t n = rows_ * hidden_;
    const T* w_ih = params_.data();
    const T* w_hh = w_ih + gates_ * in_;
    T* dw_ih = grads_.data();
    T* dw_hh = dw_ih + gates_ * in_;
    T* dbias = dw_hh + gates_ * hidden_;
    copy_or_zero_ptr(dh_next_.data(), grad_h_last, n);
    copy_or_zero_ptr(dc_next_.data(), grad_c_last, n);
    // Backpropagation through time in the forward's blocks of sequences, side by side. Each
    // block keeps the norms of its rows per step (h: dL/dh_t, c: dL/dc_t), joined below.
    const LayerPlan plan = recurrence_plan(rows_);  // the GEMMs over all steps below
    const bool packed = pack_w_hh(/*backward=*/true, w_hh);  // W_hh (G, H) packed once
    const bool halves = step_halves(rows_);
    const int parts = halves ? cell_blocks(rows_) : plan.parts;
    const PartRows<double> h_norms = part_rows(part_h_norm_, parts, steps_);
    const PartRows<double> c_norms = part_rows(part_c_norm_, parts, steps_);
    // Step t's cell backward on rows [begin, begin + count), block p: dpre_t from dL/dh_t
    // (dh_next, + the loss's g_seq) and dL/dc_t (dc_next), writing dL/dc_{t-1} to dc_spare.
    // The (B, H) pointers are whole buffers.
    auto cell = [&](int p, int64_t t, int64_t begin, int64_t count, const T* dh_next,
                    const T* dc_next, T* dc_spare) {
      const int64_t at = begin * hidden_, m = count * hidden_;  // the block in a (B, H) array
      const T* g_seq = grad_h_seq ? grad_h_seq + t * n + at : nullptr;
      T* dpre_t = dpre_.data() + (t * rows_ + begin) * gates_;
      T* dh_total = dh_total_.data() + at;
      T* dc_total = dc_total_.data() + at;
      double dh_sumsq = 0, dc_sumsq = 0;
      if (kind_ == CellKind::lstm) {
        lstm_gates_backward_cpu<T>(dpre_t, dc_spare + at, dh_total, dc_total, dh_next + at, g_seq,
                                   dc_next + at, gates_all_.data() + (t * rows_ + begin) * gates_,
                                   c_all_.data() + t * n + at, tanh_c_.data() + t * n + at,
                                   count, hidden_, &dh_sumsq, &dc_sumsq);
        if (stats) c_norms[p][t] = norm_from_sum_squares(dc_sumsq, dc_total, m);
      } else {
        rnn_backward_cpu<T>(dpre_t, dh_total, dh_next + at, g_seq,
                            h_all_.data() + (t + 1) * n + at, m, act_, &dh_sumsq);
      }
      if (stats) h_norms[p][t] = norm_from_sum_squares(dh_sumsq, dh_total, m);
    };
    T* dh_next = dh_next_.data();  // dL/dh_t arriving through the recurrence (B, H)
    T* dh_spare = dh_spare_.data();
    T* dc_next = dc_next_.data();  // dL/dc_t arriving from step t + 1 (LSTM)
    T* dc_spare = dc_spare_.data();
    if (halves) {
      BlasSingleThreaded single;  // the BLAS on one thread; threads() is the setting
      for (int64_t t = steps_ - 1; t >= 0; --t) {
        run_parts(parts, single.threads(), [&](int p) {
          const int64_t begin = part_begin(rows_, parts, p);
          cell(p, t, begin, part_begin(rows_, parts, p + 1) - begin, dh_next, dc_next, dc_spare);
        });
        run_parts(2, single.threads(), [&](int q) {  // dh = dpre_t W_hh, all rows
          step_gemm_half(q, packed, true, rows_, dpre_.data() + t * rows_ * gates_, gates_, w_hh,
                         dh_spare, hidden_);
        });
        if (kind_ == CellKind::lstm) std::swap(dc_next, dc_spare);
        std::swap(dh_next, dh_spare);
      }
    } else {
      // every block swaps its pointers as often: the same whole buffers end up last
      for_parts(plan, plan.parts, [&](int p) {
        const int64_t begin = part_begin(rows_, plan.parts, p);
        const int64_t count = part_begin(rows_, plan.parts, p + 1) - begin;
        const int64_t at = begin * hidden_;
        T* next_h = dh_next_.data();
        T* spare_h = dh_spare_.data();
        T* next_c = dc_next_.data();
        T* spare_c = dc_spare_.data();
        for (int64_t t = steps_ - 1; t >= 0; --t) {
          cell(p, t, begin, count, next_h, next_c, spare_c);
          if (kind_ == CellKind::lstm) std::swap(next_c, spare_c);
          const T* dpre_t = dpre_.data() + (t * rows_ + begin) * gates_;
          if (packed)
            packed_recurrent_gemm(count, dpre_t, gates_, false, spare_h + at, hidden_);
          else
            gemm<T>(false, false, count, hidden_, gates_, T(1), dpre_t, gates_, w_hh, hidden_,
                    T(0), spare_h + at, hidden_);
          std::swap(next_h, spare_h);
        }
        if (p == 0) {
          dh_next = next_h;
          dc_next = next_c;
        }
      });
    }
    T* dh_last = dh_next;  // dL/dh_0 and dL/dc_0 (B, H)
    T* dc_last = dc_next;
    // Weight gradients and dx of all steps at once, in the blocks of the recurrence's plan:
    // dw_ih = dpre^T X, dx = dpre W_ih, dw_hh = dpre^T H_prev, dbias = column sums of dpre.
    const int64_t all_rows = steps_ * rows_;
    T* dx = out.x_grad.present() ? out.x_grad.ptr<T>() : nullptr;
    if (!dx) {
      x_grad_.resize(all_rows * in_);
      dx = x_grad_.data();
    }
    LayerPlan grads_plan = plan;
    grads_plan.dw_blocks = plan.split_rows && gates_ * in_ >= 2 * kMinBlockEntries ? 2 : 1;
    const bool packed_ih = pack_w_ih(/*backward=*/true, w_ih);  // then dx apart, below
    const double dw_ih_sumsq =
        weight_and_input_grads(grads_plan, packed_ih ? nullptr : dx, dw_ih, dpre_.data(),
                               x_.data(), w_ih, all_rows, in_, gates_, stats);
    if (packed_ih)
      for_parts(plan, plan.parts, [&](int p) {
        const int64_t begin = part_begin(all_rows, plan.parts, p);
        packed_input_gemm(part_begin(all_rows, plan.parts, p + 1) - begin,
                          dpre_.data() + begin * gates_, gates_, false, dx + begin * in_, in_);
      });
    grads_plan.dw_blocks = plan.split_rows && gates_ * hidden_ >= 2 * kMinBlockEntries ? 2 : 1;
    const double dw_hh_sumsq =
        weight_and_input_grads<T>(grads_plan, nullptr, dw_hh, dpre_.data(), h_all_.data(), w_hh,
                                  all_rows, hidden_, gates_, stats);
    const PartRows<double> bias_sums = part_rows(bias_sums_, plan.parts, gates_);
    for_parts(plan, plan.parts, [&](int p) {
      const int64_t begin = part_begin(all_rows, plan.parts, p);
      std::fill(bias_sums[p], bias_sums[p] + gates_, 0.0);
      add_column_sums_cpu(bias_sums[p], dpre_.data() + begin * gates_,
                      part_begin(all_rows, plan.parts, p + 1) - begin, gates_);
    });
    sum_part_rows(bias_sums, plan.parts, gates_);
    for (int64_t j = 0; j < gates_; ++j) dbias[j] = static_cast<T>(bias_sums[0][j]);
    const bool lstm = kind_ == CellKind::lstm;
    for (int64_t t = 0; t < steps_; ++t) {
      StepStats step;  // NaN: not measured
      if (stats) {
        step.h_grad_norm = 0;  // the norms over all blocks' rows
        if (lstm) step.c_grad_norm = 0;
        for (int p = 0; p < parts; ++p) {
          step.h_grad_norm = joined_norm(step.h_grad_norm, h_norms[p][t]);
          if (lstm) step.c_grad_norm = joined_norm(step.c_grad_norm, c_norms[p][t]);
        }
        step.x_grad_norm = frobenius_norm(dx + t * rows_ * in_, rows_ * in_);
      }
      if (state_.stats_valid()) {
        if (lstm) step.forget_gate_mean = forget_sum_[t] / n;
        step.saturated_fraction = static_cast<double>(saturated_[t]) / (rows_ * gates_);
      }
      fill_step_row(out.report.ptr<double>() + t * StepColumn::kCount, step);
    }
    if (out.weight_report.present()) {
      NetworkStats network;  // NaN: not measured
      if (stats) {
        network.weight_ih_grad_norm = norm_from_sum_squares(dw_ih_sumsq, dw_ih, gates_ * in_);
        network.weight_hh_grad_norm = norm_from_sum_squares(dw_hh_sumsq, dw_hh, gates_ * hidden_);
        network.bias_grad_norm = frobenius_norm(dbias, gates_);
      }
      fill_network_row(out.weight_report.ptr<double>(), network);
    }
    if (out.h0_grad.present()) std::copy(dh_last, dh_last + n, out.h0_grad.ptr<T>());
    if (out.c0_grad.present()) std::copy(dc_last, dc_last + n, out.c0_grad.ptr<T>());
  }

  static void copy_or_zero_ptr(T* dst, const T* src, int64_t n) {
    if (src)
      std::copy(src, src + n, dst);
    else
      std::fill(dst, dst + n, T(0));
  }

  const CellKind kind_;
  const int64_t in_, hidden_, gates_;
  const Activation act_;
  std::vector<T> params_, grads_;

  // Workspaces for steps_ x rows_ (sequence length x batch).
  int64_t steps_ = 0, rows_ = 0;
  std::vector<T> x_;          // (T, B, I) copy of the input
  std::vector<T> h_all_;      // (T + 1, B, H): h_0 (initial state), h_1 .. h_T
  std::vector<T> c_all_;      // (T + 1, B, H) LSTM cell states
  std::vector<T> gates_all_;  // (T, B, 4H) LSTM activated gates
  std::vector<T> tanh_c_;     // (T, B, H) LSTM tanh(c_t)
  std::vector<T> dpre_;       // (T, B, G) gradients of the pre-activations
  std::vector<T> loss_grad_;  // (T, B, H) loss gradients of step()
  std::vector<T> dh_next_, dh_spare_, dh_total_, dc_total_, dc_next_, dc_spare_;  // (B, H)
  std::vector<T> x_grad_;     // (T, B, I) when the caller does not want dx
  PackedPanels w_hh_packed_;  // W_hh^T (forward) or W_hh (backward) in panels, float32
  PackedPanels w_ih_packed_;  // W_ih^T (forward) or W_ih (backward), input_size <= 256
  std::vector<double> bias_sums_;
  std::vector<double> forget_sum_;
  std::vector<int64_t> saturated_;
  // Per block of sequences and step (core/scratch.h PartRows): forward statistics, norms.
  std::vector<double> part_forget_, part_h_norm_, part_c_norm_;
  std::vector<int64_t> part_saturated_;
  ForwardState state_;  // nets/net_base.h
};

}  // namespace

std::string SequenceSpec::op(const char* method) const {
  return std::string(kind == CellKind::lstm ? "LSTM." : "RNN.") + method;
}

void check_sequence_input(const char* op, const SequenceSpec& net, const TensorView& x_seq,
                          const TensorView& h0, const TensorView& c0) {
  check_dtype(op, "x_seq", x_seq, net.dtype);
  check_shape(op, "x_seq", x_seq, {-1, -1, net.in});
  const int64_t steps = x_seq.dim(0), rows = x_seq.dim(1);
  if (steps == 0)
    fail<ValueError>(op, ": x_seq must have at least one time step, got shape ", x_seq.shape_str());
  if (rows == 0)
    fail<ValueError>(op, ": x_seq must have at least one sequence (batch > 0), got shape ",
                     x_seq.shape_str());
  blas_int(steps * rows, "steps * batch");
  for (auto [arg, t] : {std::pair<const char*, const TensorView*>{"h0", &h0}, {"c0", &c0}})
    if (t->present()) {
      check_dtype(op, arg, *t, net.dtype);
      check_shape(op, arg, *t, {rows, net.hidden});
    }
  if (c0.present() && net.kind == CellKind::rnn)
    fail<ValueError>(op, ": an RNN has no cell state (c0)");
}

void check_sequence_target(const char* op, const SequenceSpec& net, const TensorView& x_seq,
                           const TensorView& target, bool every_step) {
  check_dtype(op, "target", target, net.dtype);
  const int64_t steps = x_seq.ndim == 3 ? x_seq.dim(0) : -1;
  const int64_t batch = x_seq.ndim == 3 ? x_seq.dim(1) : -1;
  if (every_step)
    check_shape(op, "target", target, {steps, batch, net.hidden});
  else
    check_shape(op, "target", target, {batch, net.hidden});
}

void check_sequence_grads(const char* op, const SequenceSpec& net, int64_t steps, int64_t rows,
                          const TensorView& grad_h_seq, const TensorView& grad_h_last,
                          const TensorView& grad_c_last) {
  auto optional = [&](const char* arg, const TensorView& g, std::initializer_list<int64_t> shape) {
    if (!g.present()) return;
    check_dtype(op, arg, g, net.dtype);
    check_shape(op, arg, g, shape);
  };
  optional("grad_h_seq", grad_h_seq, {steps, rows, net.hidden});
  optional("grad_hT", grad_h_last, {rows, net.hidden});
  optional("grad_cT", grad_c_last, {rows, net.hidden});
  if (grad_c_last.present() && net.kind == CellKind::rnn)
    fail<ValueError>(op, ": an RNN has no cell state (grad_cT)");
}

void check_sequence_outputs(const char* op, const SequenceSpec& net, const SequenceOutputs& out,
                            int64_t steps, int64_t rows) {
  check_dtype(op, "report", out.report, DType::f64);
  const bool sized_for_this_forward =
      out.report.dim(0) == steps && out.report.dim(1) == StepColumn::kCount &&
      (!out.x_grad.present() || (out.x_grad.dim(0) == steps && out.x_grad.dim(1) == rows &&
                                 out.x_grad.dim(2) == net.in)) &&
      (!out.h0_grad.present() || out.h0_grad.dim(0) == rows) &&
      (!out.c0_grad.present() || out.c0_grad.dim(0) == rows);
  if (!sized_for_this_forward)
    fail<DeviceError>(op, ": the last forward changed (T, B) while this call was starting; "
                      "another thread is using this net (use one net per thread)");
}

double log10_norm(double norm) {
  return norm > 0 ? std::log10(norm) : norm == 0 ? -std::numeric_limits<double>::infinity() : kNaN;
}

void fill_step_row(double* row, const StepStats& step) {
#define VGKERN_PUT_NORM_(name, meaning) \
  row[StepColumn::name] = step.name;    \
  row[StepColumn::log10_##name] = log10_norm(step.name);
  VGKERN_STEP_NORMS(VGKERN_PUT_NORM_)
#undef VGKERN_PUT_NORM_
#define VGKERN_PUT_STAT_(name, meaning) row[StepColumn::name] = step.name;
  VGKERN_STEP_FORWARD_STATS(VGKERN_PUT_STAT_)
#undef VGKERN_PUT_STAT_
}

void fill_network_row(double* row, const NetworkStats& network) {
#define VGKERN_PUT_NORM_(name, meaning) row[NetworkColumn::name] = network.name;
  VGKERN_NETWORK_NORMS(VGKERN_PUT_NORM_)
#undef VGKERN_PUT_NORM_
}

std::unique_ptr<RecurrentBase> make_recurrent(CellKind kind, int64_t input_size,
                                              int64_t hidden_size, Activation nonlinearity,
                                              DType dtype, Device device) {
  const char* what = kind == CellKind::lstm ? "LSTM" : "RNN";
  if (input_size < 1) fail<ValueError>(what, ": input_size must be a positive integer, got ", input_size);
  if (hidden_size < 1) fail<ValueError>(what, ": hidden_size must be a positive integer, got ", hidden_size);
  blas_int(4 * hidden_size, "4 * hidden_size");
  blas_int(input_size, "input_size");
  // parameters and their gradients, refused before allocating when they cannot fit
  const double gates = kind == CellKind::lstm ? 4.0 * hidden_size : 1.0 * hidden_size;
  check_fits_in_memory(2 * gates * (input_size + hidden_size + 1), dtype == DType::f32 ? 4 : 8,
                       concat(what, ": input_size and hidden_size").c_str());
  if (device == Device::cuda)
    return dispatch(what, device, dtype, [&](auto tag) -> std::unique_ptr<RecurrentBase> {
      using T = typename decltype(tag)::value_type;
      if constexpr (decltype(tag)::device == Device::cuda)
        return make_cuda_recurrent<T>(kind, input_size, hidden_size, nonlinearity);
      else
        fail<DeviceError>(what, ": unreachable device dispatch");
    });
  if (dtype == DType::f32)
    return std::make_unique<Recurrent<float>>(kind, input_size, hidden_size, nonlinearity);
  return std::make_unique<Recurrent<double>>(kind, input_size, hidden_size, nonlinearity);
}

}  // namespace vgkern
