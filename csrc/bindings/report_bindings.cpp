// The statistics schema (core/report.h) for Python: the names of the native report arrays'
// columns and every statistic's one-line meaning, from which vgkern/report.py builds
// GradReport's and SequenceReport's fields and docstrings.
//   REPORT_COLUMNS           MLP report (L, columns)
//   SEQUENCE_COLUMNS         recurrent per-step report (T, columns)
//   SEQUENCE_WEIGHT_COLUMNS  recurrent per-network norms (3,)
//   SEQUENCE_UPDATE_COLUMNS  recurrent per-network optimizer statistics (vgkern.optim fills them)
//   REPORT_DOCS              {"mlp" | "recurrent_step" | "recurrent_network": {name: meaning}}
//                            in column order ("recurrent_network" also lists the log10_ twins
//                            of its norms, which the Python report computes, then the
//                            optimizer's statistics and their log10_ twins)
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "core/report.h"

namespace py = pybind11;

namespace vgkern {

namespace {

template <size_t N>
std::vector<std::string> names(const StatisticInfo (&table)[N], size_t count) {
  std::vector<std::string> out;
  for (size_t i = 0; i < count; ++i) out.emplace_back(table[i].name);
  return out;
}

template <size_t N>
py::dict docs(const StatisticInfo (&table)[N]) {
  py::dict out;  // insertion-ordered: column order
  for (const StatisticInfo& s : table) out[s.name] = s.meaning;
  return out;
}

}  // namespace

void bind_report(py::module_& m) {
  m.attr("REPORT_COLUMNS") = names(kLayerStatistics, LayerColumn::kCount);
  m.attr("SEQUENCE_COLUMNS") = names(kStepStatistics, StepColumn::kCount);
  m.attr("SEQUENCE_WEIGHT_COLUMNS") = names(kNetworkStatistics, NetworkColumn::kCount);
  m.attr("SEQUENCE_UPDATE_COLUMNS") =
      names(kNetworkUpdateStatistics, NetworkUpdateColumn::kCount);
  py::dict all;
  all["mlp"] = docs(kLayerStatistics);
  all["recurrent_step"] = docs(kStepStatistics);
  py::dict network = docs(kNetworkStatistics);
  for (const StatisticInfo& s : kNetworkUpdateStatistics) network[s.name] = s.meaning;
  all["recurrent_network"] = network;
  m.attr("REPORT_DOCS") = all;
}

}  // namespace vgkern
