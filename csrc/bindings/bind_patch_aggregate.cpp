// Bindings for patch_aggregate (patch_aggregate_cpu).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "common/macros.h"
#include "patchcore/patch_aggregate.h"

namespace py = pybind11;

namespace {

template <typename T>
py::array_t<float> patch_aggregate_cpu_py(const std::vector<py::array_t<T, py::array::c_style>>& features,
                                          int64_t patch, int64_t pretrain, int64_t target) {
  OFDB_CHECK(!features.empty(), "features must be a non-empty list of [B, C, H, W] arrays");
  std::vector<ofdb::LayerMap<T>> layers;
  const int64_t batch = features[0].ndim() == 4 ? features[0].shape(0) : -1;
  for (const auto& f : features) {
    OFDB_CHECK(f.ndim() == 4, "every feature map must be [B, C, H, W]");
    OFDB_CHECK(f.shape(0) == batch, "every feature map must have the batch size of the first");
    OFDB_CHECK(f.shape(1) >= 1 && f.shape(2) >= 1 && f.shape(3) >= 1, "C, H, W must be >= 1");
    layers.push_back({f.data(), f.shape(1), f.shape(2), f.shape(3)});
  }
  const int64_t rows = batch * layers[0].height * layers[0].width;
  py::array_t<float> out({rows, target});
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    ofdb::patch_aggregate_cpu<T>(layers, batch, patch, pretrain, target, dst);
  }
  return out;
}

}  // namespace

void bind_patch_aggregate(py::module_& m) {
  const char* doc =
      "patch_aggregate_cpu(features: list of [B, C_l, H_l, W_l], patch, pretrain, target) -> "
      "[B * H0 * W0, target] float32. C-contiguous maps, all float32 or all float64.";
  m.def("patch_aggregate_cpu", &patch_aggregate_cpu_py<float>, py::arg("features"), py::arg("patch"),
        py::arg("pretrain"), py::arg("target"), doc);
  m.def("patch_aggregate_cpu", &patch_aggregate_cpu_py<double>, py::arg("features"), py::arg("patch"),
        py::arg("pretrain"), py::arg("target"), doc);
}
