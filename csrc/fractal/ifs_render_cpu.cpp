// ifs_render, C++/OpenMP backend. Equals python/ofdb_fast/reference/ifs_render.py bit for bit.
//
// Parallel mapping: OpenMP threads take groups of kLanes = 8 images (schedule(dynamic)); one
// thread runs the whole pipeline of its images. The chaos game is a serial chain per image whose
// step latency (mul + add + add, ~12 cycles) would dominate, so the 8 chains of a group advance in
// lockstep: with AVX-512 (and K <= 4) one chain per double lane (run_chains8), otherwise as
// interleaved scalar code (run_chains). A short last group is padded with copies of its first
// image whose results are discarded. Points go to a per-thread float64 buffer (the bounding box
// needs all of them before rasterising); above kStoreLimit points per image the chain is run
// twice instead (pass 1 box, pass 2 raster; the counter RNG makes the replay exact). The
// histogram is int32 per image; flips, colour LUT and blur then write the uint8 output.
// The colour pass works from the per-row hit extents gathered with the histogram maximum: black
// outside them, only runs of 16 with hits coloured; the scratch histogram is then cleared over
// those extents only. Measured on the shared 2-core Xeon (AVX-512) at 512^2, 100k points, one
// thread: ~0.5 ms/image for counts, ~0.72 ms/image for rgb with the default config (~0.2 ms
// chains, ~0.17 ms raster scatter, ~0.1 ms blur on average, the rest colour and first touches
// of the freshly allocated output).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#endif

#include "fractal/ifs_render.h"

// GCC auto-vectorises with 256-bit registers by default even where AVX-512 is enabled; the
// raster index, blur and histogram reductions here measured ~5% faster per image with 512-bit
// ones (same IEEE operations element by element, so the same bits).
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512")
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ofdb {
namespace ifs {
namespace {

constexpr int kLanes = 8;
constexpr int64_t kStoreLimit = 1 << 18;  // points per image kept in memory (4 MiB per lane)

struct Lane {
  double sys[kMaxMaps * 6];
  double cum[kMaxMaps];
  uint64_t chaos_key;
  double x0, y0;
  int64_t n_kept;
  double box[4];  // x_lo, y_lo, x_hi, y_hi
};

constexpr int kBlock = 512;  // points per lane per chain block

// Advances the chains of lanes[0..G) for n points, kBlock points at a time. Map choices depend
// only on the RNG, so they are computed first for the whole block (vectorised: 64-bit multiply,
// compares against the cumulative probabilities); then the G dependent affine chains advance in
// lockstep. Points are written to dest(l, i0) (x at [0, cnt), y at [kBlock...] see below) and
// sink(l, i0, cnt, xs, ys) is called per lane and block. No finiteness test in the chain: once a
// point is non-finite every later point is too, so the sink finds the first one.
template <int G, class Dest, class Sink>
void run_chains(const Lane* lanes, int K, int64_t n, Dest&& dest, Sink&& sink) {
  alignas(64) double coef[G][kMaxMaps * 6];
  alignas(64) double cum[G][kMaxMaps];
  alignas(64) double r[kBlock];
  alignas(64) uint8_t kk[G][kBlock];
  double x[G], y[G];
  uint64_t key[G];
  for (int l = 0; l < G; ++l) {
    std::memcpy(coef[l], lanes[l].sys, sizeof(double) * 6 * K);
    std::memcpy(cum[l], lanes[l].cum, sizeof(double) * K);
    x[l] = lanes[l].x0;
    y[l] = lanes[l].y0;
    key[l] = lanes[l].chaos_key;
  }
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int cnt = static_cast<int>(std::min<int64_t>(kBlock, n - i0));
    for (int l = 0; l < G; ++l) {
      const uint64_t base = key[l] + static_cast<uint64_t>(i0 + 1) * rng::kGolden;
      for (int t = 0; t < cnt; ++t)
        r[t] = static_cast<double>(rng::mix64(base + static_cast<uint64_t>(t) * rng::kGolden) >> 11) *
               rng::kTwoPowMinus53;
      uint8_t* kl = kk[l];
      for (int t = 0; t < cnt; ++t) kl[t] = 0;
      for (int j = 0; j + 1 < K; ++j) {
        const double c = cum[l][j];
        for (int t = 0; t < cnt; ++t) kl[t] += static_cast<uint8_t>(c <= r[t]);
      }
    }
    double* px[G];
    double* py[G];
    for (int l = 0; l < G; ++l) dest(l, i0, &px[l], &py[l]);
    for (int t = 0; t < cnt; ++t) {
#pragma GCC unroll 8
      for (int l = 0; l < G; ++l) {
        const double* s = coef[l] + 6 * kk[l][t];
        const double nx = s[0] * x[l] + s[1] * y[l] + s[2];
        const double ny = s[3] * x[l] + s[4] * y[l] + s[5];
        x[l] = nx;
        y[l] = ny;
        px[l][t] = nx;
        py[l][t] = ny;
      }
    }
    for (int l = 0; l < G; ++l) sink(l, i0, cnt, px[l], py[l]);
  }
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
constexpr bool kHaveAvx512 = true;

// 8x8 transpose of doubles: rows r[0..8) (r[t] = step t, lanes 0..7) -> r[l] = lane l, steps 0..7.
inline void transpose8(__m512d* r) {
  __m512d t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
  }
  __m512d u[8];
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm512_shuffle_f64x2(t[i], t[i + 2], 0x88);
    u[i + 1] = _mm512_shuffle_f64x2(t[i + 1], t[i + 3], 0x88);
    u[i + 2] = _mm512_shuffle_f64x2(t[i], t[i + 2], 0xDD);
    u[i + 3] = _mm512_shuffle_f64x2(t[i + 1], t[i + 3], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f64x2(u[i], u[i + 4], 0x88);
    r[i + 4] = _mm512_shuffle_f64x2(u[i], u[i + 4], 0xDD);
  }
}

// run_chains for 8 lanes and K <= 4 with one lane per AVX-512 double: the RNG (64-bit multiply),
// map choice (mask compares), coefficient selection (masked moves over the K maps) and the
// affine update all advance the 8 chains together; the same IEEE operations in the same order as
// the scalar code (-ffp-contract=off keeps mul and add separate). Every 8 steps the 8 x 8 tile of
// points is transposed so each lane's points stay contiguous.
template <class Dest, class Sink>
void run_chains8(const Lane* lanes, int K, int64_t n, Dest&& dest, Sink&& sink) {
  alignas(64) double tab[6][4][8];  // [coefficient][map][lane]
  alignas(64) double cm[3][8];      // [j][lane] cumulative probabilities (K - 1 used)
  alignas(64) double x0[8], y0[8];
  alignas(64) uint64_t key[8];
  for (int l = 0; l < 8; ++l) {
    for (int k = 0; k < 4; ++k)
      for (int c = 0; c < 6; ++c) tab[c][k][l] = k < K ? lanes[l].sys[6 * k + c] : 0.0;
    for (int j = 0; j < 3; ++j) cm[j][l] = j + 1 < K ? lanes[l].cum[j] : INFINITY;
    x0[l] = lanes[l].x0;
    y0[l] = lanes[l].y0;
    key[l] = lanes[l].chaos_key;
  }
  __m512d T[6][4];
  for (int c = 0; c < 6; ++c)
    for (int k = 0; k < 4; ++k) T[c][k] = _mm512_load_pd(tab[c][k]);
  const __m512d C0 = _mm512_load_pd(cm[0]), C1 = _mm512_load_pd(cm[1]), C2 = _mm512_load_pd(cm[2]);
  const __m512i golden = _mm512_set1_epi64(static_cast<long long>(rng::kGolden));
  const __m512i m1 = _mm512_set1_epi64(static_cast<long long>(0xBF58476D1CE4E5B9ull));
  const __m512i m2 = _mm512_set1_epi64(static_cast<long long>(0x94D049BB133111EBull));
  const __m512d two53 = _mm512_set1_pd(rng::kTwoPowMinus53);
  __m512i z = _mm512_load_si512(reinterpret_cast<const void*>(key));
  __m512d X = _mm512_load_pd(x0), Y = _mm512_load_pd(y0);
  // Coefficient of map k = #{j : cum_j <= r}: cum is non-decreasing, so the masks m_j = (cum_j <= r)
  // are nested and successive masked moves pick R[k] (blend ports, no cross-lane permutes).
  auto select = [&](const __m512d* R, __mmask8 m0, __mmask8 m1, __mmask8 m2) {
    __m512d v = R[0];
    if (K > 1) v = _mm512_mask_mov_pd(v, m0, R[1]);
    if (K > 2) v = _mm512_mask_mov_pd(v, m1, R[2]);
    if (K > 3) v = _mm512_mask_mov_pd(v, m2, R[3]);
    return v;
  };
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int cnt = static_cast<int>(std::min<int64_t>(kBlock, n - i0));
    double* px[8];
    double* py[8];
    for (int l = 0; l < 8; ++l) dest(l, i0, &px[l], &py[l]);
    for (int t0 = 0; t0 < cnt; t0 += 8) {
      __m512d tx[8], ty[8];
      const int steps = std::min(8, cnt - t0);
      for (int u = 0; u < steps; ++u) {
        z = _mm512_add_epi64(z, golden);  // bits(key, i) = mix64(key + (i + 1) * golden)
        __m512i v = _mm512_xor_si512(z, _mm512_srli_epi64(z, 30));
        v = _mm512_mullo_epi64(v, m1);
        v = _mm512_xor_si512(v, _mm512_srli_epi64(v, 27));
        v = _mm512_mullo_epi64(v, m2);
        v = _mm512_xor_si512(v, _mm512_srli_epi64(v, 31));
        const __m512d r = _mm512_mul_pd(_mm512_cvtepu64_pd(_mm512_srli_epi64(v, 11)), two53);
        const __mmask8 m0 = _mm512_cmp_pd_mask(C0, r, _CMP_LE_OQ);
        const __mmask8 m1 = _mm512_cmp_pd_mask(C1, r, _CMP_LE_OQ);
        const __mmask8 m2 = _mm512_cmp_pd_mask(C2, r, _CMP_LE_OQ);
        const __m512d a = select(T[0], m0, m1, m2), b = select(T[1], m0, m1, m2), e = select(T[2], m0, m1, m2);
        const __m512d c = select(T[3], m0, m1, m2), d = select(T[4], m0, m1, m2), f = select(T[5], m0, m1, m2);
        const __m512d nx = _mm512_add_pd(_mm512_add_pd(_mm512_mul_pd(a, X), _mm512_mul_pd(b, Y)), e);
        const __m512d ny = _mm512_add_pd(_mm512_add_pd(_mm512_mul_pd(c, X), _mm512_mul_pd(d, Y)), f);
        X = nx;
        Y = ny;
        tx[u] = nx;
        ty[u] = ny;
      }
      for (int u = steps; u < 8; ++u) tx[u] = ty[u] = X;
      transpose8(tx);
      transpose8(ty);
      const __mmask8 keep = static_cast<__mmask8>((1u << steps) - 1u);
      for (int l = 0; l < 8; ++l) {
        _mm512_mask_storeu_pd(px[l] + t0, keep, tx[l]);
        _mm512_mask_storeu_pd(py[l] + t0, keep, ty[l]);
      }
    }
    for (int l = 0; l < 8; ++l) sink(l, i0, cnt, px[l], py[l]);
  }
}
#else
constexpr bool kHaveAvx512 = false;
#endif

// Tight bounding box of one lane's block and the first non-finite point; returns false (and sets
// n_kept) once the chain has stopped.
inline bool box_block(Lane& L, int64_t i0, int cnt, const double* xs, const double* ys) {
  double bad = 0.0;
#pragma omp simd reduction(+ : bad)
  for (int t = 0; t < cnt; ++t) bad += (xs[t] - xs[t]) + (ys[t] - ys[t]);  // NaN iff any non-finite
  int m = cnt;
  if (bad != 0.0) {
    m = 0;
    while (finite(xs[m]) && finite(ys[m])) ++m;
  }
  double x_lo = L.box[0], y_lo = L.box[1], x_hi = L.box[2], y_hi = L.box[3];
#pragma omp simd reduction(min : x_lo, y_lo) reduction(max : x_hi, y_hi)
  for (int t = 0; t < m; ++t) {
    x_lo = xs[t] < x_lo ? xs[t] : x_lo;
    y_lo = ys[t] < y_lo ? ys[t] : y_lo;
    x_hi = xs[t] > x_hi ? xs[t] : x_hi;
    y_hi = ys[t] > y_hi ? ys[t] : y_hi;
  }
  L.box[0] = x_lo;
  L.box[1] = y_lo;
  L.box[2] = x_hi;
  L.box[3] = y_hi;
  if (m < cnt) {
    L.n_kept = i0 + m;
    return false;
  }
  return true;
}

// Grow-only uninitialised buffer (std::vector would zero-fill megabytes per call).
template <class T>
struct Buffer {
  std::unique_ptr<T[]> ptr;
  size_t size = 0;
  T* ensure(size_t n) {
    if (n > size) {
      ptr.reset(new T[n]);
      size = n;
    }
    return ptr.get();
  }
  void release() {
    ptr.reset();
    size = 0;
  }
};

// Per-thread scratch, kept across calls (OpenMP threads persist) unless it grew large.
struct Scratch {
  Buffer<double> xs, ys;       // [kLanes * n] when storing, else [kLanes * kBlock]
  Buffer<int32_t> hist;        // [H * W]
  std::vector<double> rows;    // 3 horizontally blurred rows [3 * W * 3]
  size_t hist_zero = 0;        // hist[0, hist_zero) is known to be all zeros (rgb path)
  std::vector<uint32_t> rgb_of;  // packed RGB per hit count [max + 1]
  std::vector<int> hist_ext;   // per hist row: first and one-past-last non-zero column [2 * H]
  std::vector<int> tr_ext;     // transposed output rows: hit column range [2 * H]
  std::vector<double> grid;    // diamond-square grid [g * g]
  std::vector<int> row_ext;  // per output row: first and one-past-last non-black column [2 * H]
};

// Adds the landing points xs/ys[0, cnt) of one image to hist (see reference rasterize).
void rasterize_block(const RenderParams& p, const Lane& L, const double* scl, uint16_t mask, const double* xs,
                     const double* ys, int cnt, int32_t* hist) {
  const int H = p.height, W = p.width;
  const double x_lo = L.box[0], y_lo = L.box[1], sx = scl[0], sy = scl[1];
  const double fH = static_cast<double>(H), fW = static_cast<double>(W);
  alignas(64) int32_t idx[kBlock];
  alignas(64) int32_t rows[kBlock];
  alignas(64) int32_t cols[kBlock];
#pragma omp simd
  for (int t = 0; t < cnt; ++t) {
    const double fr = (xs[t] - x_lo) * sx;
    const double fc = (ys[t] - y_lo) * sy;
    const bool lands = fr > -1.0 && fr < fH && fc > -1.0 && fc < fW;
    const int32_t r = lands ? static_cast<int32_t>(fr) : 0;
    const int32_t c = lands ? static_cast<int32_t>(fc) : 0;
    rows[t] = r;
    cols[t] = c;
    idx[t] = lands ? r * W + c : -1;
  }
  if (!p.patch) {
    // Branch-free: points outside the window (unpredictable when the window crops) count into
    // a throw-away slot, one of 16 so that repeated misses do not form one dependency chain.
    alignas(64) int32_t sink[16];
    for (int t = 0; t < cnt; ++t) {
      int32_t* dst = idx[t] >= 0 ? hist + idx[t] : sink + (t & 15);
      ++*dst;
    }
    return;
  }
  for (int t = 0; t < cnt; ++t) {
    if (idx[t] < 0) continue;
    for (int j = 0; j < 9; ++j) {
      if (!((mask >> j) & 1)) continue;
      const int rr = rows[t] + j / 3 - 1, cc = cols[t] + j % 3 - 1;
      if (rr >= 0 && rr < H && cc >= 0 && cc < W) ++hist[static_cast<int64_t>(rr) * W + cc];
    }
  }
}

// Separable 3x3 blur of a uint8 [H, W, 3] image in place (reference blur3). Black pixels blur to
// exactly 0 (0 * k sums to +0), so only the span of non-black pixels of each row (ext[2r],
// ext[2r + 1]: first and one-past-last non-black column, equal when the row is black) and one
// pixel around it is computed; the 3 horizontal-pass rows keep the range they may hold non-zeros
// in, and stale entries outside a new range are cleared.
void blur_image(uint8_t* img, int H, int W, double k0, double k1, const std::vector<int>& ext,
                std::vector<double>& rows) {
  const int RW = 3 * W;
  rows.assign(static_cast<size_t>(3) * RW, 0.0);
  int slot_lo[3] = {0, 0, 0}, slot_hi[3] = {0, 0, 0};  // element range that may be non-zero
  auto h_at = [&](const uint8_t* src, int i) {  // one element with reflect-101 columns
    const int c = i / 3, ch = i % 3;
    const int cl = reflect101(c - 1, W), cr = reflect101(c + 1, W);
    return (k0 * src[3 * cl + ch] + k1 * src[i]) + k0 * src[3 * cr + ch];
  };
  auto hpass = [&](int r) {
    const int slot = r % 3;
    const uint8_t* src = img + static_cast<int64_t>(r) * RW;
    double* dst = rows.data() + static_cast<int64_t>(slot) * RW;
    int lo = 0, hi = 0;
    if (ext[2 * r] < ext[2 * r + 1]) {
      lo = 3 * std::max(ext[2 * r] - 1, 0);
      hi = 3 * std::min(ext[2 * r + 1] + 1, W);
    }
    for (int i = slot_lo[slot]; i < std::min(slot_hi[slot], lo); ++i) dst[i] = 0.0;
    for (int i = std::max(slot_lo[slot], hi); i < slot_hi[slot]; ++i) dst[i] = 0.0;
    slot_lo[slot] = lo;
    slot_hi[slot] = hi;
    const int in_lo = std::max(lo, 3), in_hi = std::min(hi, RW - 3);
    for (int i = lo; i < std::min(in_lo, hi); ++i) dst[i] = h_at(src, i);
#pragma omp simd
    for (int i = in_lo; i < in_hi; ++i) dst[i] = (k0 * src[i - 3] + k1 * src[i]) + k0 * src[i + 3];
    for (int i = std::max(in_hi, lo); i < hi; ++i) dst[i] = h_at(src, i);
  };
  hpass(0);
  if (H > 1) hpass(1);
  for (int r = 0; r < H; ++r) {
    if (r >= 1 && r + 1 < H) hpass(r + 1);  // row r + 1 is still unmodified here
    const int ru = reflect101(r - 1, H), rd = reflect101(r + 1, H);
    int lo = RW, hi = 0;
    for (const int q : {ru, r, rd}) {
      if (slot_lo[q % 3] < slot_hi[q % 3]) {
        lo = std::min(lo, slot_lo[q % 3]);
        hi = std::max(hi, slot_hi[q % 3]);
      }
    }
    const double* up = rows.data() + static_cast<int64_t>(ru % 3) * RW;
    const double* mid = rows.data() + static_cast<int64_t>(r % 3) * RW;
    const double* dn = rows.data() + static_cast<int64_t>(rd % 3) * RW;
    uint8_t* out = img + static_cast<int64_t>(r) * RW;
#pragma omp simd
    for (int i = lo; i < hi; ++i) {
      double v = std::nearbyint((k0 * up[i] + k1 * mid[i]) + k0 * dn[i]);
      v = std::min(std::max(v, 0.0), 255.0);  // never NaN: same result as the reference clip
      out[i] = static_cast<uint8_t>(v);
    }
  }
}

// Diamond-square noise of one image into grid [g * g], g = 2^ceil(log2(side)) + 1 (reference
// diamond_square: same draws, visiting order and sums).
int diamond_square(uint64_t key, int side, std::vector<double>& grid) {
  int n = 0;
  while ((1 << n) < side) ++n;
  const int g = (1 << n) + 1;
  grid.assign(static_cast<size_t>(g) * g, 0.0);
  auto at = [&](int r, int c) -> double& { return grid[static_cast<size_t>(r) * g + c]; };
  const double decay = uniform(key, kBgDecay, 0.4, 0.8);
  at(0, 0) = rng::u01(key, kBgCorner);
  at(0, g - 1) = rng::u01(key, kBgCorner + 1);
  at(g - 1, 0) = rng::u01(key, kBgCorner + 2);
  at(g - 1, g - 1) = rng::u01(key, kBgCorner + 3);
  uint64_t counter = kBgNoise;
  for (int k = 1; k <= n; ++k) {
    const double m = 0.5 * std::exp(decay * static_cast<double>(1 - k));
    const int h = 1 << (n - k), cnt = 1 << (k - 1);
    for (int a = 0; a < cnt; ++a) {
      for (int b = 0; b < cnt; ++b) {
        const int r = h * (2 * a + 1), c = h * (2 * b + 1);
        const double mean = (((at(r - h, c - h) + at(r - h, c + h)) + at(r + h, c - h)) + at(r + h, c + h)) / 4.0;
        at(r, c) = mean + uniform(key, counter++, -m, m);
      }
    }
    for (int i = 0; i <= (1 << k); ++i) {
      const int r = i * h;
      const int up = r - h >= 0 ? r - h : g - 1 - h, down = r + h <= g - 1 ? r + h : h;
      for (int j = (i % 2 == 0) ? 1 : 0; j <= (1 << k); j += 2) {
        const int c = j * h;
        const int left = c - h >= 0 ? c - h : g - 1 - h, right = c + h <= g - 1 ? c + h : h;
        const double mean = (((at(up, c) + at(down, c)) + at(r, left)) + at(r, right)) / 4.0;
        at(r, c) = mean + uniform(key, counter++, -m, m);
      }
    }
  }
  return g;
}

// Coloured diamond-square background behind the black pixels of out [H, W, 3] (reference
// background_rgb and its composite).
void composite_background(const RenderParams& p, uint64_t key, uint8_t* out, std::vector<double>& grid) {
  const int H = p.height, W = p.width;
  const int g = diamond_square(key, std::max(H, W), grid);
  double d[6];
  const double lo[6] = {0.25, 0.0, 0.1, 0.4, 0.3, 0.4}, hi[6] = {1.0, 1.0, 0.3, 0.6, 0.6, 0.6};
  for (int c = 0; c < 6; ++c) d[c] = uniform(key, kBgColor + c, lo[c], hi[c]) * 255.0;
  for (int i = 0; i < H; ++i) {
    for (int j = 0; j < W; ++j) {
      uint8_t* px = out + (static_cast<int64_t>(i) * W + j) * 3;
      if (px[0] | px[1] | px[2]) continue;
      const double x = grid[static_cast<size_t>(i) * g + j];
      const double s = std::min(x * d[2] + d[3], 255.0), v = std::min(x * d[4] + d[5], 255.0);
      const int hue = static_cast<int>(static_cast<int64_t>(std::floor(x * d[0] + d[1])) & 255);
      const int sat = static_cast<int>(static_cast<int64_t>(std::floor(s)) & 255);
      const int val = static_cast<int>(static_cast<int64_t>(std::floor(v)) & 255);
      hsv_entry(hue, sat, val, px);
    }
  }
}

// Flips, colour and blur of one image from its histogram.
void finish_image(const RenderParams& p, uint64_t aug_key, uint64_t bg_key, int32_t* hist, uint8_t* out,
                  Scratch& scratch) {
  const int H = p.height, W = p.width;
  const int64_t n_pix = static_cast<int64_t>(H) * W;
  bool tr = false, ud = false, lr = false;
  if (p.flips) {
    tr = H == W && rng::u01(aug_key, kAugFlip) > 0.5;
    ud = rng::u01(aug_key, kAugFlip + 1) > 0.5;
    lr = rng::u01(aug_key, kAugFlip + 2) > 0.5;
  }
  // Colour of a pixel with n hits: lut[hue_index(n)]; black (entry 256) for n == 0. The packed
  // RGB is tabulated per n (same formula, so the same bits) unless max_count is huge.
  uint8_t lut[257 * 3];
  double hue_shift = 0.0;
  if (p.color) {
    const ColorDraws cd = color_draws(aug_key);
    hue_shift = cd.hue_shift;
    hsv_lut(cd.sat, cd.val, lut);
  } else {
    for (int c = 0; c < 256 * 3; ++c) lut[c] = 127;
  }
  lut[3 * 256] = lut[3 * 256 + 1] = lut[3 * 256 + 2] = 0;
  // One pass over the histogram: the maximum and, per hist row, the first and one-past-last
  // non-zero column (hext; equal when the row is empty) and their union (the hit bounding box).
  // Everything outside it is black, which lets the colour pass skip most of the image.
  int32_t max_count = 1;
  std::vector<int>& hext = scratch.hist_ext;
  hext.assign(static_cast<size_t>(2) * H, 0);
  int r_lo = H, r_hi = 0, c_lo = W, c_hi = 0;
  for (int r = 0; r < H; ++r) {
    const int32_t* row = hist + static_cast<int64_t>(r) * W;
    int32_t m = 0, any = 0;
#pragma omp simd reduction(max : m) reduction(| : any)
    for (int c = 0; c < W; ++c) {
      m = row[c] > m ? row[c] : m;
      any |= row[c];
    }
    if (any == 0) continue;
    max_count = m > max_count ? m : max_count;
    int f = 0, l = W;
    while (row[f] == 0) ++f;
    while (row[l - 1] == 0) --l;
    hext[2 * r] = f;
    hext[2 * r + 1] = l;
    r_lo = std::min(r_lo, r);
    r_hi = r + 1;
    c_lo = std::min(c_lo, f);
    c_hi = std::max(c_hi, l);
  }
  // Packed RGB per lut entry: a pixel is one 4-byte store (the 4th byte is overwritten by the
  // next pixel or the black fill after the span; the last pixel of a row is stored bytewise).
  uint32_t rgb32[257];
  for (int h = 0; h < 257; ++h)
    rgb32[h] = lut[3 * h] | (static_cast<uint32_t>(lut[3 * h + 1]) << 8) | (static_cast<uint32_t>(lut[3 * h + 2]) << 16);
  const bool tabulated = max_count <= n_pix + 1;
  std::vector<uint32_t>& rgb_of = scratch.rgb_of;
  if (tabulated) {
    rgb_of.resize(static_cast<size_t>(max_count) + 1);
    rgb_of[0] = rgb32[256];
    for (int32_t n = 1; n <= max_count; ++n) rgb_of[n] = rgb32[p.color ? hue_index(n, max_count, hue_shift) : 0];
  }
  const uint32_t* rgb_tab = tabulated ? rgb_of.data() : nullptr;
  auto color_of = [&](int32_t n) -> uint32_t {
    return tabulated ? rgb_tab[n] : rgb32[n > 0 ? hue_index(n, max_count, hue_shift) : 256];
  };
  auto put = [&](uint8_t* orow, int j, uint32_t v) {
    if (j + 1 < W) {
      std::memcpy(orow + 3 * j, &v, 4);
    } else {
      orow[3 * j] = static_cast<uint8_t>(v);
      orow[3 * j + 1] = static_cast<uint8_t>(v >> 8);
      orow[3 * j + 2] = static_cast<uint8_t>(v >> 16);
    }
  };
  std::vector<int>& row_ext = scratch.row_ext;
  row_ext.assign(static_cast<size_t>(2) * H, 0);
  int* ext = row_ext.data();
  if (tr) {
    // Transposed (H == W): output pixel (i, j) is hist (j', i') with i' = ud ? H-1-i : i and
    // j' = lr ? W-1-j : j. Reading the histogram down columns would stride through memory, so
    // the image is filled black and the hits are scattered in hist order instead (3-byte
    // stores: neighbours may already be written).
    std::memset(out, 0, static_cast<size_t>(3) * n_pix);
    // Raw restrict pointers: the byte stores into out would otherwise force the compiler to
    // reload every vector's data pointer (through the thread_local scratch) after each store.
    scratch.tr_ext.assign(static_cast<size_t>(2) * H, 0);
    int* __restrict lo_hi = scratch.tr_ext.data();
    const int* __restrict hx = hext.data();
    const uint32_t* __restrict tab = rgb_tab;
    uint8_t* __restrict img = out;
    for (int i = 0; i < H; ++i) lo_hi[2 * i] = W;
    for (int r = r_lo; r < r_hi; ++r) {
      const int32_t* __restrict hrow = hist + static_cast<int64_t>(r) * W;
      const int j = lr ? W - 1 - r : r;
      const int c_end = hx[2 * r + 1];
      for (int c = hx[2 * r]; c < c_end; ++c) {
        const int32_t n = hrow[c];
        if (n == 0) continue;
        const int i = ud ? H - 1 - c : c;
        const uint32_t v = tab != nullptr ? tab[n] : color_of(n);
        uint8_t* px = img + (static_cast<int64_t>(i) * W + j) * 3;
        px[0] = static_cast<uint8_t>(v);
        px[1] = static_cast<uint8_t>(v >> 8);
        px[2] = static_cast<uint8_t>(v >> 16);
        lo_hi[2 * i] = std::min(lo_hi[2 * i], j);
        lo_hi[2 * i + 1] = std::max(lo_hi[2 * i + 1], j + 1);
      }
    }
    for (int i = 0; i < H; ++i) {
      const bool any = lo_hi[2 * i] < lo_hi[2 * i + 1];
      ext[2 * i] = any ? lo_hi[2 * i] : 0;
      ext[2 * i + 1] = any ? lo_hi[2 * i + 1] : 0;
    }
  } else {
    for (int i = 0; i < H; ++i) {
      const int i1 = ud ? H - 1 - i : i;
      uint8_t* orow = out + static_cast<int64_t>(i) * W * 3;
      // Output columns [a, b) between the row's first and last hit; the rest is black.
      int a = 0, b = 0;
      if (hext[2 * i1] < hext[2 * i1 + 1]) {
        a = lr ? W - hext[2 * i1 + 1] : hext[2 * i1];
        b = lr ? W - hext[2 * i1] : hext[2 * i1 + 1];
      }
      std::memset(orow, 0, static_cast<size_t>(3) * a);
      // Flipped rows read the hist row backwards. Runs of 16 empty pixels are filled black
      // without the table lookups.
      const int32_t* hrow = hist + static_cast<int64_t>(i1) * W;
      for (int j0 = a; j0 < b; j0 += 16) {
        const int cnt = std::min(16, b - j0);
        const int32_t* base = lr ? hrow + (W - j0 - cnt) : hrow + j0;
        int32_t any = 0;
        for (int t = 0; t < cnt; ++t) any |= base[t];
        if (any == 0) {
          std::memset(orow + 3 * j0, 0, static_cast<size_t>(3) * cnt);
          continue;
        }
        for (int j = j0; j < j0 + cnt; ++j) put(orow, j, color_of(hrow[lr ? W - 1 - j : j]));
      }
      std::memset(orow + 3 * b, 0, static_cast<size_t>(3) * (W - b));
      ext[2 * i] = a;
      ext[2 * i + 1] = b;
    }
  }
  // The histogram is per-thread scratch here: clear exactly the hits so the next image starts
  // from zeros without a full memset.
  for (int r = r_lo; r < r_hi; ++r)
    if (hext[2 * r] < hext[2 * r + 1])
      std::memset(hist + static_cast<int64_t>(r) * W + hext[2 * r], 0, sizeof(int32_t) * (hext[2 * r + 1] - hext[2 * r]));
  if (p.background) {
    composite_background(p, bg_key, out, scratch.grid);
    for (int i = 0; i < H; ++i) {
      ext[2 * i] = 0;
      ext[2 * i + 1] = W;
    }
  }
  if (p.blur && rng::u01(aug_key, kAugBlur) > 0.5) {
    double k0, k1;
    blur_weights(uniform(aug_key, kAugSigma, p.blur_lo, p.blur_hi), &k0, &k1);
    blur_image(out, H, W, k0, k1, row_ext, scratch.rows);
  }
}

// Renders images b0 .. b0 + m - 1 (m <= G); lanes m .. G - 1 repeat image b0 and are discarded.
template <int G>
void render_group(const RenderParams& p, const double* systems, const int64_t* n_maps,
                  const int64_t* image_ids, const double* probs, int64_t b0, int m, int32_t* counts,
                  uint8_t* rgb, Scratch& scratch) {
  const int K = p.n_max_maps, H = p.height, W = p.width;
  const int64_t N = p.n_points, n_pix = static_cast<int64_t>(H) * W;
  Lane lanes[G];
  uint16_t masks[G];
  for (int l = 0; l < G; ++l) {
    const int64_t b = b0 + (l < m ? l : 0);
    Lane& L = lanes[l];
    prepare_system(p, systems + b * K * 6, static_cast<int>(n_maps[b]), static_cast<uint64_t>(image_ids[b]),
                   probs != nullptr ? probs + b * K : nullptr, L.sys, L.cum);
    fixed_point(L.sys, &L.x0, &L.y0);
    L.chaos_key = rng::stream_key(p.seed, rng::kStreamChaos, static_cast<uint64_t>(image_ids[b]));
    L.box[0] = L.box[1] = INFINITY;
    L.box[2] = L.box[3] = -INFINITY;
    masks[l] = 0;
    if (p.patch) {
      const uint64_t pk = rng::stream_key(p.seed, rng::kStreamPatch, static_cast<uint64_t>(image_ids[b]));
      for (int j = 0; j < 9; ++j) masks[l] |= static_cast<uint16_t>(rng::below(pk, j, 2) << j);
    }
  }
  const bool store = N <= kStoreLimit;
  const int64_t stride = store ? N : kBlock;  // per-lane storage: all points, or one block
  double* xs = scratch.xs.ensure(static_cast<size_t>(G) * stride);
  double* ys = scratch.ys.ensure(static_cast<size_t>(G) * stride);
  auto dest = [&](int l, int64_t i0, double** px, double** py) {
    *px = xs + l * stride + (store ? i0 : 0);
    *py = ys + l * stride + (store ? i0 : 0);
  };
  // Pass 1: the chains and the tight bounding boxes (and the points when stored).
  bool alive[G];
  for (int l = 0; l < G; ++l) {
    alive[l] = true;
    lanes[l].n_kept = N;
  }
  auto sink = [&](int l, int64_t i0, int cnt, const double* bx, const double* by) {
    if (alive[l] && l < m) alive[l] = box_block(lanes[l], i0, cnt, bx, by);
  };
  if constexpr (G == 8 && kHaveAvx512) {
    if (K <= 4) {
      run_chains8(lanes, K, N, dest, sink);
    } else {
      run_chains<G>(lanes, K, N, dest, sink);
    }
  } else {
    run_chains<G>(lanes, K, N, dest, sink);
  }
  double scl[G][2];
  for (int l = 0; l < m; ++l) {
    Lane& L = lanes[l];
    if (L.n_kept == 0) L.box[0] = L.box[1] = L.box[2] = L.box[3] = 0.0;
    const uint64_t aug = rng::stream_key(p.seed, rng::kStreamAugment, static_cast<uint64_t>(image_ids[b0 + l]));
    apply_window(p, aug, L.box);
    scl[l][0] = pixel_scale(L.box[0], L.box[2], H);
    scl[l][1] = pixel_scale(L.box[1], L.box[3], W);
  }
  // Pass 2 per image: raster (from the stored points or a replayed chain), then finish.
  for (int l = 0; l < m; ++l) {
    const int64_t b = b0 + l;
    int32_t* hist;
    if (p.counts_only) {
      hist = counts + b * n_pix;
      std::memset(hist, 0, sizeof(int32_t) * n_pix);
    } else {
      // finish_image leaves the scratch histogram zeroed again, so only fresh memory is cleared.
      const size_t had = scratch.hist.size;
      hist = scratch.hist.ensure(static_cast<size_t>(n_pix));
      if (scratch.hist.size != had) scratch.hist_zero = 0;
      if (scratch.hist_zero < static_cast<size_t>(n_pix)) {
        std::memset(hist, 0, sizeof(int32_t) * n_pix);
        scratch.hist_zero = static_cast<size_t>(n_pix);
      }
    }
    const Lane& L = lanes[l];
    if (store) {
      for (int64_t i0 = 0; i0 < L.n_kept; i0 += kBlock)
        rasterize_block(p, L, scl[l], masks[l], xs + l * N + i0, ys + l * N + i0,
                        static_cast<int>(std::min<int64_t>(kBlock, L.n_kept - i0)), hist);
    } else {
      run_chains<1>(&L, K, L.n_kept, [&](int, int64_t, double** px, double** py) {
        *px = xs;
        *py = ys;
      }, [&](int, int64_t, int cnt, const double* bx, const double* by) {
        rasterize_block(p, L, scl[l], masks[l], bx, by, cnt, hist);
      });
    }
    if (!p.counts_only) {
      const uint64_t aug = rng::stream_key(p.seed, rng::kStreamAugment, static_cast<uint64_t>(image_ids[b]));
      const uint64_t bg = rng::stream_key(p.seed, rng::kStreamBackground, static_cast<uint64_t>(image_ids[b]));
      finish_image(p, aug, bg, hist, rgb + b * n_pix * 3, scratch);
    }
  }
}

}  // namespace

void ifs_render_cpu(const RenderParams& p, const double* systems, const int64_t* n_maps,
                    const int64_t* image_ids, const double* probs, int32_t* counts, uint8_t* rgb) {
  OFDB_CHECK(p.n_max_maps >= 1 && p.n_max_maps <= kMaxMaps, "ifs_render: K must be in 1..32");
  OFDB_CHECK(p.height >= 1 && p.width >= 1 && p.n_points >= 1, "ifs_render: bad size or n_points");
  for (int64_t b = 0; b < p.n_images; ++b)
    OFDB_CHECK(n_maps[b] >= 1 && n_maps[b] <= p.n_max_maps, "ifs_render: n_maps must be in 1..K");
  const int64_t n_groups = (p.n_images + kLanes - 1) / kLanes;
#pragma omp parallel
  {
    static thread_local Scratch scratch;
#pragma omp for schedule(dynamic, 1)
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t b0 = g * kLanes;
      const int64_t m = std::min<int64_t>(kLanes, p.n_images - b0);
      if (kHaveAvx512 || m > kLanes / 2) {
        render_group<kLanes>(p, systems, n_maps, image_ids, probs, b0, static_cast<int>(m), counts, rgb, scratch);
      } else if (m > 2) {
        render_group<kLanes / 2>(p, systems, n_maps, image_ids, probs, b0, static_cast<int>(m), counts, rgb, scratch);
      } else {
        render_group<2>(p, systems, n_maps, image_ids, probs, b0, static_cast<int>(m), counts, rgb, scratch);
      }
    }
    constexpr size_t kKeepBytes = size_t(64) << 20;  // do not hold more than this between calls
    if (scratch.xs.size * sizeof(double) * 2 > kKeepBytes) {
      scratch.xs.release();
      scratch.ys.release();
    }
    if (scratch.hist.size * sizeof(int32_t) > kKeepBytes) {
      scratch.hist.release();
      scratch.hist_zero = 0;
    }
  }
}

}  // namespace ifs
}  // namespace ofdb
