// ops/optim.h on the CPU: one pass over each segment, in blocks of kBlock entries. Per entry:
// the gradient is read (and unscaled by 2^grad_log2_scale), the rule of optim_rule.h updates the
// state and the parameter, and five float64 sums of squares grow: the update (after - before),
// the parameter before, after, after - reference, and the reference. Float data squared in
// float64 never under- or overflows. Double data: a block's sum outside [2^-900, 2^900] (tiny,
// huge, zero or NaN entries) is replaced by that block's exact norm (scaled_norm, core/stats.h,
// over the block's values still in L1), joined to the total without under- or overflow.
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/simd.h"
#include "core/stats.h"
#include "ops/optim.h"
#include "ops/optim_rule.h"

namespace vgkern {
namespace {

constexpr int64_t kBlock = 1024;

// The sums of squares a tensor's statistics come from.
enum Sum : int { kUpdate, kBefore, kAfter, kMoved, kReference, kSums };

// Norms over a segment: trusted block sums added (fast), the exact norms of the other blocks
// (double data only) joined (slow).
struct NormAccumulator {
  double fast[kSums] = {};
  double slow[kSums] = {};
  double norm(int k) const { return joined_norm(std::sqrt(fast[k]), slow[k]); }
};

// The rules as functors of (entry index, parameter, gradient) -> new parameter; shift(d) moves
// their state pointers d entries on. The coefficients are copies: stores to the parameters
// cannot alias them, so the loop keeps them in registers.
template <class T>
struct SgdPlain {
  OptimCoefficients<T> k;
  void shift(int64_t) {}
  T operator()(int64_t, T p, T g) const { return sgd_update<T>(k, p, g, nullptr); }
};
template <class T>
struct SgdMomentum {
  OptimCoefficients<T> k;
  T* buf;
  void shift(int64_t d) { buf += d; }
  T operator()(int64_t i, T p, T g) const { return sgd_update<T>(k, p, g, buf + i); }
};
template <class T, bool kDecoupled>
struct AdamRule {
  OptimCoefficients<T> k;
  T *m, *v;
  void shift(int64_t d) {
    m += d;
    v += d;
  }
  T operator()(int64_t i, T p, T g) const {
    return adam_update<T, kDecoupled>(k, p, g, m + i, v + i);
  }
};

#define VGKERN_SIMD_KERNELS "ops/optim_simd.inc"
#include "core/simd_levels.inc"

// Block [0, n) of a segment (n <= kBlock): rule over p, g * gscale; sums into acc.
template <class T, class Rule>
void update_block(T* p, const T* g, T gscale, const T* ref, int64_t n, const Rule& rule,
                  NormAccumulator* acc) {
  T before[kBlock];
  if constexpr (std::is_same_v<T, double>) std::memcpy(before, p, n * sizeof(T));
  double sums[kSums];
  VGKERN_SIMD(isa::update_and_sum<T>(p, g, gscale, ref, n, rule, sums));
  for (int k = 0; k < kSums; ++k) {
    if (sum_squares_trusted<T>(sums[k])) {
      acc->fast[k] += sums[k];
      continue;
    }
    if constexpr (std::is_same_v<T, double>) {  // float sums are always trusted (or NaN)
      double values[kBlock];
      for (int64_t i = 0; i < n; ++i) {
        const double o = before[i], a = p[i], r = ref[i];
        values[i] = k == kUpdate ? a - o : k == kBefore ? o : k == kAfter ? a
                  : k == kMoved ? a - r : r;
      }
      acc->slow[k] = joined_norm(acc->slow[k], scaled_norm(values, n));
    } else {
      acc->fast[k] += sums[k];  // NaN
    }
  }
}

// Whether 2^e is a normal T (then multiplying by it is exactly ldexp).
template <class T>
bool power_of_two_is_normal(int e) {
  return e >= std::numeric_limits<T>::min_exponent - 1 && e < std::numeric_limits<T>::max_exponent;
}

template <class T, class Rule>
void update_segment(T* p, const T* g, const T* ref, const OptimSegment& s, Rule rule,
                    double* row) {
  const int e = s.grad_log2_scale;
  const bool multiply = power_of_two_is_normal<T>(e);
  const T gscale = multiply ? static_cast<T>(std::ldexp(1.0, e)) : T(1);
  NormAccumulator acc;
  T unscaled[kBlock];  // 2^e outside T's normal range: the block's gradient, ldexp'ed
  for (int64_t start = 0; start < s.count; start += kBlock) {
    const int64_t n = std::min(kBlock, s.count - start);
    const T* gb = g + start;
    if (!multiply) {
      for (int64_t i = 0; i < n; ++i) unscaled[i] = std::ldexp(gb[i], e);
      gb = unscaled;
    }
    auto shifted = rule;
    shifted.shift(start);
    update_block(p + start, gb, gscale, ref + start, n, shifted, &acc);
  }
  if (!row) return;
  const double update = acc.norm(kUpdate);
  row[UpdateStat::update_norm] = update;
  row[UpdateStat::update_ratio] = update / acc.norm(kBefore);
  row[UpdateStat::norm] = acc.norm(kAfter);
  row[UpdateStat::change] = acc.norm(kMoved) / acc.norm(kReference);
}

}  // namespace

template <class T>
void optim_update_cpu(T* params, T* state1, T* state2, const T* grads, const T* reference,
                      const std::vector<OptimSegment>& segments, const OptimConfig& config,
                      double* stats, int64_t rows) {
  for (int64_t i = 0; i < rows * UpdateStat::kCount; ++i)
    stats[i] = std::numeric_limits<double>::quiet_NaN();
  const OptimCoefficients<T> k = OptimCoefficients<T>::make(config);
  for (const OptimSegment& s : segments) {
    T* p = params + s.offset;
    const T* g = grads + s.offset;
    const T* ref = reference + s.offset;
    double* row = s.stats_row >= 0 ? stats + s.stats_row * UpdateStat::kCount : nullptr;
    switch (config.rule) {
      case OptimRule::sgd:
        if (k.momentum_on)
          update_segment(p, g, ref, s, SgdMomentum<T>{k, state1 + s.offset}, row);
        else
          update_segment(p, g, ref, s, SgdPlain<T>{k}, row);
        break;
      case OptimRule::adam:
        update_segment(p, g, ref, s, AdamRule<T, false>{k, state1 + s.offset, state2 + s.offset},
                       row);
        break;
      case OptimRule::adamw:
        update_segment(p, g, ref, s, AdamRule<T, true>{k, state1 + s.offset, state2 + s.offset},
                       row);
        break;
    }
  }
}

template void optim_update_cpu<float>(float*, float*, float*, const float*, const float*,
                                      const std::vector<OptimSegment>&, const OptimConfig&,
                                      double*, int64_t);
template void optim_update_cpu<double>(double*, double*, double*, const double*, const double*,
                                       const std::vector<OptimSegment>&, const OptimConfig&,
                                       double*, int64_t);

}  // namespace vgkern
