// ifs_render, C++/OpenMP backend. Equals python/ofdb_fast/reference/ifs_render.py bit for bit.
//
// Parallel mapping: OpenMP threads take groups of kLanes images (schedule(dynamic)); one thread runs
// the whole pipeline of its images. The chaos game is a serial chain per image whose step latency
// (mul + add + add, ~12 cycles) would dominate, so the kLanes chains of a group advance in lockstep:
// their independent steps overlap in the out-of-order core. Points go to a per-thread float64
// buffer (bbox needs all of them before rasterising); above kStoreLimit points per image the chain
// is run twice instead (pass 1 bbox, pass 2 raster; the counter RNG makes the replay exact).
// The histogram is int32 per image; flips, colour LUT and blur then write the uint8 output.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "fractal/ifs_render.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ofdb {
namespace ifs {
namespace {

constexpr int kLanes = 4;
constexpr int64_t kStoreLimit = 1 << 21;  // points per image kept in memory (32 MiB per lane)

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
  std::vector<uint16_t> hue_of;  // lut entry per hit count [max + 1] (256: black)
  std::vector<uint8_t> row_nz;  // output row has a non-black pixel [H]
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
    for (int t = 0; t < cnt; ++t)
      if (idx[t] >= 0) ++hist[idx[t]];
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

// Separable 3x3 blur of a uint8 [H, W, 3] image in place (reference blur3). Rows whose 3-row
// neighbourhood is black stay black (0 * k sums to exactly 0), so they are skipped.
void blur_image(uint8_t* img, int H, int W, double k0, double k1, const std::vector<uint8_t>& row_nz,
                std::vector<double>& rows) {
  const int RW = 3 * W;
  rows.resize(static_cast<size_t>(3) * RW);
  auto hpass = [&](int r) {
    const uint8_t* src = img + static_cast<int64_t>(r) * RW;
    double* dst = rows.data() + static_cast<int64_t>(r % 3) * RW;
    if (!row_nz[r]) {
      std::memset(dst, 0, sizeof(double) * RW);
      return;
    }
    if (W == 1) {
      for (int ch = 0; ch < 3; ++ch) dst[ch] = (k0 * src[ch] + k1 * src[ch]) + k0 * src[ch];
      return;
    }
    for (int ch = 0; ch < 3; ++ch) {  // borders: reflect-101
      dst[ch] = (k0 * src[3 + ch] + k1 * src[ch]) + k0 * src[3 + ch];
      const int e = RW - 3 + ch;
      dst[e] = (k0 * src[e - 3] + k1 * src[e]) + k0 * src[e - 3];
    }
#pragma omp simd
    for (int i = 3; i < RW - 3; ++i) dst[i] = (k0 * src[i - 3] + k1 * src[i]) + k0 * src[i + 3];
  };
  hpass(0);
  if (H > 1) hpass(1);
  for (int r = 0; r < H; ++r) {
    if (r >= 1 && r + 1 < H) hpass(r + 1);  // row r + 1 is still unmodified here
    const int ru = reflect101(r - 1, H), rd = reflect101(r + 1, H);
    if (!(row_nz[ru] || row_nz[r] || row_nz[rd])) continue;
    const double* up = rows.data() + static_cast<int64_t>(ru % 3) * RW;
    const double* mid = rows.data() + static_cast<int64_t>(r % 3) * RW;
    const double* dn = rows.data() + static_cast<int64_t>(rd % 3) * RW;
    uint8_t* out = img + static_cast<int64_t>(r) * RW;
#pragma omp simd
    for (int i = 0; i < RW; ++i) {
      double v = std::nearbyint((k0 * up[i] + k1 * mid[i]) + k0 * dn[i]);
      v = v < 0.0 ? 0.0 : (v > 255.0 ? 255.0 : v);
      out[i] = static_cast<uint8_t>(v);
    }
  }
}

// Flips, colour and blur of one image from its histogram.
void finish_image(const RenderParams& p, uint64_t aug_key, const int32_t* hist, uint8_t* out,
                  Scratch& scratch) {
  const int H = p.height, W = p.width;
  const int64_t n_pix = static_cast<int64_t>(H) * W;
  bool tr = false, ud = false, lr = false;
  if (p.flips) {
    tr = H == W && rng::u01(aug_key, kAugFlip) > 0.5;
    ud = rng::u01(aug_key, kAugFlip + 1) > 0.5;
    lr = rng::u01(aug_key, kAugFlip + 2) > 0.5;
  }
  // Colour of a pixel with n hits: lut[hue_index(n)]; black (entry 256) for n == 0. The hue is
  // tabulated per n (same formula, so the same bits) unless max_count is huge.
  uint8_t lut[257 * 3];
  double hue_shift = 0.0;
  int32_t max_count = 1;
  std::vector<uint16_t>& hue_of = scratch.hue_of;
  if (p.color) {
    const ColorDraws cd = color_draws(aug_key);
    hue_shift = cd.hue_shift;
    hsv_lut(cd.sat, cd.val, lut);
  } else {
    for (int c = 0; c < 256 * 3; ++c) lut[c] = 127;
  }
  lut[3 * 256] = lut[3 * 256 + 1] = lut[3 * 256 + 2] = 0;
#pragma omp simd reduction(max : max_count)
  for (int64_t i = 0; i < n_pix; ++i) max_count = hist[i] > max_count ? hist[i] : max_count;
  const bool tabulated = max_count <= n_pix + 1;
  if (tabulated) {
    hue_of.resize(static_cast<size_t>(max_count) + 1);
    hue_of[0] = 256;
    for (int32_t n = 1; n <= max_count; ++n)
      hue_of[n] = static_cast<uint16_t>(p.color ? hue_index(n, max_count, hue_shift) : 0);
  }
  std::vector<uint8_t>& row_nz = scratch.row_nz;
  row_nz.assign(static_cast<size_t>(H), 0);
  const int64_t cstride = tr ? W : 1;  // hist step along an output row (transposed: down a column)
  const int64_t rstride = tr ? 1 : W;
  // Packed RGB per lut entry: a pixel is one 4-byte store (the 4th byte is overwritten by the
  // next pixel; the last pixel of a row is stored bytewise).
  uint32_t rgb32[257];
  for (int h = 0; h < 257; ++h)
    rgb32[h] = lut[3 * h] | (static_cast<uint32_t>(lut[3 * h + 1]) << 8) | (static_cast<uint32_t>(lut[3 * h + 2]) << 16);
  const uint16_t* hue_tab = tabulated ? hue_of.data() : nullptr;
  uint8_t* nz = row_nz.data();
  for (int i = 0; i < H; ++i) {
    const int i1 = ud ? H - 1 - i : i;
    const int32_t* src = hist + i1 * rstride + (lr ? (W - 1) * cstride : 0);
    const int64_t step = lr ? -cstride : cstride;
    uint8_t* orow = out + static_cast<int64_t>(i) * W * 3;
    int32_t any = 0;
    for (int j = 0; j < W; ++j) {
      const int32_t n = src[j * step];
      any |= n;
      const int h = tabulated ? hue_tab[n] : (n > 0 ? hue_index(n, max_count, hue_shift) : 256);
      const uint32_t v = rgb32[h];
      if (j + 1 < W) {
        std::memcpy(orow + 3 * j, &v, 4);
      } else {
        orow[3 * j] = static_cast<uint8_t>(v);
        orow[3 * j + 1] = static_cast<uint8_t>(v >> 8);
        orow[3 * j + 2] = static_cast<uint8_t>(v >> 16);
      }
    }
    nz[i] = any != 0;
  }
  if (p.blur && rng::u01(aug_key, kAugBlur) > 0.5) {
    double k0, k1;
    blur_weights(uniform(aug_key, kAugSigma, p.blur_lo, p.blur_hi), &k0, &k1);
    blur_image(out, H, W, k0, k1, row_nz, scratch.rows);
  }
}

template <int G>
void render_group(const RenderParams& p, const double* systems, const int64_t* n_maps,
                  const int64_t* image_ids, const double* probs, int64_t b0, int32_t* counts,
                  uint8_t* rgb, Scratch& scratch) {
  const int K = p.n_max_maps, H = p.height, W = p.width;
  const int64_t N = p.n_points, n_pix = static_cast<int64_t>(H) * W;
  Lane lanes[G];
  uint16_t masks[G];
  for (int l = 0; l < G; ++l) {
    const int64_t b = b0 + l;
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
  run_chains<G>(lanes, K, N, dest, [&](int l, int64_t i0, int cnt, const double* bx, const double* by) {
    if (alive[l]) alive[l] = box_block(lanes[l], i0, cnt, bx, by);
  });
  double scl[G][2];
  for (int l = 0; l < G; ++l) {
    Lane& L = lanes[l];
    if (L.n_kept == 0) L.box[0] = L.box[1] = L.box[2] = L.box[3] = 0.0;
    const uint64_t aug = rng::stream_key(p.seed, rng::kStreamAugment, static_cast<uint64_t>(image_ids[b0 + l]));
    apply_window(p, aug, L.box);
    scl[l][0] = pixel_scale(L.box[0], L.box[2], H);
    scl[l][1] = pixel_scale(L.box[1], L.box[3], W);
  }
  // Pass 2 per image: raster (from the stored points or a replayed chain), then finish.
  for (int l = 0; l < G; ++l) {
    const int64_t b = b0 + l;
    int32_t* hist;
    if (p.counts_only) {
      hist = counts + b * n_pix;
    } else {
      hist = scratch.hist.ensure(static_cast<size_t>(n_pix));
    }
    std::memset(hist, 0, sizeof(int32_t) * n_pix);
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
      finish_image(p, aug, hist, rgb + b * n_pix * 3, scratch);
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
      switch (m) {
        case 4: render_group<4>(p, systems, n_maps, image_ids, probs, b0, counts, rgb, scratch); break;
        case 3: render_group<3>(p, systems, n_maps, image_ids, probs, b0, counts, rgb, scratch); break;
        case 2: render_group<2>(p, systems, n_maps, image_ids, probs, b0, counts, rgb, scratch); break;
        default: render_group<1>(p, systems, n_maps, image_ids, probs, b0, counts, rgb, scratch); break;
      }
    }
    constexpr size_t kKeepBytes = size_t(64) << 20;  // do not hold more than this between calls
    if (scratch.xs.size * sizeof(double) * 2 > kKeepBytes) {
      scratch.xs.release();
      scratch.ys.release();
    }
    if (scratch.hist.size * sizeof(int32_t) > kKeepBytes) scratch.hist.release();
  }
}

}  // namespace ifs
}  // namespace ofdb
