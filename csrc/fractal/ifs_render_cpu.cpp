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

// Advances the chains of `lanes[0..G)` for n points; calls visit(lane, i, x, y) for every kept
// point and sets n_kept (the chain stops at its first non-finite point).
template <int G, class Visit>
void run_chains(Lane* lanes, int K, int64_t n, Visit&& visit) {
  double x[G], y[G];
  uint64_t z[G];
  bool alive[G];
  for (int l = 0; l < G; ++l) {
    x[l] = lanes[l].x0;
    y[l] = lanes[l].y0;
    z[l] = lanes[l].chaos_key;
    alive[l] = true;
    lanes[l].n_kept = n;
  }
  for (int64_t i = 0; i < n; ++i) {
#pragma GCC unroll 8
    for (int l = 0; l < G; ++l) {
      // bits(key, i) = mix64(key + (i + 1) * golden): the SplitMix64 sequence.
      z[l] += rng::kGolden;
      if (!alive[l]) continue;
      const double r = static_cast<double>(rng::mix64(z[l]) >> 11) * rng::kTwoPowMinus53;
      const double* cum = lanes[l].cum;
      int k = 0;
      for (int j = 0; j + 1 < K; ++j) k += cum[j] <= r;
      const double* s = lanes[l].sys + 6 * k;
      const double nx = s[0] * x[l] + s[1] * y[l] + s[2];
      const double ny = s[3] * x[l] + s[4] * y[l] + s[5];
      if (!(finite(nx) && finite(ny))) {
        alive[l] = false;
        lanes[l].n_kept = i;
        continue;
      }
      x[l] = nx;
      y[l] = ny;
      visit(l, i, nx, ny);
    }
  }
}

struct Scratch {
  std::vector<double> xs, ys;  // [kLanes * n] when storing
  std::vector<int32_t> hist;   // [H * W]
  std::vector<double> rows;    // 3 horizontally blurred rows [3 * W * 3]
};

void rasterize_point(const RenderParams& p, const Lane& L, const double* scl, uint16_t mask, double x,
                     double y, int32_t* hist) {
  const int H = p.height, W = p.width;
  const double fr = (x - L.box[0]) * scl[0];
  const double fc = (y - L.box[1]) * scl[1];
  if (!(fr > -1.0 && fr < static_cast<double>(H) && fc > -1.0 && fc < static_cast<double>(W))) return;
  const int r = static_cast<int>(fr), c = static_cast<int>(fc);
  if (!p.patch) {
    ++hist[static_cast<int64_t>(r) * W + c];
    return;
  }
  for (int j = 0; j < 9; ++j) {
    if (!((mask >> j) & 1)) continue;
    const int rr = r + j / 3 - 1, cc = c + j % 3 - 1;
    if (rr >= 0 && rr < H && cc >= 0 && cc < W) ++hist[static_cast<int64_t>(rr) * W + cc];
  }
}

void blur_image(uint8_t* img, int H, int W, double k0, double k1, std::vector<double>& rows) {
  const int RW = 3 * W;
  rows.resize(static_cast<size_t>(3) * RW);
  auto hpass = [&](int r) {
    const uint8_t* src = img + static_cast<int64_t>(r) * RW;
    double* dst = rows.data() + static_cast<int64_t>(r % 3) * RW;
    for (int c = 0; c < W; ++c) {
      const int cl = reflect101(c - 1, W), cr = reflect101(c + 1, W);
      for (int ch = 0; ch < 3; ++ch)
        dst[3 * c + ch] = (k0 * src[3 * cl + ch] + k1 * src[3 * c + ch]) + k0 * src[3 * cr + ch];
    }
  };
  hpass(0);
  if (H > 1) hpass(1);
  for (int r = 0; r < H; ++r) {
    if (r >= 1 && r + 1 < H) hpass(r + 1);  // row r + 1 is still unmodified here
    const double* up = rows.data() + static_cast<int64_t>(reflect101(r - 1, H) % 3) * RW;
    const double* mid = rows.data() + static_cast<int64_t>(r % 3) * RW;
    const double* dn = rows.data() + static_cast<int64_t>(reflect101(r + 1, H) % 3) * RW;
    uint8_t* out = img + static_cast<int64_t>(r) * RW;
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
  bool tr = false, ud = false, lr = false;
  if (p.flips) {
    tr = H == W && rng::u01(aug_key, kAugFlip) > 0.5;
    ud = rng::u01(aug_key, kAugFlip + 1) > 0.5;
    lr = rng::u01(aug_key, kAugFlip + 2) > 0.5;
  }
  uint8_t lut[256 * 3];
  double hue_shift = 0.0;
  int32_t max_count = 1;
  if (p.color) {
    const ColorDraws cd = color_draws(aug_key);
    hue_shift = cd.hue_shift;
    hsv_lut(cd.sat, cd.val, lut);
    const int64_t n_pix = static_cast<int64_t>(H) * W;
    for (int64_t i = 0; i < n_pix; ++i) max_count = std::max(max_count, hist[i]);
  }
  for (int i = 0; i < H; ++i) {
    const int i1 = ud ? H - 1 - i : i;
    uint8_t* orow = out + static_cast<int64_t>(i) * W * 3;
    for (int j = 0; j < W; ++j) {
      const int j1 = lr ? W - 1 - j : j;
      const int32_t n = tr ? hist[static_cast<int64_t>(j1) * W + i1] : hist[static_cast<int64_t>(i1) * W + j1];
      uint8_t* px = orow + 3 * j;
      if (n <= 0) {
        px[0] = px[1] = px[2] = 0;
      } else if (p.color) {
        const uint8_t* c = lut + 3 * hue_index(n, max_count, hue_shift);
        px[0] = c[0];
        px[1] = c[1];
        px[2] = c[2];
      } else {
        px[0] = px[1] = px[2] = 127;
      }
    }
  }
  if (p.blur && rng::u01(aug_key, kAugBlur) > 0.5) {
    double k0, k1;
    blur_weights(rng::uniform(aug_key, kAugSigma, p.blur_lo, p.blur_hi), &k0, &k1);
    blur_image(out, H, W, k0, k1, scratch.rows);
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
  if (store) {
    scratch.xs.resize(static_cast<size_t>(G) * N);
    scratch.ys.resize(static_cast<size_t>(G) * N);
  }
  double* xs = scratch.xs.data();
  double* ys = scratch.ys.data();
  // Pass 1: the chains, with the tight bounding box (and the points when stored).
  run_chains<G>(lanes, K, N, [&](int l, int64_t i, double x, double y) {
    double* box = lanes[l].box;
    box[0] = x < box[0] ? x : box[0];
    box[1] = y < box[1] ? y : box[1];
    box[2] = x > box[2] ? x : box[2];
    box[3] = y > box[3] ? y : box[3];
    if (store) {
      xs[l * N + i] = x;
      ys[l * N + i] = y;
    }
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
      scratch.hist.resize(static_cast<size_t>(n_pix));
      hist = scratch.hist.data();
    }
    std::memset(hist, 0, sizeof(int32_t) * n_pix);
    const Lane& L = lanes[l];
    if (store) {
      for (int64_t i = 0; i < L.n_kept; ++i)
        rasterize_point(p, L, scl[l], masks[l], xs[l * N + i], ys[l * N + i], hist);
    } else {
      Lane one = L;
      run_chains<1>(&one, K, N, [&](int, int64_t, double x, double y) {
        rasterize_point(p, L, scl[l], masks[l], x, y, hist);
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
    Scratch scratch;
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
  }
}

}  // namespace ifs
}  // namespace ofdb
