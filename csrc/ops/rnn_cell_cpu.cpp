#include <algorithm>
#include <vector>

#include "core/blas.h"
#include "core/scratch.h"
#include "core/simd.h"
#include "ops/activation_math.h"
#include "ops/rnn_cell.h"

namespace vgkern {
namespace {

#define VGKERN_SIMD_KERNELS "ops/rnn_cell_simd.inc"
#include "core/simd_levels.inc"

}  // namespace

template <class T>
void rnn_forward_cpu(T* pre_h, int64_t n, Activation act, int64_t* saturated) {
  const bool relu = act == Activation::relu;
  int64_t count = 0;
  if (relu)
    VGKERN_SIMD(isa::rnn_forward_loop<T, Activation::relu, false>(pre_h, n));
  else if (saturated)
    count = VGKERN_SIMD(isa::rnn_forward_loop<T, Activation::tanh, true>(pre_h, n));
  else
    VGKERN_SIMD(isa::rnn_forward_loop<T, Activation::tanh, false>(pre_h, n));
  if (saturated) *saturated = count;
}

template <class T>
void rnn_backward_cpu(T* dpre, T* dh_total, const T* dh_a, const T* dh_b, const T* h, int64_t n,
                      Activation act, double* dh_sumsq) {
  dh_b = zeros_if_null(dh_b, n);
  const double sumsq = VGKERN_SIMD(
      act == Activation::relu
          ? isa::rnn_backward_loop<T, Activation::relu>(dpre, dh_total, dh_a, dh_b, h, n)
          : isa::rnn_backward_loop<T, Activation::tanh>(dpre, dh_total, dh_a, dh_b, h, n));
  if (dh_sumsq) *dh_sumsq = sumsq;
}

template <class T>
void cell_preactivations_cpu(T* pre, const T* x, const T* h_prev, const T* w_ih, const T* w_hh,
                             const T* bias, int64_t rows, int64_t in, int64_t hidden,
                             int64_t gates) {
  for (int64_t i = 0; i < rows; ++i) std::copy(bias, bias + gates, pre + i * gates);
  gemm<T>(false, true, rows, gates, in, T(1), x, in, w_ih, in, T(1), pre, gates);
  gemm<T>(false, true, rows, gates, hidden, T(1), h_prev, hidden, w_hh, hidden, T(1), pre, gates);
}

template <class T>
void add_column_sums_cpu(double* sums, const T* m, int64_t rows, int64_t cols) {
  VGKERN_SIMD(isa::add_column_sums(sums, m, rows, cols));
}

template <class T>
void column_sums_into(T* out, const T* m, int64_t rows, int64_t cols, double* scratch_sums) {
  std::fill(scratch_sums, scratch_sums + cols, 0.0);
  VGKERN_SIMD(isa::add_column_sums(scratch_sums, m, rows, cols));
  for (int64_t j = 0; j < cols; ++j) out[j] = static_cast<T>(scratch_sums[j]);
}

template <class T>
void cell_weight_backward_cpu(T* dx, T* dh_prev, T* dw_ih, T* dw_hh, T* dbias, const T* dpre,
                              const T* x, const T* h_prev, const T* w_ih, const T* w_hh,
                              int64_t rows, int64_t in, int64_t hidden, int64_t gates) {
  gemm<T>(false, false, rows, in, gates, T(1), dpre, gates, w_ih, in, T(0), dx, in);
  gemm<T>(false, false, rows, hidden, gates, T(1), dpre, gates, w_hh, hidden, T(0), dh_prev,
          hidden);
  gemm<T>(true, false, gates, in, rows, T(1), dpre, gates, x, in, T(0), dw_ih, in);
  gemm<T>(true, false, gates, hidden, rows, T(1), dpre, gates, h_prev, hidden, T(0), dw_hh,
          hidden);
  thread_local std::vector<double> sums;
  column_sums_into(dbias, dpre, rows, gates, scratch(sums, gates));
}


template void rnn_forward_cpu<float>(float*, int64_t, Activation, int64_t*);
template void rnn_forward_cpu<double>(double*, int64_t, Activation, int64_t*);
template void rnn_backward_cpu<float>(float*, float*, const float*, const float*, const float*,
                                      int64_t, Activation, double*);
template void rnn_backward_cpu<double>(double*, double*, const double*, const double*,
                                       const double*, int64_t, Activation, double*);
template void cell_preactivations_cpu<float>(float*, const float*, const float*, const float*,
                                             const float*, const float*, int64_t, int64_t,
                                             int64_t, int64_t);
template void cell_preactivations_cpu<double>(double*, const double*, const double*,
                                              const double*, const double*, const double*,
                                              int64_t, int64_t, int64_t, int64_t);
template void cell_weight_backward_cpu<float>(float*, float*, float*, float*, float*,
                                              const float*, const float*, const float*,
                                              const float*, const float*, int64_t, int64_t,
                                              int64_t, int64_t);
template void cell_weight_backward_cpu<double>(double*, double*, double*, double*, double*,
                                               const double*, const double*, const double*,
                                               const double*, const double*, int64_t, int64_t,
                                               int64_t, int64_t);
template void column_sums_into<float>(float*, const float*, int64_t, int64_t, double*);
template void add_column_sums_cpu<float>(double*, const float*, int64_t, int64_t);
template void add_column_sums_cpu<double>(double*, const double*, int64_t, int64_t);
template void column_sums_into<double>(double*, const double*, int64_t, int64_t, double*);

}  // namespace vgkern
