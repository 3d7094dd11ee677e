#include "core/blas.h"

#include "core/checks.h"
#include "core/errors.h"

namespace vgkern {

static fortran_gemm_fn<float> g_sgemm = nullptr;
static fortran_gemm_fn<double> g_dgemm = nullptr;

void set_blas(void* sgemm, void* dgemm) {
  if (!sgemm || !dgemm) fail<DeviceError>("set_blas: got a null sgemm/dgemm pointer");
  g_sgemm = reinterpret_cast<fortran_gemm_fn<float>>(sgemm);
  g_dgemm = reinterpret_cast<fortran_gemm_fn<double>>(dgemm);
}

bool blas_ready() { return g_sgemm && g_dgemm; }

template <class T> static fortran_gemm_fn<T> gemm_fn();
template <> fortran_gemm_fn<float> gemm_fn<float>() { return g_sgemm; }
template <> fortran_gemm_fn<double> gemm_fn<double>() { return g_dgemm; }

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  auto fn = gemm_fn<T>();
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
