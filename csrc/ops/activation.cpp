// activation_forward / activation_backward: checks and dispatch (math in dense_cpu.cpp).
#include "ops/activation.h"

#include <cmath>

#include "core/checks.h"
#include "core/errors.h"
#include "core/dispatch.h"
#include "ops/activation_cuda.h"

namespace vgkern {

static const char* const kActivationNames[] = {"identity", "sigmoid", "tanh", "relu", "elu"};

const char* activation_name(Activation kind) {
  return kActivationNames[static_cast<int>(kind)];
}

ActSpec parse_activation(const std::string& name, double alpha, const char* arg) {
  for (int i = 0; i < 5; ++i)
    if (name == kActivationNames[i]) {
      if (!std::isfinite(alpha))
        fail<ValueError>(arg, ": the ELU alpha must be finite, got ", alpha);
      return ActSpec{static_cast<Activation>(i), alpha};
    }
  fail<ValueError>(arg, " must be one of 'identity', 'sigmoid', 'tanh', 'relu', 'elu', got '",
                   name, "'");
}

void activation_forward(const TensorView& h, const TensorView& dact, const TensorView& z,
                        ActSpec act) {
  const char* op = "activation_forward";
  check_shape(op, "z", z, {-1, -1});
  check_like(op, "h", h, "z", z);
  check_like(op, "dact", dact, "z", z);
  dispatch(op, z.device, z.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda)
      activation_forward_cuda<T>(h.ptr<T>(), dact.ptr<T>(), z.ptr<T>(), z.numel(), act);
    else
      activation_forward_cpu<T>(h.ptr<T>(), dact.ptr<T>(), z.ptr<T>(), z.numel(), act);
  });
}

void activation_backward(const TensorView& dz, const TensorView& dh, const TensorView& z,
                         ActSpec act) {
  const char* op = "activation_backward";
  check_shape(op, "z", z, {-1, -1});
  check_like(op, "dh", dh, "z", z);
  check_like(op, "dz", dz, "z", z);
  dispatch(op, z.device, z.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    if constexpr (decltype(tag)::device == Device::cuda)
      activation_backward_cuda<T>(dz.ptr<T>(), dh.ptr<T>(), z.ptr<T>(), z.numel(), act);
    else
      activation_backward_cpu<T>(dz.ptr<T>(), dh.ptr<T>(), z.ptr<T>(), z.numel(), act);
  });
}

}  // namespace vgkern
