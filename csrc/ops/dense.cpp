// dense_forward / dense_backward: checks and dispatch (math in dense_cpu.cpp).
#include "ops/dense.h"

#include <algorithm>
#include <vector>

#include "core/checks.h"
#include "core/dispatch.h"
#include "cuda/fill.h"
#include "ops/dense_cpu.h"
#include "ops/dense_cuda.h"

namespace vgkern {

void dense_forward(const TensorView& h, const TensorView& dact, const TensorView& x,
                   const TensorView& w, const TensorView& b, ActSpec act) {
  const char* op = "dense_forward";
  check_shape(op, "x", x, {-1, -1});
  const int64_t rows = x.dim(0), in = x.dim(1);
  check_dtype(op, "w", w, x.dtype);
  check_shape(op, "w", w, {-1, in});
  const int64_t out = w.dim(0);
  if (b.present()) check_arg(op, "b", b, x, {out});
  check_arg(op, "h", h, x, {rows, out});
  check_arg(op, "dact", dact, x, {rows, out});
  // Empty outputs: nothing to compute (and no zero bias of `out` entries to allocate for them).
  if (rows == 0 || out == 0) return;
  dispatch(op, x.device, x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda) {
      dense_forward_cuda<T>(h.ptr<T>(), dact.ptr<T>(), x.ptr<T>(), w.ptr<T>(),
                            b.present() ? b.ptr<T>() : nullptr, rows, in, out, act);
      return;
    }
    std::vector<T> zero_bias(b.present() ? 0 : out, T(0));
    const T* bias = b.present() ? b.ptr<T>() : zero_bias.data();
    if (act.kind == Activation::identity) std::fill(dact.ptr<T>(), dact.ptr<T>() + rows * out, T(1));
    dense_forward_cpu<T>(h.ptr<T>(), dact.ptr<T>(), x.ptr<T>(), w.ptr<T>(), bias, rows, in, out,
                         act, nullptr);
  });
}

void dense_backward(const TensorView& dx, const TensorView& dw, const TensorView& db,
                    const TensorView& dh, const TensorView& dact, const TensorView& x,
                    const TensorView& w) {
  const char* op = "dense_backward";
  check_shape(op, "x", x, {-1, -1});
  const int64_t rows = x.dim(0), in = x.dim(1);
  check_dtype(op, "w", w, x.dtype);
  check_shape(op, "w", w, {-1, in});
  const int64_t out = w.dim(0);
  check_arg(op, "dh", dh, x, {rows, out});
  check_arg(op, "dact", dact, x, {rows, out});
  check_arg(op, "dw", dw, x, {out, in});
  check_arg(op, "db", db, x, {out});
  if (dx.present()) check_arg(op, "dx", dx, x, {rows, in});
  dispatch(op, x.device, x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if (rows == 0 || out == 0) {  // no delta: every gradient is zero (and no pass over,
      for (const TensorView* g : {&dx, &dw, &db}) {  // say, 10**12 empty rows)
        if (!g->present()) continue;
        if constexpr (decltype(tag)::device == Device::cuda)
          fill_zero_cuda<T>(g->ptr<T>(), g->numel());
        else
          std::fill_n(g->ptr<T>(), g->numel(), T(0));
      }
      return;
    }
    if constexpr (decltype(tag)::device == Device::cuda) {
      dense_backward_cuda<T>(dx.present() ? dx.ptr<T>() : nullptr, dw.ptr<T>(), db.ptr<T>(),
                             dh.ptr<T>(), dact.ptr<T>(), x.ptr<T>(), w.ptr<T>(), rows, in, out);
      return;
    }
    std::vector<T> delta(rows * out);
    dense_backward_cpu<T>(dx.present() ? dx.ptr<T>() : nullptr, dw.ptr<T>(), db.ptr<T>(),
                          delta.data(), dh.ptr<T>(), dact.ptr<T>(), x.ptr<T>(), w.ptr<T>(), rows,
                          in, out, false, nullptr);
  });
}

}  // namespace vgkern
