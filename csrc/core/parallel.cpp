#include "core/parallel.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "core/errors.h"

namespace vgkern {
namespace {

using Clock = std::chrono::steady_clock;

// How long the helper waits for its next part before it sleeps: the next layer's part comes
// within microseconds, while waking a sleeping helper cost ~150 us per native call measured
// inside a torch training loop (vgkern.torch.Module, W=64 L=50: the forward and backward 0.3 ms
// slower per step than back to back). It spins for kHelperSpin, then yields its core for up to
// kHelperYield (whoever else is runnable there runs: the BLAS's threads on layers too big to
// split, the caller's other work), then sleeps.
constexpr auto kHelperSpin = std::chrono::microseconds(200);
constexpr auto kHelperYield = std::chrono::microseconds(5000);
constexpr int kCallerSpins = 1 << 14;  // then yield: the helper may not be running at all

inline void cpu_relax() {
#if defined(__SSE2__)
  _mm_pause();
#endif
}

inline unsigned read_csr() {
#if defined(__SSE2__)
  return _mm_getcsr();
#else
  return 0;
#endif
}

inline void write_csr([[maybe_unused]] unsigned csr) {
#if defined(__SSE2__)
  _mm_setcsr(csr);
#endif
}

// A thread that runs one posted part at a time.
class Helper {
 public:
  Helper() { std::thread([this] { loop(); }).detach(); }

  void post(PartFunction part, int index, unsigned csr) {
    part_ = part;
    index_ = index;
    csr_ = csr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      state_.store(kPosted, std::memory_order_release);
    }
    wake_.notify_one();
  }

  // Until the posted part has finished; rethrows its exception. A part the helper has not
  // started yet runs here: the helper may not get its core at all (another library's threads
  // spinning there, e.g. PyTorch's OpenMP pool after a parallel op; measured: a
  // vgkern.torch.Module step 3.9 -> 7.5 ms), and then waiting for it costs a time slice.
  void wait() {
    int expected = kPosted;
    if (state_.compare_exchange_strong(expected, kIdle, std::memory_order_acquire)) {
      part_(index_);  // the caller's MXCSR already
      return;
    }
    for (int spins = 0; state_.load(std::memory_order_acquire) != kIdle; ++spins) {
      if (spins < kCallerSpins)
        cpu_relax();
      else
        std::this_thread::yield();
    }
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void loop() {
    for (;;) {
      const auto start = Clock::now();
      while (!posted() && Clock::now() < start + kHelperSpin) cpu_relax();
      while (!posted() && Clock::now() < start + kHelperYield) std::this_thread::yield();
      if (!posted()) {
        // wait_for, not wait: GCC 12's condition_variable::wait is a GLIBCXX_3.4.30 symbol,
        // which would raise the wheel above manylinux_2_34 (wait_for is inline over
        // pthread_cond_clockwait).
        std::unique_lock<std::mutex> lock(mutex_);
        while (!posted()) wake_.wait_for(lock, std::chrono::seconds(1));
      }
      int expected = kPosted;
      if (!state_.compare_exchange_strong(expected, kRunning, std::memory_order_acquire))
        continue;  // the caller took the part back (wait())
      const unsigned own_csr = read_csr();
      write_csr(csr_);
      try {
        part_(index_);
      } catch (...) {
        error_ = std::current_exception();
      }
      write_csr(own_csr);
      state_.store(kIdle, std::memory_order_release);
    }
  }

  bool posted() const { return state_.load(std::memory_order_acquire) == kPosted; }

  // Written by the caller before state_ goes kPosted (release), read by whoever claims the part.
  PartFunction part_;
  int index_ = 0;
  unsigned csr_ = 0;
  std::exception_ptr error_;  // written by the helper before state_ goes back to kIdle
  // kIdle -> kPosted (post) -> kRunning (the helper claimed it) -> kIdle (done), or
  // kPosted -> kIdle (the caller claimed it in wait()).
  enum State : int { kIdle, kPosted, kRunning };
  std::atomic<int> state_{kIdle};
  std::mutex mutex_;
  std::condition_variable wake_;
};

// One helper per process, used by one caller at a time. Never destroyed: its thread is
// detached and may be asleep at exit. After fork() the child has no helper thread, so the old
// pool is dropped (leaked) and a new one made on first use.
struct Pool {
  std::mutex busy;
  Helper helper;
};

std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_creation;

Pool* pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return p;
  std::lock_guard<std::mutex> lock(g_pool_creation);
  p = g_pool.load(std::memory_order_acquire);
  if (!p) {
    static const bool registered = pthread_atfork(nullptr, nullptr, [] {
      g_pool.store(nullptr, std::memory_order_release);  // the child: no helper thread
    }) == 0;
    (void)registered;
    p = new Pool;
    g_pool.store(p, std::memory_order_release);
  }
  return p;
}

}  // namespace

void run_parts(int parts, int threads, PartFunction part) {
  if (parts > kMaxParts) fail<DeviceError>("run_parts: ", parts, " parts, at most ", kMaxParts);
  if (parts < 2 || threads < 2) {
    for (int p = 0; p < parts; ++p) part(p);
    return;
  }
  Pool* p = pool();
  std::unique_lock<std::mutex> lock(p->busy, std::try_to_lock);
  if (!lock.owns_lock()) {  // another thread's call has the helper: run here, same parts
    for (int i = 0; i < parts; ++i) part(i);
    return;
  }
  p->helper.post(part, 1, read_csr());
  std::exception_ptr error;
  try {
    part(0);
  } catch (...) {
    error = std::current_exception();
  }
  p->helper.wait();
  if (error) std::rethrow_exception(error);
}

}  // namespace vgkern
