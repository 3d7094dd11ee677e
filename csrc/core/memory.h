// Refuse an allocation that cannot fit before making it. Linux overcommits: a request larger
// than free memory usually "succeeds" and the process is killed later when the pages are
// touched, so std::bad_alloc alone does not protect the user. Anything larger than the
// machine's physical memory is refused here with a MemoryError that says what asked for it.
#pragma once
#include <unistd.h>

#include <cstdint>

#include "core/errors.h"

namespace vgkern {

inline double physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

// `elements` is a double so that products of int64 sizes cannot overflow on the way here.
inline void check_fits_in_memory(double elements, double bytes_per_element, const char* what) {
  const double bytes = elements * bytes_per_element, limit = physical_memory_bytes();
  if (limit > 0 && bytes > limit)
    fail<MemoryError>(what, " needs ", bytes / (1 << 30), " GiB, more than this machine's ",
                      limit / (1 << 30), " GiB of physical memory");
}

}  // namespace vgkern
