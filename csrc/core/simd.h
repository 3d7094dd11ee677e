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
