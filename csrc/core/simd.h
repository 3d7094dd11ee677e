// SIMD dispatch: the hot elementwise loops are compiled for x86-64-v4 (AVX-512), x86-64-v3
// (AVX2, FMA) and the baseline x86-64, and the copy for this CPU's level runs, so one portable
// wheel runs at full vector width on the machine it lands on.
//
// One mechanism, plain GCC and Clang: an op's loops live in a kernels file (ops/<op>_simd.inc,
// core/stats_simd.inc) that core/simd_levels.inc includes once per level, each copy in its own
// namespace (simd_v4, simd_v3, simd_baseline) with VGKERN_SIMD_TARGET defined as that level's
// target attribute. The level is detected once (cpuid, simd_level()), and VGKERN_SIMD(expr)
// evaluates expr with `isa` naming that level's namespace:
//
//   // ops/foo_simd.inc:  template <class T> VGKERN_SIMD_TARGET void loop(T* x, int64_t n) {...}
//   // ops/foo_cpu.cpp, inside namespace vgkern { namespace {
//   #define VGKERN_SIMD_KERNELS "ops/foo_simd.inc"
//   #include "core/simd_levels.inc"
//   ...
//   VGKERN_SIMD(isa::loop<T>(x, n));  // or: return VGKERN_SIMD(...); double s = VGKERN_SIMD(...);
//
// A kernels file holds no #include and no include guard; the types it shares with its caller
// are declared before it, once. Calls between kernels of one file stay in the level's
// namespace. Not used: GCC's target_clones (Clang rejects it on templates), ifunc (glibc only),
// per-file -march (inline functions and templates from shared headers compiled with AVX-512 in
// one object could be picked by the linker for every caller, and fault on older CPUs).
// Elsewhere (not x86-64, or VGKERN_NO_MULTIVERSION: the sanitizer build) only the baseline copy
// is compiled, for the build's own target flags.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(VGKERN_NO_MULTIVERSION)
#define VGKERN_SIMD_MULTIVERSION 1
#include <cpuid.h>

// The levels' target attributes. Clang gets the features spelled out too: it applies the
// command line's explicit features after the attribute's arch, and zig's c++ (the
// manylinux_2_28 wheels' compiler) lists every feature above the baseline as off.
#if defined(__clang__)
#define VGKERN_FEATURES_X86_64_V3 "avx2,bmi,bmi2,f16c,fma,lzcnt,movbe,xsave,popcnt,cx16,sahf,crc32"
#define VGKERN_TARGET_X86_64_V3 "arch=x86-64-v3," VGKERN_FEATURES_X86_64_V3
#define VGKERN_TARGET_X86_64_V4 \
  "arch=x86-64-v4," VGKERN_FEATURES_X86_64_V3 ",avx512f,avx512bw,avx512cd,avx512dq,avx512vl"
#else
#define VGKERN_TARGET_X86_64_V3 "arch=x86-64-v3"
#define VGKERN_TARGET_X86_64_V4 "arch=x86-64-v4"
#endif
#else
#define VGKERN_SIMD_MULTIVERSION 0
#endif

namespace vgkern {

enum class SimdLevel { baseline, x86_64_v3, x86_64_v4 };

#if VGKERN_SIMD_MULTIVERSION
// The level this CPU and OS support: the CPU features of x86-64-v3 (AVX, AVX2, BMI1, BMI2, F16C,
// FMA, LZCNT, MOVBE) or v4 (those and AVX512F/BW/CD/DQ/VL), and the OS saving the YMM (ZMM)
// registers (XCR0). Plain cpuid: __builtin_cpu_supports needs the compiler runtime's CPU
// model, which zig's (the manylinux_2_28 wheel's toolchain) leaves empty.
inline SimdLevel detect_simd_level() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return SimdLevel::baseline;
  const unsigned leaf1_ecx = c;
  const bool osxsave = leaf1_ecx & (1u << 27);
  if (!osxsave || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return SimdLevel::baseline;
  const unsigned leaf7_ebx = b;
  const bool lzcnt = __get_cpuid(0x80000001, &a, &b, &c, &d) && (c & (1u << 5));
  unsigned xcr0, xcr0_high;
  __asm__("xgetbv" : "=a"(xcr0), "=d"(xcr0_high) : "c"(0));
  auto all = [](unsigned reg, std::initializer_list<int> bits) {
    for (int bit : bits)
      if (!(reg & (1u << bit))) return false;
    return true;
  };
  const bool v3 = all(leaf1_ecx, {12, 22, 28, 29}) &&   // FMA, MOVBE, AVX, F16C
                  all(leaf7_ebx, {3, 5, 8}) && lzcnt &&  // BMI1, AVX2, BMI2
                  (xcr0 & 0x6) == 0x6;                   // XMM and YMM state
  const bool v4 = v3 && all(leaf7_ebx, {16, 17, 28, 30, 31}) &&  // AVX512F, DQ, CD, BW, VL
                  (xcr0 & 0xe0) == 0xe0;                         // opmask and ZMM state
  return v4 ? SimdLevel::x86_64_v4 : v3 ? SimdLevel::x86_64_v3 : SimdLevel::baseline;
}

// The detected level, or a lower one named by the environment variable VGKERN_SIMD_LEVEL
// ("x86-64-v3" or "baseline": tests and benchmarks of the other levels' kernels on one machine).
inline SimdLevel simd_level() {
  static const SimdLevel level = [] {
    const SimdLevel detected = detect_simd_level();
    const char* asked = std::getenv("VGKERN_SIMD_LEVEL");
    if (asked && std::strcmp(asked, "baseline") == 0) return SimdLevel::baseline;
    if (asked && std::strcmp(asked, "x86-64-v3") == 0 && detected == SimdLevel::x86_64_v4)
      return SimdLevel::x86_64_v3;
    return detected;
  }();
  return level;
}

#define VGKERN_SIMD(...)                                                         \
  [&] {                                                                          \
    const ::vgkern::SimdLevel vgkern_level_ = ::vgkern::simd_level();            \
    if (vgkern_level_ == ::vgkern::SimdLevel::x86_64_v4) {                       \
      namespace isa = simd_v4;                                                   \
      return __VA_ARGS__;                                                        \
    }                                                                            \
    if (vgkern_level_ == ::vgkern::SimdLevel::x86_64_v3) {                       \
      namespace isa = simd_v3;                                                   \
      return __VA_ARGS__;                                                        \
    }                                                                            \
    namespace isa = simd_baseline;                                               \
    return __VA_ARGS__;                                                          \
  }()
#else
inline SimdLevel simd_level() { return SimdLevel::baseline; }

#define VGKERN_SIMD(...)             \
  [&] {                              \
    namespace isa = simd_baseline;   \
    return __VA_ARGS__;              \
  }()
#endif

// What build_info()["simd_selected"] says.
inline const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::x86_64_v4: return "x86-64-v4 (AVX-512)";
    case SimdLevel::x86_64_v3: return "x86-64-v3 (AVX2)";
    default: return "baseline";
  }
}

// Whether this CPU runs the AVX-512 kernels (x86-64-v4). There a count written as a select,
// count = cond ? count + 1 : count, is a compare and an add under its mask (2 operations), where
// count += cond ? 1 : 0 is 3; on AVX2 the select is a blend and costs more than the add
// (measured on the tanh epilogue: +1.1 us per 8192 entries). Passes that count pick their
// template variant with this.
inline bool masked_counts() { return simd_level() == SimdLevel::x86_64_v4; }

// count += 1 where cond, written for the variant chosen by masked_counts().
template <bool Masked>
[[gnu::always_inline]] inline void count_if(bool cond, int32_t& count) {
  if constexpr (Masked)
    count = cond ? count + 1 : count;
  else
    count += cond ? 1 : 0;
}

}  // namespace vgkern
