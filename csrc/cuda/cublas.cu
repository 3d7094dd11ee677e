#include "cuda/cublas.h"

#include <dlfcn.h>

#include <algorithm>
#include <limits>
#include <mutex>

#include "core/errors.h"

// The cuBLAS v2 C API as used here (cublas_api.h; CUBLAS_OP_N = 0, CUBLAS_OP_T = 1,
// CUBLAS_DEFAULT_MATH = 0, CUBLAS_STATUS_SUCCESS = 0).
using cublas_status = int;
using CreateFn = cublas_status (*)(cublasContext**);
using DestroyFn = cublas_status (*)(cublasContext*);
using SetStreamFn = cublas_status (*)(cublasContext*, cudaStream_t);
using SetMathModeFn = cublas_status (*)(cublasContext*, int);
using StatusStringFn = const char* (*)(cublas_status);
template <class T>
using GemmFn = cublas_status (*)(cublasContext*, int, int, int, int, int, const T*, const T*, int,
                                 const T*, int, const T*, T*, int);

#ifdef VGKERN_CUBLAS_HEADER  // CMake found cublas_api.h: the declarations above must match it
#include <cublas_api.h>

#include <type_traits>
static_assert(CUBLAS_OP_N == 0 && CUBLAS_OP_T == 1 && CUBLAS_DEFAULT_MATH == 0 &&
              CUBLAS_STATUS_SUCCESS == 0);
static_assert(sizeof(cublasStatus_t) == sizeof(int) && sizeof(cublasOperation_t) == sizeof(int) &&
              sizeof(cublasMath_t) == sizeof(int));
static_assert(std::is_same_v<cublasHandle_t, cublasContext*>);
#endif

#ifdef VGKERN_CUDA_EMULATE
#include "core/blas.h"
#endif

namespace vgkern {
namespace {

struct CublasApi {
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn set_stream = nullptr;
  SetMathModeFn set_math_mode = nullptr;
  StatusStringFn status_string = nullptr;
  GemmFn<float> sgemm = nullptr;
  GemmFn<double> dgemm = nullptr;
};

std::mutex g_load_mutex;
CublasApi g_api;  // written once under g_load_mutex, before g_loaded is set
bool g_loaded = false;

void check(cublas_status status, const char* call) {
  if (status != 0)
    fail<DeviceError>("cuBLAS error in ", call, ": ",
                      g_api.status_string ? g_api.status_string(status) : "", " (status ",
                      status, ")");
}

int narrow(int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<int>::max())
    fail<ValueError>("cuBLAS GEMM: ", what, " = ", v, " does not fit cuBLAS's 32-bit sizes");
  return static_cast<int>(v);
}

#ifdef VGKERN_CUDA_EMULATE
// cuda/emulation.h: cuBLAS's column-major GEMM is the Fortran BLAS's, so the emulated entry
// points call SciPy's BLAS with the same arguments (and cuda_gemm's operand swap is tested).
template <class T>
cublas_status emulated_gemm(cublasContext*, int transa, int transb, int m, int n, int k,
                            const T* alpha, const T* A, int lda, const T* B, int ldb,
                            const T* beta, T* C, int ldc) {
  const char ta = transa ? 'T' : 'N', tb = transb ? 'T' : 'N';
  fortran_gemm<T>()(&ta, &tb, &m, &n, &k, alpha, A, &lda, B, &ldb, beta, C, &ldc);
  return 0;
}

CublasApi emulated_api() {
  CublasApi api;
  api.create = [](cublasContext** handle) {
    *handle = reinterpret_cast<cublasContext*>(&g_api);  // any non-null handle
    return 0;
  };
  api.destroy = [](cublasContext*) { return 0; };
  api.set_stream = [](cublasContext*, cudaStream_t) { return 0; };
  api.set_math_mode = [](cublasContext*, int) { return 0; };
  api.status_string = [](cublas_status) { return "emulated"; };
  api.sgemm = emulated_gemm<float>;
  api.dgemm = emulated_gemm<double>;
  return api;
}
#else
template <class Fn>
bool find(void* lib, const char* name, Fn* out) {
  *out = reinterpret_cast<Fn>(dlsym(lib, name));
  return *out != nullptr;
}
#endif

}  // namespace

std::string load_cublas(const std::vector<std::string>& candidates) {
  std::lock_guard<std::mutex> lock(g_load_mutex);
  if (g_loaded) return "(already loaded)";
#ifdef VGKERN_CUDA_EMULATE
  (void)candidates;
  g_api = emulated_api();
  g_loaded = true;
  return "(emulated: the CPU BLAS)";
#else
  std::string tried;
  for (const std::string& path : candidates) {
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* why = dlerror();
      tried += concat("\n  ", path, ": ", why ? why : "not loadable");
      continue;
    }
    CublasApi api;
    const bool complete =
        find(lib, "cublasCreate_v2", &api.create) && find(lib, "cublasDestroy_v2", &api.destroy) &&
        find(lib, "cublasSetStream_v2", &api.set_stream) &&
        find(lib, "cublasSetMathMode", &api.set_math_mode) &&
        find(lib, "cublasGetStatusString", &api.status_string) &&
        find(lib, "cublasSgemm_v2", &api.sgemm) && find(lib, "cublasDgemm_v2", &api.dgemm);
    if (!complete) {
      tried += concat("\n  ", path, ": loaded but lacks a cuBLAS v2 entry point");
      dlclose(lib);
      continue;
    }
    g_api = api;  // the library stays loaded for the life of the process
    g_loaded = true;
    return path;
  }
  fail<DeviceError>("cuBLAS could not be loaded (install it with `pip install vgkern[cuda]`, "
                    "i.e. the nvidia-cublas wheel, or put a CUDA toolkit's libcublas on "
                    "LD_LIBRARY_PATH); tried:",
                    tried.empty() ? std::string(" nothing") : tried);
#endif
}

bool cublas_loaded() {
  std::lock_guard<std::mutex> lock(g_load_mutex);
  return g_loaded;
}

CublasHandle cublas_create(cudaStream_t stream) {
  if (!cublas_loaded()) fail<DeviceError>("cuBLAS is not loaded (vgkern._cuda.load_cublas)");
  cublasContext* handle = nullptr;
  check(g_api.create(&handle), "cublasCreate");
  try {
    check(g_api.set_stream(handle, stream), "cublasSetStream");
    check(g_api.set_math_mode(handle, 0), "cublasSetMathMode(CUBLAS_DEFAULT_MATH)");
  } catch (...) {
    g_api.destroy(handle);
    throw;
  }
  return handle;
}

void cublas_destroy(CublasHandle handle) noexcept {
  if (handle && g_loaded) g_api.destroy(handle);
}

template <class T>
void cuda_gemm(CublasHandle handle, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
               T alpha, const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C,
               int64_t ldc) {
  if (M == 0 || N == 0) return;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the row-major buffers
  // read column-major are already the transposes, so swap the operands and keep the flags
  // (as core/blas.cpp does for the Fortran BLAS). Leading dimensions must be >= 1.
  GemmFn<T> fn;
  if constexpr (sizeof(T) == 4) fn = g_api.sgemm; else fn = g_api.dgemm;
  check(fn(handle, trans_b ? 1 : 0, trans_a ? 1 : 0, narrow(N, "N"), narrow(M, "M"),
           narrow(K, "K"), &alpha, B, narrow(std::max<int64_t>(ldb, 1), "ldb"), A,
           narrow(std::max<int64_t>(lda, 1), "lda"), &beta, C,
           narrow(std::max<int64_t>(ldc, 1), "ldc")),
        sizeof(T) == 4 ? "cublasSgemm" : "cublasDgemm");
}

template void cuda_gemm<float>(CublasHandle, bool, bool, int64_t, int64_t, int64_t, float,
                               const float*, int64_t, const float*, int64_t, float, float*,
                               int64_t);
template void cuda_gemm<double>(CublasHandle, bool, bool, int64_t, int64_t, int64_t, double,
                                const double*, int64_t, const double*, int64_t, double, double*,
                                int64_t);

}  // namespace vgkern
