// kcenter_greedy on the CPU (OpenMP).
//
// Math: see kcenter_greedy.h and the NumPy reference. Numerics: float32 rows; a squared distance
// is accumulated in float32 over 16 fixed lanes (lane l sums elements l, l+16, ...) that are then
// added as a fixed tree, so the result does not depend on the SIMD width or the thread count.
// The exact initial score uses sum_j |z_i - z_j|^2 = N |z_i - mu|^2 + sum_j |z_j - mu|^2 in
// float64 (O(N * P) instead of O(N^2 * P); serial sums, so deterministic).
//
// Parallel mapping of the loop: ONE parallel region for all n_select iterations; each thread owns a
// fixed contiguous block of rows (cached by its core when it fits) and, per iteration, does one fused
// pass over it: distance to the current centre, running min of the score (and of the covering distance
// when the radius is requested), and its block's argmax (strict '>' while scanning up, so the lowest
// index of a tie). Threads publish (value, index) in a slot, meet at one barrier, and every thread
// reduces the slots itself (largest value, lowest index on ties) to learn the next centre. Slots are
// double-buffered by iteration parity, so one barrier per iteration is enough.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "patchcore/kcenter_greedy.h"

namespace ofdb {
namespace {

constexpr int kLanes = 16;
// Below this many rows per thread the barrier costs more than the work.
constexpr int64_t kMinRowsPerThread = 4096;

// The 16 lanes are one GCC/Clang vector (a zmm register with AVX-512, two ymm otherwise; plain C++
// loops over a float[16] did not stay in registers); unaligned loads go through memcpy.
typedef float Vec16 __attribute__((vector_size(64)));

inline Vec16 load16(const float* p) {
  Vec16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec4 __attribute__((vector_size(16)));

// Fixed tree over the lanes, in registers: (l, l + 8), then (l, l + 4), (l, l + 2), (l, l + 1).
inline float lane_sum(const Vec16& v) {
  Vec8 lo, hi;
  __builtin_memcpy(&lo, &v, sizeof(lo));
  __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
  const Vec8 s8 = lo + hi;
  Vec4 a, b;
  __builtin_memcpy(&a, &s8, sizeof(a));
  __builtin_memcpy(&b, reinterpret_cast<const char*>(&s8) + sizeof(a), sizeof(b));
  const Vec4 s4 = a + b;
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

inline float squared_distance(const float* a, const float* b, int64_t width) {
  Vec16 sum = {};
  int64_t c = 0;
  for (; c + kLanes <= width; c += kLanes) {
    const Vec16 t = load16(a + c) - load16(b + c);
    sum += t * t;
  }
  if (c < width) {  // tail: element c + l goes to lane l, as if the row were zero-padded
    float tail[kLanes] = {0.0f};
    for (int l = 0; c + l < width; ++l) tail[l] = a[c + l] - b[c + l];
    const Vec16 t = load16(tail);
    sum += t * t;
  }
  return lane_sum(sum);
}

// Rows of kChunks * 16 floats: the centre is copied into registers once per pass (stores to the
// score would otherwise force a reload per row). Same arithmetic as squared_distance.
template <int kChunks>
struct FixedWidth {
  Vec16 centre[kChunks];
  explicit FixedWidth(const float* c) {
    for (int k = 0; k < kChunks; ++k) centre[k] = load16(c + k * kLanes);
  }
  float operator()(const float* row) const {
    Vec16 sum = {};
    for (int k = 0; k < kChunks; ++k) {
      const Vec16 t = load16(row + k * kLanes) - centre[k];
      sum += t * t;
    }
    return lane_sum(sum);
  }
};

struct AnyWidth {
  const float* centre;
  int64_t width;
  float operator()(const float* row) const { return squared_distance(row, centre, width); }
};

struct alignas(64) Slot {  // one cache line per thread: no false sharing
  float best;
  int64_t index;
  float cover_max;
};

// True when (v, i) beats (best, best_i): larger value, or equal value and lower index.
inline bool beats(float v, int64_t i, float best, int64_t best_i) { return v > best || (v == best && i < best_i); }

// One fused pass over rows [lo, hi): d = distance to the centre, score = min(score, d), cover =
// min(cover, d) when tracked; returns the rows' argmax (lowest index on ties) and cover max.
template <class Dist>
inline Slot scan(const Dist& dist, const float* z, int64_t width, int64_t lo, int64_t hi, float* score, float* cov) {
  float best = -1.0f;  // scores are >= 0
  int64_t best_i = std::numeric_limits<int64_t>::max();
  float cover_max = 0.0f;
  for (int64_t j = lo; j < hi; ++j) {
    const float d = std::sqrt(dist(z + j * width));
    const float s = std::min(score[j], d);
    score[j] = s;
    if (s > best) {
      best = s;
      best_i = j;
    }
    if (cov != nullptr) {
      const float v = std::min(cov[j], d);
      cov[j] = v;
      cover_max = std::max(cover_max, v);
    }
  }
  return Slot{best, best_i, cover_max};
}

int loop_threads(int64_t n) {
#ifdef _OPENMP
  const int64_t wanted = std::max<int64_t>(1, n / kMinRowsPerThread);
  return static_cast<int>(std::min<int64_t>(omp_get_max_threads(), wanted));
#else
  return 1;
#endif
}

// z = x @ W, float32, accumulated over d ascending; W from the shared RNG.
std::vector<float> project(const float* x, const KCenterParams& p) {
  const int64_t n = p.n_points, dim = p.dim, width = p.proj_dim;
  const uint64_t key = rng::stream_key(p.seed, rng::kStreamCoreset, kCoresetItemProjection);
  std::vector<float> w(static_cast<size_t>(dim * width));
  for (int64_t c = 0; c < dim * width; ++c) w[c] = kcenter_weight(key, dim, static_cast<uint64_t>(c));
  std::vector<float> z(static_cast<size_t>(n * width));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float* zi = z.data() + i * width;
    const float* xi = x + i * dim;
    for (int64_t j = 0; j < width; ++j) zi[j] = 0.0f;
    for (int64_t d = 0; d < dim; ++d) {
      const float f = xi[d];
      const float* wd = w.data() + d * width;
      for (int64_t j = 0; j < width; ++j) zi[j] += f * wd[j];
    }
  }
  return z;
}

void approx_initial_score(const float* z, int64_t n, int64_t width, const std::vector<int64_t>& starts,
                          float* score) {
  const float m = static_cast<float>(starts.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float sum = 0.0f;
    for (int64_t s : starts) sum += std::sqrt(squared_distance(z + i * width, z + s * width, width));
    score[i] = sum / m;
  }
}

void exact_initial_score(const float* z, int64_t n, int64_t width, float* score) {
  std::vector<double> mean(static_cast<size_t>(width), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < width; ++k) mean[k] += z[i * width + k];
  }
  for (int64_t k = 0; k < width; ++k) mean[k] /= static_cast<double>(n);
  std::vector<double> q(static_cast<size_t>(n));  // |z_i - mu|^2
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    double acc = 0.0;
    for (int64_t k = 0; k < width; ++k) {
      const double t = z[i * width + k] - mean[k];
      acc += t * t;
    }
    q[i] = acc;
  }
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += q[i];
  const double nd = static_cast<double>(n);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) score[i] = static_cast<float>(std::sqrt(nd * q[i] + total));
}

void greedy_loop(const float* z, int64_t n, int64_t width, float* score, int64_t n_select, int64_t* indices,
                 double* radius) {
  // The first centre is the argmax of the initial score (serial: once).
  int64_t first = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (score[i] > score[first]) first = i;
  }
  std::vector<float> cover;
  if (radius != nullptr) cover.assign(static_cast<size_t>(n), std::numeric_limits<float>::infinity());
  float* cov = radius != nullptr ? cover.data() : nullptr;
  const int n_threads = loop_threads(n);
  std::vector<Slot> slots(static_cast<size_t>(2 * n_threads));

#pragma omp parallel num_threads(n_threads)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
    const int nt = omp_get_num_threads();
#else
    const int tid = 0, nt = 1;
#endif
    const int64_t lo = n * tid / nt, hi = n * (tid + 1) / nt;
    int64_t centre = first;
    for (int64_t t = 0; t < n_select; ++t) {
      if (tid == 0) indices[t] = centre;
      const float* c = z + centre * width;
      Slot mine_now;
      switch (width) {
        case 16: mine_now = scan(FixedWidth<1>(c), z, width, lo, hi, score, cov); break;
        case 32: mine_now = scan(FixedWidth<2>(c), z, width, lo, hi, score, cov); break;
        case 64: mine_now = scan(FixedWidth<4>(c), z, width, lo, hi, score, cov); break;
        case 128: mine_now = scan(FixedWidth<8>(c), z, width, lo, hi, score, cov); break;
        case 256: mine_now = scan(FixedWidth<16>(c), z, width, lo, hi, score, cov); break;
        default: mine_now = scan(AnyWidth{c, width}, z, width, lo, hi, score, cov); break;
      }
      Slot* mine = slots.data() + (t & 1) * nt;
      mine[tid] = mine_now;
#pragma omp barrier
      Slot win = mine[0];
      for (int u = 1; u < nt; ++u) {
        if (beats(mine[u].best, mine[u].index, win.best, win.index)) {
          win.best = mine[u].best;
          win.index = mine[u].index;
        }
        win.cover_max = std::max(win.cover_max, mine[u].cover_max);
      }
      centre = win.index;
      if (tid == 0 && radius != nullptr) radius[t] = win.cover_max;
    }
  }
}

}  // namespace

void kcenter_greedy_cpu(const float* features, const KCenterParams& p, int64_t* indices, double* radius) {
  OFDB_CHECK(p.n_points >= 1 && p.dim >= 1, "kcenter_greedy_cpu: features must be non-empty");
  OFDB_CHECK(p.n_select >= 1 && p.n_select <= p.n_points, "kcenter_greedy_cpu: need 1 <= n_select <= N");
  OFDB_CHECK(p.n_points < (int64_t{1} << 32), "kcenter_greedy_cpu: N must be < 2**32");
  OFDB_CHECK(p.method == kKCenterApprox || p.method == kKCenterExact, "kcenter_greedy_cpu: unknown method");
  OFDB_CHECK(p.method != kKCenterApprox || p.n_starts >= 1, "kcenter_greedy_cpu: n_starts must be >= 1");
  const int64_t n = p.n_points, width = kcenter_width(p);
  std::vector<float> projected;
  const float* z = features;
  if (kcenter_projects(p)) {
    projected = project(features, p);
    z = projected.data();
  }
  std::vector<float> score(static_cast<size_t>(n));
  if (p.method == kKCenterApprox) {
    approx_initial_score(z, n, width, kcenter_starting_points(n, p.n_starts, p.seed), score.data());
  } else {
    exact_initial_score(z, n, width, score.data());
  }
  greedy_loop(z, n, width, score.data(), p.n_select, indices, radius);
}

}  // namespace ofdb
