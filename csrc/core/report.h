// The statistics schema: every statistic the nets report is declared once, here, with its name
// (the report column and the Python field), its one-line meaning, and which report it belongs to:
//
//   MLP, per layer          GradReport arrays (L rows)        VGKERN_LAYER_*
//   recurrent, per step     SequenceReport arrays (T rows)    VGKERN_STEP_*
//   recurrent, per network  SequenceReport scalars            VGKERN_NETWORK_NORMS
//
// Everything else is derived from these lists: the structs the CPU kernels fill (plain doubles,
// ForwardStats / BackwardStats), the CUDA per-layer slots (DenseSlot) and their copy into those
// structs (read_dense_slots), the report column enums (LayerColumn, StepColumn, NetworkColumn),
// and the names and meanings the bindings export to Python (bindings/report_bindings.cpp:
// _core.REPORT_COLUMNS, SEQUENCE_COLUMNS, SEQUENCE_WEIGHT_COLUMNS, REPORT_DOCS), from which
// vgkern/report.py builds GradReport's and SequenceReport's fields and docstrings.
//
// Adding a statistic: one line in a list below, the kernel that computes it (which fills the
// struct field or CUDA slot of that name), and its tests. (A recurrent one is also put into
// StepStats by the two drivers, nets/recurrent.cpp and nets/recurrent_cuda.cpp, from their
// per-step sums: on CUDA the raw sums (forget-gate sum, saturated count, squared norms) have
// their own slots, cuda/sequence_stats.h's SeqSlot, which the CUDA driver turns into StepStats.)
//
// A *_NORMS entry X(name, ..., meaning) is a norm: it has a column `name` (linear) and, after all
// the norms, a column `log10_name`. Column order within a report: norms, their log10_ twins,
// then the other statistics, in list order (the Python fields keep this order), then the
// optimizer's statistics (*_UPDATE_STATS, which vgkern.optim's opt.step(rep) fills: the native
// op ops/optim.h computes them, the nets leave them NaN) and their log10_ twins.
#pragma once
#include <cmath>
#include <cstdint>
#include <iterator>

namespace vgkern {

// ---- MLP, per layer ----

// Backward norms: X(name, units, meaning). `units` says what a log-scale backward (which
// renormalises delta by 2^-rescale at every layer) measures the kernel's value in: `signal`, the
// units of the incoming dh (act, preact); `rescaled`, those of the rescaled delta (gradients).
#define VGKERN_LAYER_NORMS(X)                                                                      \
  X(weight_grad_norm, rescaled, "||dL/dW_l||_F")                                                   \
  X(bias_grad_norm, rescaled, "||dL/db_l|| (NaN for batch-norm hidden layers: no bias)")           \
  X(preact_grad_norm, signal,                                                                      \
    "||dL/dz_l||_F over the batch, z_l = h_{l-1} W_l^T + b_l (pre-BN in batch-norm layers)")       \
  X(act_grad_norm, signal, "||dL/dh_l||_F, h_l = act(z_l) (the last layer's is ||grad_out||)")     \
  X(gamma_grad_norm, rescaled,                                                                     \
    "||dL/dgamma_l|| of a batch-norm hidden layer (NaN elsewhere and for affine=False)")           \
  X(beta_grad_norm, rescaled,                                                                      \
    "||dL/dbeta_l|| of a batch-norm hidden layer (NaN elsewhere and for affine=False)")

// Forward statistics of layer l, of its pre-activations z_l (pre-BN z for batch-norm layers) and
// activations h_l: X(name, meaning).
#define VGKERN_LAYER_FORWARD_STATS(X)                                                              \
  X(preact_mean, "mean of the B * d_{l+1} entries of z_l")                                         \
  X(preact_std, "population standard deviation of the B * d_{l+1} entries of z_l")                 \
  X(saturated_fraction,                                                                            \
    "share of entries with act'(z) < 1% of max act' (sigmoid, tanh, elu; 0 for identity, relu)")   \
  X(zero_fraction, "share of entries with h_l == 0")                                               \
  X(dead_fraction, "share of units that are 0 for every example of the batch")

// Columns the net derives from the kernels' scales: X(name, meaning).
#define VGKERN_LAYER_SCALES(X)                                                                     \
  X(grad_log2_scale,                                                                               \
    "stored gradients are true gradients * 2**-grad_log2_scale (0 unless log_scale=True)")

// The optimizer step's statistics (vgkern.optim: opt.step(rep) fills them into the report, NaN
// before), per layer: X(name, meaning). Each has a log10_ twin. dW = W after - W before the step
// (the change the step made, exactly as stored), W0 the reference weights (net.set_reference()).
#define VGKERN_LAYER_UPDATE_STATS(X)                                                               \
  X(weight_update_norm, "||dW_l||_F of the last optimizer step (dW_l = W_l after - W_l before)")   \
  X(weight_update_ratio, "||dW_l||_F / ||W_l||_F, W_l before the step (~1e-3: a healthy rate)")    \
  X(weight_norm, "||W_l||_F after the last optimizer step")                                        \
  X(weight_change, "||W_l - W0_l||_F / ||W0_l||_F: how far W_l moved from the reference weights")  \
  X(bias_update_norm, "||db_l|| of the last optimizer step (NaN for batch-norm hidden layers)")    \
  X(bias_update_ratio, "||db_l|| / ||b_l||, b_l before the step (NaN for batch-norm layers)")      \
  X(bias_norm, "||b_l|| after the last optimizer step (NaN for batch-norm hidden layers)")         \
  X(bias_change, "||b_l - b0_l|| / ||b0_l|| (inf or NaN for zero initial biases)")

// ---- recurrent (LSTM, RNN), per time step ----

#define VGKERN_STEP_NORMS(X)                                                                       \
  X(h_grad_norm, "||dL/dh_t||_F over the batch: the total gradient at step t, from its own loss "  \
                 "and from later steps")                                                           \
  X(c_grad_norm, "||dL/dc_t||_F over the batch (LSTM only, NaN for the RNN)")                      \
  X(x_grad_norm, "||dL/dx_t||_F: the curve that shows vanishing through time")

#define VGKERN_STEP_FORWARD_STATS(X)                                                               \
  X(forget_gate_mean, "mean forget-gate activation over B * H (LSTM; NaN for the RNN)")            \
  X(saturated_fraction, "share of gate units (LSTM: i, f, g, o; RNN: hidden units) whose "         \
                        "derivative is below 1% of its maximum")

// ---- recurrent, per network (whole sequence) ----

#define VGKERN_NETWORK_NORMS(X)                                                                    \
  X(weight_ih_grad_norm, "||dL/dW_ih||_F over the whole sequence")                                 \
  X(weight_hh_grad_norm, "||dL/dW_hh||_F over the whole sequence")                                 \
  X(bias_grad_norm, "||dL/db|| of the gate bias (G,) over the whole sequence")

// The optimizer step's statistics per weight matrix (as VGKERN_LAYER_UPDATE_STATS; opt.step(rep)
// fills them, NaN before; log10_ twins in Python): X(name, meaning).
#define VGKERN_NETWORK_UPDATE_STATS(X)                                                             \
  X(weight_ih_update_norm, "||dW_ih||_F of the last optimizer step (W_ih after - before)")         \
  X(weight_ih_update_ratio, "||dW_ih||_F / ||W_ih||_F, W_ih before the step")                      \
  X(weight_ih_norm, "||W_ih||_F after the last optimizer step")                                    \
  X(weight_ih_change, "||W_ih - W0_ih||_F / ||W0_ih||_F against the reference weights")            \
  X(weight_hh_update_norm, "||dW_hh||_F of the last optimizer step (W_hh after - before)")         \
  X(weight_hh_update_ratio, "||dW_hh||_F / ||W_hh||_F, W_hh before the step")                      \
  X(weight_hh_norm, "||W_hh||_F after the last optimizer step")                                    \
  X(weight_hh_change, "||W_hh - W0_hh||_F / ||W0_hh||_F against the reference weights")            \
  X(bias_update_norm, "||db|| of the last optimizer step (b after - before)")                      \
  X(bias_update_ratio, "||db|| / ||b||, b before the step")                                        \
  X(bias_norm, "||b|| after the last optimizer step")                                              \
  X(bias_change, "||b - b0|| / ||b0|| against the reference bias")

// ---- derived: column enums (struct-scoped: LayerColumn::preact_mean) ----

#define VGKERN_COLUMN_(name, ...) name,
#define VGKERN_LOG10_COLUMN_(name, ...) log10_##name,

struct LayerColumn {  // a GradReport row (float64, L rows)
  enum : int {
    VGKERN_LAYER_NORMS(VGKERN_COLUMN_) VGKERN_LAYER_NORMS(VGKERN_LOG10_COLUMN_)
    VGKERN_LAYER_FORWARD_STATS(VGKERN_COLUMN_) VGKERN_LAYER_SCALES(VGKERN_COLUMN_)
    VGKERN_LAYER_UPDATE_STATS(VGKERN_COLUMN_) VGKERN_LAYER_UPDATE_STATS(VGKERN_LOG10_COLUMN_)
    kCount
  };
};

struct StepColumn {  // a SequenceReport row (float64, T rows)
  enum : int {
    VGKERN_STEP_NORMS(VGKERN_COLUMN_) VGKERN_STEP_NORMS(VGKERN_LOG10_COLUMN_)
    VGKERN_STEP_FORWARD_STATS(VGKERN_COLUMN_)
    kCount
  };
};

struct NetworkColumn {  // the per-network norms (float64, kCount entries; log10_ added in Python)
  enum : int { VGKERN_NETWORK_NORMS(VGKERN_COLUMN_) kCount };
};

// The optimizer's per-network statistics of a SequenceReport (float64; log10_ added in Python).
struct NetworkUpdateColumn {
  enum : int { VGKERN_NETWORK_UPDATE_STATS(VGKERN_COLUMN_) kCount };
};

// A layer's CUDA slots (one double each, in device memory): its statistics, then the power of two
// a log-scale backward divided delta (and db, dgamma, dbeta) by.
struct DenseSlot {
  enum : int {
    VGKERN_LAYER_NORMS(VGKERN_COLUMN_) VGKERN_LAYER_FORWARD_STATS(VGKERN_COLUMN_)
    rescale_log2,
    kCount
  };
};

#undef VGKERN_COLUMN_
#undef VGKERN_LOG10_COLUMN_

// ---- derived: the structs the kernels and drivers fill (NaN: not computed) ----

#define VGKERN_STATS_FIELD_(name, ...) double name = NAN;

// Of one layer's pre-activations z over all B * out entries.
struct ForwardStats {
  VGKERN_LAYER_FORWARD_STATS(VGKERN_STATS_FIELD_)
};

// With log_scale, delta, db and dw are multiplied by 2^-rescale_log2 (so that ||delta|| lands in
// [1, 2)): the `signal` norms are in the units of the incoming dh, the `rescaled` ones in the
// units of the rescaled delta (2^rescale_log2 times larger units). Without log_scale
// rescale_log2 is 0 and all share dh's units.
struct BackwardStats {
  VGKERN_LAYER_NORMS(VGKERN_STATS_FIELD_)
  int rescale_log2 = 0;
};

// What a recurrent driver measured at one time step, and over the whole sequence.
struct StepStats {
  VGKERN_STEP_NORMS(VGKERN_STATS_FIELD_)
  VGKERN_STEP_FORWARD_STATS(VGKERN_STATS_FIELD_)
};
struct NetworkStats {
  VGKERN_NETWORK_NORMS(VGKERN_STATS_FIELD_)
};

#undef VGKERN_STATS_FIELD_

// Which units a layer norm is measured in (see VGKERN_LAYER_NORMS).
enum class NormUnits { signal, rescaled };

// The host copy of a layer's CUDA slots (DenseSlot::kCount doubles) into the structs; slots the
// kernels did not write for this layer hold garbage that the caller overwrites (e.g. the bias
// norm of a batch-norm layer).
inline void read_dense_slots(const double* slots, BackwardStats* bs, ForwardStats* fs) {
#define VGKERN_READ_BACKWARD_(name, ...) bs->name = slots[DenseSlot::name];
#define VGKERN_READ_FORWARD_(name, ...) fs->name = slots[DenseSlot::name];
  VGKERN_LAYER_NORMS(VGKERN_READ_BACKWARD_)
  VGKERN_LAYER_FORWARD_STATS(VGKERN_READ_FORWARD_)
#undef VGKERN_READ_BACKWARD_
#undef VGKERN_READ_FORWARD_
}

// ---- derived: names and meanings, in column order (for the bindings) ----

struct StatisticInfo {
  const char* name;
  const char* meaning;
};

#define VGKERN_INFO_(name, meaning) StatisticInfo{#name, meaning},
#define VGKERN_NORM_INFO_(name, units, meaning) StatisticInfo{#name, meaning},
#define VGKERN_LAYER_LOG10_INFO_(name, units, meaning)                                             \
  StatisticInfo{"log10_" #name,                                                                    \
                "log10 of " #name " (-inf for 0; exact past the float range with log_scale=True)"},
#define VGKERN_LOG10_INFO_(name, meaning)                                                          \
  StatisticInfo{"log10_" #name, "log10 of " #name " (-inf for an exact 0)"},

inline constexpr StatisticInfo kLayerStatistics[] = {
    VGKERN_LAYER_NORMS(VGKERN_NORM_INFO_) VGKERN_LAYER_NORMS(VGKERN_LAYER_LOG10_INFO_)
    VGKERN_LAYER_FORWARD_STATS(VGKERN_INFO_) VGKERN_LAYER_SCALES(VGKERN_INFO_)
    VGKERN_LAYER_UPDATE_STATS(VGKERN_INFO_) VGKERN_LAYER_UPDATE_STATS(VGKERN_LOG10_INFO_)};
inline constexpr StatisticInfo kStepStatistics[] = {
    VGKERN_STEP_NORMS(VGKERN_INFO_) VGKERN_STEP_NORMS(VGKERN_LOG10_INFO_)
    VGKERN_STEP_FORWARD_STATS(VGKERN_INFO_)};
// The native norms (NetworkColumn), then their log10_ twins, which vgkern/report.py computes.
inline constexpr StatisticInfo kNetworkStatistics[] = {
    VGKERN_NETWORK_NORMS(VGKERN_INFO_) VGKERN_NETWORK_NORMS(VGKERN_LOG10_INFO_)};
// The optimizer's per-network statistics, then their log10_ twins (computed in vgkern/optim.py).
inline constexpr StatisticInfo kNetworkUpdateStatistics[] = {
    VGKERN_NETWORK_UPDATE_STATS(VGKERN_INFO_) VGKERN_NETWORK_UPDATE_STATS(VGKERN_LOG10_INFO_)};

static_assert(std::size(kLayerStatistics) == LayerColumn::kCount);
static_assert(std::size(kStepStatistics) == StepColumn::kCount);
static_assert(std::size(kNetworkStatistics) == 2 * NetworkColumn::kCount);
static_assert(std::size(kNetworkUpdateStatistics) == 2 * NetworkUpdateColumn::kCount);

#undef VGKERN_INFO_
#undef VGKERN_NORM_INFO_
#undef VGKERN_LAYER_LOG10_INFO_
#undef VGKERN_LOG10_INFO_

}  // namespace vgkern
