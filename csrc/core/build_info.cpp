// What was compiled in: reported by vgkern.build_info() (the Python side adds the BLAS found
// at run time).
#include <pybind11/pybind11.h>

#include <string>

#include "core/blas.h"
#include "core/dispatch.h"
#include "core/simd.h"

namespace py = pybind11;

namespace vgkern {

py::dict build_info_dict() {
  py::dict info;
  info["compiler"] = VGKERN_COMPILER;
  info["cxx_flags"] = VGKERN_CXX_FLAGS_STRING;
#if VGKERN_SIMD_MULTIVERSION
  info["simd"] = "x86-64 kernels compiled per level, chosen at load time (cpuid): x86-64-v4 "
                 "(AVX-512), x86-64-v3 (AVX2), baseline";
#else
  info["simd"] = "compiler auto-vectorisation for the build target";
#endif
  info["simd_selected"] = simd_level_name(simd_level());
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
