// What was compiled in: reported by vgkern.build_info() (the Python side adds the BLAS found
// at run time).
#include <pybind11/pybind11.h>

#include <string>

#include "core/blas.h"
#include "core/dispatch.h"

namespace py = pybind11;

namespace vgkern {

py::dict build_info_dict() {
  py::dict info;
  info["compiler"] = VGKERN_COMPILER;
  info["cxx_flags"] = VGKERN_CXX_FLAGS_STRING;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  info["simd"] = "x86-64 function multiversioning: x86-64-v4 (AVX-512), x86-64-v3 (AVX2), baseline";
  __builtin_cpu_init();
  info["simd_selected"] = __builtin_cpu_supports("x86-64-v4") ? "x86-64-v4 (AVX-512)"
                          : __builtin_cpu_supports("x86-64-v3") ? "x86-64-v3 (AVX2)"
                                                           : "baseline";
#else
  info["simd"] = "compiler auto-vectorisation for the build target";
#endif
  info["openmp"] = VGKERN_OPENMP_SIMD ? "simd pragmas only (no OpenMP runtime)" : "off";
  const std::string control = blas_thread_control();
  info["threading"] =
      control.empty() ? "BLAS threads only (no thread control found in this BLAS)"
                      : "small layers in 2 parts on the caller + 1 helper thread, each with "
                        "single-threaded BLAS (via " + control + "); large layers: BLAS threads";
  info["cuda"] = kBuiltWithCuda;
  info["cuda_architectures"] = kBuiltWithCuda ? VGKERN_CUDA_ARCHS : "";
  info["cuda_version"] = kBuiltWithCuda ? VGKERN_CUDA_VERSION : "";  // the toolkit built with
  info["cuda_emulated"] = static_cast<bool>(VGKERN_CUDA_EMULATED);  // VGKERN_CUDA=EMULATE
  return info;
}

}  // namespace vgkern
