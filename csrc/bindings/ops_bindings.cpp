// vgkern._core ops: allocate outputs, release the GIL, call the op. Inputs are numpy arrays or,
// for the ops with CUDA kernels, device arrays (__cuda_array_interface__), whose outputs are
// then CudaArrays on the device (bindings/cuda_array.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>

#include "bindings/arrays.h"
#include "core/blas.h"
#include "core/checks.h"
#include "core/packed_gemm.h"
#include "ops/activation.h"
#include "ops/batchnorm.h"
#include "ops/dense.h"
#include "ops/loss.h"
#include "ops/norm.h"

namespace vgkern {

namespace {

std::vector<int64_t> shape_of(const TensorView& t) {
  return std::vector<int64_t>(t.shape, t.shape + t.ndim);
}

py::tuple py_activation_forward(py::handle z_obj, const std::string& activation, double alpha) {
  const TensorView z = array_view(z_obj, "activation_forward", "z");
  const ActSpec act = parse_activation(activation, alpha, "activation_forward: activation");
  TensorView h, dact;
  py::object h_arr = new_output(z, shape_of(z), &h);
  py::object dact_arr = new_output(z, shape_of(z), &dact);
  {
    py::gil_scoped_release release;
    activation_forward(h, dact, z, act);
  }
  return py::make_tuple(h_arr, dact_arr);
}

py::object py_activation_backward(py::handle dh_obj, py::handle z_obj,
                                  const std::string& activation, double alpha) {
  const TensorView z = array_view(z_obj, "activation_backward", "z");
  const TensorView dh = array_view(dh_obj, "activation_backward", "dh");
  const ActSpec act = parse_activation(activation, alpha, "activation_backward: activation");
  TensorView dz;
  py::object dz_arr = new_output(z, shape_of(z), &dz);
  {
    py::gil_scoped_release release;
    activation_backward(dz, dh, z, act);
  }
  return dz_arr;
}

py::tuple py_dense_forward(py::handle x_obj, py::handle w_obj, py::handle b_obj,
                           const std::string& activation, double alpha) {
  const char* op = "dense_forward";
  const TensorView x = array_view(x_obj, op, "x");
  const TensorView w = array_view(w_obj, op, "w");
  const TensorView b = b_obj.is_none() ? TensorView{} : array_view(b_obj, op, "b");
  const ActSpec act = parse_activation(activation, alpha, "dense_forward: activation");
  // checked before the outputs (x rows, w rows) are allocated: an empty x (10**12, 0) with a
  // mismatched w is a ValueError, not a request for a huge output
  check_shape(op, "x", x, {-1, -1});
  check_dtype(op, "w", w, x.dtype);
  check_shape(op, "w", w, {-1, x.dim(1)});
  if (b.present()) check_arg(op, "b", b, x, {w.dim(0)});
  TensorView h, dact;
  py::object h_arr = new_output(x, {x.dim(0), w.dim(0)}, &h);
  py::object dact_arr = new_output(x, {x.dim(0), w.dim(0)}, &dact);
  {
    py::gil_scoped_release release;
    dense_forward(h, dact, x, w, b, act);
  }
  return py::make_tuple(h_arr, dact_arr);
}

py::tuple py_dense_backward(py::handle dh_obj, py::handle dact_obj, py::handle x_obj,
                            py::handle w_obj, bool need_dx) {
  const char* op = "dense_backward";
  const TensorView dh = array_view(dh_obj, op, "dh");
  const TensorView dact = array_view(dact_obj, op, "dact");
  const TensorView x = array_view(x_obj, op, "x");
  const TensorView w = array_view(w_obj, op, "w");
  TensorView dx, dw, db;
  check_shape(op, "x", x, {-1, -1});
  check_shape(op, "w", w, {-1, -1});
  py::object dx_arr = py::none();
  if (need_dx) dx_arr = new_output(x, {x.dim(0), x.dim(1)}, &dx);
  py::object dw_arr = new_output(x, {w.dim(0), w.dim(1)}, &dw);
  py::object db_arr = new_output(x, {w.dim(0)}, &db);
  {
    py::gil_scoped_release release;
    dense_backward(dx, dw, db, dh, dact, x, w);
  }
  return py::make_tuple(dx_arr, dw_arr, db_arr);
}

py::tuple py_mse_loss(py::handle out_obj, py::handle target_obj) {
  const TensorView out = array_view(out_obj, "mse_loss", "out");
  const TensorView target = array_view(target_obj, "mse_loss", "target");
  TensorView dout;
  py::object dout_arr = new_output(out, shape_of(out), &dout);
  double loss;
  {
    py::gil_scoped_release release;
    loss = mse_loss(dout, out, target);
  }
  return py::make_tuple(loss, dout_arr);
}

py::tuple py_cross_entropy_loss(py::handle logits_obj, py::handle labels_obj) {
  const TensorView logits = array_view(logits_obj, "cross_entropy_loss", "logits");
  py::array_t<int64_t> labels = labels_of(labels_obj, "cross_entropy_loss");
  TensorView dlogits;
  py::object dlogits_arr = new_output(logits, shape_of(logits), &dlogits);
  double loss;
  {
    py::gil_scoped_release release;
    loss = cross_entropy_loss(dlogits, logits, labels.data(), labels.shape(0));
  }
  return py::make_tuple(loss, dlogits_arr);
}

py::tuple py_batchnorm_forward(py::handle x_obj, py::handle gamma_obj, py::handle beta_obj,
                               py::handle running_mean_obj, py::handle running_var_obj,
                               bool training, double momentum, double eps) {
  const char* op = "batchnorm_forward";
  auto optional = [&](py::handle obj, const char* arg, bool writable) {
    return obj.is_none() ? TensorView{} : array_view(obj, op, arg, writable);
  };
  const TensorView x = array_view(x_obj, op, "x");
  const TensorView gamma = optional(gamma_obj, "gamma", false);
  const TensorView beta = optional(beta_obj, "beta", false);
  const TensorView running_mean = optional(running_mean_obj, "running_mean", training);
  const TensorView running_var = optional(running_var_obj, "running_var", training);
  check_shape(op, "x", x, {-1, -1});
  check_batchnorm_spec(op, BatchNormSpec{training, momentum, eps}, x.dim(0));  // before allocating
  TensorView y, mean, rstd;
  py::object y_arr = new_output(x, {x.dim(0), x.dim(1)}, &y);
  py::object mean_arr = new_output(x, {x.dim(1)}, &mean);
  py::object rstd_arr = new_output(x, {x.dim(1)}, &rstd);
  {
    py::gil_scoped_release release;
    batchnorm_forward(y, mean, rstd, running_mean, running_var, x, gamma, beta,
                      BatchNormSpec{training, momentum, eps});
  }
  return py::make_tuple(y_arr, mean_arr, rstd_arr);
}

py::tuple py_batchnorm_backward(py::handle dy_obj, py::handle x_obj, py::handle mean_obj,
                                py::handle rstd_obj, py::handle gamma_obj, bool training) {
  const char* op = "batchnorm_backward";
  const TensorView dy = array_view(dy_obj, op, "dy");
  const TensorView x = array_view(x_obj, op, "x");
  const TensorView mean = array_view(mean_obj, op, "mean");
  const TensorView rstd = array_view(rstd_obj, op, "rstd");
  const TensorView gamma = gamma_obj.is_none() ? TensorView{} : array_view(gamma_obj, op, "gamma");
  check_shape(op, "x", x, {-1, -1});
  check_arg(op, "mean", mean, x, {x.dim(1)});  // before allocating outputs of x's width
  TensorView dx, dgamma, dbeta;
  py::object dx_arr = new_output(x, {x.dim(0), x.dim(1)}, &dx);
  py::object dgamma_arr = py::none(), dbeta_arr = py::none();
  if (gamma.present()) {
    dgamma_arr = new_output(x, {x.dim(1)}, &dgamma);
    dbeta_arr = new_output(x, {x.dim(1)}, &dbeta);
  }
  {
    py::gil_scoped_release release;
    batchnorm_backward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, training);
  }
  return py::make_tuple(dx_arr, dgamma_arr, dbeta_arr);
}

double py_sum_squares_norm(py::handle a_obj) {
  const TensorView a = array_view(a_obj, "sum_squares_norm", "a");
  py::gil_scoped_release release;
  return sum_squares_norm(a);
}

// The recurrence's GEMM C (M, N) += A (M, K) @ B with B = w (K, N), or w^T with trans (w (N, K)),
// through core/packed_gemm.h: for tests (its tails) and the timing below.
struct PackedCase {
  TensorView a, w;
  int64_t M, K, N;
  PackedCase(py::handle a_obj, py::handle w_obj, bool trans, const char* op) {
    a = array_view(a_obj, op, "a");
    w = array_view(w_obj, op, "w");
    check_dtype(op, "a", a, DType::f32);
    check_dtype(op, "w", w, DType::f32);
    check_shape(op, "a", a, {-1, -1});
    M = a.dim(0);
    K = a.dim(1);
    check_shape(op, "w", w, {trans ? -1 : K, trans ? K : -1});
    N = trans ? w.dim(0) : w.dim(1);
    if (!packed_gemm_available())
      fail<DeviceError>(op, ": this CPU has neither AVX2+FMA nor AVX-512 (no packed tile)");
  }
};

py::array py_packed_gemm(py::handle a_obj, py::handle w_obj, bool trans, py::handle bias_obj) {
  const PackedCase g(a_obj, w_obj, trans, "_packed_gemm");
  TensorView bias;
  if (!bias_obj.is_none()) {
    bias = array_view(bias_obj, "_packed_gemm", "bias");
    check_dtype("_packed_gemm", "bias", bias, DType::f32);
    check_shape("_packed_gemm", "bias", bias, {g.N});
  }
  TensorView c;
  py::array c_arr = new_array(DType::f32, {g.M, g.N}, &c);
  {
    py::gil_scoped_release release;
    PackedPanels panels;
    pack_panels(panels, trans, g.w.ptr<float>(), trans ? g.K : g.N, g.K, g.N);
    packed_gemm(g.M, g.a.ptr<float>(), g.K, panels, false, c.ptr<float>(), g.N,
                bias_obj.is_none() ? nullptr : bias.ptr<float>());
  }
  return c_arr;
}

// C (M, N) = a @ b, or a^T @ b with trans_a (a (K, M)), b (K, N), through core/packed_gemm.h's
// gemm_in_place (the small layers' backward GEMMs): for tests of its tails.
py::array py_gemm_in_place(py::handle a_obj, py::handle b_obj, bool trans_a) {
  const char* op = "_gemm_in_place";
  const TensorView a = array_view(a_obj, op, "a"), b = array_view(b_obj, op, "b");
  check_dtype(op, "a", a, DType::f32);
  check_dtype(op, "b", b, DType::f32);
  check_shape(op, "a", a, {-1, -1});
  const int64_t M = trans_a ? a.dim(1) : a.dim(0), K = trans_a ? a.dim(0) : a.dim(1);
  check_shape(op, "b", b, {K, -1});
  const int64_t N = b.dim(1);
  if (!packed_gemm_available())
    fail<DeviceError>(op, ": this CPU has neither AVX2+FMA nor AVX-512 (no packed tile)");
  TensorView c;
  py::array c_arr = new_array(DType::f32, {M, N}, &c);
  {
    py::gil_scoped_release release;
    gemm_in_place(trans_a, M, K, N, a.ptr<float>(), a.dim(1), b.ptr<float>(), N, c.ptr<float>(),
                  N);
  }
  return c_arr;
}

// Seconds per call, best of `rounds` blocks of `reps` calls each, of the packed GEMM (packed once)
// and of the BLAS call the recurrence made before (core/blas.h), C += A @ B, alternating blocks.
py::tuple py_packed_gemm_seconds(py::handle a_obj, py::handle w_obj, bool trans, int reps,
                                 int rounds) {
  const PackedCase g(a_obj, w_obj, trans, "_packed_gemm_seconds");
  std::vector<float> c(g.M * g.N, 0.0f);
  const float* a = g.a.ptr<float>();
  const float* w = g.w.ptr<float>();
  const int64_t ldw = trans ? g.K : g.N;
  using clock = std::chrono::steady_clock;
  double best_packed = 1e30, best_blas = 1e30;
  py::gil_scoped_release release;
  PackedPanels panels;
  pack_panels(panels, trans, w, ldw, g.K, g.N);
  for (int round = 0; round < rounds; ++round) {
    auto t0 = clock::now();
    for (int r = 0; r < reps; ++r) packed_gemm(g.M, a, g.K, panels, true, c.data(), g.N);
    auto t1 = clock::now();
    for (int r = 0; r < reps; ++r)
      gemm<float>(false, trans, g.M, g.N, g.K, 1.0f, a, g.K, w, ldw, 1.0f, c.data(), g.N);
    auto t2 = clock::now();
    best_packed = std::min(best_packed, std::chrono::duration<double>(t1 - t0).count() / reps);
    best_blas = std::min(best_blas, std::chrono::duration<double>(t2 - t1).count() / reps);
  }
  py::gil_scoped_acquire acquire;
  return py::make_tuple(best_packed, best_blas);
}

}  // namespace

void bind_ops(py::module_& m) {
  m.def("_packed_gemm", &py_packed_gemm, py::arg("a"), py::arg("w"), py::arg("trans"),
        py::arg("bias") = py::none());
  m.def("_packed_gemm_seconds", &py_packed_gemm_seconds, py::arg("a"), py::arg("w"),
        py::arg("trans"), py::arg("reps") = 50, py::arg("rounds") = 5);
  m.def("_packed_gemm_available", &packed_gemm_available);
  m.def("_gemm_in_place", &py_gemm_in_place, py::arg("a"), py::arg("b"), py::arg("trans_a"));
  m.def("activation_forward", &py_activation_forward, py::arg("z"), py::arg("activation"),
        py::arg("alpha") = 1.0);
  m.def("activation_backward", &py_activation_backward, py::arg("dh"), py::arg("z"),
        py::arg("activation"), py::arg("alpha") = 1.0);
  m.def("dense_forward", &py_dense_forward, py::arg("x"), py::arg("w"), py::arg("b"),
        py::arg("activation") = "identity", py::arg("alpha") = 1.0);
  m.def("dense_backward", &py_dense_backward, py::arg("dh"), py::arg("dact"), py::arg("x"),
        py::arg("w"), py::arg("need_dx") = true);
  m.def("mse_loss", &py_mse_loss, py::arg("out"), py::arg("target"));
  m.def("cross_entropy_loss", &py_cross_entropy_loss, py::arg("logits"), py::arg("labels"));
  m.def("batchnorm_forward", &py_batchnorm_forward, py::arg("x"), py::arg("gamma"),
        py::arg("beta"), py::arg("running_mean"), py::arg("running_var"),
        py::arg("training") = true, py::arg("momentum") = 0.1, py::arg("eps") = 1e-5);
  m.def("batchnorm_backward", &py_batchnorm_backward, py::arg("dy"), py::arg("x"),
        py::arg("mean"), py::arg("rstd"), py::arg("gamma"), py::arg("training") = true);
  m.def("sum_squares_norm", &py_sum_squares_norm, py::arg("a"));
}

}  // namespace vgkern
