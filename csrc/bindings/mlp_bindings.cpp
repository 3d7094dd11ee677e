// vgkern._core.MLPCore: the native MLP; vgkern/mlp.py wraps it with the public API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/arrays.h"
#include "core/checks.h"
#include "nets/mlp.h"

namespace vgkern {

namespace {

struct PyMLP {
  std::unique_ptr<MLPBase> net;
};

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::f32;
  if (name == "float64") return DType::f64;
  fail<ValueError>("MLP: dtype must be 'float32' or 'float64', got '", name, "'");
}

// x (B, d_0) with the net's dtype, checked before any output of B rows is allocated.
void check_input(const MLPBase& net, const char* op, const TensorView& x) {
  check_dtype(op, "x", x, net.dtype());
  check_shape(op, "x", x, {-1, net.sizes().front()});
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") return Device::cuda;
  fail<ValueError>("MLP: device must be 'cpu' or 'cuda', got '", name, "'");
}

py::array mlp_buffer(py::object self, NetBuffer which) {
  return net_buffer(self, *self.cast<PyMLP&>().net, which);
}

py::array new_report(const MLPBase& net, TensorView* view) {
  return new_array(DType::f64, {net.num_layers(), LayerColumn::kCount}, view);
}

}  // namespace

// The net inside an MLPCore (nullptr for any other object): for bindings/optim_bindings.cpp.
NetBase* mlp_net_of(py::handle core) {
  return py::isinstance<PyMLP>(core) ? core.cast<PyMLP&>().net.get() : nullptr;
}

void bind_mlp(py::module_& m) {
  py::class_<PyMLP>(m, "MLPCore")
      .def(py::init([](const std::vector<int64_t>& sizes, const std::vector<std::string>& acts,
                       const std::vector<double>& alphas, const std::string& dtype,
                       bool batch_norm, bool bn_affine, double bn_momentum, double bn_eps,
                       const std::string& device) {
             if (alphas.size() != acts.size())
               fail<ValueError>("MLP: need one alpha per activation");
             std::vector<ActSpec> specs;
             for (size_t l = 0; l < acts.size(); ++l)
               specs.push_back(parse_activation(acts[l], alphas[l], "MLP: activation"));
             const BatchNormConfig bn{batch_norm, bn_affine, bn_momentum, bn_eps};
             return PyMLP{make_mlp(sizes, specs, parse_dtype(dtype), bn, parse_device(device))};
           }),
           py::arg("sizes"), py::arg("activations"), py::arg("alphas"), py::arg("dtype"),
           py::arg("batch_norm") = false, py::arg("bn_affine") = true,
           py::arg("bn_momentum") = 0.1, py::arg("bn_eps") = 1e-5, py::arg("device") = "cpu")
      .def_property_readonly("device",
                             [](PyMLP& self) { return device_name(self.net->device()); })
      .def_property_readonly("num_layers", [](PyMLP& self) { return self.net->num_layers(); })
      .def_property_readonly("num_params", [](PyMLP& self) { return self.net->num_params(); })
      .def_property_readonly("layout",
                             [](PyMLP& self) {
                               // per layer: {weight, bias, gamma, beta, running}; -1 = absent
                               py::list out;
                               for (const LayerLayout& l : self.net->layout()) {
                                 py::dict d;
                                 d["weight"] = l.weight;
                                 d["bias"] = l.bias;
                                 d["gamma"] = l.gamma;
                                 d["beta"] = l.beta;
                                 d["running"] = l.running;
                                 out.append(d);
                               }
                               return out;
                             })
      .def_property(
          "training", [](PyMLP& self) { return self.net->training; },
          [](PyMLP& self, bool on) { self.net->training = on; })
      .def_property(
          "stats", [](PyMLP& self) { return self.net->stats; },
          [](PyMLP& self, bool on) { self.net->stats = on; })
      .def_property_readonly("params",
                             [](py::object self) { return mlp_buffer(self, NetBuffer::params); })
      .def_property_readonly("grads",
                             [](py::object self) { return mlp_buffer(self, NetBuffer::grads); })
      .def_property_readonly("running_means",
                             [](py::object self) { return mlp_buffer(self, NetBuffer::running_means); })
      .def_property_readonly("running_vars",
                             [](py::object self) { return mlp_buffer(self, NetBuffer::running_vars); })
      .def("write", [](PyMLP& self, const std::string& buffer, int64_t offset,
                       py::handle values) { write_net_buffer(*self.net, buffer, offset, values); },
           py::arg("buffer"), py::arg("offset"), py::arg("values"))
      .def("device_buffer",
           [](py::object self, const std::string& name) {
             return device_buffer_view(self, *self.cast<PyMLP&>().net, name);
           },
           py::arg("name"))
      .def("check_batch", [](PyMLP& self, int64_t rows) { self.net->check_batch(rows); })
      .def(
          "forward",
          [](PyMLP& self, py::handle x_obj) {
            const TensorView x = net_input_view(x_obj, *self.net, "MLP.forward", "x");
            check_input(*self.net, "MLP.forward", x);
            TensorView out;
            py::array out_arr = new_array(x.dtype, {x.dim(0), self.net->sizes().back()}, &out);
            py::gil_scoped_release release;
            self.net->forward(out, x);
            return out_arr;
          },
          py::arg("x"))
      .def(
          "backward",
          [](PyMLP& self, py::handle grad_obj, bool log_scale, bool want_input_grad) {
            const TensorView grad_out =
                net_input_view(grad_obj, *self.net, "MLP.backward", "grad_out");
            TensorView report, input_grad;
            py::array report_arr = new_report(*self.net, &report);
            py::object input_grad_arr = py::none();
            // rows of grad_out: checked natively; a grad_out of another dtype or width is refused
            // there too, before input_grad is needed (so it is not allocated for one)
            if (want_input_grad && grad_out.ndim == 2 && grad_out.dtype == self.net->dtype() &&
                grad_out.dim(1) == self.net->sizes().back())
              input_grad_arr = new_array(self.net->dtype(),
                                         {grad_out.dim(0), self.net->sizes().front()}, &input_grad);
            {
              py::gil_scoped_release release;
              self.net->backward(report, input_grad, grad_out, log_scale);
            }
            return py::make_tuple(report_arr, input_grad_arr);
          },
          py::arg("grad_out"), py::arg("log_scale"), py::arg("input_grad"))
      .def(
          "step",
          [](PyMLP& self, py::handle x_obj, py::handle target_obj, const std::string& loss_name,
             bool log_scale, bool want_input_grad) {
            const char* op = "MLP.step";
            const TensorView x = net_input_view(x_obj, *self.net, op, "x");
            check_input(*self.net, op, x);
            const int64_t rows = x.dim(0);
            Loss loss;
            TensorView target;
            py::array_t<int64_t> labels;
            if (loss_name == "mse") {
              loss = Loss::mse;
              target = net_input_view(target_obj, *self.net, op, "target");
            } else if (loss_name == "cross_entropy") {
              loss = Loss::cross_entropy;
              labels = labels_of(target_obj, op);
            } else {
              fail<ValueError>(op, ": loss must be 'mse' or 'cross_entropy', got '", loss_name, "'");
            }
            TensorView out, report, input_grad;
            py::array out_arr = new_array(x.dtype, {rows, self.net->sizes().back()}, &out);
            py::array report_arr = new_report(*self.net, &report);
            py::object input_grad_arr = py::none();
            if (want_input_grad && x.ndim == 2)
              input_grad_arr = new_array(self.net->dtype(), {rows, x.dim(1)}, &input_grad);
            double value;
            {
              py::gil_scoped_release release;
              value = self.net->step(out, report, input_grad, x, loss, target,
                                     loss == Loss::cross_entropy ? labels.data() : nullptr,
                                     loss == Loss::cross_entropy ? labels.shape(0) : 0,
                                     log_scale);
            }
            return py::make_tuple(value, out_arr, report_arr, input_grad_arr);
          },
          py::arg("x"), py::arg("target"), py::arg("loss"), py::arg("log_scale"),
          py::arg("input_grad"));
}

}  // namespace vgkern
