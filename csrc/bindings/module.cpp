// vgkern._core: exception mapping, BLAS hookup, build information; ops, nets and the statistics
// schema are bound in ops_bindings.cpp, mlp_bindings.cpp, recurrent_bindings.cpp,
// report_bindings.cpp and optim_bindings.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/cuda_array.h"
#include "core/blas.h"
#include "core/dispatch.h"
#include "core/errors.h"

namespace py = pybind11;

namespace vgkern {
void bind_ops(py::module_& m);
void bind_mlp(py::module_& m);
void bind_recurrent(py::module_& m);
void bind_report(py::module_& m);
void bind_optim(py::module_& m);
py::dict build_info_dict();
}  // namespace vgkern

PYBIND11_MODULE(_core, m) {
  using namespace vgkern;
  m.doc() = "vgkern native core (use the vgkern package, not this module directly)";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const DeviceError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const MemoryError& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  m.def(
      "set_blas",
      [](py::capsule sgemm, py::capsule dgemm) {
        // scipy.linalg.cython_blas exports C function pointers in capsules named by signature.
        void* s = PyCapsule_GetPointer(sgemm.ptr(), PyCapsule_GetName(sgemm.ptr()));
        void* d = PyCapsule_GetPointer(dgemm.ptr(), PyCapsule_GetName(dgemm.ptr()));
        if (!s || !d) throw py::error_already_set();
        set_blas(s, d);
      },
      py::arg("sgemm"), py::arg("dgemm"));
  m.def("blas_ready", &blas_ready);
  m.def("cuda_compiled", [] { return kBuiltWithCuda; });
  m.def("cuda_device_count", [] { return cuda_device_count(); });
  m.def("load_cublas", &load_cublas, py::arg("candidates"));
  m.def("build_info", &build_info_dict);
  m.def("set_flush_denormal", [](bool on) {
    g_flush_denormal = on;
    return kCanFlushDenormal;
  });
  m.def("flush_denormal", [] { return kCanFlushDenormal && g_flush_denormal.load(); });

  bind_cuda_array(m);
  bind_ops(m);
  bind_mlp(m);
  bind_recurrent(m);
  bind_report(m);
  bind_optim(m);
}
