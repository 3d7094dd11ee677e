// Subnormal numbers (|x| < FLT_MIN = 1.2e-38 in float32, DBL_MIN = 2.2e-308 in float64) cost
// 20-100x per operation on x86, and vanishing gradients walk straight into them: a float32
// sigmoid MLP at depth 100 or an LSTM backward over 300 steps runs 8-18x slower once its
// gradients cross FLT_MIN. `vgkern.set_flush_denormal(True)` (off by default, like
// torch.set_flush_denormal) makes every native call run with FTZ (subnormal results become 0)
// and DAZ (subnormal inputs read as 0) in the calling thread's MXCSR, restored when the call
// returns. Off, arithmetic is IEEE with gradual underflow, and norms are exact down to the
// smallest subnormal. vgkern's helper thread (core/parallel.h) takes the caller's MXCSR for
// each part it runs; the BLAS's own worker threads (big layers, more than one BLAS thread) keep
// theirs: with one BLAS thread (as in sweeps) the whole call is covered.
#pragma once
#include <atomic>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

namespace vgkern {

inline std::atomic<bool> g_flush_denormal{false};

inline constexpr bool kCanFlushDenormal =
#if defined(__SSE2__)
    true;
#else
    false;
#endif

class DenormalsFlushed {  // scoped: FTZ + DAZ on while alive, when enabled
 public:
  DenormalsFlushed() {
#if defined(__SSE2__)
    saved_ = _mm_getcsr();
    if (g_flush_denormal.load(std::memory_order_relaxed)) _mm_setcsr(saved_ | kFtzDaz);
#endif
  }
  ~DenormalsFlushed() {
#if defined(__SSE2__)
    _mm_setcsr(saved_);
#endif
  }
  DenormalsFlushed(const DenormalsFlushed&) = delete;
  DenormalsFlushed& operator=(const DenormalsFlushed&) = delete;

 private:
  static constexpr unsigned kFtzDaz = 0x8040;  // MXCSR bit 15 (FTZ) | bit 6 (DAZ)
  unsigned saved_ = 0;
};

}  // namespace vgkern
