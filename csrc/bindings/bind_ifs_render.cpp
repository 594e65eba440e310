// Bindings for ifs_render (ifs_render_cpu, and ifs_render_cuda in CUDA builds).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_ifs_render(py::module_& m) {}
