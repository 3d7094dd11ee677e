// Elementwise activations and their derivatives, on 2-D (N, C) arrays.
//   activation_forward:  h (N, C) = act(z), dact (N, C) = act'(z)      [dact is saved for backward]
//   activation_backward: dz (N, C) = dh * act'(z), act' recomputed from z
// Kinds: identity, sigmoid, tanh, relu (relu'(0) = 0), elu (alpha; elu'(z) = alpha e^z for z <= 0).
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

#include "core/activation_kind.h"
#include "core/tensor.h"

namespace vgkern {

struct ActSpec {
  Activation kind = Activation::identity;
  double alpha = 1.0;  // ELU only
};

// Calls body(std::integral_constant<Activation, K>{}) for the runtime kind, so that hot loops
// are compiled once per activation with no per-element switch.
template <class F>
decltype(auto) with_activation(Activation kind, F&& body) {
  using A = Activation;
  switch (kind) {
    case A::sigmoid: return body(std::integral_constant<A, A::sigmoid>{});
    case A::tanh: return body(std::integral_constant<A, A::tanh>{});
    case A::relu: return body(std::integral_constant<A, A::relu>{});
    case A::elu: return body(std::integral_constant<A, A::elu>{});
    default: return body(std::integral_constant<A, A::identity>{});
  }
}

// Largest derivative of each activation; "saturated" means act'(z) < 1% of it.
inline double max_derivative(ActSpec act) {
  switch (act.kind) {
    case Activation::sigmoid: return 0.25;
    case Activation::tanh: return 1.0;
    case Activation::elu: return act.alpha > 1.0 ? act.alpha : 1.0;
    default: return 0.0;  // identity, relu: never counted as saturated
  }
}

// Throws ValueError naming `arg` for an unknown name or a bad alpha.
ActSpec parse_activation(const std::string& name, double alpha, const char* arg);
const char* activation_name(Activation kind);

void activation_forward(const TensorView& h, const TensorView& dact, const TensorView& z,
                        ActSpec act);
void activation_backward(const TensorView& dz, const TensorView& dh, const TensorView& z,
                         ActSpec act);

template <class T>
void activation_forward_cpu(T* h, T* dact, const T* z, int64_t n, ActSpec act);
template <class T>
void activation_backward_cpu(T* dz, const T* dh, const T* z, int64_t n, ActSpec act);

}  // namespace vgkern
