// Bindings for ifs_render: ifs_render_cpu, and ifs_render_cuda in CUDA builds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "fractal/ifs_render.h"

namespace py = pybind11;

namespace {

using ofdb::ifs::RenderParams;

template <class T>
using CArray = py::array_t<T, py::array::c_style>;

RenderParams make_params(int64_t n_images, int n_max_maps, int height, int width, uint64_t seed,
                         int64_t n_points, bool jitter, double jitter_lo, double jitter_hi, int jitter_tries,
                         double translate, bool scale, double scale_lo, double scale_hi, bool flips,
                         bool color, bool patch, bool background, bool blur, double blur_lo, double blur_hi, bool has_probs,
                         bool counts_only) {
  RenderParams p;
  p.n_images = n_images;
  p.n_max_maps = n_max_maps;
  p.height = height;
  p.width = width;
  p.seed = seed;
  p.n_points = n_points;
  p.jitter = jitter;
  p.jitter_lo = jitter_lo;
  p.jitter_hi = jitter_hi;
  p.jitter_tries = jitter_tries;
  p.translate = translate;
  p.scale = scale;
  p.scale_lo = scale_lo;
  p.scale_hi = scale_hi;
  p.flips = flips;
  p.color = color;
  p.patch = patch;
  p.background = background;
  p.blur = blur;
  p.blur_lo = blur_lo;
  p.blur_hi = blur_hi;
  p.has_probs = has_probs;
  p.counts_only = counts_only;
  return p;
}

// systems [B, K, 2, 3] f64, n_maps [B] i64, image_ids [B] i64, probs [B, K] f64 or None.
// Returns int32 [B, H, W] (counts_only) or uint8 [B, H, W, 3].
py::array ifs_render_cpu_py(CArray<double> systems, CArray<int64_t> n_maps, CArray<int64_t> image_ids,
                            py::object probs, int height, int width, uint64_t seed, int64_t n_points,
                            bool jitter, double jitter_lo, double jitter_hi, int jitter_tries,
                            double translate, bool scale, double scale_lo, double scale_hi, bool flips,
                            bool color, bool patch, bool background, bool blur, double blur_lo,
                            double blur_hi, bool counts_only, py::object out_obj) {
  OFDB_CHECK(systems.ndim() == 4 && systems.shape(2) == 2 && systems.shape(3) == 3,
             "systems must have shape [B, K, 2, 3]");
  const int64_t B = systems.shape(0);
  const int K = static_cast<int>(systems.shape(1));
  OFDB_CHECK(n_maps.ndim() == 1 && n_maps.shape(0) == B, "n_maps must have shape [B]");
  OFDB_CHECK(image_ids.ndim() == 1 && image_ids.shape(0) == B, "image_ids must have shape [B]");
  const double* probs_ptr = nullptr;
  CArray<double> probs_arr;
  if (!probs.is_none()) {
    probs_arr = probs.cast<CArray<double>>();
    OFDB_CHECK(probs_arr.ndim() == 2 && probs_arr.shape(0) == B && probs_arr.shape(1) == K,
               "probs must have shape [B, K]");
    probs_ptr = probs_arr.data();
  }
  const RenderParams p =
      make_params(B, K, height, width, seed, n_points, jitter, jitter_lo, jitter_hi, jitter_tries, translate,
                  scale, scale_lo, scale_hi, flips, color, patch, background, blur, blur_lo, blur_hi,
                  probs_ptr != nullptr,
                  counts_only);
  py::array out;
  if (out_obj.is_none()) {
    out = counts_only ? py::array(py::array_t<int32_t>({B, (int64_t)height, (int64_t)width}))
                      : py::array(py::array_t<uint8_t>({B, (int64_t)height, (int64_t)width, (int64_t)3}));
  } else {
    // Written in place: it must already be exactly right (no conversion may make a silent copy).
    const bool ok = counts_only ? py::isinstance<py::array_t<int32_t, py::array::c_style>>(out_obj)
                                : py::isinstance<py::array_t<uint8_t, py::array::c_style>>(out_obj);
    OFDB_CHECK(ok, "out must be a C-contiguous int32 (counts) or uint8 (rgb) NumPy array");
    out = out_obj.cast<py::array>();
    OFDB_CHECK(out.writeable(), "out must be writable");
    const int64_t want[4] = {B, height, width, 3};
    OFDB_CHECK(out.ndim() == (counts_only ? 3 : 4), "out has the wrong number of dimensions");
    for (int d = 0; d < out.ndim(); ++d) OFDB_CHECK(out.shape(d) == want[d], "out has the wrong shape");
  }
  int32_t* counts = counts_only ? static_cast<int32_t*>(out.mutable_data()) : nullptr;
  uint8_t* rgb = counts_only ? nullptr : static_cast<uint8_t*>(out.mutable_data());
  {
    py::gil_scoped_release release;
    ofdb::ifs::ifs_render_cpu(p, systems.data(), n_maps.data(), image_ids.data(), probs_ptr, counts, rgb);
  }
  return out;
}

#ifdef OFDB_WITH_CUDA
void ifs_render_cuda_py(uintptr_t systems, uintptr_t n_maps, uintptr_t image_ids, uintptr_t probs,
                        uintptr_t counts, uintptr_t rgb, int64_t n_images, int n_max_maps, int height,
                        int width, uint64_t seed, int64_t n_points, bool jitter, double jitter_lo,
                        double jitter_hi, int jitter_tries, double translate, bool scale, double scale_lo,
                        double scale_hi, bool flips, bool color, bool patch, bool background, bool blur,
                        double blur_lo, double blur_hi, bool counts_only, int device, uintptr_t stream) {
  const RenderParams p = make_params(n_images, n_max_maps, height, width, seed, n_points, jitter, jitter_lo,
                                     jitter_hi, jitter_tries, translate, scale, scale_lo, scale_hi, flips,
                                     color, patch, background, blur, blur_lo, blur_hi, probs != 0, counts_only);
  py::gil_scoped_release release;
  ofdb::ifs::ifs_render_cuda(p, systems, n_maps, image_ids, probs, counts, rgb, device, stream);
}
#endif

}  // namespace

void bind_ifs_render(py::module_& m) {
  m.def("ifs_render_cpu", &ifs_render_cpu_py, "IFS chaos-game render (see ops/ifs_render.py)",
        py::arg("systems"), py::arg("n_maps"), py::arg("image_ids"), py::arg("probs"), py::kw_only(),
        py::arg("height"), py::arg("width"), py::arg("seed"), py::arg("n_points"), py::arg("jitter"),
        py::arg("jitter_lo"), py::arg("jitter_hi"), py::arg("jitter_tries"), py::arg("translate"),
        py::arg("scale"), py::arg("scale_lo"), py::arg("scale_hi"), py::arg("flips"), py::arg("color"),
        py::arg("patch"), py::arg("background"), py::arg("blur"), py::arg("blur_lo"), py::arg("blur_hi"),
        py::arg("counts_only"), py::arg("out") = py::none());
#ifdef OFDB_WITH_CUDA
  m.def("ifs_render_cuda", &ifs_render_cuda_py,
        "IFS chaos-game render on device pointers of CUDA device `device`, enqueued on `stream`; counts: "
        "int32 [B, H, W] (scratch unless counts_only), rgb: uint8 [B, H, W, 3] (0 when counts_only)",
        py::arg("systems"), py::arg("n_maps"), py::arg("image_ids"), py::arg("probs"), py::arg("counts"),
        py::arg("rgb"), py::kw_only(), py::arg("n_images"), py::arg("n_max_maps"), py::arg("height"),
        py::arg("width"), py::arg("seed"), py::arg("n_points"), py::arg("jitter"), py::arg("jitter_lo"),
        py::arg("jitter_hi"), py::arg("jitter_tries"), py::arg("translate"), py::arg("scale"),
        py::arg("scale_lo"), py::arg("scale_hi"), py::arg("flips"), py::arg("color"), py::arg("patch"),
        py::arg("background"), py::arg("blur"), py::arg("blur_lo"), py::arg("blur_hi"), py::arg("counts_only"),
        py::arg("device"), py::arg("stream"));
#endif
}
