// vgkern._core.optim_step: the optimizer step of ops/optim.h on a net's flat buffers (params,
// grads), for vgkern/optim.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "core/busy_guard.h"
#include "core/errors.h"
#include "ops/optim.h"

namespace vgkern {

NetBase* mlp_net_of(py::handle core);        // bindings/mlp_bindings.cpp
NetBase* recurrent_net_of(py::handle core);  // bindings/recurrent_bindings.cpp

namespace {

NetBase& net_of(py::handle core) {
  if (NetBase* net = mlp_net_of(core)) return *net;
  if (NetBase* net = recurrent_net_of(core)) return *net;
  fail<TypeError>("optim.step: core must be an MLPCore or RecurrentCore, got ",
                  std::string(py::str(py::type::handle_of(core).attr("__name__"))));
}

TensorView net_view(NetBase& net, NetBuffer which) {
  TensorView t;
  t.data = net.buffer(which);
  t.dtype = net.dtype();
  t.device = net.device();
  t.ndim = 1;
  t.shape[0] = net.buffer_size(which);
  return t;
}

TensorView optional_state(py::handle obj, const char* arg) {
  return obj.is_none() ? TensorView{} : array_view(obj, "optim.step", arg, true);
}

OptimRule parse_rule(const std::string& name) {
  if (name == "sgd") return OptimRule::sgd;
  if (name == "adam") return OptimRule::adam;
  if (name == "adamw") return OptimRule::adamw;
  fail<ValueError>("optim.step: rule must be 'sgd', 'adam' or 'adamw', got '", name, "'");
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def(
      "optim_step",
      [](py::handle core, const std::string& rule, double lr, double momentum, double dampening,
         bool nesterov, double weight_decay, double beta1, double beta2, double eps,
         int64_t step, py::handle state1_obj, py::handle state2_obj, py::handle reference_obj,
         py::array_t<int64_t, py::array::c_style> segments,
         py::array_t<int64_t, py::array::c_style> scales, py::handle stats_obj) {
        NetBase& net = net_of(core);
        OptimConfig config;
        config.rule = parse_rule(rule);
        config.lr = lr;
        config.momentum = momentum;
        config.dampening = dampening;
        config.nesterov = nesterov;
        config.weight_decay = weight_decay;
        config.beta1 = beta1;
        config.beta2 = beta2;
        config.eps = eps;
        config.step = step;
        if (segments.ndim() != 2 || segments.shape(1) != 3 || scales.ndim() != 1 ||
            scales.shape(0) != segments.shape(0))
          fail<ValueError>("optim.step: segments must be (S, 3) [offset, count, stats row] and "
                           "scales (S,)");
        std::vector<OptimSegment> list(segments.shape(0));
        for (size_t i = 0; i < list.size(); ++i) {
          list[i].offset = segments.at(i, 0);
          list[i].count = segments.at(i, 1);
          list[i].stats_row = segments.at(i, 2);
          const int64_t e = scales.at(i);
          if (e < -100000 || e > 100000)
            fail<ValueError>("optim.step: grad_log2_scale ", e, " is out of range");
          list[i].grad_log2_scale = static_cast<int>(e);
        }
        const TensorView params = net_view(net, NetBuffer::params);
        const TensorView grads = net_view(net, NetBuffer::grads);
        const TensorView state1 = optional_state(state1_obj, "state1");
        const TensorView state2 = optional_state(state2_obj, "state2");
        const TensorView reference = array_view(reference_obj, "optim.step", "reference");
        const TensorView stats = view_of(stats_obj, "optim.step", "stats", true);
        py::gil_scoped_release release;
        const BusyGuard busy(net.busy(), "optim.step");  // the net is not in use elsewhere
        optim_update(params, state1, state2, grads, reference, list, config, stats);
      },
      py::arg("core"), py::arg("rule"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
      py::arg("nesterov"), py::arg("weight_decay"), py::arg("beta1"), py::arg("beta2"),
      py::arg("eps"), py::arg("step"), py::arg("state1"), py::arg("state2"),
      py::arg("reference"), py::arg("segments"), py::arg("scales"), py::arg("stats"));
}

}  // namespace vgkern
