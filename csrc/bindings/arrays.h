// numpy <-> TensorView at the Python boundary. Arrays must already have the right dtype (never a
// silent cast) and be C-contiguous (the Python layer copies non-contiguous inputs on purpose).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bindings/cuda_array.h"
#include "core/checks.h"
#include "core/dispatch.h"
#include "core/errors.h"
#include "core/memory.h"
#include "core/tensor.h"
#include "nets/net_base.h"

namespace vgkern {
namespace py = pybind11;

inline TensorView view_of(const py::handle& obj, const char* op, const char* arg,
                          bool writable = false) {
  if (!py::isinstance<py::array>(obj))
    fail<TypeError>(op, ": ", arg, " must be a numpy.ndarray, got ",
                    std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  TensorView t;
  // equal(), not is(): an unpickled or copied array may carry its own float32 dtype object
  if (a.dtype().equal(py::dtype::of<float>()))
    t.dtype = DType::f32;
  else if (a.dtype().equal(py::dtype::of<double>()))
    t.dtype = DType::f64;
  else
    fail<TypeError>(op, ": ", arg, " must have dtype float32 or float64, got ",
                    std::string(py::str(a.dtype())), " (vgkern never casts silently)");
  if (a.ndim() < 1 || a.ndim() > TensorView::kMaxDims)
    fail<ValueError>(op, ": ", arg, " must have 1 to ", TensorView::kMaxDims,
                     " dimensions, got ", a.ndim());
  if (!(a.flags() & py::array::c_style))
    fail<ValueError>(op, ": ", arg, " must be C-contiguous (use numpy.ascontiguousarray)");
  if (writable && !a.writeable()) fail<ValueError>(op, ": ", arg, " must be writable");
  t.ndim = static_cast<int>(a.ndim());
  for (int i = 0; i < t.ndim; ++i) t.shape[i] = a.shape(i);
  t.data = const_cast<void*>(a.data());
  return t;
}

// An array on a CUDA device through its __cuda_array_interface__ (CuPy, PyTorch, Numba, JAX),
// used in place: C-contiguous float32/float64 only (no silent copies or casts). A producer's
// stream in the interface (v3) is waited for, so that its pending writes have landed.
inline TensorView cuda_array_view(const py::handle& obj, const char* op, const char* arg,
                                  bool writable = false) {
  const py::dict iface = obj.attr("__cuda_array_interface__");
  TensorView t;
  t.device = Device::cuda;
  const std::string typestr = py::str(iface["typestr"]);
  if (typestr == "<f4")
    t.dtype = DType::f32;
  else if (typestr == "<f8")
    t.dtype = DType::f64;
  else
    fail<TypeError>(op, ": ", arg, " must have dtype float32 or float64, got typestr '", typestr,
                    "' (vgkern never casts silently)");
  const py::tuple shape = iface["shape"];
  if (shape.size() < 1 || shape.size() > TensorView::kMaxDims)
    fail<ValueError>(op, ": ", arg, " must have 1 to ", TensorView::kMaxDims,
                     " dimensions, got ", shape.size());
  t.ndim = static_cast<int>(shape.size());
  for (int i = 0; i < t.ndim; ++i) t.shape[i] = shape[i].cast<int64_t>();
  if (iface.contains("mask") && !iface["mask"].is_none())
    fail<ValueError>(op, ": ", arg, " must not be a masked array");
  if (iface.contains("strides") && !iface["strides"].is_none()) {
    const py::tuple strides = iface["strides"];
    int64_t expected = t.dtype == DType::f32 ? 4 : 8;
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (t.shape[i] != 1 && strides[i].cast<int64_t>() != expected)
        fail<ValueError>(op, ": ", arg, " must be C-contiguous (make a contiguous copy first)");
      expected *= t.shape[i];
    }
  }
  const py::tuple data = iface["data"];
  t.data = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
  if (writable && data[1].cast<bool>()) fail<ValueError>(op, ": ", arg, " must be writable");
  if (iface.contains("stream") && !iface["stream"].is_none())
    cuda_synchronize_stream(iface["stream"].cast<uintptr_t>());
  return t;
}

// An input of `net`: a numpy array, or for a CUDA net also a device array
// (__cuda_array_interface__), whose data the net then copies on the device.
inline TensorView net_input_view(const py::handle& obj, const NetBase& net, const char* op,
                                 const char* arg) {
  if (net.device() == Device::cuda && !py::isinstance<py::array>(obj) &&
      py::hasattr(obj, "__cuda_array_interface__"))
    return cuda_array_view(obj, op, arg);
  return view_of(obj, op, arg);
}

// An op's input: a numpy array (CPU) or a device array (__cuda_array_interface__, CUDA).
inline TensorView array_view(const py::handle& obj, const char* op, const char* arg,
                             bool writable = false) {
  if (!py::isinstance<py::array>(obj) && py::hasattr(obj, "__cuda_array_interface__"))
    return cuda_array_view(obj, op, arg, writable);
  return view_of(obj, op, arg, writable);
}

// A new C-contiguous array of the given dtype and shape, and its view.
inline py::array new_array(DType dtype, const std::vector<int64_t>& shape, TensorView* view) {
  double elements = 1;
  std::string shape_str = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    elements *= static_cast<double>(shape[i]);
    shape_str += (i ? ", " : "") + std::to_string(shape[i]);
  }
  check_fits_in_memory(elements, dtype == DType::f32 ? 4 : 8,
                       ("an output array of shape " + shape_str + ")").c_str());
  py::array a = dtype == DType::f32 ? py::array(py::dtype::of<float>(), shape)
                                    : py::array(py::dtype::of<double>(), shape);
  if (view) {
    view->dtype = dtype;
    view->ndim = static_cast<int>(shape.size());
    for (int i = 0; i < view->ndim; ++i) view->shape[i] = shape[i];
    view->data = a.mutable_data();
  }
  return a;
}

// A 1-D numpy view of a buffer owned by a native object; `owner` keeps that object alive.
inline py::array flat_view(py::object owner, void* data, DType dtype, int64_t n) {
  const py::dtype dt = dtype == DType::f32 ? py::dtype::of<float>() : py::dtype::of<double>();
  return py::array(dt, {n}, {dt.itemsize()}, data, owner);
}

// A net's flat buffer as numpy: on the CPU a writable view of the net's memory (kept alive by
// `owner`); on CUDA a read-only host copy made now (written back with write_net_buffer).
inline py::array net_buffer(py::object owner, NetBase& net, NetBuffer which) {
  const int64_t n = net.buffer_size(which);
  if (net.device() == Device::cpu) return flat_view(owner, net.buffer(which), net.dtype(), n);
  TensorView view;
  py::array copy = new_array(net.dtype(), {n}, &view);
  {
    py::gil_scoped_release release;
    net.copy_to_host(which, view.data);
  }
  copy.attr("setflags")(py::arg("write") = false);
  return copy;
}

// values (a flat array of the net's dtype, checked by the Python caller) into entries
// [offset, offset + values.size) of the buffer named `name`.
inline NetBuffer net_buffer_named(const char* op, const std::string& name) {
  if (name == "params") return NetBuffer::params;
  if (name == "grads") return NetBuffer::grads;
  if (name == "running_means") return NetBuffer::running_means;
  if (name == "running_vars") return NetBuffer::running_vars;
  fail<ValueError>(op, ": no buffer named '", name, "'");
}

inline void write_net_buffer(NetBase& net, const std::string& name, int64_t offset,
                             py::handle values) {
  const NetBuffer which = net_buffer_named("write", name);
  const TensorView v = view_of(values, "write", name.c_str());
  check_dtype("write", name.c_str(), v, net.dtype());
  py::gil_scoped_release release;
  net.copy_from_host(which, offset, v.numel(), v.data);
}

// A CUDA net's buffer `name` as a flat vgkern.CudaArray viewing the net's device memory (no
// copy; DLPack hands it to torch as the same memory); `owner` (the Python core) is kept alive.
inline py::object device_buffer_view(py::object owner, NetBase& net, const std::string& name) {
  const NetBuffer which = net_buffer_named("device_buffer", name);
  if (net.device() != Device::cuda)
    fail<ValueError>("device_buffer: the net is on the CPU, where its buffers are numpy views "
                     "already (params, grads, ...)");
  return borrowed_cuda_array(net.dtype(), {net.buffer_size(which)}, net.buffer(which), owner);
}

// A new output shaped `shape`, on the device of `like` (numpy on the CPU, a CudaArray on CUDA).
inline py::object new_output(const TensorView& like, const std::vector<int64_t>& shape,
                             TensorView* view) {
  if (like.device == Device::cuda) return new_cuda_array(like.dtype, shape, view);
  return new_array(like.dtype, shape, view);
}

// Integer class labels (B,) as int64, converted on purpose from any integer dtype.
inline py::array_t<int64_t> labels_of(const py::handle& obj, const char* op) {
  if (!py::isinstance<py::array>(obj))
    fail<TypeError>(op, ": labels must be a numpy.ndarray of integers, got ",
                    std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  const char kind = a.dtype().kind();
  if (kind != 'i' && kind != 'u')
    fail<TypeError>(op, ": labels must have an integer dtype, got ",
                    std::string(py::str(a.dtype())));
  if (a.ndim() != 1) fail<ValueError>(op, ": labels must have shape (B,), got ", a.ndim(), " dimensions");
  // uint64 labels above INT64_MAX would wrap to negative numbers in the cast below
  if (kind == 'u' && a.itemsize() == 8 && a.size() > 0 &&
      py::cast<uint64_t>(a.attr("max")()) > static_cast<uint64_t>(INT64_MAX))
    fail<ValueError>(op, ": labels must be class indices in [0, C), got the value ",
                     std::string(py::str(a.attr("max")())));
  return py::array_t<int64_t, py::array::c_style | py::array::forcecast>(a);
}

}  // namespace vgkern
