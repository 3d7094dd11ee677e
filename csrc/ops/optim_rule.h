// The per-entry update rules of ops/optim.h, shared by the CPU loop (optim_cpu.cpp) and the CUDA
// kernel (optim_cuda.cu). They follow torch.optim's single-tensor code line by line (torch 2.13,
// maximize=False, amsgrad=False), in the parameter's dtype T with the scalars cast to T:
//   SGD:   g += wd * p; buf = (first step ? g : momentum * buf + (1 - dampening) * g);
//          g = nesterov ? g + momentum * buf : buf (with momentum); p += -lr * g
//   Adam:  g += wd * p; m = lerp(m, g, 1 - beta1); v = v * beta2 + (1 - beta2) * g * g;
//          p += -step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), step_size = lr / (1 - beta1^t)
//   AdamW: p *= 1 - lr * wd, then Adam without weight decay on g.
#pragma once
#include <cmath>

#include "ops/optim.h"

#ifdef __CUDACC__  // (emulated CUDA: plain C++, as the CPU build)
#define VGKERN_OPTIM_HD __host__ __device__
#else
#define VGKERN_OPTIM_HD
#endif

namespace vgkern {

// The step's scalars in T (what torch casts its Python floats to) and switches.
template <class T>
struct OptimCoefficients {
  T lr, weight_decay, momentum, keep, nesterov_momentum;  // SGD: keep = 1 - dampening
  T lerp_weight, beta1, beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, decay;
  bool momentum_on, nesterov, first, grad_decay;

  static OptimCoefficients make(const OptimConfig& c) {
    OptimCoefficients k{};
    k.lr = static_cast<T>(c.lr);
    k.weight_decay = static_cast<T>(c.weight_decay);
    k.momentum = static_cast<T>(c.momentum);
    k.keep = static_cast<T>(1 - c.dampening);
    k.momentum_on = c.momentum != 0;
    k.nesterov = c.nesterov;
    k.first = c.step == 1;
    // AdamW decays the parameter (decoupled), SGD and Adam add wd * p to the gradient
    k.grad_decay = c.weight_decay != 0 && c.rule != OptimRule::adamw;
    k.lerp_weight = static_cast<T>(1 - c.beta1);
    k.beta1 = static_cast<T>(c.beta1);
    k.beta2 = static_cast<T>(c.beta2);
    k.one_minus_beta2 = static_cast<T>(1 - c.beta2);
    const double t = static_cast<double>(c.step);
    k.step_size = static_cast<T>(c.lr / (1 - std::pow(c.beta1, t)));
    k.bias_correction2_sqrt = static_cast<T>(std::sqrt(1 - std::pow(c.beta2, t)));
    k.eps = static_cast<T>(c.eps);
    k.decay = static_cast<T>(1 - c.lr * c.weight_decay);
    return k;
  }
};

template <class T>
VGKERN_OPTIM_HD inline T optim_sqrt(T x) {
#ifdef __CUDA_ARCH__
  return sqrt(x);  // CUDA's float and double overloads
#else
  return std::sqrt(x);
#endif
}

// SGD: the new parameter from p and the (unscaled) gradient g; buf: the momentum buffer entry
// (untouched without momentum).
template <class T>
VGKERN_OPTIM_HD inline T sgd_update(const OptimCoefficients<T>& k, T p, T g, T* buf) {
  if (k.grad_decay) g = g + k.weight_decay * p;
  if (k.momentum_on) {
    const T b = k.first ? g : k.momentum * *buf + k.keep * g;
    *buf = b;
    g = k.nesterov ? g + k.momentum * b : b;
  }
  return p + (-k.lr) * g;
}

// Adam / AdamW (k.grad_decay false and k.decay = 1 - lr * wd for AdamW, decay = 1 for Adam).
template <class T, bool kDecoupled>
VGKERN_OPTIM_HD inline T adam_update(const OptimCoefficients<T>& k, T p, T g, T* m, T* v) {
  if (kDecoupled) p = p * k.decay;
  if (k.grad_decay) g = g + k.weight_decay * p;
  const T m0 = *m;
  // torch.lerp: start + w * (end - start) for |w| < 0.5, else end - (end - start) * (1 - w)
  const T m1 = k.lerp_weight < T(0.5) ? m0 + k.lerp_weight * (g - m0)
                                       : g - (g - m0) * k.beta1;
  const T v1 = *v * k.beta2 + k.one_minus_beta2 * g * g;
  *m = m1;
  *v = v1;
  const T denom = optim_sqrt(v1) / k.bias_correction2_sqrt + k.eps;
  return p + (-k.step_size) * (m1 / denom);
}

}  // namespace vgkern
