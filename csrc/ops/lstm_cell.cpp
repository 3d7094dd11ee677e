// lstm_cell_forward / lstm_cell_backward: checks and dispatch (math in lstm_cell_cpu.cpp).
#include "ops/lstm_cell.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/checks.h"
#include "core/dispatch.h"
#include "cuda/fill.h"
#include "ops/lstm_cell_cuda.h"
#include "ops/rnn_cell.h"

namespace vgkern {

void lstm_cell_forward(const TensorView& h, const TensorView& c, const TensorView& gates,
                       const TensorView& x, const TensorView& h_prev, const TensorView& c_prev,
                       const TensorView& w_ih, const TensorView& w_hh, const TensorView& bias) {
  const char* op = "lstm_cell_forward";
  const CellShape s = check_cell(op, x, h_prev, w_ih, w_hh, bias, 4);
  check_arg(op, "c_prev", c_prev, x, {s.rows, s.hidden});
  check_arg(op, "h", h, x, {s.rows, s.hidden});
  check_arg(op, "c", c, x, {s.rows, s.hidden});
  check_arg(op, "gates", gates, x, {s.rows, 4 * s.hidden});
  // Empty outputs: return before the kernels, whose loops over the rows would be all that is
  // left (minutes for an empty (10**12, 0) input).
  if (s.rows == 0 || s.hidden == 0) return;
  dispatch(op, x.device, x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda) {
      lstm_cell_forward_cuda<T>(h.ptr<T>(), c.ptr<T>(), gates.ptr<T>(), x.ptr<T>(),
                                h_prev.ptr<T>(), c_prev.ptr<T>(), w_ih.ptr<T>(), w_hh.ptr<T>(),
                                bias.ptr<T>(), s.rows, s.in, s.hidden);
      return;
    }
    std::vector<T> tanh_c(s.rows * s.hidden);
    cell_preactivations_cpu<T>(gates.ptr<T>(), x.ptr<T>(), h_prev.ptr<T>(), w_ih.ptr<T>(),
                               w_hh.ptr<T>(), bias.ptr<T>(), s.rows, s.in, s.hidden,
                               4 * s.hidden);
    lstm_gates_forward_cpu<T>(gates.ptr<T>(), c.ptr<T>(), h.ptr<T>(), tanh_c.data(),
                              c_prev.ptr<T>(), s.rows, s.hidden, nullptr);
  });
}

void lstm_cell_backward(const TensorView& dx, const TensorView& dh_prev,
                        const TensorView& dc_prev, const TensorView& dw_ih,
                        const TensorView& dw_hh, const TensorView& dbias, const TensorView& dh,
                        const TensorView& dc, const TensorView& gates, const TensorView& c,
                        const TensorView& c_prev, const TensorView& x, const TensorView& h_prev,
                        const TensorView& w_ih, const TensorView& w_hh) {
  const char* op = "lstm_cell_backward";
  const CellShape s = check_cell(op, x, h_prev, w_ih, w_hh, TensorView{}, 4);
  for (auto [arg, t] : {std::pair<const char*, const TensorView*>{"dh", &dh}, {"dc", &dc},
                        {"c", &c}, {"c_prev", &c_prev}})
    check_arg(op, arg, *t, x, {s.rows, s.hidden});
  check_arg(op, "gates", gates, x, {s.rows, 4 * s.hidden});
  check_arg(op, "dx", dx, x, {s.rows, s.in});
  check_arg(op, "dh_prev", dh_prev, x, {s.rows, s.hidden});
  check_arg(op, "dc_prev", dc_prev, x, {s.rows, s.hidden});
  check_arg(op, "dweight_ih", dw_ih, x, {4 * s.hidden, s.in});
  check_arg(op, "dweight_hh", dw_hh, x, {4 * s.hidden, s.hidden});
  check_arg(op, "dbias", dbias, x, {4 * s.hidden});
  if (s.rows == 0 || s.hidden == 0) {  // no gate: zero gradients, without a loop over the rows
    dispatch(op, x.device, x.dtype, [&](auto tag) {
      using T = typename decltype(tag)::value_type;
      for (const TensorView* t : {&dx, &dh_prev, &dc_prev, &dw_ih, &dw_hh, &dbias}) {
        if constexpr (decltype(tag)::device == Device::cuda)
          fill_zero_cuda<T>(t->ptr<T>(), t->numel());
        else
          std::fill(t->ptr<T>(), t->ptr<T>() + t->numel(), T(0));
      }
    });
    return;
  }
  dispatch(op, x.device, x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda) {
      lstm_cell_backward_cuda<T>(dx.ptr<T>(), dh_prev.ptr<T>(), dc_prev.ptr<T>(), dw_ih.ptr<T>(),
                                 dw_hh.ptr<T>(), dbias.ptr<T>(), dh.ptr<T>(), dc.ptr<T>(),
                                 gates.ptr<T>(), c.ptr<T>(), c_prev.ptr<T>(), x.ptr<T>(),
                                 h_prev.ptr<T>(), w_ih.ptr<T>(), w_hh.ptr<T>(), s.rows, s.in,
                                 s.hidden);
      return;
    }
    const int64_t n = s.rows * s.hidden;
    std::vector<T> tanh_c(n), dpre(4 * n), dh_total(n), dc_total(n);
    for (int64_t i = 0; i < n; ++i) tanh_c[i] = std::tanh(c.ptr<T>()[i]);
    lstm_gates_backward_cpu<T>(dpre.data(), dc_prev.ptr<T>(), dh_total.data(), dc_total.data(),
                               dh.ptr<T>(), nullptr, dc.ptr<T>(), gates.ptr<T>(),
                               c_prev.ptr<T>(), tanh_c.data(), s.rows, s.hidden, nullptr,
                               nullptr);
    cell_weight_backward_cpu<T>(dx.ptr<T>(), dh_prev.ptr<T>(), dw_ih.ptr<T>(), dw_hh.ptr<T>(),
                                dbias.ptr<T>(), dpre.data(), x.ptr<T>(), h_prev.ptr<T>(),
                                w_ih.ptr<T>(), w_hh.ptr<T>(), s.rows, s.in, s.hidden,
                                4 * s.hidden);
  });
}

}  // namespace vgkern
