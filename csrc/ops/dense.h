// Dense layer, one call per layer (the MLP driver in nets/ runs whole stacks in one call).
//   dense_forward:  h (B, out) = act(x (B, in) @ w (out, in)^T + b (out,)), dact (B, out) = act'(.)
//   dense_backward: delta = dh (B, out) * dact (B, out)
//                   dw (out, in) = delta^T @ x, db (out,) = sum_B delta, dx (B, in) = delta @ w
// b may be absent (no bias); dx may be absent (not computed).
#pragma once
#include "core/tensor.h"
#include "ops/activation.h"

namespace vgkern {

void dense_forward(const TensorView& h, const TensorView& dact, const TensorView& x,
                   const TensorView& w, const TensorView& b, ActSpec act);
void dense_backward(const TensorView& dx, const TensorView& dw, const TensorView& db,
                    const TensorView& dh, const TensorView& dact, const TensorView& x,
                    const TensorView& w);

}  // namespace vgkern
