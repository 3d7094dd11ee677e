#include "core/blas.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

#include "core/checks.h"
#include "core/errors.h"

namespace vgkern {

static fortran_gemm_fn<float> g_sgemm = nullptr;
static fortran_gemm_fn<double> g_dgemm = nullptr;

using get_threads_fn = int (*)();
using set_threads_fn = void (*)(int);
static get_threads_fn g_get_threads = nullptr;
static set_threads_fn g_set_threads = nullptr;
static std::string g_set_threads_name;

// dlsym on the library holding `address` searches it and the libraries it depends on: SciPy's
// cython_blas module, then the OpenBLAS it links.
static void find_thread_control(void* address) {
  Dl_info info;
  if (!dladdr(address, &info) || !info.dli_fname) return;
  void* library = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (!library) return;
  const char* const prefixes[] = {"scipy_openblas", "openblas"};
  const char* const suffixes[] = {"", "64_"};
  for (const char* prefix : prefixes)
    for (const char* suffix : suffixes) {
      const std::string get_name = concat(prefix, "_get_num_threads", suffix);
      const std::string set_name = concat(prefix, "_set_num_threads", suffix);
      auto get = reinterpret_cast<get_threads_fn>(dlsym(library, get_name.c_str()));
      auto set = reinterpret_cast<set_threads_fn>(dlsym(library, set_name.c_str()));
      if (get && set) {
        g_get_threads = get;
        g_set_threads = set;
        g_set_threads_name = set_name;
        dlclose(library);  // drops the reference NOLOAD took; the library stays loaded
        return;
      }
    }
  dlclose(library);
}

void set_blas(void* sgemm, void* dgemm) {
  if (!sgemm || !dgemm) fail<DeviceError>("set_blas: got a null sgemm/dgemm pointer");
  g_sgemm = reinterpret_cast<fortran_gemm_fn<float>>(sgemm);
  g_dgemm = reinterpret_cast<fortran_gemm_fn<double>>(dgemm);
  find_thread_control(sgemm);
}

bool blas_ready() { return g_sgemm && g_dgemm; }

int blas_threads() {
  const int n = g_get_threads ? g_get_threads() : 1;
  return n > 1 ? n : 1;
}

const char* blas_thread_control() { return g_set_threads_name.c_str(); }

static std::mutex g_single_mutex;
static int g_single_depth = 0;  // live BlasSingleThreaded instances
static int g_saved_threads = 1;

BlasSingleThreaded::BlasSingleThreaded() {
  std::lock_guard<std::mutex> lock(g_single_mutex);
  if (g_single_depth++ == 0) {
    g_saved_threads = blas_threads();
    if (g_set_threads && g_saved_threads > 1) g_set_threads(1);
  }
  threads_ = g_saved_threads;
}

BlasSingleThreaded::~BlasSingleThreaded() {
  std::lock_guard<std::mutex> lock(g_single_mutex);
  if (--g_single_depth == 0 && g_set_threads && g_saved_threads > 1) g_set_threads(g_saved_threads);
}

template <> fortran_gemm_fn<float> fortran_gemm<float>() { return g_sgemm; }
template <> fortran_gemm_fn<double> fortran_gemm<double>() { return g_dgemm; }

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  auto fn = fortran_gemm<T>();
  if (!fn) fail<DeviceError>("gemm: BLAS is not initialised (import vgkern, not vgkern._core)");
  if (M == 0 || N == 0) return;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const int m = blas_int(N, "N"), n = blas_int(M, "M"), k = blas_int(K, "K");
  // BLAS wants leading dimensions >= 1 even for empty operands.
  const int ld_b = blas_int(ldb > 0 ? ldb : 1, "ldb"), ld_a = blas_int(lda > 0 ? lda : 1, "lda"),
            ld_c = blas_int(ldc > 0 ? ldc : 1, "ldc");
  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  fn(&ta, &tb, &m, &n, &k, &alpha, B, &ld_b, A, &ld_a, &beta, C, &ld_c);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

}  // namespace vgkern
