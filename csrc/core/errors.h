// Exceptions that reach Python as TypeError / ValueError / RuntimeError / MemoryError
// (see bindings/module.cpp).
// Every message names the op, the argument, what was expected and what was given.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace vgkern {

struct TypeError : std::runtime_error { using std::runtime_error::runtime_error; };
struct ValueError : std::runtime_error { using std::runtime_error::runtime_error; };
struct DeviceError : std::runtime_error { using std::runtime_error::runtime_error; };
struct MemoryError : std::runtime_error { using std::runtime_error::runtime_error; };

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

template <class Error, class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(concat(parts...));
}

}  // namespace vgkern
