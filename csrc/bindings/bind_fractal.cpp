// Bindings for the fractal kernels (ifs_render).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_fractal(py::module_& m) {
  // ifs_render_cpu / ifs_render_cuda are registered here.
}
