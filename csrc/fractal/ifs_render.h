// ifs_render: IFS chaos game -> window -> raster -> flips -> HSV colour -> blur, one image per system.
//
// The spec is python/ofdb_fast/reference/ifs_render.py (module docstring); this header holds the
// parameter struct, the declarations and the per-image math shared by the C++ and CUDA backends.
// Every floating-point expression keeps the reference's operation order. Host code is built with
// -ffp-contract=off; device code uses the explicitly rounded intrinsics below, so it does not fuse
// either (only exp() differs between host and device).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/macros.h"
#include "common/rng.h"

namespace ofdb {
namespace ifs {

// AUGMENT stream counter slots (mirror of AUG_* in reference/ifs_render.py).
constexpr uint64_t kAugTranslate = 0;  // 0: x, 1: y
constexpr uint64_t kAugScale = 2;      // 2: x, 3: y
constexpr uint64_t kAugFlip = 4;       // 4: transpose, 5: vertical, 6: horizontal
constexpr uint64_t kAugHue = 7;
constexpr uint64_t kAugSat = 8;
constexpr uint64_t kAugVal = 9;
constexpr uint64_t kAugBlur = 10;
constexpr uint64_t kAugSigma = 11;

// BACKGROUND stream counter slots (mirror of BG_* in reference/ifs_render.py).
constexpr uint64_t kBgColor = 0;   // 0..5: hue_scale, hue_shift, sat_scale, sat_shift, val_scale, val_shift
constexpr uint64_t kBgDecay = 6;
constexpr uint64_t kBgCorner = 7;  // 7..10
constexpr uint64_t kBgNoise = 11;  // then one draw per visited grid point

constexpr int kMaxMaps = 32;  // K limit (Python validates K <= kMaxMaps)

struct RenderParams {
  int64_t n_images = 0;    // B
  int n_max_maps = 1;      // K
  int64_t n_points = 0;    // chaos-game points per image
  int height = 1, width = 1;
  uint64_t seed = 0;
  bool jitter = true;
  double jitter_lo = 0.8, jitter_hi = 1.1;
  int jitter_tries = 4;
  double translate = 0.2;  // 0 disables
  bool scale = true;
  double scale_lo = 0.5, scale_hi = 2.0;
  bool flips = true, color = true, patch = false, background = false, blur = true;
  double blur_lo = 0.5, blur_hi = 1.0;
  bool has_probs = false;
  bool counts_only = false;  // output "counts": int32 [B, H, W], else uint8 [B, H, W, 3]
};

// CPU: systems [B, K, 2, 3] f64, n_maps [B] i64, image_ids [B] i64, probs [B, K] f64 or nullptr,
// out: counts [B, H, W] i32 when p.counts_only else rgb [B, H, W, 3] u8. OpenMP over images.
void ifs_render_cpu(const RenderParams& p, const double* systems, const int64_t* n_maps,
                    const int64_t* image_ids, const double* probs, int32_t* counts, uint8_t* rgb);

#ifdef OFDB_WITH_CUDA
// CUDA: the same arguments as device pointers of device `device`; `counts` is int32 [B, H, W]
// (the output when counts_only, else scratch); everything runs on `stream` of that device
// (asynchronous).
void ifs_render_cuda(const RenderParams& p, uintptr_t systems, uintptr_t n_maps, uintptr_t image_ids,
                     uintptr_t probs, uintptr_t counts, uintptr_t rgb, int device, uintptr_t stream);
#endif

// --------------------------------------------------------------------------- exact arithmetic
#if defined(__CUDA_ARCH__)
OFDB_HD double dmul(double a, double b) { return __dmul_rn(a, b); }
OFDB_HD double dadd(double a, double b) { return __dadd_rn(a, b); }
OFDB_HD double dsub(double a, double b) { return __dsub_rn(a, b); }
OFDB_HD double ddiv(double a, double b) { return __ddiv_rn(a, b); }
OFDB_HD float fmul(float a, float b) { return __fmul_rn(a, b); }
OFDB_HD float fsub(float a, float b) { return __fsub_rn(a, b); }
OFDB_HD float ffma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
#else
OFDB_HD double dmul(double a, double b) { return a * b; }
OFDB_HD double dadd(double a, double b) { return a + b; }
OFDB_HD double dsub(double a, double b) { return a - b; }
OFDB_HD double ddiv(double a, double b) { return a / b; }
OFDB_HD float fmul(float a, float b) { return a * b; }
OFDB_HD float fsub(float a, float b) { return a - b; }
OFDB_HD float ffma(float a, float b, float c) { return std::fma(a, b, c); }
#endif

// rng::uniform with the reference's rounding on every backend (no fma contraction on device).
OFDB_HD double uniform(uint64_t key, uint64_t counter, double lo, double hi) {
  return dadd(lo, dmul(dsub(hi, lo), rng::u01(key, counter)));
}

OFDB_HD bool finite(double v) { return v - v == 0.0; }  // false for inf and NaN

// Largest singular value of [[a, b], [c, d]].
OFDB_HD double sigma_max(double a, double b, double c, double d) {
  const double s = dadd(a, d), t = dsub(b, c), u = dsub(a, d), v = dadd(b, c);
  const double p = dadd(dmul(s, s), dmul(t, t));
  const double q = dadd(dmul(u, u), dmul(v, v));
  return dmul(dadd(sqrt(p), sqrt(q)), 0.5);
}

// Steps 1-2 for one image: jittered system `sys` [K*6] (rows a, b, e, c, d, f) and cumulative
// probabilities `cum` [K] padded with +inf from index n - 1 on (map choice = number of cum <= r).
OFDB_HD void prepare_system(const RenderParams& p, const double* in, int n, uint64_t image_id,
                            const double* probs, double* sys, double* cum) {
  const int K = p.n_max_maps;
  for (int i = 0; i < K * 6; ++i) sys[i] = in[i];
  if (p.jitter) {
    const uint64_t key = rng::stream_key(p.seed, rng::kStreamJitter, image_id);
    for (int t = 0; t < p.jitter_tries; ++t) {
      const int k = static_cast<int>(rng::below(key, 2 * static_cast<uint64_t>(t), static_cast<uint32_t>(n)));
      const double factor = uniform(key, 2 * static_cast<uint64_t>(t) + 1, p.jitter_lo, p.jitter_hi);
      bool ok = true;
      for (int j = 0; j < n; ++j) {
        const double* r = in + 6 * j;
        const double f = j == k ? factor : 1.0;
        const double a = j == k ? dmul(r[0], f) : r[0], b = j == k ? dmul(r[1], f) : r[1];
        const double c = j == k ? dmul(r[3], f) : r[3], d = j == k ? dmul(r[4], f) : r[4];
        ok = ok && sigma_max(a, b, c, d) <= 1.0;
      }
      if (ok) {
        for (int i = 0; i < 6; ++i) sys[6 * k + i] = dmul(in[6 * k + i], factor);
        break;
      }
    }
  }
  double run = 0.0;
  if (probs != nullptr) {
    for (int k = 0; k < n; ++k) {
      run = dadd(run, probs[k]);
      cum[k] = run;
    }
  } else {
    double total = 0.0;
    for (int k = 0; k < n; ++k) {
      const double* r = sys + 6 * k;
      total = dadd(total, fabs(dsub(dmul(r[0], r[4]), dmul(r[1], r[3]))));
    }
    const bool ok = finite(total) && total > 0.0;
    for (int k = 0; k < n; ++k) {
      const double* r = sys + 6 * k;
      const double pk = ok ? ddiv(fabs(dsub(dmul(r[0], r[4]), dmul(r[1], r[3]))), total)
                           : ddiv(1.0, static_cast<double>(n));
      run = dadd(run, pk);
      cum[k] = run;
    }
  }
  for (int k = n - 1 < 0 ? 0 : n - 1; k < K; ++k) cum[k] = INFINITY;
}

// Map 0's fixed point, (0, 0) when not finite.
OFDB_HD void fixed_point(const double* s, double* x0, double* y0) {
  const double a = s[0], b = s[1], e = s[2], c = s[3], d = s[4], f = s[5];
  const double det = dsub(dmul(a, d), dmul(b, c));
  const double den = dsub(dsub(dadd(1.0, det), a), d);
  const double x = ddiv(dadd(dmul(dsub(1.0, d), e), dmul(b, f)), den);
  const double y = ddiv(dadd(dmul(dsub(1.0, a), f), dmul(c, e)), den);
  const bool ok = finite(x) && finite(y);
  *x0 = ok ? x : 0.0;
  *y0 = ok ? y : 0.0;
}

// Step 4: window box[4] = (x_lo, y_lo, x_hi, y_hi) from the tight box of the kept points.
OFDB_HD void apply_window(const RenderParams& p, uint64_t aug_key, double* box) {
  if (p.translate == 0.0 && !p.scale) return;
  const double ex = dsub(box[2], box[0]), ey = dsub(box[3], box[1]);
  double cx = ddiv(dadd(box[0], box[2]), 2.0), cy = ddiv(dadd(box[1], box[3]), 2.0);
  if (p.translate != 0.0) {
    const double t = p.translate;
    cx = dadd(cx, dmul(ex, uniform(aug_key, kAugTranslate, -t, t)));
    cy = dadd(cy, dmul(ey, uniform(aug_key, kAugTranslate + 1, -t, t)));
  }
  double hx, hy;
  if (p.scale) {
    hx = ddiv(dmul(ex, uniform(aug_key, kAugScale, p.scale_lo, p.scale_hi)), 2.0);
    hy = ddiv(dmul(ey, uniform(aug_key, kAugScale + 1, p.scale_lo, p.scale_hi)), 2.0);
  } else {
    hx = ddiv(ex, 2.0);
    hy = ddiv(ey, 2.0);
  }
  box[0] = dsub(cx, hx);
  box[1] = dsub(cy, hy);
  box[2] = dadd(cx, hx);
  box[3] = dadd(cy, hy);
}

// Pixel scale (size - 1) / span with span <= 0 -> 1 (NaN stays NaN: such points never land).
OFDB_HD double pixel_scale(double lo, double hi, int size) {
  double span = dsub(hi, lo);
  if (span <= 0.0) span = 1.0;
  return ddiv(static_cast<double>(size - 1), span);
}

// RGB of 8-bit HSV (H, sat, val), OpenCV's vectorised uint8 HSV2RGB (see reference hsv_lut):
// float32, trunc(h), sector wrap, fused 1 - s*f, trunc(x * 255).
OFDB_HD void hsv_entry(int H, int sat, int val, uint8_t* rgb /* [3] */) {
  const float one = 1.0f;
  const float hscale = 6.0f / 180.0f;
  const float inv255 = 1.0f / 255.0f;
  const float s = fmul(static_cast<float>(sat), inv255);
  const float v = fmul(static_cast<float>(val), inv255);
  const float h = fmul(static_cast<float>(H), hscale);
  const float pre = truncf(h);
  const float f = fsub(h, pre);
  const float sector_f = fsub(pre, fmul(truncf(fmul(pre, 1.0f / 6.0f)), 6.0f));
  const int sector = static_cast<int>(sector_f);
  float tab[4];
  tab[0] = v;
  tab[1] = fmul(v, fsub(one, s));
  tab[2] = fmul(v, ffma(-s, f, one));
  tab[3] = fmul(v, ffma(-s, fsub(one, f), one));
  // (r, g, b) indices into tab per sector (OpenCV's table lists (b, g, r)).
  const int idx[6][3] = {{0, 3, 1}, {2, 0, 1}, {1, 0, 3}, {1, 2, 0}, {3, 1, 0}, {0, 1, 2}};
  for (int ch = 0; ch < 3; ++ch) {
    float x = truncf(fmul(tab[idx[sector][ch]], 255.0f));
    x = x < 0.0f ? 0.0f : (x > 255.0f ? 255.0f : x);
    rgb[ch] = static_cast<uint8_t>(x);
  }
}

// 256-entry table of hsv_entry for H = 0..255.
OFDB_HD void hsv_lut(int sat, int val, uint8_t* lut /* [256 * 3] */) {
  for (int H = 0; H < 256; ++H) hsv_entry(H, sat, val, lut + 3 * H);
}

// Per-image colour draws: hue shift, saturation and value (uint8, truncated).
struct ColorDraws {
  double hue_shift;
  int sat, val;
};

OFDB_HD ColorDraws color_draws(uint64_t aug_key) {
  ColorDraws c;
  c.hue_shift = dmul(rng::u01(aug_key, kAugHue), 255.0);
  c.sat = static_cast<int>(dmul(uniform(aug_key, kAugSat, 0.3, 1.0), 255.0));
  c.val = static_cast<int>(dmul(uniform(aug_key, kAugVal, 0.5, 1.0), 255.0));
  return c;
}

// Hue index of a pixel with `count` > 0 hits: floor(count / max * 255 + hue_shift) & 255.
OFDB_HD int hue_index(int32_t count, int32_t max_count, double hue_shift) {
  const double t = dadd(dmul(ddiv(static_cast<double>(count), static_cast<double>(max_count)), 255.0), hue_shift);
  return static_cast<int>(static_cast<int64_t>(floor(t)) & 255);
}

// Normalised 3-tap Gaussian weights (side, centre) for sigma.
OFDB_HD void blur_weights(double sigma, double* k_side, double* k_mid) {
  const double s2 = dmul(dmul(2.0, sigma), sigma);
  const double w = exp(ddiv(-1.0, s2));
  const double total = dadd(dadd(w, 1.0), w);
  *k_side = ddiv(w, total);
  *k_mid = ddiv(1.0, total);
}

// Reflect-101 neighbour of index i in [-1, n] for an axis of length n.
OFDB_HD int reflect101(int i, int n) {
  if (n == 1) return 0;
  if (i < 0) return -i;
  if (i >= n) return 2 * n - 2 - i;
  return i;
}

}  // namespace ifs
}  // namespace ofdb
