// Work cut into a fixed number of parts, run on the calling thread and a persistent helper.
//
// Why: at the widths users sweep (64-256), one layer's GEMMs are too small for the BLAS's own
// threads (measured: OpenBLAS on 2 threads runs a 256x64x64 sgemm slower than on 1), and the
// elementwise passes are single-threaded. Cutting each layer into two parts (row halves of a
// forward; dW and dx of a backward), each part running single-threaded BLAS, keeps both cores
// busy with the GEMM kernels instead of the BLAS's fork/join.
//
// Determinism: the parts are chosen from shapes only, never from thread counts. Part p always
// covers the same rows (or the same GEMM) and partial sums are combined in part order, so the
// results are bit-identical with 1 thread or 2; only how many parts run at once changes.
#pragma once
#include <functional>

namespace vgkern {

constexpr int kMaxParts = 2;

// Runs part(0) .. part(parts - 1) (parts <= kMaxParts): part 0 on the caller, the others on the
// helper when threads > 1 and the helper is free (another thread's call may be using it: then
// all here, one after another). The helper runs with the caller's MXCSR (rounding, FTZ/DAZ).
// An exception from any part is rethrown here once every part has finished.
void run_parts(int parts, int threads, const std::function<void(int)>& part);

}  // namespace vgkern
