// ifs_render, CUDA backend: a mirror of ifs_render_cpu.cpp (spec: reference/ifs_render.py).
//
// Parallel mapping:
//   1. chain_box_kernel: one thread per image. Jitter + probabilities (prepare_system), the
//      chaos-game chain with its tight bounding box and first non-finite point, then the window;
//      results go to a per-image State in stream-ordered scratch memory.
//   2. chain_raster_kernel: one thread per image replays the chain (the counter RNG makes the
//      replay exact; no 100k-point buffer per image) and atomicAdds its hits (and patch splats)
//      into the int32 counts [B, H, W] in global memory.
//      Both chains run in groups of kUnroll steps whose draws (RNG, map choice, coefficients)
//      come first, so a thread overlaps them (run_chain). Throughput therefore wants thousands of
//      images per call: one thread per image is the only parallelism across chains.
//   3. (rgb) max_count_kernel: per-image maximum by atomicMax; finish_kernel: one thread per
//      output pixel; each block builds the image's 256-entry HSV table in shared memory, the
//      pixel colour is a pure function of the counts (flips, hue), and the blur recomputes the
//      3x3 neighbourhood's colours and applies the same float64 expression order as C++.
// Numerics: the chain, window, raster and colour use the explicitly rounded intrinsics of
// ifs_render.h (no fma contraction), so they equal C++ bit for bit; only exp() in the blur
// weights may differ in the last ulp, which can move a rare rounding of a blurred pixel.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/cuda_utils.cuh"
#include "fractal/ifs_render.h"

namespace ofdb {
namespace ifs {
namespace {

constexpr int64_t kMaxGridY = 65535;  // CUDA's limit on gridDim.y

struct State {
  double box[4];   // window (x_lo, y_lo, x_hi, y_hi)
  double scl[2];   // pixel scales (rows, columns)
  long long n_kept;
  int max_count;
};

__device__ void load_image(const RenderParams& p, const double* systems, const int64_t* n_maps,
                           const int64_t* image_ids, const double* probs, int64_t b, double* sys, double* cum) {
  const int K = p.n_max_maps;
  prepare_system(p, systems + b * K * 6, static_cast<int>(n_maps[b]), static_cast<uint64_t>(image_ids[b]),
                 p.has_probs ? probs + b * K : nullptr, sys, cum);
}

// The chain in groups of kUnroll steps. A step's map choice (counter RNG, cumulative search) and
// its map's six coefficients do not depend on the chain's point, only the two multiply-adds do,
// so each group first draws all of its steps in straight-line code (the kUnroll RNG hashes side
// by side, one pass over the cumulative table for all of them, then the coefficient loads:
// independent work the GPU overlaps), then applies them in order. One thread runs one image's
// whole chain, so this instruction-level overlap is the only parallelism inside it. Every step
// performs exactly the comparisons and arithmetic of the C++ backend's step, in the same order:
// the points are bit-identical.
constexpr int kUnroll = 4;

// Applies one map (six coefficients): returns false at a non-finite point.
__device__ __forceinline__ bool apply(const double* c, double& x, double& y) {
  const double nx = dadd(dadd(dmul(c[0], x), dmul(c[1], y)), c[2]);
  const double ny = dadd(dadd(dmul(c[3], x), dmul(c[4], y)), c[5]);
  x = nx;
  y = ny;
  return finite(nx) && finite(ny);
}

// Runs steps 0 .. n-1 from (x, y), calling visit(i, ok, x, y) after each (ok: the point is
// finite); visit returns false to stop.
template <class Visit>
__device__ __forceinline__ void run_chain(const double* sys, const double* cum, int K, uint64_t key, int64_t n,
                                          double x, double y, Visit visit) {
  for (int64_t i0 = 0; i0 < n; i0 += kUnroll) {
    double r[kUnroll];
    int k[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {  // steps past n are drawn and not used
      r[u] = rng::u01(key, static_cast<uint64_t>(i0 + u));
      k[u] = 0;
    }
    for (int j = 0; j + 1 < K; ++j) {
      const double cj = cum[j];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) k[u] += cj <= r[u];
    }
    double c[kUnroll][6];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int e = 0; e < 6; ++e) c[u][e] = sys[6 * k[u] + e];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (i0 + u >= n) return;
      const bool ok = apply(c[u], x, y);
      if (!visit(i0 + u, ok, x, y)) return;
    }
  }
}

__global__ void chain_box_kernel(RenderParams p, const double* systems, const int64_t* n_maps,
                                 const int64_t* image_ids, const double* probs, State* states) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= p.n_images) return;
  double sys[kMaxMaps * 6], cum[kMaxMaps];
  load_image(p, systems, n_maps, image_ids, probs, b, sys, cum);
  const uint64_t id = static_cast<uint64_t>(image_ids[b]);
  const uint64_t key = rng::stream_key(p.seed, rng::kStreamChaos, id);
  double x, y;
  fixed_point(sys, &x, &y);
  double box[4] = {INFINITY, INFINITY, -INFINITY, -INFINITY};
  int64_t n_kept = p.n_points;
  run_chain(sys, cum, p.n_max_maps, key, p.n_points, x, y, [&](int64_t i, bool ok, double px, double py) {
    if (!ok) {
      n_kept = i;
      return false;
    }
    box[0] = px < box[0] ? px : box[0];
    box[1] = py < box[1] ? py : box[1];
    box[2] = px > box[2] ? px : box[2];
    box[3] = py > box[3] ? py : box[3];
    return true;
  });
  if (n_kept == 0) box[0] = box[1] = box[2] = box[3] = 0.0;
  apply_window(p, rng::stream_key(p.seed, rng::kStreamAugment, id), box);
  State& st = states[b];
  for (int c = 0; c < 4; ++c) st.box[c] = box[c];
  st.scl[0] = pixel_scale(box[0], box[2], p.height);
  st.scl[1] = pixel_scale(box[1], box[3], p.width);
  st.n_kept = n_kept;
  st.max_count = 1;
}

__global__ void chain_raster_kernel(RenderParams p, const double* systems, const int64_t* n_maps,
                                    const int64_t* image_ids, const double* probs, const State* states,
                                    int32_t* counts) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= p.n_images) return;
  double sys[kMaxMaps * 6], cum[kMaxMaps];
  load_image(p, systems, n_maps, image_ids, probs, b, sys, cum);
  const uint64_t id = static_cast<uint64_t>(image_ids[b]);
  const uint64_t key = rng::stream_key(p.seed, rng::kStreamChaos, id);
  unsigned mask = 0;
  if (p.patch) {
    const uint64_t pk = rng::stream_key(p.seed, rng::kStreamPatch, id);
    for (int j = 0; j < 9; ++j) mask |= rng::below(pk, j, 2) << j;
  }
  const State st = states[b];
  const int H = p.height, W = p.width;
  const double fH = static_cast<double>(H), fW = static_cast<double>(W);
  int32_t* hist = counts + b * static_cast<int64_t>(H) * W;
  double x, y;
  fixed_point(sys, &x, &y);
  run_chain(sys, cum, p.n_max_maps, key, st.n_kept, x, y, [&](int64_t, bool, double px, double py) {
    const double fr = dmul(dsub(px, st.box[0]), st.scl[0]);
    const double fc = dmul(dsub(py, st.box[1]), st.scl[1]);
    if (!(fr > -1.0 && fr < fH && fc > -1.0 && fc < fW)) return true;
    const int r = static_cast<int>(fr), c = static_cast<int>(fc);
    if (!p.patch) {
      atomicAdd(hist + static_cast<int64_t>(r) * W + c, 1);
      return true;
    }
    for (int j = 0; j < 9; ++j) {
      if (!((mask >> j) & 1u)) continue;
      const int rr = r + j / 3 - 1, cc = c + j % 3 - 1;
      if (rr >= 0 && rr < H && cc >= 0 && cc < W) atomicAdd(hist + static_cast<int64_t>(rr) * W + cc, 1);
    }
    return true;
  });
}

// grid (<= 64 blocks, images b0 .. b0 + gridDim.y - 1).
__global__ void max_count_kernel(RenderParams p, int64_t b0, const int32_t* counts, State* states) {
  const int64_t n_pix = static_cast<int64_t>(p.height) * p.width;
  const int64_t b = b0 + blockIdx.y;
  int m = 1;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_pix;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    m = max(m, counts[b * n_pix + i]);
  for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_down_sync(0xffffffffu, m, off));
  if ((threadIdx.x & 31) == 0) atomicMax(&states[b].max_count, m);
}

struct Finish {
  bool tr, ud, lr, blur;
  double hue_shift, k0, k1;
  int max_count;
};

// Colour of output pixel (i, j) after flips: 3 bytes.
__device__ __forceinline__ void pixel_color(const RenderParams& p, const Finish& f, const int32_t* hist,
                                            const uint8_t* lut, int i, int j, uint8_t* rgb) {
  const int H = p.height, W = p.width;
  const int i1 = f.ud ? H - 1 - i : i;
  const int j1 = f.lr ? W - 1 - j : j;
  const int32_t n = f.tr ? hist[static_cast<int64_t>(j1) * W + i1] : hist[static_cast<int64_t>(i1) * W + j1];
  if (n <= 0) {
    rgb[0] = rgb[1] = rgb[2] = 0;
  } else if (p.color) {
    const uint8_t* c = lut + 3 * hue_index(n, f.max_count, f.hue_shift);
    rgb[0] = c[0];
    rgb[1] = c[1];
    rgb[2] = c[2];
  } else {
    rgb[0] = rgb[1] = rgb[2] = 127;
  }
}

// grid (ceil(H*W / blockDim), images b0 .. b0 + gridDim.y - 1); blockDim >= 256 so each block
// can build the 256-entry table.
__global__ void finish_kernel(RenderParams p, int64_t b0, const int64_t* image_ids, const State* states,
                              const int32_t* counts, uint8_t* out) {
  __shared__ uint8_t lut[256 * 3];
  const int64_t b = b0 + blockIdx.y;
  const int H = p.height, W = p.width;
  const int64_t n_pix = static_cast<int64_t>(H) * W;
  const uint64_t aug = rng::stream_key(p.seed, rng::kStreamAugment, static_cast<uint64_t>(image_ids[b]));
  Finish f;
  f.tr = f.ud = f.lr = false;
  if (p.flips) {
    f.tr = H == W && rng::u01(aug, kAugFlip) > 0.5;
    f.ud = rng::u01(aug, kAugFlip + 1) > 0.5;
    f.lr = rng::u01(aug, kAugFlip + 2) > 0.5;
  }
  f.hue_shift = 0.0;
  if (p.color) {
    const ColorDraws cd = color_draws(aug);
    f.hue_shift = cd.hue_shift;
    for (int h = threadIdx.x; h < 256; h += blockDim.x) hsv_entry(h, cd.sat, cd.val, lut + 3 * h);
  }
  __syncthreads();
  f.max_count = states[b].max_count;
  f.blur = p.blur && rng::u01(aug, kAugBlur) > 0.5;
  if (f.blur) blur_weights(uniform(aug, kAugSigma, p.blur_lo, p.blur_hi), &f.k0, &f.k1);
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pix >= n_pix) return;
  const int i = static_cast<int>(pix / W), j = static_cast<int>(pix % W);
  const int32_t* hist = counts + b * n_pix;
  uint8_t* dst = out + (b * n_pix + pix) * 3;
  if (!f.blur) {
    pixel_color(p, f, hist, lut, i, j, dst);
    return;
  }
  const int rows[3] = {reflect101(i - 1, H), i, reflect101(i + 1, H)};
  const int cols[3] = {reflect101(j - 1, W), j, reflect101(j + 1, W)};
  uint8_t c[3][3][3];  // [row][col][channel]
  for (int a = 0; a < 3; ++a)
    for (int e = 0; e < 3; ++e) pixel_color(p, f, hist, lut, rows[a], cols[e], c[a][e]);
  for (int ch = 0; ch < 3; ++ch) {
    double h[3];
    for (int a = 0; a < 3; ++a)
      h[a] = dadd(dadd(dmul(f.k0, static_cast<double>(c[a][0][ch])), dmul(f.k1, static_cast<double>(c[a][1][ch]))),
                  dmul(f.k0, static_cast<double>(c[a][2][ch])));
    double v = nearbyint(dadd(dadd(dmul(f.k0, h[0]), dmul(f.k1, h[1])), dmul(f.k0, h[2])));
    v = v < 0.0 ? 0.0 : (v > 255.0 ? 255.0 : v);
    dst[ch] = static_cast<uint8_t>(v);
  }
}

}  // namespace

void ifs_render_cuda(const RenderParams& p, uintptr_t systems, uintptr_t n_maps, uintptr_t image_ids,
                     uintptr_t probs, uintptr_t counts, uintptr_t rgb, int device, uintptr_t stream) {
  OFDB_CHECK(p.n_max_maps >= 1 && p.n_max_maps <= kMaxMaps, "ifs_render: K must be in 1..32");
  OFDB_CHECK(p.height >= 1 && p.width >= 1 && p.n_points >= 1, "ifs_render: bad size or n_points");
  OFDB_CHECK(p.counts_only || rgb != 0, "ifs_render: rgb output pointer is null");
  OFDB_CHECK(p.counts_only || !p.background, "ifs_render: background is not implemented on CUDA yet");
  if (p.n_images == 0) return;
  DeviceGuard guard(device);  // the pointers and the stream belong to `device`
  cudaStream_t s = as_stream(stream);
  const auto* sys = reinterpret_cast<const double*>(systems);
  const auto* nm = reinterpret_cast<const int64_t*>(n_maps);
  const auto* ids = reinterpret_cast<const int64_t*>(image_ids);
  const auto* pr = reinterpret_cast<const double*>(probs);
  auto* cnt = reinterpret_cast<int32_t*>(counts);
  const int64_t n_pix = static_cast<int64_t>(p.height) * p.width;

  Scratch scratch(s);  // freed stream-ordered on return, also when a launch check throws
  State* states = scratch.get<State>(p.n_images);
  OFDB_CUDA_CHECK(cudaMemsetAsync(cnt, 0, sizeof(int32_t) * n_pix * p.n_images, s));
  const int threads = 64;  // few threads per block: the chain kernels have one thread per image
  const int blocks = ceil_div(p.n_images, threads);
  chain_box_kernel<<<blocks, threads, 0, s>>>(p, sys, nm, ids, pr, states);
  OFDB_CUDA_CHECK_LAUNCH();
  chain_raster_kernel<<<blocks, threads, 0, s>>>(p, sys, nm, ids, pr, states, cnt);
  OFDB_CUDA_CHECK_LAUNCH();
  if (!p.counts_only) {
    // Images go along grid.y, at most 65535 per launch.
    for (int64_t b0 = 0; b0 < p.n_images; b0 += kMaxGridY) {
      const unsigned nb = static_cast<unsigned>(std::min<int64_t>(kMaxGridY, p.n_images - b0));
      const dim3 grid_max(static_cast<unsigned>(std::min<int64_t>(ceil_div(n_pix, 256), 64)), nb);
      max_count_kernel<<<grid_max, 256, 0, s>>>(p, b0, cnt, states);
      OFDB_CUDA_CHECK_LAUNCH();
      const dim3 grid(static_cast<unsigned>(ceil_div(n_pix, 256)), nb);
      finish_kernel<<<grid, 256, 0, s>>>(p, b0, ids, states, cnt, reinterpret_cast<uint8_t*>(rgb));
      OFDB_CUDA_CHECK_LAUNCH();
    }
  }
}

}  // namespace ifs
}  // namespace ofdb
