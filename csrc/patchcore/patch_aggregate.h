// patch_aggregate on the CPU: PatchCore patch features from backbone layer maps.
//
// Semantics: ofdb_fast.reference.patch_aggregate (the NumPy spec): per layer, 3x3 (p x p)
// zero-padded unfold, bilinear alignment (align_corners=False) of deeper layers onto layer 0's
// grid, adaptive_avg_pool1d of the C*p*p patch vector to `pretrain`; then the layer-major stack
// pooled to `target`.
//
// Order of work: the MeanMapper pooling (over the patch vector of one position) and the
// bilinear alignment (over positions, the same weights for every vector entry) are linear maps
// on different axes, so they commute. Each layer is therefore pooled on its own grid first
// (H_l x W_l positions, not H0 x W0), and only the `pretrain`-long pooled vectors are
// interpolated: the C*p*p vectors of the aligned grid, which the reference materialises
// (9,216 floats per position for WRN50 layer3), are never formed.
// Numerics: float64 throughout (as the reference), rounded to float32 once; only the order of
// the sums differs from the reference (pool, then interpolate).
#pragma once

#include <cstdint>
#include <vector>

namespace ofdb {

template <typename T>
struct LayerMap {
  const T* data;  // [batch, channels, height, width], C-contiguous
  int64_t channels, height, width;
};

// out: [batch * H0 * W0, target] float32, rows (b, y, x). patch odd >= 1; pretrain,
// target >= 1; layers non-empty. Parallel over positions (OpenMP), one image at a time, so
// scratch is O(sum over layers of H_l * W_l * pretrain) doubles.
template <typename T>
void patch_aggregate_cpu(const std::vector<LayerMap<T>>& layers, int64_t batch, int64_t patch,
                         int64_t pretrain, int64_t target, float* out);

}  // namespace ofdb
