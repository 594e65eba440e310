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
// (prefilter=false, tested); only the work changes. The test is evaluated squared in float64 (no sqrt,
// no overflow). Guards: d must also exceed kTinyDistance (so that no float32 underflow in d can
// matter); rows with a non-finite value are never skipped; rows wider than kMaxFilterWidth and data
// with max |z| < kMinFilterRange skip the filter. Integer sums wrap modulo 2^32 in the SIMD code, and
// the true |q_i - q_c|^2 < 2^31 (width <= kMaxFilterWidth), so the wrapped result is exact.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <thread>
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

// The loop's per-iteration barrier. With the prefilter an iteration is a few tens of microseconds, and an
// OpenMP barrier under OMP_WAIT_POLICY=PASSIVE (which this project recommends, see README) puts the
// waiting thread to sleep and wakes it through the kernel each time: measured 201 ms vs 93 ms for
// 2,000 iterations on 2 cores. This barrier spins for a bounded time (~kSpinPauses pause
// instructions, tens of microseconds) and then yields the core on every further check, so an
// oversubscribed machine still makes progress. Memory order: arrivals are acq_rel on `count`, the
// last one releases `generation`, waiters acquire it: every slot written before the barrier is
// visible after it.
class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  void wait() {
    const unsigned gen = generation_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spin = 0; generation_.load(std::memory_order_acquire) == gen; ++spin) {
      if (spin < kSpinPauses) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static constexpr int kSpinPauses = 4096;
  const int n_;
  alignas(64) std::atomic<int> count_{0};
  alignas(64) std::atomic<unsigned> generation_{0};
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

constexpr int64_t kQChunk = 64;               // row copies are padded (with level 0) to a multiple of this
constexpr int64_t kMaxFilterWidth = 32768;    // 4 * 127^2 * width < 2^31: |q_i - q_c|^2 fits int32
constexpr float kMinFilterRange = 1e-12f;     // max |z| below this: a scale this small buys nothing
constexpr float kTinyDistance = 1e-15f;       // skipped rows have d above this (d^2 >> float32 subnormals)

// Levels q in [-127, 127] are stored offset by 128 (u = q + 128, uint8) so that the VNNI instruction
// vpdpbusd (uint8 x int8 products, 64 per instruction) gives u_i . q_c = q_i . q_c + 128 sum(q_c); with
// the per-row sums of squares that makes |q_i - q_c|^2 = |q_i|^2 + |q_c|^2 - 2 q_i . q_c, exact in int32.
struct Prefilter {
  int64_t qwidth = 0;         // width rounded up to kQChunk
  float scale = 0.0f;         // z ~= scale * q
  float rel = 0.0f;           // relative margin (prefilter_rel)
  std::vector<uint8_t> u;     // [n, qwidth] q + 128
  std::vector<int32_t> norm2; // [n] |q_i|^2
  std::vector<float> err;     // [n] |z_i - scale q_i| rounded up; +inf: never skip this row
};

// A bound, with a wide safety factor, on the relative float32 error of both distances: a (exact integer,
// one conversion, a product: 2 roundings) and d (width / 16 sequential adds per lane, a 4-level tree, the
// squares and differences, a sqrt), plus the roundings of the comparison (done in float64).
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
#pragma omp parallel for schedule(static) reduction(max : max_abs)
  for (int64_t i = 0; i < n; ++i) {
    const float* zi = z + i * width;
    float m = 0.0f;
#pragma omp simd reduction(max : m)
    for (int64_t k = 0; k < width; ++k) {
      const float v = std::fabs(zi[k]);
      const float w = v < std::numeric_limits<float>::infinity() ? v : 0.0f;  // NaN and inf: 0
      m = w > m ? w : m;
    }
    max_abs = m > max_abs ? m : max_abs;
  }
  if (!(max_abs >= kMinFilterRange)) return false;
  f->qwidth = (width + kQChunk - 1) / kQChunk * kQChunk;
  f->scale = max_abs / 127.0f;
  f->rel = prefilter_rel(width);
  f->u.assign(static_cast<size_t>(n * f->qwidth), 128);
  f->norm2.resize(static_cast<size_t>(n));
  f->err.resize(static_cast<size_t>(n));
  // Any level is admissible (e_i is measured from the level actually stored), so the rounding
  // uses a float reciprocal; the error sum is float64 from exact products (scale * level has at
  // most 24 + 7 significant bits).
  const float inv = 127.0f / max_abs;
  const double scale = f->scale;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* zi = z + i * width;
    uint8_t* ui = f->u.data() + i * f->qwidth;
    double e2 = 0.0;
    int32_t q2 = 0;
    int finite = 1;
    // Any summation order is fine here (nonnegative terms; the 1e-9 below covers it).
#pragma omp simd reduction(+ : e2, q2) reduction(& : finite)
    for (int64_t k = 0; k < width; ++k) {
      const float v = zi[k];
      finite &= std::isfinite(v) ? 1 : 0;
      const float level = std::isfinite(v) ? std::min(127.0f, std::max(-127.0f, std::nearbyint(v * inv))) : 0.0f;
      const int32_t q = static_cast<int32_t>(level);
      ui[k] = static_cast<uint8_t>(q + 128);
      q2 += q * q;
      const double t = static_cast<double>(v) - scale * static_cast<double>(level);
      e2 += t * t;
    }
    // float64 sum and sqrt are ~1e-16 relative; 1e-9 and the upward float rounding cover them.
    const double e = std::sqrt(e2) * (1.0 + 1e-9);
    float ef = static_cast<float>(e);
    if (static_cast<double>(ef) < e) ef = std::nextafter(ef, std::numeric_limits<float>::infinity());
    f->norm2[static_cast<size_t>(i)] = q2;
    f->err[static_cast<size_t>(i)] = finite ? ef : std::numeric_limits<float>::infinity();
  }
  return true;
}

// The centre's levels, prepared once per iteration by each thread.
struct QCentre {
  int64_t qwidth = 0;
  std::vector<int16_t> offset;  // q_c + 128 as int16: (u_i - that) = q_i - q_c, for the per-row path
  std::vector<int8_t> q;        // q_c, for vpdpbusd
  int32_t norm2 = 0;            // |q_c|^2
  int32_t sum = 0;              // sum(q_c)

  explicit QCentre(int64_t qw) : qwidth(qw), offset(static_cast<size_t>(qw)), q(static_cast<size_t>(qw)) {}
  void set(const Prefilter& f, int64_t centre) {
    const uint8_t* src = f.u.data() + centre * qwidth;
    sum = 0;
    for (int64_t k = 0; k < qwidth; ++k) {
      offset[static_cast<size_t>(k)] = static_cast<int16_t>(src[k]);
      q[static_cast<size_t>(k)] = static_cast<int8_t>(static_cast<int32_t>(src[k]) - 128);
      sum += static_cast<int32_t>(src[k]) - 128;
    }
    norm2 = f.norm2[static_cast<size_t>(centre)];
  }
};

// sum_k (q_row[k] - q_centre[k])^2, exact in int32 (one row; the block path below does 16 at a time).
inline int32_t qdistance(const uint8_t* row, const QCentre& c) {
#if defined(__AVX512BW__)
  __m512i acc = _mm512_setzero_si512();
  for (int64_t k = 0; k < c.qwidth; k += 32) {
    const __m512i x = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k)));
    const __m512i d = _mm512_sub_epi16(x, _mm512_loadu_si512(c.offset.data() + k));
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(d, d));
  }
  return _mm512_reduce_add_epi32(acc);
#elif defined(__AVX2__)
  __m256i acc = _mm256_setzero_si256();
  for (int64_t k = 0; k < c.qwidth; k += 16) {
    const __m256i x = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k)));
    const __m256i d =
        _mm256_sub_epi16(x, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.offset.data() + k)));
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

#if defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VNNI__)
#define OFDB_KCENTER_BLOCK16 1

// Lane r of the result = sum of the 16 lanes of a[r]: a transpose-and-add tree (45 instructions for 16
// rows instead of a full horizontal reduction per row).
inline __m512i reduce16(const __m512i* a) {
  __m512i v[8], x[4], y[2];
  for (int r = 0; r < 8; ++r) {  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3]
    v[r] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * r], a[2 * r + 1]), _mm512_unpackhi_epi32(a[2 * r], a[2 * r + 1]));
  }
  for (int r = 0; r < 4; ++r) {  // per 128-bit lane: the lane's sums of rows 4r .. 4r + 3
    x[r] = _mm512_add_epi32(_mm512_unpacklo_epi64(v[2 * r], v[2 * r + 1]), _mm512_unpackhi_epi64(v[2 * r], v[2 * r + 1]));
  }
  for (int r = 0; r < 2; ++r) {  // 128-bit lanes: x[2r](L0+L1), x[2r](L2+L3), x[2r+1](L0+L1), x[2r+1](L2+L3)
    y[r] = _mm512_add_epi32(_mm512_shuffle_i32x4(x[2 * r], x[2 * r + 1], 0x88),
                            _mm512_shuffle_i32x4(x[2 * r], x[2 * r + 1], 0xdd));
  }
  return _mm512_add_epi32(_mm512_shuffle_i32x4(y[0], y[1], 0x88), _mm512_shuffle_i32x4(y[0], y[1], 0xdd));
}

// The prefilter over whole blocks of 16 rows from *j (advanced past them): integer distances by vpdpbusd,
// the skip test and the running argmax / cover max in vectors; the float32 path only for the rows not
// skipped. Same decisions and results as the scalar loop in scan_filtered (its comments hold here): the
// same exact integer distance and float64 inequality; max(cov, s) returns s when either is NaN, like
// std::max(s, cov); lane-wise strict '>' scanning upward plus the lowest index among the best lanes is the
// scalar argmax.
template <class Dist>
inline void block16_scan(const Dist& dist, const float* z, int64_t width, const Prefilter& f, const QCentre& qc,
                         float err_c, int64_t lo, int64_t hi, float* score, float* cov, int64_t* j_io, float* best,
                         int64_t* best_i, float* cover_max) {
  const int64_t n_blocks = (hi - lo) / 16;
  if (n_blocks == 0) return;
  const double keep = static_cast<double>(f.scale) * (1.0 - f.rel);
  const __m512d keep2 = _mm512_set1_pd(keep * keep), grow = _mm512_set1_pd(1.0 + f.rel);
  const __m512d tiny = _mm512_set1_pd(static_cast<double>(kTinyDistance));
  const __m512d errc = _mm512_set1_pd(static_cast<double>(err_c));
  // |q_i - q_c|^2 = norm2_i + (norm2_c + 256 sum_c) - 2 (u_i . q_c)
  const __m512i centre_terms = _mm512_set1_epi32(qc.norm2 + 256 * qc.sum);
  __m512 vbest = _mm512_set1_ps(-1.0f);
  __m512i vblock = _mm512_set1_epi32(-1);  // block number (relative to lo) of each lane's best
  __m512 vcover = _mm512_setzero_ps();
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t j = lo + 16 * b;
    __m512i acc[16];
    for (int r = 0; r < 16; ++r) {
      const uint8_t* row = f.u.data() + (j + r) * f.qwidth;
      __m512i a = _mm512_setzero_si512();
      for (int64_t k = 0; k < f.qwidth; k += kQChunk) {
        a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(row + k), _mm512_loadu_si512(qc.q.data() + k));
      }
      acc[r] = a;
    }
    const __m512i dot = reduce16(acc);
    const __m512i norms = _mm512_loadu_si512(f.norm2.data() + j);
    const __m512i isum = _mm512_sub_epi32(_mm512_add_epi32(norms, centre_terms), _mm512_slli_epi32(dot, 1));
    const __m512 s = _mm512_loadu_ps(score + j);
    const __m512 thr = cov != nullptr ? _mm512_max_ps(_mm512_loadu_ps(cov + j), s) : s;
    const __m512 e = _mm512_loadu_ps(f.err.data() + j);
    unsigned skip = 0;
    for (int h = 0; h < 2; ++h) {
      const __m512d thr_d = _mm512_cvtps_pd(h == 0 ? _mm512_castps512_ps256(thr) : _mm512_extractf32x8_ps(thr, 1));
      const __m512d e_d = _mm512_cvtps_pd(h == 0 ? _mm512_castps512_ps256(e) : _mm512_extractf32x8_ps(e, 1));
      const __m256i is = h == 0 ? _mm512_castsi512_si256(isum) : _mm512_extracti64x4_epi64(isum, 1);
      const __m512d a2 = _mm512_mul_pd(keep2, _mm512_cvtepi32_pd(is));
      const __m512d rhs = _mm512_add_pd(_mm512_max_pd(tiny, _mm512_mul_pd(thr_d, grow)), _mm512_add_pd(e_d, errc));
      skip |= static_cast<unsigned>(_mm512_cmp_pd_mask(a2, _mm512_mul_pd(rhs, rhs), _CMP_GT_OQ)) << (8 * h);
    }
    for (unsigned need = ~skip & 0xffffu; need != 0; need &= need - 1) {
      const int64_t r = j + __builtin_ctz(need);
      const float d = std::sqrt(dist(z + r * width));
      score[r] = std::min(score[r], d);
      if (cov != nullptr) cov[r] = std::min(cov[r], d);
    }
    const __m512 s_new = _mm512_loadu_ps(score + j);
    const __mmask16 gt = _mm512_cmp_ps_mask(s_new, vbest, _CMP_GT_OQ);
    vbest = _mm512_mask_mov_ps(vbest, gt, s_new);
    vblock = _mm512_mask_mov_epi32(vblock, gt, _mm512_set1_epi32(static_cast<int32_t>(b)));
    if (cov != nullptr) vcover = _mm512_max_ps(vcover, _mm512_loadu_ps(cov + j));
  }
  // Across lanes: the largest value, then the lowest row index among the lanes holding it.
  const float top = _mm512_reduce_max_ps(vbest);
  alignas(64) float vals[16];
  alignas(64) int32_t blocks[16];
  _mm512_store_ps(vals, vbest);
  _mm512_store_si512(blocks, vblock);
  for (int r = 0; r < 16; ++r) {
    if (blocks[r] < 0 || !(vals[r] == top)) continue;
    const int64_t idx = lo + 16 * static_cast<int64_t>(blocks[r]) + r;
    if (beats(vals[r], idx, *best, *best_i)) {
      *best = vals[r];
      *best_i = idx;
    }
  }
  *cover_max = std::max(*cover_max, _mm512_reduce_max_ps(vcover));
  *j_io = lo + 16 * n_blocks;
}
#endif

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
  const uint8_t* u = f.u.data();
  const float* err = f.err.data();
  int64_t j = lo;
#if defined(OFDB_KCENTER_BLOCK16)
  block16_scan(dist, z, width, f, qc, err_c, lo, hi, score, cov, &j, &best, &best_i, &cover_max);
#endif
  for (; j < hi; ++j) {
    float s = score[j];
    const float thr = cov != nullptr ? std::max(s, cov[j]) : s;
    const double a2 = keep2 * static_cast<double>(qdistance(u + j * f.qwidth, qc));
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
  std::unique_ptr<SpinBarrier> barrier;

#pragma omp parallel num_threads(n_threads)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
    const int nt = omp_get_num_threads();
#else
    const int tid = 0, nt = 1;
#endif
    const int64_t lo = n * tid / nt, hi = n * (tid + 1) / nt;
#pragma omp single
    barrier = std::make_unique<SpinBarrier>(nt);  // the team size is only known inside the region
    // Each thread widens the centre's int8 row into its own buffer (no sharing, no extra barrier).
    QCentre qc(filter != nullptr ? filter->qwidth : 0);
    int64_t centre = first;
    for (int64_t t = 0; t < n_select; ++t) {
      if (tid == 0) indices[t] = centre;
      const float* c = z + centre * width;
      float err_c = 0.0f;
      if (filter != nullptr) {
        qc.set(*filter, centre);
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
      barrier->wait();
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
