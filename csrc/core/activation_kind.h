// The activation kinds. Their own header, below ops/: the device code (cuda/activation_device.cuh)
// needs them, and cuda/ must not include ops/ (ops/*_cuda.cu include cuda/*).
#pragma once

namespace vgkern {

enum class Activation { identity, sigmoid, tanh, relu, elu };

}  // namespace vgkern
