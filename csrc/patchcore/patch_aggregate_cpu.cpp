// patch_aggregate on the CPU (see patch_aggregate.h for the math and the order of work).
//
// Per image:
// 1. for every layer and every position q of its own grid: the zero-padded p x p patch vector
//    (c, dy, dx order) in a thread-local buffer, then its adaptive_avg_pool1d bins ->
//    low[l][q][0:pretrain] (float64);
// 2. for every position of layer 0's grid: layer 0's pooled vector as is, deeper layers'
//    interpolated from their four bilinear source positions (rows first, as F.interpolate's
//    reference formula), stacked layer-major, then pooled to `target` and rounded to float32.
#include "patchcore/patch_aggregate.h"

#include <algorithm>
#include <cmath>

#include "common/macros.h"

namespace ofdb {
namespace {

// [start, end) of output j of adaptive_avg_pool1d(n_in -> n_out).
struct Bins {
  std::vector<int64_t> start, end;
  Bins(int64_t n_in, int64_t n_out) : start(n_out), end(n_out) {
    for (int64_t j = 0; j < n_out; ++j) {
      start[j] = j * n_in / n_out;
      end[j] = ((j + 1) * n_in + n_out - 1) / n_out;
    }
  }
};

// 1-D bilinear taps of a resize n_in -> n_out, align_corners=False (PyTorch's formula).
struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<double> w0, w1;
  Taps(int64_t n_in, int64_t n_out) : i0(n_out), i1(n_out), w0(n_out), w1(n_out) {
    const double scale = static_cast<double>(n_in) / static_cast<double>(n_out);
    for (int64_t j = 0; j < n_out; ++j) {
      const double src = std::max((static_cast<double>(j) + 0.5) * scale - 0.5, 0.0);
      const int64_t lo = static_cast<int64_t>(std::floor(src));
      i0[j] = lo;
      i1[j] = std::min<int64_t>(lo + 1, n_in - 1);
      w1[j] = src - static_cast<double>(lo);
      w0[j] = 1.0 - w1[j];
    }
  }
};

// low[q * pretrain + j] for every position q of one layer map (one image): the pooled patch
// vectors on the layer's own grid.
template <typename T>
void pool_layer(const T* map, int64_t channels, int64_t height, int64_t width, int64_t patch,
                const Bins& bins, double* low) {
  const int64_t pad = (patch - 1) / 2;
  const int64_t vec_len = channels * patch * patch;
  const int64_t n_out = static_cast<int64_t>(bins.start.size());
  const int64_t plane = height * width;
#pragma omp parallel
  {
    std::vector<double> v(vec_len);
#pragma omp for schedule(static)
    for (int64_t q = 0; q < plane; ++q) {
      const int64_t y = q / width, x = q % width;
      double* e = v.data();
      for (int64_t c = 0; c < channels; ++c) {
        const T* ch = map + c * plane;
        for (int64_t dy = 0; dy < patch; ++dy) {
          const int64_t yy = y + dy - pad;
          const bool row_ok = yy >= 0 && yy < height;
          for (int64_t dx = 0; dx < patch; ++dx) {
            const int64_t xx = x + dx - pad;
            *e++ = row_ok && xx >= 0 && xx < width ? static_cast<double>(ch[yy * width + xx]) : 0.0;
          }
        }
      }
      double* dst = low + q * n_out;
      for (int64_t j = 0; j < n_out; ++j) {
        double s = 0.0;
        for (int64_t i = bins.start[j]; i < bins.end[j]; ++i) s += v[i];
        dst[j] = s / static_cast<double>(bins.end[j] - bins.start[j]);
      }
    }
  }
}

}  // namespace

template <typename T>
void patch_aggregate_cpu(const std::vector<LayerMap<T>>& layers, int64_t batch, int64_t patch,
                         int64_t pretrain, int64_t target, float* out) {
  OFDB_CHECK(!layers.empty(), "patch_aggregate_cpu: at least one layer");
  OFDB_CHECK(patch >= 1 && patch % 2 == 1, "patch_aggregate_cpu: patch must be odd and >= 1");
  OFDB_CHECK(pretrain >= 1 && target >= 1, "patch_aggregate_cpu: dimensions must be >= 1");
  const int64_t n_layers = static_cast<int64_t>(layers.size());
  const int64_t grid_h = layers[0].height, grid_w = layers[0].width;
  const int64_t grid = grid_h * grid_w;
  std::vector<Bins> mean_bins;
  std::vector<Taps> rows, cols;
  std::vector<std::vector<double>> low(n_layers);
  for (const auto& l : layers) {
    mean_bins.emplace_back(l.channels * patch * patch, pretrain);
    rows.emplace_back(l.height, grid_h);
    cols.emplace_back(l.width, grid_w);
  }
  for (int64_t l = 0; l < n_layers; ++l) low[l].resize(layers[l].height * layers[l].width * pretrain);
  const Bins agg_bins(n_layers * pretrain, target);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t l = 0; l < n_layers; ++l) {
      const auto& m = layers[l];
      pool_layer(m.data + b * m.channels * m.height * m.width, m.channels, m.height, m.width, patch,
                 mean_bins[l], low[l].data());
    }
    float* out_image = out + b * grid * target;
#pragma omp parallel
    {
      std::vector<double> stacked(n_layers * pretrain);
#pragma omp for schedule(static)
      for (int64_t p = 0; p < grid; ++p) {
        const int64_t y = p / grid_w, x = p % grid_w;
        std::copy(low[0].begin() + p * pretrain, low[0].begin() + (p + 1) * pretrain, stacked.begin());
        for (int64_t l = 1; l < n_layers; ++l) {
          const int64_t w = layers[l].width;
          const double wy0 = rows[l].w0[y], wy1 = rows[l].w1[y], wx0 = cols[l].w0[x], wx1 = cols[l].w1[x];
          const double* a00 = low[l].data() + (rows[l].i0[y] * w + cols[l].i0[x]) * pretrain;
          const double* a10 = low[l].data() + (rows[l].i1[y] * w + cols[l].i0[x]) * pretrain;
          const double* a01 = low[l].data() + (rows[l].i0[y] * w + cols[l].i1[x]) * pretrain;
          const double* a11 = low[l].data() + (rows[l].i1[y] * w + cols[l].i1[x]) * pretrain;
          double* dst = stacked.data() + l * pretrain;
          for (int64_t j = 0; j < pretrain; ++j)
            dst[j] = (a00[j] * wy0 + a10[j] * wy1) * wx0 + (a01[j] * wy0 + a11[j] * wy1) * wx1;
        }
        float* row = out_image + p * target;
        for (int64_t t = 0; t < target; ++t) {
          double s = 0.0;
          for (int64_t i = agg_bins.start[t]; i < agg_bins.end[t]; ++i) s += stacked[i];
          row[t] = static_cast<float>(s / static_cast<double>(agg_bins.end[t] - agg_bins.start[t]));
        }
      }
    }
  }
}

template void patch_aggregate_cpu<float>(const std::vector<LayerMap<float>>&, int64_t, int64_t, int64_t,
                                         int64_t, float*);
template void patch_aggregate_cpu<double>(const std::vector<LayerMap<double>>&, int64_t, int64_t, int64_t,
                                          int64_t, float*);

}  // namespace ofdb
