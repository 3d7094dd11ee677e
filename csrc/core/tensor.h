// TensorView: a non-owning, C-contiguous view of an array (pointer, dtype, device, shape).
// Ops take TensorViews, check them, then dispatch to kernels that see only typed pointers.
#pragma once
#include <cstdint>
#include <string>

namespace vgkern {

enum class DType { f32, f64 };
enum class Device { cpu, cuda };

inline const char* dtype_name(DType d) { return d == DType::f32 ? "float32" : "float64"; }
inline const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }

struct TensorView {
  static constexpr int kMaxDims = 4;
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};

  bool present() const { return ndim > 0; }  // optional arguments (a bias of None) have ndim 0
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  int64_t dim(int i) const { return shape[i]; }
  template <class T> T* ptr() const { return static_cast<T*>(data); }
  std::string shape_str() const;
};

}  // namespace vgkern
