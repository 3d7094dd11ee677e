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

// One row: gates (4H) in place pre -> activated; c, h, tanh_c (H).
template <class T, bool Stats>
VGKERN_SIMD_CLONES void lstm_forward_rows(T* gates, T* c, T* h, T* tanh_c, const T* c_prev,
                                          int64_t rows, int64_t hidden, double* forget_sum,
                                          int64_t* saturated) {
  double f_total = 0;
  int64_t sat_total = 0;
  for (int64_t b = 0; b < rows; ++b) {
    T* gi = gates + b * 4 * hidden;
    T* gf = gi + hidden;
    T* gg = gi + 2 * hidden;
    T* go = gi + 3 * hidden;
    const T* cp = c_prev + b * hidden;
    T* cr = c + b * hidden;
    T* hr = h + b * hidden;
    T* tr = tanh_c + b * hidden;
    double f_sum = 0;
    int32_t sat = 0;
#pragma omp simd reduction(+ : f_sum, sat)
    for (int64_t j = 0; j < hidden; ++j) {
      T i, di, f, df, g, dg, o, dout, tc, dtc;
      act_eval<Activation::sigmoid>(gi[j], T(1), i, di);
      act_eval<Activation::sigmoid>(gf[j], T(1), f, df);
      act_eval<Activation::tanh>(gg[j], T(1), g, dg);
      act_eval<Activation::sigmoid>(go[j], T(1), o, dout);
      const T cc = f * cp[j] + i * g;
      act_eval<Activation::tanh>(cc, T(1), tc, dtc);
      gi[j] = i;
      gf[j] = f;
      gg[j] = g;
      go[j] = o;
      cr[j] = cc;
      tr[j] = tc;
      hr[j] = o * tc;
      if constexpr (Stats) {
        f_sum += f;
        sat += (di < T(kSigmoidSaturated) ? 1 : 0) + (df < T(kSigmoidSaturated) ? 1 : 0) +
               (dg < T(kTanhSaturated) ? 1 : 0) + (dout < T(kSigmoidSaturated) ? 1 : 0);
      }
    }
    f_total += f_sum;
    sat_total += sat;
  }
  *forget_sum = f_total;
  *saturated = sat_total;
}

template <class T>
VGKERN_SIMD_CLONES void lstm_backward_rows(T* dpre, T* dc_prev, T* dh_total, T* dc_total,
                                           const T* dh_a, const T* dh_b, const T* dc,
                                           const T* gates, const T* c_prev, const T* tanh_c,
                                           int64_t rows, int64_t hidden, double* dh_sumsq,
                                           double* dc_sumsq) {
  double sh = 0, sc = 0;
  for (int64_t b = 0; b < rows; ++b) {
    const int64_t r = b * hidden;
    const T* gi = gates + 4 * r;
    const T* gf = gi + hidden;
    const T* gg = gi + 2 * hidden;
    const T* go = gi + 3 * hidden;
    T* di = dpre + 4 * r;
    T* df = di + hidden;
    T* dg = di + 2 * hidden;
    T* dout = di + 3 * hidden;
#pragma omp simd reduction(+ : sh, sc)
    for (int64_t j = 0; j < hidden; ++j) {
      const T i = gi[j], f = gf[j], g = gg[j], o = go[j], tc = tanh_c[r + j];
      const T dh = dh_a[r + j] + dh_b[r + j];
      const T dct = dc[r + j] + dh * o * (T(1) - tc * tc);
      di[j] = dct * g * i * (T(1) - i);
      df[j] = dct * c_prev[r + j] * f * (T(1) - f);
      dg[j] = dct * i * (T(1) - g * g);
      dout[j] = dh * tc * o * (T(1) - o);
      dc_prev[r + j] = dct * f;
      dh_total[r + j] = dh;
      dc_total[r + j] = dct;
      sh += static_cast<double>(dh) * static_cast<double>(dh);
      sc += static_cast<double>(dct) * static_cast<double>(dct);
    }
  }
  *dh_sumsq = sh;
  *dc_sumsq = sc;
}

}  // namespace

template <class T>
void lstm_gates_forward_cpu(T* gates, T* c, T* h, T* tanh_c, const T* c_prev, int64_t rows,
                            int64_t hidden, GateStats* stats) {
  double forget_sum = 0;
  int64_t saturated = 0;
  if (stats)
    lstm_forward_rows<T, true>(gates, c, h, tanh_c, c_prev, rows, hidden, &forget_sum, &saturated);
  else
    lstm_forward_rows<T, false>(gates, c, h, tanh_c, c_prev, rows, hidden, &forget_sum, &saturated);
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
  lstm_backward_rows(dpre, dc_prev, dh_total, dc_total, dh_a, dh_b, dc, gates, c_prev, tanh_c,
                     rows, hidden, &sh, &sc);
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
