// Hot elementwise loops are compiled for AVX-512 and AVX2 as well as the baseline x86-64 and
// chosen at load time (GCC/Clang function multiversioning), so one portable wheel runs at full
// vector width on the machine it lands on.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(VGKERN_NO_MULTIVERSION)
#define VGKERN_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VGKERN_SIMD_CLONES
#endif

#include <cstdint>

namespace vgkern {

// Whether this CPU runs the AVX-512 clones (x86-64-v4). There a count written as a select,
// count = cond ? count + 1 : count, is a compare and an add under its mask (2 operations), where
// count += cond ? 1 : 0 is 3; on AVX2 the select is a blend and costs more than the add
// (measured on the tanh epilogue: +1.1 us per 8192 entries). Passes that count pick their
// template variant with this.
inline bool masked_counts() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(VGKERN_NO_MULTIVERSION)
  static const bool avx512 =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return avx512;
#else
  return false;
#endif
}

// count += 1 where cond, written for the variant chosen by masked_counts().
template <bool Masked>
[[gnu::always_inline]] inline void count_if(bool cond, int32_t& count) {
  if constexpr (Masked)
    count = cond ? count + 1 : count;
  else
    count += cond ? 1 : 0;
}

}  // namespace vgkern
