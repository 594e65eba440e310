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
//
// Int8 prefilter (exact): streaming float32 rows is memory bound (20,000 x 128 rows are 10 MB, re-read
// every iteration from L3), yet after the first iterations only ~0.3% of the rows get closer to the new
// centre than to their current one. So each row also gets an int8 copy q_i with one global scale s
// (z_i ~= s q_i; 2.5 MB for that size, resident in the cores' L2) and its exact quantisation error
// e_i = |z_i - s q_i| (float64, rounded up). Per iteration a row first gets the integer distance
// a = s |q_i - q_c| (exact integer sum). By the triangle inequality the float32 distance d it would get
// satisfies d >= a - e_i - e_c, so when a (1 - rel) - e_i - e_c > thr (1 + rel), with thr = max(score,
// cover) and rel far above every float32 rounding of a and of d (see prefilter_rel), min(score, d) and
// min(cover, d) keep their values and the row is skipped; every other row takes the float32 path above.
// Scores, cover and indices are therefore bit-identical to scanning every row in float32
// (prefilter=false, tested); only the work changes. Guards: d must also exceed kTinyDistance (so that
// no float32 underflow in d can matter), a must be finite, rows wider than kMaxFilterWidth and data
// with max |z| < kMinFilterRange skip the filter.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__AVX512BW__) || defined(__AVX2__)
#include <immintrin.h>
#define OFDB_KCENTER_PREFILTER 1  // without AVX2 the integer distance costs more than the float32 row it saves
#endif

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

// ---------------------------------------------------------------------------- int8 prefilter

constexpr int64_t kQChunk = 32;               // int8 row copies are padded with zeros to a multiple of this
constexpr int64_t kMaxFilterWidth = 32768;    // 254^2 * width stays below 2^31 in the int32 sums
constexpr float kMinFilterRange = 1e-12f;     // max |z| below this: a scale this small buys nothing
constexpr float kTinyDistance = 1e-15f;       // skipped rows have d above this (d^2 >> float32 subnormals)

struct Prefilter {
  int64_t qwidth = 0;         // width rounded up to kQChunk
  float scale = 0.0f;         // z ~= scale * q
  float rel = 0.0f;           // relative margin (prefilter_rel)
  std::vector<int8_t> q;      // [n, qwidth]
  std::vector<float> err;     // [n] |z_i - scale q_i| rounded up; +inf: never skip this row
};

// A bound, with a wide safety factor, on the relative float32 error of both distances: a (integer sum,
// one conversion, a sqrt and a product: 3 roundings) and d (width / 16 sequential adds per lane, a
// 4-level tree, the squares and differences, a sqrt), plus the 2 products of the comparison.
float prefilter_rel(int64_t width) {
  const double u = std::ldexp(1.0, -24);
  return static_cast<float>(std::max(std::ldexp(1.0, -12), 16.0 * (static_cast<double>(width) / 16.0 + 16.0) * u));
}

bool build_prefilter(const float* z, int64_t n, int64_t width, Prefilter* f) {
#ifndef OFDB_KCENTER_PREFILTER
  return false;
#endif
  if (width > kMaxFilterWidth) return false;
  float max_abs = 0.0f;
  for (int64_t c = 0; c < n * width; ++c) {
    const float v = std::fabs(z[c]);
    if (std::isfinite(v)) max_abs = std::max(max_abs, v);
  }
  if (!(max_abs >= kMinFilterRange)) return false;
  f->qwidth = (width + kQChunk - 1) / kQChunk * kQChunk;
  f->scale = max_abs / 127.0f;
  f->rel = prefilter_rel(width);
  f->q.assign(static_cast<size_t>(n * f->qwidth), 0);
  f->err.resize(static_cast<size_t>(n));
  const double scale = f->scale;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* zi = z + i * width;
    int8_t* qi = f->q.data() + i * f->qwidth;
    double e2 = 0.0;
    bool finite = true;
    for (int64_t k = 0; k < width; ++k) {
      if (!std::isfinite(zi[k])) {
        finite = false;
        continue;
      }
      const double level = std::max(-127.0, std::min(127.0, std::nearbyint(zi[k] / scale)));
      qi[k] = static_cast<int8_t>(level);
      const double t = static_cast<double>(zi[k]) - scale * level;  // exact in float64
      e2 += t * t;
    }
    // float64 sum and sqrt are ~1e-16 relative; 1e-9 and the upward float rounding cover them.
    const double e = std::sqrt(e2) * (1.0 + 1e-9);
    float ef = static_cast<float>(e);
    if (static_cast<double>(ef) < e) ef = std::nextafter(ef, std::numeric_limits<float>::infinity());
    f->err[static_cast<size_t>(i)] = finite ? ef : std::numeric_limits<float>::infinity();
  }
  return true;
}

// The int8 centre widened to int16 once per iteration (rows are widened on load).
struct QCentre {
  const int16_t* q;
  int64_t qwidth;
};

// sum_k (q_row[k] - q_centre[k])^2, exact in int32.
inline int32_t qdistance(const int8_t* row, const QCentre& c) {
#if defined(__AVX512BW__)
  __m512i acc = _mm512_setzero_si512();
  for (int64_t k = 0; k < c.qwidth; k += kQChunk) {
    const __m512i x = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k)));
    const __m512i d = _mm512_sub_epi16(x, _mm512_loadu_si512(c.q + k));
#if defined(__AVX512VNNI__)
    acc = _mm512_dpwssd_epi32(acc, d, d);
#else
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(d, d));
#endif
  }
  return _mm512_reduce_add_epi32(acc);
#elif defined(__AVX2__)
  __m256i acc = _mm256_setzero_si256();
  for (int64_t k = 0; k < c.qwidth; k += 16) {
    const __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k)));
    const __m256i d = _mm256_sub_epi16(x, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.q + k)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(d, d));
  }
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
#else
  (void)row;
  (void)c;
  return 0;  // unreachable: build_prefilter() declines without OFDB_KCENTER_PREFILTER
#endif
}

// scan() with the prefilter: rows it proves unchanged skip the float32 distance.
template <class Dist>
inline Slot scan_filtered(const Dist& dist, const float* z, int64_t width, const Prefilter& f, const QCentre& qc,
                          float err_c, int64_t lo, int64_t hi, float* score, float* cov) {
  float best = -1.0f;
  int64_t best_i = std::numeric_limits<int64_t>::max();
  float cover_max = 0.0f;
  // skip <=> a (1 - rel) > max(thr (1 + rel), tiny) + e_i + e_c, squared (both sides >= 0) and in float64
  // (no sqrt per row, no overflow; float64 rounding is far inside rel).
  const double keep = static_cast<double>(f.scale) * (1.0 - f.rel);
  const double keep2 = keep * keep, grow = 1.0 + f.rel;
  const int8_t* q = f.q.data();
  const float* err = f.err.data();
  for (int64_t j = lo; j < hi; ++j) {
    float s = score[j];
    const float thr = cov != nullptr ? std::max(s, cov[j]) : s;
    const double a2 = keep2 * static_cast<double>(qdistance(q + j * f.qwidth, qc));
    const double rhs = std::max(static_cast<double>(thr) * grow, static_cast<double>(kTinyDistance)) +
                       (static_cast<double>(err[j]) + static_cast<double>(err_c));
    const bool skip = a2 > rhs * rhs;
    if (!skip) {
      const float d = std::sqrt(dist(z + j * width));
      s = std::min(s, d);
      score[j] = s;
      if (cov != nullptr) cov[j] = std::min(cov[j], d);
    }
    if (s > best) {
      best = s;
      best_i = j;
    }
    if (cov != nullptr) cover_max = std::max(cover_max, cov[j]);
  }
  return Slot{best, best_i, cover_max};
}

template <class Dist>
inline Slot scan_any(const Dist& dist, const float* z, int64_t width, const Prefilter* f, const QCentre& qc,
                     float err_c, int64_t lo, int64_t hi, float* score, float* cov) {
  return f != nullptr ? scan_filtered(dist, z, width, *f, qc, err_c, lo, hi, score, cov)
                      : scan(dist, z, width, lo, hi, score, cov);
}

void greedy_loop(const float* z, int64_t n, int64_t width, float* score, int64_t n_select, int64_t* indices,
                 double* radius, const Prefilter* filter) {
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
    // Each thread widens the centre's int8 row into its own buffer (no sharing, no extra barrier).
    std::vector<int16_t> centre_q(filter != nullptr ? static_cast<size_t>(filter->qwidth) : 0);
    const QCentre qc{centre_q.data(), filter != nullptr ? filter->qwidth : 0};
    int64_t centre = first;
    for (int64_t t = 0; t < n_select; ++t) {
      if (tid == 0) indices[t] = centre;
      const float* c = z + centre * width;
      float err_c = 0.0f;
      if (filter != nullptr) {
        const int8_t* src = filter->q.data() + centre * filter->qwidth;
        for (int64_t k = 0; k < filter->qwidth; ++k) centre_q[static_cast<size_t>(k)] = src[k];
        err_c = filter->err[static_cast<size_t>(centre)];
      }
      Slot mine_now;
      switch (width) {
        case 16: mine_now = scan_any(FixedWidth<1>(c), z, width, filter, qc, err_c, lo, hi, score, cov); break;
        case 32: mine_now = scan_any(FixedWidth<2>(c), z, width, filter, qc, err_c, lo, hi, score, cov); break;
        case 64: mine_now = scan_any(FixedWidth<4>(c), z, width, filter, qc, err_c, lo, hi, score, cov); break;
        case 128: mine_now = scan_any(FixedWidth<8>(c), z, width, filter, qc, err_c, lo, hi, score, cov); break;
        case 256: mine_now = scan_any(FixedWidth<16>(c), z, width, filter, qc, err_c, lo, hi, score, cov); break;
        default: mine_now = scan_any(AnyWidth{c, width}, z, width, filter, qc, err_c, lo, hi, score, cov); break;
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
  Prefilter filter;
  const bool filtered = p.prefilter && p.n_select > 1 && build_prefilter(z, n, width, &filter);
  greedy_loop(z, n, width, score.data(), p.n_select, indices, radius, filtered ? &filter : nullptr);
}

}  // namespace ofdb
