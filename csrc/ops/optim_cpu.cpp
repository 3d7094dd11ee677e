// ops/optim.h on the CPU: one pass over each segment, in blocks of kBlock entries. Per entry:
// the gradient is read (and unscaled by 2^grad_log2_scale), the rule of optim_rule.h updates the
// state and the parameter, and five float64 sums of squares grow: the update (after - before),
// the parameter before, after, after - reference, and the reference. Float data squared in
// float64 never under- or overflows. Double data: a block's sum outside [2^-900, 2^900] (tiny,
// huge, zero or NaN entries) is replaced by that block's exact norm (scaled_norm, core/stats.h,
// over the block's values still in L1), joined to the total without under- or overflow.
// Each segment runs in two halves, on the caller and the helper thread (core/parallel.h).
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/blas.h"
#include "core/parallel.h"
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

// Entries [begin, end) of a segment (begin a multiple of kBlock), block by block, into acc.
template <class T, class Rule>
void update_range(T* p, const T* g, const T* ref, int e, int64_t begin, int64_t end,
                  const Rule& rule, NormAccumulator* acc) {
  const bool multiply = power_of_two_is_normal<T>(e);
  const T gscale = multiply ? static_cast<T>(std::ldexp(1.0, e)) : T(1);
  T unscaled[kBlock];  // 2^e outside T's normal range: the block's gradient, ldexp'ed
  for (int64_t start = begin; start < end; start += kBlock) {
    const int64_t n = std::min(kBlock, end - start);
    const T* gb = g + start;
    if (!multiply) {
      for (int64_t i = 0; i < n; ++i) unscaled[i] = std::ldexp(gb[i], e);
      gb = unscaled;
    }
    Rule shifted = rule;
    shifted.shift(start);
    update_block(p + start, gb, gscale, ref + start, n, shifted, acc);
  }
}

// Where part 1 of a segment of `count` entries starts: the middle, rounded down to a block.
int64_t second_half(int64_t count) { return count / kBlock / 2 * kBlock; }

void write_row(const NormAccumulator& half0, const NormAccumulator& half1, double* row) {
  NormAccumulator acc;
  for (int k = 0; k < kSums; ++k) {
    acc.fast[k] = half0.fast[k] + half1.fast[k];
    acc.slow[k] = joined_norm(half0.slow[k], half1.slow[k]);
  }
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
  // Two parts, each over its half of every segment (the update is memory-bound: two cores move
  // the bytes faster than one). The cut depends on the sizes only and the halves' sums are
  // joined in part order, so 1 or 2 threads give the same bits.
  std::vector<NormAccumulator> halves(2 * segments.size());
  const BlasSingleThreaded single;  // no BLAS here: its threads' setting lends the helper
  run_parts(2, single.threads(), [&](int part) {
    for (size_t j = 0; j < segments.size(); ++j) {
      const OptimSegment& s = segments[j];
      const int64_t begin = part == 0 ? 0 : second_half(s.count);
      const int64_t end = part == 0 ? second_half(s.count) : s.count;
      T* p = params + s.offset;
      const T* g = grads + s.offset;
      const T* ref = reference + s.offset;
      const int e = s.grad_log2_scale;
      NormAccumulator* acc = &halves[2 * j + part];
      switch (config.rule) {
        case OptimRule::sgd:
          if (k.momentum_on)
            update_range(p, g, ref, e, begin, end, SgdMomentum<T>{k, state1 + s.offset}, acc);
          else
            update_range(p, g, ref, e, begin, end, SgdPlain<T>{k}, acc);
          break;
        case OptimRule::adam:
          update_range(p, g, ref, e, begin, end,
                       AdamRule<T, false>{k, state1 + s.offset, state2 + s.offset}, acc);
          break;
        case OptimRule::adamw:
          update_range(p, g, ref, e, begin, end,
                       AdamRule<T, true>{k, state1 + s.offset, state2 + s.offset}, acc);
          break;
      }
    }
  });
  for (size_t j = 0; j < segments.size(); ++j)
    if (segments[j].stats_row >= 0)
      write_row(halves[2 * j], halves[2 * j + 1],
                stats + segments[j].stats_row * UpdateStat::kCount);
}

template void optim_update_cpu<float>(float*, float*, float*, const float*, const float*,
                                      const std::vector<OptimSegment>&, const OptimConfig&,
                                      double*, int64_t);
template void optim_update_cpu<double>(double*, double*, double*, const double*, const double*,
                                       const std::vector<OptimSegment>&, const OptimConfig&,
                                       double*, int64_t);

}  // namespace vgkern
