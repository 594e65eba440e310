// kcenter_greedy: PatchCore's greedy k-center coreset (spec: python/ofdb_fast/reference/kcenter_greedy.py).
//
// Both backends take float32 rows, optionally project them with the shared-RNG matrix W, compute the
// initial score (approx: mean distance to random starting points; exact: norm of the distance-matrix
// row) and then repeat n_select times: i = argmax(score) (lowest index on ties); score = min(score,
// dist(z, z[i])). Distances use the direct form sqrt(sum((a - b)^2)), accumulated in float32.
#pragma once

#include <cmath>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "common/macros.h"
#include "common/rng.h"

namespace ofdb {

// Items of rng::kStreamCoreset (mirrored in reference/kcenter_greedy.py).
constexpr uint64_t kCoresetItemProjection = 0;
constexpr uint64_t kCoresetItemStarts = 1;

enum KCenterMethod : int { kKCenterApprox = 0, kKCenterExact = 1 };

struct KCenterParams {
  int64_t n_points = 0;  // N >= 1
  int64_t dim = 0;       // D >= 1
  int64_t proj_dim = 0;  // P: 0 = no projection (rows used as they are); P == D is also no projection
  int method = kKCenterApprox;
  int64_t n_starts = 10;  // approx: number of starting points, clamped to N
  int64_t n_select = 0;   // 1 <= n_select <= N
  uint64_t seed = 0;
  bool half_projection = false;  // CUDA only: store the projected rows as __half (see kcenter_greedy_cuda.cu)
  bool prefilter = true;         // CPU only: skip rows an int8 copy proves unchanged (exact; see _cpu.cpp)
};

// True when the rows are multiplied by W before the loop.
inline bool kcenter_projects(const KCenterParams& p) { return p.proj_dim > 0 && p.proj_dim != p.dim; }
inline int64_t kcenter_width(const KCenterParams& p) { return kcenter_projects(p) ? p.proj_dim : p.dim; }

// W[d, j] for counter = d * proj_dim + j: U(-1/sqrt(D), 1/sqrt(D)) rounded to float32, as the reference.
OFDB_HD float kcenter_weight(uint64_t key, int64_t dim, uint64_t counter) {
  const double bound = 1.0 / sqrt(static_cast<double>(dim));
  return static_cast<float>(rng::uniform(key, counter, -bound, bound));
}

// min(n_starts, N) distinct indices: partial Fisher-Yates shuffle of 0..N-1 (swap slot j with
// j + below(key, j, N - j)), stored sparsely so it costs O(m), not O(N). Host only.
inline std::vector<int64_t> kcenter_starting_points(int64_t n_points, int64_t n_starts, uint64_t seed) {
  const uint64_t key = rng::stream_key(seed, rng::kStreamCoreset, kCoresetItemStarts);
  const int64_t m = n_starts < n_points ? n_starts : n_points;
  std::unordered_map<int64_t, int64_t> moved;  // slot -> value for the slots touched so far
  auto at = [&](int64_t slot) {
    auto it = moved.find(slot);
    return it == moved.end() ? slot : it->second;
  };
  std::vector<int64_t> starts(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; ++j) {
    const int64_t r = j + rng::below(key, static_cast<uint64_t>(j), static_cast<uint32_t>(n_points - j));
    const int64_t vj = at(j), vr = at(r);
    moved[j] = vr;
    moved[r] = vj;
    starts[static_cast<size_t>(j)] = vr;
  }
  return starts;
}

// features: [N, D] float32, C-contiguous (host).
// indices:  [n_select] int64 out.
// radius:   [n_select] float64 out, or nullptr (covering radius after each selection).
void kcenter_greedy_cpu(const float* features, const KCenterParams& p, int64_t* indices, double* radius);

#ifdef OFDB_WITH_CUDA
// Same contract on device pointers, enqueued on `stream` of device `device`; no host sync inside
// the selection loop (scratch memory is stream-ordered: cudaMallocAsync / cudaFreeAsync).
void kcenter_greedy_cuda(const float* features, const KCenterParams& p, int64_t* indices, double* radius,
                         int device, uintptr_t stream);
#endif

}  // namespace ofdb
