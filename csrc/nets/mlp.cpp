#include "nets/mlp.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "core/blas.h"
#include "core/checks.h"
#include "core/dispatch.h"
#include "core/errors.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "core/stats.h"
#include "nets/mlp_driver.h"
#include "ops/batchnorm.h"
#include "ops/dense_cpu.h"
#include "ops/loss.h"

namespace vgkern {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A row-block stack keeps every layer's share of dw from the second block until the end of the
// backward: at most this many weights in all. Measured on 2 cores (bench/README.md, "One
// hand-off per row block"): faster at W = 64 and 128 (L = 50: 205K and 819K weights) and at
// W = 256 with L = 20 (1.3M), not at W = 256 with L = 50 (3.3M: the shares leave the caches).
constexpr int64_t kMaxStackWeights = int64_t{1} << 21;

// A norm measured in units of 2^units: its linear value (may under/overflow) and exact log10.
void put_norm(double* row, int linear_col, int log10_col, double measured, int64_t units) {
  row[linear_col] = times_power_of_two(measured, static_cast<int>(units));
  row[log10_col] = measured > 0 ? std::log10(measured) + units * std::log10(2.0)
                   : measured == 0 ? -std::numeric_limits<double>::infinity()
                                   : kNaN;
}

template <class T>
class MLP final : public MLPDriver {
 public:
  MLP(const std::vector<int64_t>& sizes, const std::vector<ActSpec>& acts, BatchNormConfig bn)
      : MLPDriver(sizes, acts, bn) {
    int64_t running = 0;
    layout_ = mlp_layout(sizes_, bn_, params_, &running);
    grads_.assign(params_.size(), T(0));
    running_mean_.assign(running, T(0));
    running_var_.assign(running, T(1));
    h_.resize(num_layers());
    dact_.resize(num_layers());
    xhat_.resize(num_layers());
    mean_.resize(num_layers());
    rstd_.resize(num_layers());
    forward_stats_.resize(num_layers());
  }

  DType dtype() const override { return dtype_of<T>(); }
  int64_t num_params() const override { return static_cast<int64_t>(params_.size()); }
  int64_t num_running() const override { return static_cast<int64_t>(running_mean_.size()); }
  void* params() override { return params_.data(); }
  void* grads() override { return grads_.data(); }
  void* running_means() override { return running_mean_.data(); }
  void* running_vars() override { return running_var_.data(); }

  void forward(const TensorView& out, const TensorView& x) override {
    CpuCall call(busy_, "MLP.forward");
    run_forward(out, x, "MLP.forward");
  }

  void backward(const TensorView& report, const TensorView& input_grad,
                const TensorView& grad_out, bool log_scale) override {
    const char* op = "MLP.backward";
    CpuCall call(busy_, op);
    state_.require(op, "forward(x)");
    check_dtype(op, "grad_out", grad_out, dtype());
    check_shape(op, "grad_out", grad_out, {rows_, sizes_.back()});
    const T* g = grad_out.ptr<T>();
    std::copy(g, g + rows_ * sizes_.back(), grad_a_.data());
    run_backward(report, input_grad, log_scale, op);
  }

  double step(const TensorView& out, const TensorView& report, const TensorView& input_grad,
              const TensorView& x, Loss loss, const TensorView& target, const int64_t* labels,
              int64_t num_labels, bool log_scale) override {
    const char* op = "MLP.step";
    CpuCall call(busy_, op);
    if (loss == Loss::mse) check_mse_target(op, target, x);
    run_forward(out, x, op);
    TensorView dout = out;
    dout.data = grad_a_.data();
    const double value = state_.refusing([&] {
      return loss == Loss::mse ? mse_loss(dout, out, target)
                               : cross_entropy_loss(dout, out, labels, num_labels);
    });
    run_backward(report, input_grad, log_scale, op);
    return value;
  }

  void check_batch(int64_t rows) const override {
    // x copy, then per layer h, dact and xhat (at most), then the three (B, widest) buffers
    double elements = sizes_[0] + 3.0 * widest();
    for (size_t i = 1; i < sizes_.size(); ++i) elements += 3.0 * sizes_[i];
    // and the second row block's share of the largest row-split layer's dw (ops/layer_plan.h)
    double dw_share = 0;
    for (size_t i = 1; i < sizes_.size(); ++i)
      if (layer_plan(rows, sizes_[i - 1], sizes_[i]).split_rows)
        dw_share = std::max(dw_share, static_cast<double>(sizes_[i - 1]) * sizes_[i]);
    if (row_block_stack(rows)) {  // dw_shares_ and stack_grad_
      dw_share = static_cast<double>(params_.size());
      elements += widest();
    }
    check_fits_in_memory(elements * rows + dw_share, sizeof(T),
                         "MLP.forward: the workspace for this batch");
  }

 private:
  // Whether a batch of `rows` runs as a row-block stack: every layer cut into the same two row
  // blocks with its GEMMs inside them (ops/layer_plan.h: split rows), and nothing between layers
  // that needs all rows (batch norm; log-scale backward, checked per call). Each block then goes
  // through all layers in one hand-off to the helper instead of one per layer and pass (at
  // W = 64 a layer's part takes ~20 us, and each hand-off ~1.5 us of waiting). Float32 only:
  // its blocks' sums of squares are checked inside the blocks (finish_backward). Same bits as
  // layer by layer: the same blocks, combined in the same order.
  bool row_block_stack(int64_t rows) const {
    if (!std::is_same_v<T, float> || bn_.enabled) return false;
    int64_t weights = 0;
    for (int64_t l = 0; l < num_layers(); ++l) {
      const LayerPlan plan = layer_plan(rows, sizes_[l], sizes_[l + 1]);
      if (plan.parts != kMaxParts || !plan.split_rows) return false;
      weights += sizes_[l] * sizes_[l + 1];
    }
    return weights <= kMaxStackWeights;
  }

  void ensure_workspace(int64_t rows) {
    if (rows == rows_) return;
    check_batch(rows);
    const int64_t widest = this->widest();
    state_.invalidate();
    rows_ = 0;  // stays 0 if an allocation below throws
    x_.resize(rows * sizes_[0]);
    for (int64_t l = 0; l < num_layers(); ++l) {
      h_[l].resize(rows * sizes_[l + 1]);
      if (acts_[l].kind != Activation::identity) dact_[l].resize(rows * sizes_[l + 1]);
      if (is_batch_norm(l)) {
        xhat_[l].resize(rows * sizes_[l + 1]);
        mean_[l].resize(sizes_[l + 1]);
        rstd_[l].resize(sizes_[l + 1]);
      }
    }
    grad_a_.resize(rows * widest);
    grad_b_.resize(rows * widest);
    delta_.resize(rows * widest);
    stack_ = row_block_stack(rows);
    if (stack_) {
      dw_shares_.resize(params_.size());  // (kMaxParts - 1) shares, laid out as the params
      stack_grad_.resize(rows * widest);
      moments_.resize(num_layers() * kMaxParts);
      prologue_sums_.resize(num_layers() * kMaxParts);
      col_nonzero_.resize(num_layers());
      bias_sums_.resize(num_layers());
      nonzero_rows_.clear();
      bias_rows_.clear();
      for (int64_t l = 0; l < num_layers(); ++l) {
        nonzero_rows_.push_back(part_rows(col_nonzero_[l], kMaxParts, sizes_[l + 1]));
        bias_rows_.push_back(part_rows(bias_sums_[l], kMaxParts, sizes_[l + 1]));
      }
    }
    rows_ = rows;
  }

  void run_forward(const TensorView& out, const TensorView& x, const char* op) {
    const int64_t rows = check_input(op, x);
    check_arg(op, "out", out, x, {rows, sizes_.back()});
    ensure_workspace(rows);
    state_.begin(training);
    if (bn_.enabled && num_layers() > 1)
      check_batchnorm_spec(op, BatchNormSpec{training, bn_.momentum, bn_.eps}, rows);
    std::copy(x.ptr<T>(), x.ptr<T>() + rows * sizes_[0], x_.data());
    if (!stack_ || !run_stack([&](int threads) { forward_stack(threads); })) forward_layers();
    const T* result = h_.back().data();
    std::copy(result, result + rows * sizes_.back(), out.ptr<T>());
    state_.finish(stats);
  }

  // Runs stack(threads) with the BLAS held to one thread per call when there are threads for
  // the helper (one thread: layer by layer, same bits, one ForwardPanels packing per layer).
  template <class F>
  bool run_stack(F&& stack) {
    BlasSingleThreaded single;
    if (single.threads() < 2) return false;
    stack(single.threads());
    return true;
  }

  void forward_stack(int threads) {
    panels_.clear();
    for (int64_t l = 0; l < num_layers(); ++l)
      panels_.emplace_back(plan(l), params_.data() + layout_[l].weight, sizes_[l], sizes_[l + 1]);
    run_parts(kMaxParts, threads, [&](int p) {
      const T* input = x_.data();
      for (int64_t l = 0; l < num_layers(); ++l) {
        moments_[l * kMaxParts + p] = forward_block<T>(
            plan(l), p, h_[l].data(), dact_[l].data(), input, params_.data() + layout_[l].weight,
            params_.data() + layout_[l].bias, rows_, sizes_[l], sizes_[l + 1], acts_[l],
            panels_[l], stats ? nonzero_rows_[l][p] : nullptr);
        input = h_[l].data();
      }
    });
    for (int64_t l = 0; stats && l < num_layers(); ++l)
      forward_statistics<T>(plan(l), &moments_[l * kMaxParts], nonzero_rows_[l],
                            l > 0 ? h_[l - 1].data() : x_.data(),
                            params_.data() + layout_[l].weight, params_.data() + layout_[l].bias,
                            rows_, sizes_[l], sizes_[l + 1], panels_[l], &forward_stats_[l]);
  }

  void forward_layers() {
    const int64_t rows = rows_;
    const T* input = x_.data();
    for (int64_t l = 0; l < num_layers(); ++l) {
      const LayerLayout& layer = layout_[l];
      const T* w = params_.data() + layer.weight;
      ForwardStats* fs = stats ? &forward_stats_[l] : nullptr;
      if (is_batch_norm(l)) {
        dense_bn_forward_cpu<T>(h_[l].data(), dact_[l].data(), xhat_[l].data(), mean_[l].data(),
                                rstd_[l].data(), running_mean_.data() + layer.running,
                                running_var_.data() + layer.running, input, w, param(layer.gamma),
                                param(layer.beta), rows, sizes_[l], sizes_[l + 1], acts_[l],
                                BatchNormSpec{training, bn_.momentum, bn_.eps}, fs);
      } else {
        dense_forward_cpu<T>(h_[l].data(), dact_[l].data(), input, w, params_.data() + layer.bias,
                             rows, sizes_[l], sizes_[l + 1], acts_[l], fs);
      }
      input = h_[l].data();
    }
  }

  LayerPlan plan(int64_t l) const { return layer_plan(rows_, sizes_[l], sizes_[l + 1]); }

  // Backward from the gradient in grad_a_ (B, d_L), last layer to first.
  void run_backward(const TensorView& report, const TensorView& input_grad, bool log_scale,
                    const char* op) {
    check_backward_outputs(op, report, input_grad, rows_);
    T* dx0 = input_grad.present() ? input_grad.ptr<T>() : nullptr;
    double* table = report.ptr<double>();
    if (stack_ && !log_scale &&
        run_stack([&](int threads) { backward_stack(table, dx0, threads); }))
      return;
    T* current = grad_a_.data();  // dh of layer l
    T* below = grad_b_.data();    // dx of layer l = dh of layer l - 1
    T* delta = delta_.data();     // dL/dz of layer l
    int64_t units = 0;            // log2 of the units the backward signal is carried in
    for (int64_t l = num_layers() - 1; l >= 0; --l) {
      const LayerLayout& layer = layout_[l];
      const int64_t in = sizes_[l], out = sizes_[l + 1];
      const T* x = l > 0 ? h_[l - 1].data() : x_.data();
      T* dx = l > 0 ? below : dx0;
      const T* dact = acts_[l].kind == Activation::identity ? nullptr : dact_[l].data();
      const T* w = params_.data() + layer.weight;
      T* dw = grads_.data() + layer.weight;
      BackwardStats bs;
      BackwardStats* want = stats ? &bs : nullptr;
      const int rescale =
          is_batch_norm(l)
              ? dense_bn_backward_cpu<T>(dx, dw, grad(layer.gamma), grad(layer.beta), delta,
                                         current, dact, xhat_[l].data(), rstd_[l].data(),
                                         param(layer.gamma), x, w, rows_, in, out,
                                         state_.training(), log_scale, want)
              : dense_backward_cpu<T>(dx, dw, grads_.data() + layer.bias, delta, current, dact,
                                      x, w, rows_, in, out, log_scale, want);
      fill_report_row(report.ptr<double>() + l * LayerColumn::kCount, stats ? &bs : nullptr,
                      state_.stats_valid() ? &forward_stats_[l] : nullptr, units, rescale);
      units += rescale;
      std::swap(current, below);
    }
  }

  // The row-block stack's backward (row_block_stack), without log-scale: each block runs every
  // layer's prologue and GEMMs on its rows (block 1's share of dw into dw_shares_; dh from
  // grad_a_ for the top layer, then from grad_b_ and stack_grad_ in turn; delta in delta_),
  // then each layer is finished (shares added, db, norms, its report row), half the layers on
  // each thread.
  void backward_stack(double* report, T* dx0, int threads) {
    const int64_t L = num_layers(), widest = this->widest();
    // block p's base of a (B, widest) buffer for rows `cols` wide: its rows start where they
    // would in rows of `widest` entries, so the blocks' regions never overlap whatever the
    // layers' widths (one block may be layers ahead of the other)
    const auto block_rows = [&](T* buffer, int p, int64_t cols) {
      return buffer + part_begin(rows_, kMaxParts, p) * (widest - cols);
    };
    T* pingpong[2] = {grad_b_.data(), stack_grad_.data()};  // layer l's dx: pingpong[(L-1-l) % 2]
    gemms_.clear();  // gemms_[(L - 1 - l) * kMaxParts + p]: layer l, block p
    for (int64_t l = L - 1; l >= 0; --l) {
      const int64_t in = sizes_[l], out = sizes_[l + 1], w = layout_[l].weight;
      for (int p = 0; p < kMaxParts; ++p)
        gemms_.emplace_back(plan(l), l > 0 ? block_rows(pingpong[(L - 1 - l) % 2], p, in) : dx0,
                            grads_.data() + w, block_rows(delta_.data(), p, out),
                            l > 0 ? h_[l - 1].data() : x_.data(), params_.data() + w, rows_, in,
                            out, stats, dw_shares_.data() + w);
    }
    run_parts(kMaxParts, threads, [&](int p) {
      for (int64_t l = L - 1; l >= 0; --l) {
        const int64_t out = sizes_[l + 1];
        const T* dh = l == L - 1 ? grad_a_.data() : block_rows(pingpong[(L - 2 - l) % 2], p, out);
        const T* dact = acts_[l].kind == Activation::identity ? nullptr : dact_[l].data();
        prologue_sums_[l * kMaxParts + p] =
            backward_block<T>(plan(l), p, block_rows(delta_.data(), p, out), dh, dact, rows_, out,
                              stats, bias_rows_[l][p], &gemms_[(L - 1 - l) * kMaxParts + p]);
      }
    });
    run_parts(kMaxParts, threads, [&](int p) {  // each layer's own results: any split will do
      for (int64_t l = p; l < L; l += kMaxParts) {
        BackwardStats bs;
        finish_backward<T>(plan(l), gemms_[(L - 1 - l) * kMaxParts], true,
                           &prologue_sums_[l * kMaxParts], bias_rows_[l],
                           grads_.data() + layout_[l].bias, nullptr, nullptr, rows_, sizes_[l],
                           sizes_[l + 1], grads_.data() + layout_[l].weight, false,
                           stats ? &bs : nullptr);
        fill_report_row(report + l * LayerColumn::kCount, stats ? &bs : nullptr,
                        state_.stats_valid() ? &forward_stats_[l] : nullptr, 0, 0);
      }
    });
  }

  T* param(int64_t offset) { return offset >= 0 ? params_.data() + offset : nullptr; }
  T* grad(int64_t offset) { return offset >= 0 ? grads_.data() + offset : nullptr; }

  std::vector<T> params_, grads_;
  std::vector<T> running_mean_, running_var_;  // (sum of BN widths,) each

  // Workspaces for batches of rows_ examples.
  std::vector<T> x_;                        // (B, d_0) copy of the input
  std::vector<std::vector<T>> h_, dact_;    // per layer (B, d_{l+1}); no dact for identity
  std::vector<std::vector<T>> xhat_;        // BN layers: normalised z (B, d_{l+1})
  std::vector<std::vector<T>> mean_, rstd_;  // BN layers: (d_{l+1},) statistics used
  std::vector<T> grad_a_, grad_b_;          // (B, max d) ping-pong dh / dx buffers
  std::vector<T> delta_;                    // (B, max d) dL/dz of the current layer
  std::vector<ForwardStats> forward_stats_;

  // The row-block stack (row_block_stack): whether this batch runs as one, and its buffers.
  bool stack_ = false;
  std::vector<T> dw_shares_;                   // (P,) block 1's shares of dw, at dw's offsets
  std::vector<T> stack_grad_;                  // (B, widest) the third dh / dx buffer
  std::vector<PartMoments> moments_;           // (L, kMaxParts) forward sums
  std::vector<PrologueSums> prologue_sums_;    // (L, kMaxParts) backward sums
  std::vector<std::vector<int32_t>> col_nonzero_;  // per layer (kMaxParts, d_{l+1}) rows
  std::vector<std::vector<double>> bias_sums_;     // per layer (kMaxParts, d_{l+1}) rows
  std::vector<PartRows<int32_t>> nonzero_rows_;    // views of the two above, 64-byte rows
  std::vector<PartRows<double>> bias_rows_;
  std::vector<ForwardPanels<T>> panels_;       // per layer, for one forward
  std::vector<BackwardGemms<T>> gemms_;        // per layer, top first, for one backward
};

}  // namespace

int64_t MLPDriver::check_input(const char* op, const TensorView& x) const {
  check_dtype(op, "x", x, dtype());
  check_shape(op, "x", x, {-1, sizes_[0]});
  const int64_t rows = x.dim(0);
  if (rows == 0)
    fail<ValueError>(op, ": x must have at least one row (a batch of 0 examples has no "
                         "gradient), got shape ", x.shape_str());
  blas_int(rows, "batch size");
  return rows;
}

void MLPDriver::check_mse_target(const char* op, const TensorView& target,
                                 const TensorView& x) const {
  check_dtype(op, "target", target, dtype());
  check_shape(op, "target", target, {x.ndim == 2 ? x.dim(0) : -1, sizes_.back()});
}

void MLPDriver::check_backward_outputs(const char* op, const TensorView& report,
                                       const TensorView& input_grad, int64_t rows) const {
  check_dtype(op, "report", report, DType::f64);
  check_shape(op, "report", report, {num_layers(), LayerColumn::kCount});
  if (input_grad.present()) {
    check_dtype(op, "input_grad", input_grad, dtype());
    check_shape(op, "input_grad", input_grad, {rows, sizes_[0]});
  }
}

template <class T>
std::vector<LayerLayout> mlp_layout(const std::vector<int64_t>& sizes, BatchNormConfig bn,
                                    std::vector<T>& initial_params, int64_t* num_running) {
  std::vector<LayerLayout> layout;
  const int64_t num_layers = static_cast<int64_t>(sizes.size()) - 1;
  int64_t offset = 0, running = 0;
  for (int64_t l = 0; l < num_layers; ++l) {
    const int64_t width = sizes[l + 1];
    LayerLayout layer;
    layer.weight = offset;
    offset += width * sizes[l];
    if (bn.enabled && l < num_layers - 1) {
      if (bn.affine) {
        layer.gamma = offset;
        layer.beta = offset + width;
        offset += 2 * width;
      }
      layer.running = running;
      running += width;
    } else {
      layer.bias = offset;
      offset += width;
    }
    layout.push_back(layer);
  }
  initial_params.assign(offset, T(0));
  for (int64_t l = 0; l < num_layers; ++l)  // gamma = 1, beta = 0, as torch.nn.BatchNorm1d
    if (layout[l].gamma >= 0)
      std::fill_n(initial_params.data() + layout[l].gamma, sizes[l + 1], T(1));
  *num_running = running;
  return layout;
}
template std::vector<LayerLayout> mlp_layout<float>(const std::vector<int64_t>&, BatchNormConfig,
                                                    std::vector<float>&, int64_t*);
template std::vector<LayerLayout> mlp_layout<double>(const std::vector<int64_t>&, BatchNormConfig,
                                                     std::vector<double>&, int64_t*);

void fill_report_row(double* row, const BackwardStats* bs, const ForwardStats* fs, int64_t units,
                     int rescale) {
  for (int c = 0; c < LayerColumn::kCount; ++c) row[c] = kNaN;
  row[LayerColumn::grad_log2_scale] = static_cast<double>(units + rescale);
  if (bs) {
#define VGKERN_PUT_NORM_(name, in_units, meaning)                             \
  put_norm(row, LayerColumn::name, LayerColumn::log10_##name, bs->name,       \
           NormUnits::in_units == NormUnits::signal ? units : units + rescale);
    VGKERN_LAYER_NORMS(VGKERN_PUT_NORM_)
#undef VGKERN_PUT_NORM_
  }
  if (fs) {
#define VGKERN_PUT_STAT_(name, meaning) row[LayerColumn::name] = fs->name;
    VGKERN_LAYER_FORWARD_STATS(VGKERN_PUT_STAT_)
#undef VGKERN_PUT_STAT_
  }
}

std::unique_ptr<MLPBase> make_mlp(const std::vector<int64_t>& sizes,
                                  const std::vector<ActSpec>& acts, DType dtype,
                                  BatchNormConfig bn, Device device) {
  if (sizes.size() < 2)
    fail<ValueError>("MLP: sizes must list at least two layer widths [d_0, ..., d_L], got ",
                     sizes.size());
  double total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 1)
      fail<ValueError>("MLP: sizes[", i, "] must be a positive integer, got ", sizes[i]);
    blas_int(sizes[i], "layer width");
    if (i > 0) total += static_cast<double>(sizes[i]) * (sizes[i - 1] + 1);
  }
  // parameters and their gradients, plus (generously) 1 KiB of bookkeeping per layer,
  // refused before allocating when they cannot fit
  const double bytes = 2 * total * (dtype == DType::f32 ? 4 : 8) + 1024.0 * sizes.size();
  check_fits_in_memory(bytes, 1, "MLP: sizes");
  if (acts.size() + 1 != sizes.size())
    fail<ValueError>("MLP: need one activation per layer (", sizes.size() - 1, "), got ",
                     acts.size());
  if (bn.enabled) check_batchnorm_spec("MLP", BatchNormSpec{false, bn.momentum, bn.eps}, 2);
  if (device == Device::cuda)
    return dispatch("MLP", device, dtype, [&](auto tag) -> std::unique_ptr<MLPBase> {
      using T = typename decltype(tag)::value_type;
      if constexpr (decltype(tag)::device == Device::cuda) return make_cuda_mlp<T>(sizes, acts, bn);
      else fail<DeviceError>("MLP: unreachable device dispatch");
    });
  if (dtype == DType::f32) return std::make_unique<MLP<float>>(sizes, acts, bn);
  return std::make_unique<MLP<double>>(sizes, acts, bn);
}

}  // namespace vgkern
