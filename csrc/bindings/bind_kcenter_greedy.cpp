// Bindings for kcenter_greedy (kcenter_greedy_cpu, and kcenter_greedy_cuda in CUDA builds).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_kcenter_greedy(py::module_& m) {}
