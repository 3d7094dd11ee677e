// Work cut into a fixed number of parts, run on the calling thread and a persistent helper.
//
// Why: at the widths users sweep (64-256), one layer's GEMMs are too small for the BLAS's own
// threads (measured: OpenBLAS on 2 threads runs a 256x64x64 sgemm slower than on 1), and the
// elementwise passes would run on one core. Cutting each layer into two row blocks, each doing
// its rows' GEMMs (single-threaded BLAS), elementwise passes and partial statistics, keeps both
// cores busy with little traffic between them (ops/layer_plan.h says which layers).
//
// Determinism: the parts are chosen from shapes only, never from thread counts. Part p always
// covers the same rows (or the same GEMM) and partial sums are combined in part order, so the
// results are bit-identical with 1 thread or 2; only how many parts run at once changes.
#pragma once
#include <memory>
#include <type_traits>

namespace vgkern {

constexpr int kMaxParts = 2;

// A non-owning reference to a callable void(int part): unlike std::function it never
// allocates (a step makes a few calls per layer). The callable must outlive the call.
class PartFunction {
 public:
  PartFunction() noexcept : object_(nullptr), call_([](void*, int) {}) {}
  template <class F,
            class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, PartFunction>>>
  PartFunction(F&& f) noexcept  // NOLINT: implicit, like std::function
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, int p) {
          (*static_cast<std::remove_reference_t<F>*>(object))(p);
        }) {}
  void operator()(int p) const { call_(object_, p); }

 private:
  void* object_;
  void (*call_)(void*, int);
};

// Runs part(0) .. part(parts - 1) (parts <= kMaxParts): part 0 on the caller, the others on the
// helper when threads > 1 and the helper is free (another thread's call may be using it: then
// all here, one after another); a part the helper has not started by the time part 0 is done
// runs on the caller too (the helper's core may be busy with other threads). The helper runs with the caller's MXCSR (rounding, FTZ/DAZ).
// An exception from any part is rethrown here once every part has finished.
void run_parts(int parts, int threads, PartFunction part);

}  // namespace vgkern
