// PYBIND11_MODULE(_C): build facts plus one bind_<area>() per kernel area.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "common/rng.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

// One bind_<op>() per op, each in csrc/bindings/bind_<op>.cpp.
void bind_ifs_render(py::module_& m);
void bind_kcenter_greedy(py::module_& m);
void bind_knn_score(py::module_& m);
void bind_patch_aggregate(py::module_& m);

#ifdef OFDB_WITH_CUDA
namespace ofdb {
int cuda_device_count();
}
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "ofdb_fast compiled kernels (C++/OpenMP, CUDA when built with nvcc)";
#ifdef OFDB_WITH_CUDA
  m.attr("built_with_cuda") = true;
  m.def("cuda_device_count", &ofdb::cuda_device_count,
        "Number of CUDA devices the runtime sees (0 without a driver).");
#else
  m.attr("built_with_cuda") = false;
  m.def("cuda_device_count", []() { return 0; }, "Always 0: this build has no CUDA kernels.");
#endif
#ifdef _OPENMP
  m.attr("built_with_openmp") = true;
  m.def("max_threads", []() { return omp_get_max_threads(); });
#else
  m.attr("built_with_openmp") = false;
  m.def("max_threads", []() { return 1; });
#endif
  // The shared RNG, exposed so tests can check the NumPy mirror bit for bit.
  m.def(
      "rng_bits",
      [](uint64_t seed, uint64_t stream, uint64_t item, int64_t n) {
        OFDB_CHECK(n >= 0, "n must be >= 0");
        py::array_t<uint64_t> out(n);
        auto* p = out.mutable_data();
        const uint64_t key = ofdb::rng::stream_key(seed, stream, item);
        for (int64_t i = 0; i < n; ++i) p[i] = ofdb::rng::bits(key, static_cast<uint64_t>(i));
        return out;
      },
      py::arg("seed"), py::arg("stream"), py::arg("item"), py::arg("n"));
  m.def(
      "rng_u01",
      [](uint64_t seed, uint64_t stream, uint64_t item, int64_t n) {
        OFDB_CHECK(n >= 0, "n must be >= 0");
        py::array_t<double> out(n);
        auto* p = out.mutable_data();
        const uint64_t key = ofdb::rng::stream_key(seed, stream, item);
        for (int64_t i = 0; i < n; ++i) p[i] = ofdb::rng::u01(key, static_cast<uint64_t>(i));
        return out;
      },
      py::arg("seed"), py::arg("stream"), py::arg("item"), py::arg("n"));
  bind_ifs_render(m);
  bind_kcenter_greedy(m);
  bind_knn_score(m);
  bind_patch_aggregate(m);
}
