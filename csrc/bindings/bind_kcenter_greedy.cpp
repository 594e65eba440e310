// Bindings for kcenter_greedy (kcenter_greedy_cpu, and kcenter_greedy_cuda in CUDA builds).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "patchcore/kcenter_greedy.h"

namespace py = pybind11;

namespace {

ofdb::KCenterParams make_params(int64_t n_points, int64_t dim, int64_t proj_dim, int method, int64_t n_starts,
                                int64_t n_select, uint64_t seed) {
  ofdb::KCenterParams p;
  p.n_points = n_points;
  p.dim = dim;
  p.proj_dim = proj_dim;
  p.method = method;
  p.n_starts = n_starts;
  p.n_select = n_select;
  p.seed = seed;
  return p;
}

}  // namespace

void bind_kcenter_greedy(py::module_& m) {
  m.attr("KCENTER_APPROX") = static_cast<int>(ofdb::kKCenterApprox);
  m.attr("KCENTER_EXACT") = static_cast<int>(ofdb::kKCenterExact);
  m.def(
      "kcenter_greedy_cpu",
      [](py::array_t<float, py::array::c_style> features, int64_t proj_dim, int method, int64_t n_starts,
         int64_t n_select, uint64_t seed, bool return_radius, bool prefilter) {
        OFDB_CHECK(features.ndim() == 2, "kcenter_greedy_cpu: features must be [N, D]");
        auto p = make_params(features.shape(0), features.shape(1), proj_dim, method, n_starts, n_select, seed);
        p.prefilter = prefilter;
        py::array_t<int64_t> indices(n_select);
        py::array_t<double> radius(return_radius ? n_select : 0);
        const float* x = features.data();
        int64_t* idx = indices.mutable_data();
        double* rad = return_radius ? radius.mutable_data() : nullptr;
        {
          py::gil_scoped_release release;
          ofdb::kcenter_greedy_cpu(x, p, idx, rad);
        }
        return py::make_tuple(indices, radius);
      },
      py::arg("features"), py::arg("proj_dim"), py::arg("method"), py::arg("n_starts"), py::arg("n_select"),
      py::arg("seed"), py::arg("return_radius"), py::arg("prefilter") = true,
      "Greedy k-center coreset of float32 [N, D] rows -> (indices int64 [k], radius float64 [k] or [0]); "
      "prefilter=False scans every row in float32 each iteration (same result, slower; for tests).");
#ifdef OFDB_WITH_CUDA
  m.def(
      "kcenter_greedy_cuda",
      [](uintptr_t features, int64_t n_points, int64_t dim, int64_t proj_dim, int method, int64_t n_starts,
         int64_t n_select, uint64_t seed, uintptr_t indices, uintptr_t radius, int device, uintptr_t stream,
         bool half_projection) {
        auto p = make_params(n_points, dim, proj_dim, method, n_starts, n_select, seed);
        p.half_projection = half_projection;
        py::gil_scoped_release release;
        ofdb::kcenter_greedy_cuda(reinterpret_cast<const float*>(features), p, reinterpret_cast<int64_t*>(indices),
                                  reinterpret_cast<double*>(radius), device, stream);
      },
      py::arg("features"), py::arg("n_points"), py::arg("dim"), py::arg("proj_dim"), py::arg("method"),
      py::arg("n_starts"), py::arg("n_select"), py::arg("seed"), py::arg("indices"), py::arg("radius"),
      py::arg("device"), py::arg("stream"), py::arg("half_projection") = false,
      "Device-pointer version: float32 [N, D] rows -> indices int64 [k] (and radius float64 [k] when the "
      "pointer is not 0), enqueued on `stream`; half_projection stores the projected rows as float16.");
#endif
}
