// cuBLAS GEMMs for the CUDA backend. cuBLAS is loaded at run time (dlopen), not linked: the
// extension then imports and runs on the CPU where no CUDA library is installed, and a wheel
// does not have to carry cuBLAS's ~600 MB. vgkern/_cuda.py finds libcublas.so.<major> (the
// `nvidia-cublas` wheel, i.e. `pip install vgkern[cuda]`, or a CUDA toolkit) and calls
// load_cublas with the candidates. The few C entry points used are declared in cublas.cu (the
// stable cuBLAS v2 API); where CMake finds cublas_api.h they are checked against it.
#pragma once
#include "cuda/runtime.h"

#include <cstdint>
#include <string>
#include <vector>

struct cublasContext;

namespace vgkern {

using CublasHandle = cublasContext*;

// Tries each path (a file, or a bare soname for the loader's search) until one loads with every
// entry point; DeviceError listing what was tried otherwise. Returns the path that loaded.
std::string load_cublas(const std::vector<std::string>& candidates);
bool cublas_loaded();

// One handle per net, bound to its stream, with the default math mode (no TF32: fp32 GEMMs stay
// fp32 unless NVIDIA_TF32_OVERRIDE says otherwise).
CublasHandle cublas_create(cudaStream_t stream);
void cublas_destroy(CublasHandle handle) noexcept;

// Row-major C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C on the handle's stream,
// as core/blas.h's gemm; lda/ldb/ldc are row strides as stored.
template <class T>
void cuda_gemm(CublasHandle handle, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
               T alpha, const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C,
               int64_t ldc);

}  // namespace vgkern
