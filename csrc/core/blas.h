// GEMM from the BLAS that SciPy ships. No BLAS is linked at build time: at import, Python hands
// us the function pointers exported by scipy.linalg.cython_blas (as scikit-learn does), so the
// user's SciPy decides between OpenBLAS, MKL and Accelerate.
#pragma once
#include <cstdint>

namespace vgkern {

// Fortran ?gemm: column-major, every argument by pointer, 32-bit ints.
template <class T>
using fortran_gemm_fn = void (*)(const char* transa, const char* transb, const int* m,
                                 const int* n, const int* k, const T* alpha, const T* a,
                                 const int* lda, const T* b, const int* ldb, const T* beta, T* c,
                                 const int* ldc);

void set_blas(void* sgemm, void* dgemm);
template <class T>
fortran_gemm_fn<T> fortran_gemm();  // null until set_blas
bool blas_ready();

// The BLAS's thread setting, as threadpoolctl sees and sets it. Found next to sgemm (OpenBLAS's
// openblas_{get,set}_num_threads, with or without SciPy's "scipy_" prefix); with another BLAS
// there is no control: blas_threads() is 1 and split work runs on the caller only.
int blas_threads();
const char* blas_thread_control();  // the setter's name, "" when none was found

// While any instance lives, BLAS calls run single-threaded in their calling thread, so that
// run_parts (core/parallel.h) can run two GEMMs side by side; threads() is the BLAS's setting
// before (how many parts may run at once). Process-wide and counted: the first one in saves
// the setting, the last one out restores it.
class BlasSingleThreaded {
 public:
  BlasSingleThreaded();
  ~BlasSingleThreaded();
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;
  int threads() const { return threads_; }

 private:
  int threads_ = 1;
};

// Row-major C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C.
// lda/ldb/ldc are row strides of A, B, C as stored (before op()).
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace vgkern
