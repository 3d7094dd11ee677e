// rnn_cell_forward / rnn_cell_backward: checks and dispatch (math in rnn_cell_cpu.cpp).
#include "ops/rnn_cell.h"

#include <vector>

#include "core/checks.h"
#include "core/dispatch.h"
#include "ops/rnn_cell_cuda.h"
#include "core/errors.h"

namespace vgkern {

Activation parse_rnn_nonlinearity(const std::string& name, const char* arg) {
  if (name == "tanh") return Activation::tanh;
  if (name == "relu") return Activation::relu;
  fail<ValueError>(arg, " must be 'tanh' or 'relu', got '", name, "'");
}

CellShape check_cell(const char* op, const TensorView& x, const TensorView& h_prev,
                     const TensorView& w_ih, const TensorView& w_hh, const TensorView& bias,
                     int64_t gates) {
  check_shape(op, "x", x, {-1, -1});
  check_dtype(op, "h_prev", h_prev, x.dtype);
  check_shape(op, "h_prev", h_prev, {x.dim(0), -1});
  const CellShape s{x.dim(0), x.dim(1), h_prev.dim(1)};
  check_arg(op, "weight_ih", w_ih, x, {gates * s.hidden, s.in});
  check_arg(op, "weight_hh", w_hh, x, {gates * s.hidden, s.hidden});
  if (bias.present()) check_arg(op, "bias", bias, x, {gates * s.hidden});
  return s;
}

void rnn_cell_forward(const TensorView& h, const TensorView& x, const TensorView& h_prev,
                      const TensorView& w_ih, const TensorView& w_hh, const TensorView& bias,
                      Activation act) {
  const char* op = "rnn_cell_forward";
  const CellShape s = check_cell(op, x, h_prev, w_ih, w_hh, bias, 1);
  check_arg(op, "h", h, x, {s.rows, s.hidden});
  dispatch(op, x.device, x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda) {
      rnn_cell_forward_cuda<T>(h.ptr<T>(), x.ptr<T>(), h_prev.ptr<T>(), w_ih.ptr<T>(),
                               w_hh.ptr<T>(), bias.ptr<T>(), s.rows, s.in, s.hidden, act);
    } else {
      cell_preactivations_cpu<T>(h.ptr<T>(), x.ptr<T>(), h_prev.ptr<T>(), w_ih.ptr<T>(),
                                 w_hh.ptr<T>(), bias.ptr<T>(), s.rows, s.in, s.hidden, s.hidden);
      rnn_forward_cpu<T>(h.ptr<T>(), s.rows * s.hidden, act, nullptr);
    }
  });
}

void rnn_cell_backward(const TensorView& dx, const TensorView& dh_prev, const TensorView& dw_ih,
                       const TensorView& dw_hh, const TensorView& dbias, const TensorView& dh,
                       const TensorView& h, const TensorView& x, const TensorView& h_prev,
                       const TensorView& w_ih, const TensorView& w_hh, Activation act) {
  const char* op = "rnn_cell_backward";
  const CellShape s = check_cell(op, x, h_prev, w_ih, w_hh, TensorView{}, 1);
  check_arg(op, "dh", dh, x, {s.rows, s.hidden});
  check_arg(op, "h", h, x, {s.rows, s.hidden});
  dispatch(op, x.device, x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda) {
      rnn_cell_backward_cuda<T>(dx.ptr<T>(), dh_prev.ptr<T>(), dw_ih.ptr<T>(), dw_hh.ptr<T>(),
                                dbias.ptr<T>(), dh.ptr<T>(), h.ptr<T>(), x.ptr<T>(),
                                h_prev.ptr<T>(), w_ih.ptr<T>(), w_hh.ptr<T>(), s.rows, s.in,
                                s.hidden, act);
      return;
    }
    std::vector<T> dpre(s.rows * s.hidden), dh_total(s.rows * s.hidden);
    rnn_backward_cpu<T>(dpre.data(), dh_total.data(), dh.ptr<T>(), nullptr, h.ptr<T>(),
                        s.rows * s.hidden, act, nullptr);
    cell_weight_backward_cpu<T>(dx.ptr<T>(), dh_prev.ptr<T>(), dw_ih.ptr<T>(), dw_hh.ptr<T>(),
                                dbias.ptr<T>(), dpre.data(), x.ptr<T>(), h_prev.ptr<T>(),
                                w_ih.ptr<T>(), w_hh.ptr<T>(), s.rows, s.in, s.hidden, s.hidden);
  });
}

}  // namespace vgkern
