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
bool blas_ready();

// Row-major C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C.
// lda/ldb/ldc are row strides of A, B, C as stored (before op()).
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace vgkern
