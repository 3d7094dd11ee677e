#include "ops/optim.h"

#include "core/checks.h"
#include "core/dispatch.h"
#include "core/errors.h"
#include "ops/optim_cuda.h"

namespace vgkern {

void optim_update(const TensorView& params, const TensorView& state1, const TensorView& state2,
                  const TensorView& grads, const TensorView& reference,
                  const std::vector<OptimSegment>& segments, const OptimConfig& config,
                  const TensorView& stats) {
  const char* op = "optim.step";
  const int64_t n = params.numel();
  check_like(op, "grads", grads, "params", params);
  check_like(op, "reference", reference, "params", params);
  const bool needs1 = config.rule != OptimRule::sgd || config.momentum != 0;
  const bool needs2 = config.rule != OptimRule::sgd;
  if (needs1) check_like(op, "state1", state1, "params", params);
  if (needs2) check_like(op, "state2", state2, "params", params);
  if (stats.device != Device::cpu || stats.dtype != DType::f64 || stats.ndim != 2 ||
      stats.dim(1) != UpdateStat::kCount)
    fail<ValueError>(op, ": stats must be a host float64 array (rows, ", UpdateStat::kCount,
                     "), got shape ", stats.shape_str());
  const int64_t rows = stats.dim(0);
  for (const OptimSegment& s : segments) {
    if (s.offset < 0 || s.count < 0 || s.offset + s.count > n)
      fail<ValueError>(op, ": a segment [", s.offset, ", ", s.offset + s.count,
                       ") lies outside the buffer of ", n, " entries");
    if (s.stats_row >= rows)
      fail<ValueError>(op, ": segment statistics row ", s.stats_row, " >= rows ", rows);
  }
  if (config.step < 1) fail<ValueError>(op, ": step must be >= 1, got ", config.step);
  dispatch(op, params.device, params.dtype, [&](auto tag) {
    using T = typename decltype(tag)::value_type;
    T* s1 = needs1 ? state1.ptr<T>() : nullptr;
    T* s2 = needs2 ? state2.ptr<T>() : nullptr;
    if constexpr (decltype(tag)::device == Device::cuda)
      optim_update_cuda<T>(params.ptr<T>(), s1, s2, grads.ptr<T>(), reference.ptr<T>(), segments,
                           config, stats.ptr<double>(), rows);
    else
      optim_update_cpu<T>(params.ptr<T>(), s1, s2, grads.ptr<T>(), reference.ptr<T>(), segments,
                          config, stats.ptr<double>(), rows);
  });
}

}  // namespace vgkern
