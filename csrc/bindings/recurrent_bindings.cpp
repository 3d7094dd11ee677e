// vgkern._core.RecurrentCore (LSTM / RNN sequence drivers) and the cell ops; vgkern/recurrent.py
// wraps them with the public API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/arrays.h"
#include "core/checks.h"
#include "nets/recurrent.h"
#include "ops/lstm_cell.h"
#include "ops/rnn_cell.h"

namespace vgkern {

namespace {

struct PyRecurrent {
  std::unique_ptr<RecurrentBase> net;
  CellKind kind;
  int64_t input_size, hidden_size;
};

TensorView optional_view(py::handle obj, const NetBase& net, const char* op, const char* arg) {
  return obj.is_none() ? TensorView{} : net_input_view(obj, net, op, arg);
}

// Allocates the arrays a forward/backward returns; `x_seq` gives T and B (checked natively).
struct Results {
  py::object h_seq = py::none(), h_last = py::none(), c_last = py::none();
  py::object report = py::none(), weights = py::none();
  py::object x_grad = py::none(), h0_grad = py::none(), c0_grad = py::none();
  SequenceOutputs views;
};

void allocate_forward(Results& r, const PyRecurrent& self, DType dtype, int64_t steps,
                      int64_t rows) {
  const int64_t H = self.hidden_size;
  r.h_seq = new_array(dtype, {steps, rows, H}, &r.views.h_seq);
  r.h_last = new_array(dtype, {rows, H}, &r.views.h_last);
  if (self.kind == CellKind::lstm) r.c_last = new_array(dtype, {rows, H}, &r.views.c_last);
}

void allocate_backward(Results& r, const PyRecurrent& self, DType dtype, int64_t steps,
                       int64_t rows) {
  const int64_t H = self.hidden_size;
  r.report = new_array(DType::f64, {steps, StepColumn::kCount}, &r.views.report);
  r.weights = new_array(DType::f64, {NetworkColumn::kCount}, &r.views.weight_report);
  r.x_grad = new_array(dtype, {steps, rows, self.input_size}, &r.views.x_grad);
  r.h0_grad = new_array(dtype, {rows, H}, &r.views.h0_grad);
  if (self.kind == CellKind::lstm) r.c0_grad = new_array(dtype, {rows, H}, &r.views.c0_grad);
}

// x_seq (T, B, I) with the net's dtype, checked before the outputs of T * B rows are allocated;
// returns T and B.
std::pair<int64_t, int64_t> steps_and_rows(const PyRecurrent& self, const char* op,
                                           const TensorView& x_seq) {
  check_dtype(op, "x_seq", x_seq, self.net->dtype());
  check_shape(op, "x_seq", x_seq, {-1, -1, self.input_size});
  return std::make_pair(x_seq.dim(0), x_seq.dim(1));
}

py::tuple py_lstm_cell_forward(py::handle x, py::handle h_prev, py::handle c_prev,
                               py::handle w_ih, py::handle w_hh, py::handle bias) {
  const char* op = "lstm_cell_forward";
  const TensorView xv = array_view(x, op, "x"), hv = array_view(h_prev, op, "h_prev");
  const TensorView cv = array_view(c_prev, op, "c_prev"), wi = array_view(w_ih, op, "weight_ih");
  const TensorView wh = array_view(w_hh, op, "weight_hh"), bv = array_view(bias, op, "bias");
  const CellShape s = check_cell(op, xv, hv, wi, wh, bv, 4);
  TensorView h, c, gates;
  py::object h_arr = new_output(xv, {s.rows, s.hidden}, &h);
  py::object c_arr = new_output(xv, {s.rows, s.hidden}, &c);
  py::object g_arr = new_output(xv, {s.rows, 4 * s.hidden}, &gates);
  {
    py::gil_scoped_release release;
    lstm_cell_forward(h, c, gates, xv, hv, cv, wi, wh, bv);
  }
  return py::make_tuple(h_arr, c_arr, g_arr);
}

py::tuple py_lstm_cell_backward(py::handle dh, py::handle dc, py::handle gates, py::handle c,
                                py::handle c_prev, py::handle x, py::handle h_prev,
                                py::handle w_ih, py::handle w_hh) {
  const char* op = "lstm_cell_backward";
  const TensorView xv = array_view(x, op, "x"), hv = array_view(h_prev, op, "h_prev");
  const TensorView wi = array_view(w_ih, op, "weight_ih"), wh = array_view(w_hh, op, "weight_hh");
  const TensorView dhv = array_view(dh, op, "dh"), dcv = array_view(dc, op, "dc");
  const TensorView gv = array_view(gates, op, "gates"), cv = array_view(c, op, "c");
  const TensorView cpv = array_view(c_prev, op, "c_prev");
  const CellShape s = check_cell(op, xv, hv, wi, wh, TensorView{}, 4);
  TensorView dx, dh_prev, dc_prev, dwi, dwh, db;
  py::object dx_arr = new_output(xv, {s.rows, s.in}, &dx);
  py::object dhp_arr = new_output(xv, {s.rows, s.hidden}, &dh_prev);
  py::object dcp_arr = new_output(xv, {s.rows, s.hidden}, &dc_prev);
  py::object dwi_arr = new_output(xv, {4 * s.hidden, s.in}, &dwi);
  py::object dwh_arr = new_output(xv, {4 * s.hidden, s.hidden}, &dwh);
  py::object db_arr = new_output(xv, {4 * s.hidden}, &db);
  {
    py::gil_scoped_release release;
    lstm_cell_backward(dx, dh_prev, dc_prev, dwi, dwh, db, dhv, dcv, gv, cv, cpv, xv, hv, wi, wh);
  }
  return py::make_tuple(dx_arr, dhp_arr, dcp_arr, dwi_arr, dwh_arr, db_arr);
}

py::object py_rnn_cell_forward(py::handle x, py::handle h_prev, py::handle w_ih, py::handle w_hh,
                              py::handle bias, const std::string& nonlinearity) {
  const char* op = "rnn_cell_forward";
  const Activation act = parse_rnn_nonlinearity(nonlinearity, "rnn_cell_forward: nonlinearity");
  const TensorView xv = array_view(x, op, "x"), hv = array_view(h_prev, op, "h_prev");
  const TensorView wi = array_view(w_ih, op, "weight_ih"), wh = array_view(w_hh, op, "weight_hh");
  const TensorView bv = array_view(bias, op, "bias");
  const CellShape s = check_cell(op, xv, hv, wi, wh, bv, 1);
  TensorView h;
  py::object h_arr = new_output(xv, {s.rows, s.hidden}, &h);
  {
    py::gil_scoped_release release;
    rnn_cell_forward(h, xv, hv, wi, wh, bv, act);
  }
  return h_arr;
}

py::tuple py_rnn_cell_backward(py::handle dh, py::handle h, py::handle x, py::handle h_prev,
                               py::handle w_ih, py::handle w_hh, const std::string& nonlinearity) {
  const char* op = "rnn_cell_backward";
  const Activation act = parse_rnn_nonlinearity(nonlinearity, "rnn_cell_backward: nonlinearity");
  const TensorView xv = array_view(x, op, "x"), hv = array_view(h_prev, op, "h_prev");
  const TensorView wi = array_view(w_ih, op, "weight_ih"), wh = array_view(w_hh, op, "weight_hh");
  const TensorView dhv = array_view(dh, op, "dh"), houtv = array_view(h, op, "h");
  const CellShape s = check_cell(op, xv, hv, wi, wh, TensorView{}, 1);
  TensorView dx, dh_prev, dwi, dwh, db;
  py::object dx_arr = new_output(xv, {s.rows, s.in}, &dx);
  py::object dhp_arr = new_output(xv, {s.rows, s.hidden}, &dh_prev);
  py::object dwi_arr = new_output(xv, {s.hidden, s.in}, &dwi);
  py::object dwh_arr = new_output(xv, {s.hidden, s.hidden}, &dwh);
  py::object db_arr = new_output(xv, {s.hidden}, &db);
  {
    py::gil_scoped_release release;
    rnn_cell_backward(dx, dh_prev, dwi, dwh, db, dhv, houtv, xv, hv, wi, wh, act);
  }
  return py::make_tuple(dx_arr, dhp_arr, dwi_arr, dwh_arr, db_arr);
}

py::tuple results_tuple(const Results& r) {
  return py::make_tuple(r.h_seq, r.h_last, r.c_last, r.report, r.weights, r.x_grad, r.h0_grad,
                        r.c0_grad);
}

}  // namespace

// The net inside a RecurrentCore (nullptr for any other object): for bindings/optim_bindings.cpp.
NetBase* recurrent_net_of(py::handle core) {
  return py::isinstance<PyRecurrent>(core) ? core.cast<PyRecurrent&>().net.get() : nullptr;
}

void bind_recurrent(py::module_& m) {
  py::class_<PyRecurrent>(m, "RecurrentCore")
      .def(py::init([](const std::string& kind, int64_t input_size, int64_t hidden_size,
                       const std::string& nonlinearity, const std::string& dtype,
                       const std::string& device) {
             const CellKind k = kind == "lstm" ? CellKind::lstm : CellKind::rnn;
             const char* what = k == CellKind::lstm ? "LSTM: nonlinearity" : "RNN: nonlinearity";
             const Activation act = parse_rnn_nonlinearity(nonlinearity, what);
             if (dtype != "float32" && dtype != "float64")
               fail<ValueError>(kind, ": dtype must be 'float32' or 'float64', got '", dtype, "'");
             const DType dt = dtype == "float32" ? DType::f32 : DType::f64;
             if (device != "cpu" && device != "cuda")
               fail<ValueError>(kind, ": device must be 'cpu' or 'cuda', got '", device, "'");
             const Device dev = device == "cpu" ? Device::cpu : Device::cuda;
             return PyRecurrent{make_recurrent(k, input_size, hidden_size, act, dt, dev), k,
                                input_size, hidden_size};
           }),
           py::arg("kind"), py::arg("input_size"), py::arg("hidden_size"),
           py::arg("nonlinearity"), py::arg("dtype"), py::arg("device") = "cpu")
      .def_property_readonly("device",
                             [](PyRecurrent& self) { return device_name(self.net->device()); })
      .def("write", [](PyRecurrent& self, const std::string& buffer, int64_t offset,
                       py::handle values) { write_net_buffer(*self.net, buffer, offset, values); },
           py::arg("buffer"), py::arg("offset"), py::arg("values"))
      .def_property(
          "stats", [](PyRecurrent& self) { return self.net->stats; },
          [](PyRecurrent& self, bool on) { self.net->stats = on; })
      .def_property_readonly("params",
                             [](py::object self) {
                               auto& net = *self.cast<PyRecurrent&>().net;
                               return net_buffer(self, net, NetBuffer::params);
                             })
      .def_property_readonly("grads",
                             [](py::object self) {
                               auto& net = *self.cast<PyRecurrent&>().net;
                               return net_buffer(self, net, NetBuffer::grads);
                             })
      .def("device_buffer",
           [](py::object self, const std::string& name) {
             return device_buffer_view(self, *self.cast<PyRecurrent&>().net, name);
           },
           py::arg("name"))
      .def("check_sequence",
           [](PyRecurrent& self, const std::string& op, int64_t steps, int64_t rows) {
             self.net->check_sequence(op.c_str(), steps, rows);
           })
      .def("forward",
           [](PyRecurrent& self, py::handle x_obj, py::handle h0_obj, py::handle c0_obj) {
             const char* op = self.kind == CellKind::lstm ? "LSTM.forward" : "RNN.forward";
             const TensorView x = net_input_view(x_obj, *self.net, op, "x_seq");
             const TensorView h0 = optional_view(h0_obj, *self.net, op, "h0");
             const TensorView c0 = optional_view(c0_obj, *self.net, op, "c0");
             Results r;
             auto [steps, rows] = steps_and_rows(self, op, x);
             allocate_forward(r, self, x.dtype, steps, rows);
             {
               py::gil_scoped_release release;
               self.net->forward(r.views, x, h0, c0);
             }
             return results_tuple(r);
           })
      .def("backward",
           [](PyRecurrent& self, py::handle g_seq_obj, py::handle g_h_obj, py::handle g_c_obj) {
             const char* op = self.kind == CellKind::lstm ? "LSTM.backward" : "RNN.backward";
             const TensorView g_seq = optional_view(g_seq_obj, *self.net, op, "grad_h_seq");
             const TensorView g_h = optional_view(g_h_obj, *self.net, op, "grad_hT");
             const TensorView g_c = optional_view(g_c_obj, *self.net, op, "grad_cT");
             Results r;
             allocate_backward(r, self, self.net->dtype(), self.net->last_steps(),
                               self.net->last_batch());
             {
               py::gil_scoped_release release;
               self.net->backward(r.views, g_seq, g_h, g_c);
             }
             return results_tuple(r);
           })
      .def("step", [](PyRecurrent& self, py::handle x_obj, py::handle h0_obj, py::handle c0_obj,
                      py::handle target_obj, bool every_step) {
        const char* op = self.kind == CellKind::lstm ? "LSTM.step" : "RNN.step";
        const TensorView x = net_input_view(x_obj, *self.net, op, "x_seq");
        const TensorView h0 = optional_view(h0_obj, *self.net, op, "h0");
        const TensorView c0 = optional_view(c0_obj, *self.net, op, "c0");
        const TensorView target = net_input_view(target_obj, *self.net, op, "target");
        Results r;
        auto [steps, rows] = steps_and_rows(self, op, x);
        allocate_forward(r, self, x.dtype, steps, rows);
        allocate_backward(r, self, x.dtype, steps, rows);
        double loss;
        {
          py::gil_scoped_release release;
          loss = self.net->step(r.views, x, h0, c0, target, every_step);
        }
        return py::make_tuple(loss, results_tuple(r));
      });

  m.def("lstm_cell_forward", &py_lstm_cell_forward, py::arg("x"), py::arg("h_prev"),
        py::arg("c_prev"), py::arg("weight_ih"), py::arg("weight_hh"), py::arg("bias"));
  m.def("lstm_cell_backward", &py_lstm_cell_backward, py::arg("dh"), py::arg("dc"),
        py::arg("gates"), py::arg("c"), py::arg("c_prev"), py::arg("x"), py::arg("h_prev"),
        py::arg("weight_ih"), py::arg("weight_hh"));
  m.def("rnn_cell_forward", &py_rnn_cell_forward, py::arg("x"), py::arg("h_prev"),
        py::arg("weight_ih"), py::arg("weight_hh"), py::arg("bias"),
        py::arg("nonlinearity") = "tanh");
  m.def("rnn_cell_backward", &py_rnn_cell_backward, py::arg("dh"), py::arg("h"), py::arg("x"),
        py::arg("h_prev"), py::arg("weight_ih"), py::arg("weight_hh"),
        py::arg("nonlinearity") = "tanh");
}

}  // namespace vgkern
