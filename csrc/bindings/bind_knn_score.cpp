// Bindings for knn_score (knn_score_cpu, and knn_score_cuda in CUDA builds).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "common/macros.h"
#include "patchcore/knn_score.h"

namespace py = pybind11;

namespace {

template <typename T>
py::tuple knn_score_cpu_py(py::array_t<T, py::array::c_style> queries,
                           py::array_t<T, py::array::c_style> bank, int64_t k) {
  OFDB_CHECK(queries.ndim() == 2 && bank.ndim() == 2, "queries and bank must be 2-D");
  const int64_t n_queries = queries.shape(0), dim = queries.shape(1), n_bank = bank.shape(0);
  OFDB_CHECK(bank.shape(1) == dim, "bank must have the same D as queries");
  OFDB_CHECK(dim >= 1, "D must be >= 1");
  OFDB_CHECK(k >= 1 && k <= n_bank, "k must be in [1, M]");
  py::array_t<float> dist({n_queries, k});
  py::array_t<int64_t> idx({n_queries, k});
  const T* q = queries.data();
  const T* b = bank.data();
  float* d = dist.mutable_data();
  int64_t* i = idx.mutable_data();
  {
    py::gil_scoped_release release;
    ofdb::knn_score_cpu<T>(q, b, n_queries, n_bank, dim, k, d, i);
  }
  return py::make_tuple(dist, idx);
}

}  // namespace

void bind_knn_score(py::module_& m) {
  const char* doc =
      "knn_score_cpu(queries [Q, D], bank [M, D], k) -> (dist [Q, k] float32, idx [Q, k] int64)."
      " Squared L2, ascending, ties lowest index first. C-contiguous float32 or float64 only.";
  m.def("knn_score_cpu", &knn_score_cpu_py<float>, py::arg("queries").noconvert(),
        py::arg("bank").noconvert(), py::arg("k"), doc);
  m.def("knn_score_cpu", &knn_score_cpu_py<double>, py::arg("queries").noconvert(),
        py::arg("bank").noconvert(), py::arg("k"), doc);
}
