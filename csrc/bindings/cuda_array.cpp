#include "bindings/cuda_array.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "bindings/arrays.h"
#include "cuda/cuda_check.h"
#include "cuda/device_array.h"

namespace vgkern {
namespace {

namespace py = pybind11;

struct CudaArray {
  DeviceArray<unsigned char> memory;
  // A view of another object's device memory (a net's buffer) instead of `memory`; `owner`
  // keeps that object alive as long as this array (or a DLPack consumer of it) lives.
  void* borrowed = nullptr;
  std::shared_ptr<void> owner;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  int device = 0;

  void* data() const { return borrowed ? borrowed : memory.data(); }

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t item_size() const { return dtype == DType::f32 ? 4 : 8; }
};

// The DLPack ABI (dlpack.h, v0.8 "unversioned" tensors, which every consumer accepts).
struct DLDevice {
  int32_t device_type;  // kDLCUDA = 2
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;  // kDLFloat = 2
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // null: C-contiguous
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
constexpr int32_t kDLCUDA = 2;

// What a DLPack consumer holds: the array (kept alive) and the shape the tensor points to.
struct DLPackHolder {
  std::shared_ptr<CudaArray> array;
  std::vector<int64_t> shape;
  DLManagedTensor tensor;
};

void delete_holder(DLManagedTensor* tensor) {
  delete static_cast<DLPackHolder*>(tensor->manager_ctx);
}

py::capsule to_dlpack(const std::shared_ptr<CudaArray>& a) {
  auto* holder = new DLPackHolder{a, a->shape, {}};
  DLTensor& t = holder->tensor.dl_tensor;
  t.data = a->data();
  t.device = {kDLCUDA, a->device};
  t.ndim = static_cast<int32_t>(a->shape.size());
  t.dtype = {2, static_cast<uint8_t>(8 * a->item_size()), 1};
  t.shape = holder->shape.data();
  t.strides = nullptr;
  t.byte_offset = 0;
  holder->tensor.manager_ctx = holder;
  holder->tensor.deleter = delete_holder;
  // A consumer renames the capsule to "used_dltensor" and owns the tensor from then on; an
  // unconsumed one is freed with the capsule.
  return py::capsule(&holder->tensor, "dltensor", [](PyObject* capsule) {
    if (PyCapsule_IsValid(capsule, "dltensor")) {
      auto* tensor = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
      tensor->deleter(tensor);
    }
  });
}

py::dtype numpy_dtype(DType d) {
  return d == DType::f32 ? py::dtype::of<float>() : py::dtype::of<double>();
}

std::shared_ptr<CudaArray> allocate(DType dtype, const std::vector<int64_t>& shape) {
  auto a = std::make_shared<CudaArray>();
  a->dtype = dtype;
  a->shape = shape;
  VGKERN_CUDA_CHECK(cudaGetDevice(&a->device));
  a->memory.resize(a->numel() * a->item_size());
  return a;
}

}  // namespace

py::object new_cuda_array(DType dtype, const std::vector<int64_t>& shape, TensorView* view) {
  std::shared_ptr<CudaArray> a = allocate(dtype, shape);
  if (view) {
    view->dtype = dtype;
    view->device = Device::cuda;
    view->ndim = static_cast<int>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) view->shape[i] = shape[i];
    view->data = a->memory.data();
  }
  return py::cast(a);
}

py::object borrowed_cuda_array(DType dtype, const std::vector<int64_t>& shape, void* data,
                               py::object owner) {
  auto a = std::make_shared<CudaArray>();
  a->dtype = dtype;
  a->shape = shape;
  VGKERN_CUDA_CHECK(cudaGetDevice(&a->device));
  a->borrowed = data;
  // The last reference may go from a thread without the GIL (a DLPack consumer's deleter, e.g.
  // in torch's autograd worker): take it to release the owner; after interpreter shutdown the
  // reference is left (there is nothing to release it into).
  a->owner = std::shared_ptr<void>(new py::object(std::move(owner)), [](void* p) {
    if (!Py_IsInitialized()) return;
    py::gil_scoped_acquire gil;
    delete static_cast<py::object*>(p);
  });
  return py::cast(a);
}

void bind_cuda_array(py::module_& m) {
  py::class_<CudaArray, std::shared_ptr<CudaArray>>(m, "CudaArray")
      .def_property_readonly("shape",
                             [](const CudaArray& a) { return py::tuple(py::cast(a.shape)); })
      .def_property_readonly("dtype", [](const CudaArray& a) { return numpy_dtype(a.dtype); })
      .def_property_readonly(
          "__cuda_array_interface__",
          [](const CudaArray& a) {
            py::dict d;
            d["shape"] = py::tuple(py::cast(a.shape));
            d["typestr"] = a.dtype == DType::f32 ? "<f4" : "<f8";
            d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(a.data()), false);
            d["strides"] = py::none();
            d["stream"] = py::none();  // vgkern's ops synchronise before they return
            d["version"] = 3;
            return d;
          })
      .def("__dlpack__",
           [](const std::shared_ptr<CudaArray>& a, py::object, py::object, py::object,
              py::object) { return to_dlpack(a); },
           py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
           py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
      .def("__dlpack_device__",
           [](const CudaArray& a) { return py::make_tuple(kDLCUDA, a.device); })
      .def("numpy",
           [](const CudaArray& a) {
             TensorView view;
             py::array host = new_array(a.dtype, a.shape, &view);
             if (a.numel() > 0)
               VGKERN_CUDA_CHECK(cudaMemcpy(view.data, a.data(), a.numel() * a.item_size(),
                                            cudaMemcpyDeviceToHost));
             return host;
           },
           "A host copy (numpy.ndarray).")
      .def("__repr__", [](const CudaArray& a) {
        std::string s = "CudaArray(shape=(";
        for (size_t i = 0; i < a.shape.size(); ++i)
          s += (i ? ", " : "") + std::to_string(a.shape[i]);
        return s + (a.shape.size() == 1 ? ",)" : ")") + ", dtype=" +
               (a.dtype == DType::f32 ? "float32" : "float64") + ", device=" +
               std::to_string(a.device) + ")";
      });
  m.def(
      "to_device",
      [](py::handle obj, const std::string& op, const std::string& arg) {
        const TensorView host = view_of(obj, op.c_str(), arg.c_str());
        TensorView view;
        const std::vector<int64_t> shape(host.shape, host.shape + host.ndim);
        py::object out = new_cuda_array(host.dtype, shape, &view);
        const size_t bytes = host.numel() * (host.dtype == DType::f32 ? 4 : 8);
        if (bytes > 0)
          VGKERN_CUDA_CHECK(cudaMemcpy(view.data, host.data, bytes, cudaMemcpyHostToDevice));
        return out;
      },
      py::arg("a"), py::arg("op") = "to_device", py::arg("arg") = "a",
      "A numpy array copied to the current CUDA device (a CudaArray); errors name op and arg.");
}

}  // namespace vgkern
