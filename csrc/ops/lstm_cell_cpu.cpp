#include <algorithm>
#include <vector>

#include "core/scratch.h"
#include "core/simd.h"
#include "ops/activation_math.h"
#include "ops/lstm_cell.h"

namespace vgkern {
namespace {

constexpr float kSigmoidSaturated = 0.01f * 0.25f;  // 1% of sigmoid's largest derivative
constexpr float kTanhSaturated = 0.01f;

#define VGKERN_SIMD_KERNELS "ops/lstm_cell_simd.inc"
#include "core/simd_levels.inc"

}  // namespace

template <class T>
void lstm_gates_forward_cpu(T* gates, T* c, T* h, T* tanh_c, const T* c_prev, int64_t rows,
                            int64_t hidden, GateStats* stats) {
  double forget_sum = 0;
  int64_t saturated = 0;
  if (stats)
    VGKERN_SIMD(isa::lstm_forward_rows<T, true>(gates, c, h, tanh_c, c_prev, rows, hidden,
                                                &forget_sum, &saturated));
  else
    VGKERN_SIMD(isa::lstm_forward_rows<T, false>(gates, c, h, tanh_c, c_prev, rows, hidden,
                                                 &forget_sum, &saturated));
  if (stats) *stats = GateStats{forget_sum, saturated};
}

template <class T>
void lstm_gates_backward_cpu(T* dpre, T* dc_prev, T* dh_total, T* dc_total, const T* dh_a,
                             const T* dh_b, const T* dc, const T* gates, const T* c_prev,
                             const T* tanh_c, int64_t rows, int64_t hidden, double* dh_sumsq,
                             double* dc_sumsq) {
  const int64_t n = rows * hidden;
  dh_b = zeros_if_null(dh_b, n);  // both may share the one read-only zero buffer
  dc = zeros_if_null(dc, n);
  double sh, sc;
  VGKERN_SIMD(isa::lstm_backward_rows(dpre, dc_prev, dh_total, dc_total, dh_a, dh_b, dc, gates,
                                      c_prev, tanh_c, rows, hidden, &sh, &sc));
  if (dh_sumsq) *dh_sumsq = sh;
  if (dc_sumsq) *dc_sumsq = sc;
}

template void lstm_gates_forward_cpu<float>(float*, float*, float*, float*, const float*, int64_t,
                                            int64_t, GateStats*);
template void lstm_gates_forward_cpu<double>(double*, double*, double*, double*, const double*,
                                             int64_t, int64_t, GateStats*);
template void lstm_gates_backward_cpu<float>(float*, float*, float*, float*, const float*,
                                             const float*, const float*, const float*,
                                             const float*, const float*, int64_t, int64_t,
                                             double*, double*);
template void lstm_gates_backward_cpu<double>(double*, double*, double*, double*, const double*,
                                              const double*, const double*, const double*,
                                              const double*, const double*, int64_t, int64_t,
                                              double*, double*);

}  // namespace vgkern
