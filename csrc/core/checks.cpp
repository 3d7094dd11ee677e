#include "core/checks.h"

#include <climits>
#include <sstream>

#include "core/errors.h"

namespace vgkern {

std::string TensorView::shape_str() const {
  std::ostringstream out;
  out << "(";
  for (int i = 0; i < ndim; ++i) out << (i ? ", " : "") << shape[i] << (ndim == 1 ? "," : "");
  out << ")";
  return out.str();
}

static std::string expected_str(std::initializer_list<int64_t> expected) {
  std::ostringstream out;
  out << "(";
  int i = 0;
  for (int64_t e : expected) {
    out << (i++ ? ", " : "");
    if (e < 0) out << "*"; else out << e;
  }
  out << (expected.size() == 1 ? ",)" : ")");
  return out.str();
}

void check_shape(const char* op, const char* arg, const TensorView& t,
                 std::initializer_list<int64_t> expected) {
  bool ok = t.ndim == static_cast<int>(expected.size());
  int i = 0;
  for (int64_t e : expected) {
    if (ok && e >= 0 && t.shape[i] != e) ok = false;
    ++i;
  }
  if (!ok)
    fail<ValueError>(op, ": ", arg, " must have shape ", expected_str(expected), ", got ",
                     t.shape_str());
}

void check_dtype(const char* op, const char* arg, const TensorView& t, DType expected) {
  if (t.dtype != expected)
    fail<TypeError>(op, ": ", arg, " must have dtype ", dtype_name(expected), ", got ",
                    dtype_name(t.dtype), " (vgkern never casts silently)");
}

void check_same_device(const char* op, const char* arg, const TensorView& t, Device expected) {
  if (t.device != expected)
    fail<DeviceError>(op, ": ", arg, " must be on device ", device_name(expected), ", got ",
                      device_name(t.device));
}

void check_arg(const char* op, const char* arg, const TensorView& t, const TensorView& like,
               std::initializer_list<int64_t> expected) {
  check_dtype(op, arg, t, like.dtype);
  check_same_device(op, arg, t, like.device);
  check_shape(op, arg, t, expected);
}

void check_like(const char* op, const char* arg, const TensorView& t, const char* like_name,
                const TensorView& like) {
  check_dtype(op, arg, t, like.dtype);
  check_same_device(op, arg, t, like.device);
  bool same = t.ndim == like.ndim;
  for (int i = 0; same && i < t.ndim; ++i) same = t.shape[i] == like.shape[i];
  if (!same)
    fail<ValueError>(op, ": ", arg, " must have the shape of ", like_name, " ", like.shape_str(),
                     ", got ", t.shape_str());
}

int blas_int(int64_t n, const char* what) {
  if (n < 0 || n > INT_MAX)
    fail<ValueError>("BLAS: ", what, " must be in [0, ", INT_MAX, "] for a 32-bit BLAS, got ", n);
  return static_cast<int>(n);
}

}  // namespace vgkern
