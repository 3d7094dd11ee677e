// ops/dense.h's op on the GPU, and the dense layer's stream-level kernels for nets/mlp_cuda.cpp
// (names: csrc/ops/README.md; the GEMMs are cuBLAS calls made by the caller). All pointers are
// device pointers. The *_stream functions run on `stream`, asynchronously, with no host
// synchronisation: statistics land in per-layer float64 "slots" in device memory, read back once
// per step by the net (nets/mlp_cuda.cpp). Slots: core/report.h's DenseSlot.
#pragma once
#include "cuda/stream.h"

#include <cstddef>
#include <cstdint>

#include "core/report.h"  // DenseSlot: a layer's statistics slots
#include "ops/activation.h"

namespace vgkern {

// Bytes of device scratch the functions below and ops/batchnorm_cuda.h's need (partials of their
// reductions, per-column sums) for layers up to `widest` units; one scratch serves every layer
// of a net in turn (same stream).
size_t dense_cuda_scratch_bytes(int64_t widest);

// z (rows, cols) holds x W^T on entry (beta = 0 GEMM). Leaves h = act(z + b) and, unless the
// activation is the identity, dact = act'(z + b). With slots (statistics on), z keeps z + b and
// the forward statistics land in slots[DenseSlot::preact_mean .. DenseSlot::dead_fraction].
template <class T>
void dense_forward_epilogue_stream(T* h, T* dact, T* z, const T* b, int64_t rows, int64_t cols,
                                   ActSpec act, double* slots, void* scratch,
                                   cudaStream_t stream);

// delta = dh * dact (dact null: identity) and db = column sums of delta (float64 sums). With
// `norms` (statistics on, or log_scale), slots get ||dh|| and ||delta||; with log_scale, delta
// and db are then divided by 2^e, e = ilogb(||delta||) (slots[DenseSlot::rescale_log2] = e, 0
// when the norm is 0 or not finite), before the caller's GEMMs.
template <class T>
void dense_backward_prologue_stream(T* delta, T* db, const T* dh, const T* dact, int64_t rows,
                                    int64_t cols, bool norms, bool log_scale, double* slots,
                                    void* scratch, cudaStream_t stream);

// After the GEMMs: slots[DenseSlot::weight_grad_norm] = ||dw|| (n_dw entries),
// slots[DenseSlot::bias_grad_norm] = ||db|| (cols entries).
template <class T>
void dense_backward_norms_stream(const T* dw, int64_t n_dw, const T* db, int64_t cols,
                                 double* slots, void* scratch, cudaStream_t stream);

// The op of ops/dense.h (on the default stream, synchronised): b may be null (no bias), dx may
// be null (not computed).
template <class T>
void dense_forward_cuda(T* h, T* dact, const T* x, const T* w, const T* b, int64_t rows,
                        int64_t in, int64_t out, ActSpec act);
template <class T>
void dense_backward_cuda(T* dx, T* dw, T* db, const T* dh, const T* dact, const T* x, const T* w,
                         int64_t rows, int64_t in, int64_t out);

}  // namespace vgkern
