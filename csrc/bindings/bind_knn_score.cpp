// Bindings for knn_score (knn_score_cpu, and knn_score_cuda in CUDA builds).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_knn_score(py::module_& m) {}
