// kcenter_greedy on CUDA: mirrors kcenter_greedy_cpu.cpp (math and tie-breaking in kcenter_greedy.h).
//
// Kernels and parallel mapping:
//   weights_kernel     one thread per W element (shared counter RNG, as the CPU and NumPy).
//   project_kernel     Z = X @ W, 32x32 shared-memory tiles, block (32, 8), float32 accumulated over d
//                      ascending (nvcc may fuse multiply-adds, so Z can differ from the CPU in the last bit).
//   approx_score_kernel / exact_* kernels: initial score, one warp per row.
//   update_kernel      ONE fused pass per iteration: one warp per row (grid-stride); lanes split the
//                      row's elements, a shuffle butterfly sums the squares (every lane gets the same
//                      bits); lane 0 updates score = min(score, d) (and the covering distance) and keeps
//                      its warp's argmax (strict '>' while walking rows upward = lowest index); warps,
//                      then blocks, are merged by (larger value, lower index on ties).
//   select_kernel      one block merges the per-block winners the same way, writes the next centre to
//                      device memory (read by the next update_kernel) and appends it to `indices`;
//                      it also writes radius[t - 1] = max covering distance.
// So an iteration is two launches on the caller's stream and never syncs with the host. Scratch memory
// is stream-ordered (cudaMallocAsync / cudaFreeAsync).
//
// Half-precision projection (p.half_projection, used only when the rows are projected): Z = X @ W is
// accumulated in float32 as above and stored rounded to __half; every later kernel reads Z as __half
// (pairs as __half2 when the width is even), widens to float32 and computes exactly as the float32 path.
// This halves the projected buffer ([N, P] * 2 bytes: 256 MB at 1M rows x 128) and the bytes streamed
// per iteration, which bound the loop. Rounding Z to 11 significant bits can swap near-tied argmax
// choices, so indices may differ from the float32 path where scores tie within ~1e-3 relative;
// tests/ops/test_kcenter_greedy_half.py requires equal indices on well-separated data and the covering
// radius within 1e-2 relative on random data.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "common/cuda_utils.cuh"
#include "patchcore/kcenter_greedy.h"

namespace ofdb {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr int kSelectThreads = 512;  // power of two (tree reduction)
constexpr int kTile = 32;
constexpr int kTileRows = 8;
constexpr int64_t kNoIndex = INT64_MAX;
static_assert(kTile / kTileRows == 4, "project_kernel keeps 4 rows per thread");

struct Best {
  float value;
  float cover_max;
  int64_t index;
};

__device__ __forceinline__ bool beats(float v, int64_t i, float best, int64_t best_i) {
  return v > best || (v == best && i < best_i);
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ void store_as(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_as(__half* p, float v) { *p = __float2half_rn(v); }

__device__ __forceinline__ float warp_sum(float acc) {
  for (int off = kWarp / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  return acc;
}

// Squared distance of two rows; lane l sums elements l, l + 32, ...; the xor butterfly leaves the
// same total in every lane (each step adds the same two partial sums, only commuted).
__device__ __forceinline__ float warp_squared_distance(const float* a, const float* b, int64_t width, int lane) {
  float acc = 0.0f;
  for (int64_t k = lane; k < width; k += kWarp) {
    const float t = a[k] - b[k];
    acc += t * t;
  }
  return warp_sum(acc);
}

// __half rows: lane l takes the pairs l, l + 32, ... (__half2 loads; rows start 4-byte aligned when
// the width is even), else single elements; float32 arithmetic as above.
__device__ __forceinline__ float warp_squared_distance(const __half* a, const __half* b, int64_t width, int lane) {
  float acc = 0.0f;
  if (width % 2 == 0) {
    const __half2* a2 = reinterpret_cast<const __half2*>(a);
    const __half2* b2 = reinterpret_cast<const __half2*>(b);
    for (int64_t k = lane; k < width / 2; k += kWarp) {
      const float2 x = __half22float2(a2[k]), y = __half22float2(b2[k]);
      const float t0 = x.x - y.x, t1 = x.y - y.y;
      acc += t0 * t0;
      acc += t1 * t1;
    }
  } else {
    for (int64_t k = lane; k < width; k += kWarp) {
      const float t = __half2float(a[k]) - __half2float(b[k]);
      acc += t * t;
    }
  }
  return warp_sum(acc);
}

__global__ void weights_kernel(float* w, int64_t count, int64_t dim, uint64_t key) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < count;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    w[c] = kcenter_weight(key, dim, static_cast<uint64_t>(c));
  }
}

// z [n, width] = x [n, dim] @ w [dim, width]; block (kTile, kTileRows), grid (width tiles, row tiles).
// T = float or __half (the float32 sum rounded once when stored).
template <typename T>
__global__ void project_kernel(const float* x, const float* w, T* z, int64_t n, int64_t dim, int64_t width) {
  __shared__ float xs[kTile][kTile + 1];
  __shared__ float ws[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTile + tx;
  for (int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile; row0 < n;
       row0 += static_cast<int64_t>(gridDim.y) * kTile) {
    float acc[kTile / kTileRows] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t d0 = 0; d0 < dim; d0 += kTile) {
      for (int r = ty; r < kTile; r += kTileRows) {
        const int64_t row = row0 + r, d = d0 + tx, dr = d0 + r;
        xs[r][tx] = (row < n && d < dim) ? x[row * dim + d] : 0.0f;
        ws[r][tx] = (dr < dim && col < width) ? w[dr * width + col] : 0.0f;
      }
      __syncthreads();
      for (int kk = 0; kk < kTile; ++kk) {
        const float wv = ws[kk][tx];
#pragma unroll
        for (int i = 0; i < kTile / kTileRows; ++i) acc[i] += xs[ty + kTileRows * i][kk] * wv;
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < kTile / kTileRows; ++i) {
      const int64_t row = row0 + ty + kTileRows * i;
      if (row < n && col < width) store_as(z + row * width + col, acc[i]);
    }
  }
}

__global__ void fill_kernel(float* p, int64_t count, float value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p[i] = value;
  }
}

// score[i] = mean over the m starting points of dist(z_i, z_start), summed in start order.
template <typename T>
__global__ void approx_score_kernel(const T* z, int64_t n, int64_t width, const int64_t* starts, int64_t m,
                                    float* score) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; i < n; i += warps) {
    float sum = 0.0f;
    for (int64_t u = 0; u < m; ++u) sum += sqrtf(warp_squared_distance(z + i * width, z + starts[u] * width, width, lane));
    if (lane == 0) score[i] = sum / static_cast<float>(m);
  }
}

// mean[k] = (1/n) sum_i z[i, k] in float64; block (kWarp, kTileRows) per 32 columns, fixed order.
template <typename T>
__global__ void column_mean_kernel(const T* z, int64_t n, int64_t width, double* mean) {
  __shared__ double part[kTileRows][kWarp + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kWarp + tx;
  double acc = 0.0;
  if (col < width) {
    for (int64_t i = ty; i < n; i += kTileRows) acc += to_float(z[i * width + col]);
  }
  part[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && col < width) {
    double s = 0.0;
    for (int r = 0; r < kTileRows; ++r) s += part[r][tx];
    mean[col] = s / static_cast<double>(n);
  }
}

// q[i] = |z_i - mean|^2 in float64, one warp per row.
template <typename T>
__global__ void centred_norm_kernel(const T* z, int64_t n, int64_t width, const double* mean, double* q) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; i < n; i += warps) {
    double acc = 0.0;
    for (int64_t k = lane; k < width; k += kWarp) {
      const double t = static_cast<double>(to_float(z[i * width + k])) - mean[k];
      acc += t * t;
    }
    for (int off = kWarp / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) q[i] = acc;
  }
}

// score[i] = sqrt(n q_i + sum_j q_j): the norm of row i of the distance matrix. One block of
// kSelectThreads first sums q (fixed strided order + tree, so deterministic), then writes the scores.
__global__ void exact_score_kernel(const double* q, int64_t n, float* score) {
  __shared__ double part[kSelectThreads];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += q[i];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  const double total = part[0];
  const double nd = static_cast<double>(n);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) score[i] = static_cast<float>(sqrt(nd * q[i] + total));
}

// kUpdate: score = min(score, dist(z, z[*centre])) (and cover when kCover) before the argmax;
// otherwise only the per-block argmax of score. One warp per row; lane 0 owns the row's state.
template <typename T, bool kUpdate, bool kCover>
__global__ void __launch_bounds__(kThreads) update_kernel(const T* z, int64_t n, int64_t width,
                                                          const int64_t* centre, float* score, float* cover,
                                                          Best* block_best) {
  __shared__ Best warp_best[kWarpsPerBlock];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const T* c = kUpdate ? z + (*centre) * width : nullptr;
  float best = -1.0f, cover_max = 0.0f;  // scores and distances are >= 0
  int64_t best_i = kNoIndex;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp; j < n; j += warps) {
    float d = 0.0f;
    if (kUpdate) d = sqrtf(warp_squared_distance(z + j * width, c, width, lane));
    if (lane == 0) {
      float s = score[j];
      if (kUpdate) {
        s = fminf(s, d);
        score[j] = s;
        if (kCover) {
          const float v = fminf(cover[j], d);
          cover[j] = v;
          cover_max = fmaxf(cover_max, v);
        }
      }
      if (s > best) {
        best = s;
        best_i = j;
      }
    }
  }
  if (lane == 0) warp_best[warp] = Best{best, cover_max, best_i};
  __syncthreads();
  if (threadIdx.x == 0) {
    Best win = warp_best[0];
    for (int u = 1; u < kWarpsPerBlock; ++u) {
      const Best& e = warp_best[u];
      if (beats(e.value, e.index, win.value, win.index)) {
        win.value = e.value;
        win.index = e.index;
      }
      win.cover_max = fmaxf(win.cover_max, e.cover_max);
    }
    block_best[blockIdx.x] = win;
  }
}

// Merge the per-block winners; selection t (if t < n_select) becomes the next centre; radius[t - 1]
// (if requested and t >= 1) is the covering radius after selection t - 1.
__global__ void __launch_bounds__(kSelectThreads) select_kernel(const Best* block_best, int n_blocks, int64_t t,
                                                                int64_t n_select, int64_t* centre,
                                                                int64_t* indices, double* radius) {
  __shared__ float val[kSelectThreads];
  __shared__ float cov[kSelectThreads];
  __shared__ int64_t idx[kSelectThreads];
  const int tid = threadIdx.x;
  float bv = -1.0f, cm = 0.0f;
  int64_t bi = kNoIndex;
  for (int b = tid; b < n_blocks; b += kSelectThreads) {
    const Best e = block_best[b];
    if (beats(e.value, e.index, bv, bi)) {
      bv = e.value;
      bi = e.index;
    }
    cm = fmaxf(cm, e.cover_max);
  }
  val[tid] = bv;
  idx[tid] = bi;
  cov[tid] = cm;
  __syncthreads();
  for (int s = kSelectThreads / 2; s > 0; s >>= 1) {
    if (tid < s) {
      if (beats(val[tid + s], idx[tid + s], val[tid], idx[tid])) {
        val[tid] = val[tid + s];
        idx[tid] = idx[tid + s];
      }
      cov[tid] = fmaxf(cov[tid], cov[tid + s]);
    }
    __syncthreads();
  }
  if (tid == 0) {
    if (t < n_select) {
      *centre = idx[0];
      indices[t] = idx[0];
    }
    if (radius != nullptr && t >= 1) radius[t - 1] = static_cast<double>(cov[0]);
  }
}

int grid_for(int64_t rows, int blocks_cap) {
  const int64_t wanted = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return static_cast<int>(wanted < blocks_cap ? wanted : blocks_cap);
}

// Everything after the projection: initial score, then the n_select iterations, on rows z [n, width].
template <typename T>
void select_points(const T* z, int64_t width, const KCenterParams& p, int64_t* indices, double* radius,
                   int blocks_cap, cudaStream_t stream, Scratch& scratch) {
  const int64_t n = p.n_points;
  float* score = scratch.get<float>(n);
  const int grid = grid_for(n, blocks_cap);
  if (p.method == kKCenterApprox) {
    const std::vector<int64_t> host_starts = kcenter_starting_points(n, p.n_starts, p.seed);
    const int64_t m = static_cast<int64_t>(host_starts.size());
    int64_t* starts = scratch.get<int64_t>(m);
    // Pageable source: the call returns once the bytes are staged, so host_starts may go away.
    OFDB_CUDA_CHECK(cudaMemcpyAsync(starts, host_starts.data(), static_cast<size_t>(m) * sizeof(int64_t),
                                    cudaMemcpyHostToDevice, stream));
    approx_score_kernel<T><<<grid, kThreads, 0, stream>>>(z, n, width, starts, m, score);
    OFDB_CUDA_CHECK_LAUNCH();
  } else {
    double* mean = scratch.get<double>(width);
    double* q = scratch.get<double>(n);
    column_mean_kernel<T><<<ceil_div(width, kWarp), dim3(kWarp, kTileRows), 0, stream>>>(z, n, width, mean);
    OFDB_CUDA_CHECK_LAUNCH();
    centred_norm_kernel<T><<<grid, kThreads, 0, stream>>>(z, n, width, mean, q);
    OFDB_CUDA_CHECK_LAUNCH();
    exact_score_kernel<<<1, kSelectThreads, 0, stream>>>(q, n, score);
    OFDB_CUDA_CHECK_LAUNCH();
  }

  float* cover = nullptr;
  if (radius != nullptr) {
    cover = scratch.get<float>(n);
    fill_kernel<<<grid, kThreads, 0, stream>>>(cover, n, INFINITY);
    OFDB_CUDA_CHECK_LAUNCH();
  }
  Best* block_best = scratch.get<Best>(grid);
  int64_t* centre = scratch.get<int64_t>(1);

  update_kernel<T, false, false><<<grid, kThreads, 0, stream>>>(z, n, width, centre, score, cover, block_best);
  OFDB_CUDA_CHECK_LAUNCH();
  select_kernel<<<1, kSelectThreads, 0, stream>>>(block_best, grid, 0, p.n_select, centre, indices, radius);
  OFDB_CUDA_CHECK_LAUNCH();
  for (int64_t t = 0; t < p.n_select; ++t) {
    if (t == p.n_select - 1 && radius == nullptr) break;  // the last update only feeds the radius
    if (radius != nullptr) {
      update_kernel<T, true, true><<<grid, kThreads, 0, stream>>>(z, n, width, centre, score, cover, block_best);
    } else {
      update_kernel<T, true, false><<<grid, kThreads, 0, stream>>>(z, n, width, centre, score, cover, block_best);
    }
    OFDB_CUDA_CHECK_LAUNCH();
    select_kernel<<<1, kSelectThreads, 0, stream>>>(block_best, grid, t + 1, p.n_select, centre, indices, radius);
    OFDB_CUDA_CHECK_LAUNCH();
  }
}

template <typename T>
T* project(const float* features, const KCenterParams& p, int64_t width, int blocks_cap, cudaStream_t stream,
           Scratch& scratch) {
  float* w = scratch.get<float>(p.dim * width);
  const int64_t count = p.dim * width;
  const uint64_t key = rng::stream_key(p.seed, rng::kStreamCoreset, kCoresetItemProjection);
  weights_kernel<<<ceil_div(count, kThreads) < blocks_cap ? ceil_div(count, kThreads) : blocks_cap, kThreads, 0,
                   stream>>>(w, count, p.dim, key);
  OFDB_CUDA_CHECK_LAUNCH();
  T* projected = scratch.get<T>(p.n_points * width);
  const int row_tiles = ceil_div(p.n_points, kTile);
  const dim3 grid(ceil_div(width, kTile), row_tiles < 65535 ? row_tiles : 65535);
  project_kernel<T><<<grid, dim3(kTile, kTileRows), 0, stream>>>(features, w, projected, p.n_points, p.dim, width);
  OFDB_CUDA_CHECK_LAUNCH();
  return projected;
}

}  // namespace

void kcenter_greedy_cuda(const float* features, const KCenterParams& p, int64_t* indices, double* radius,
                         int device, uintptr_t stream_handle) {
  OFDB_CHECK(p.n_points >= 1 && p.dim >= 1, "kcenter_greedy_cuda: features must be non-empty");
  OFDB_CHECK(p.n_select >= 1 && p.n_select <= p.n_points, "kcenter_greedy_cuda: need 1 <= n_select <= N");
  OFDB_CHECK(p.n_points < (int64_t{1} << 31), "kcenter_greedy_cuda: N must be < 2**31");
  OFDB_CHECK(p.method == kKCenterApprox || p.method == kKCenterExact, "kcenter_greedy_cuda: unknown method");
  OFDB_CHECK(p.method != kKCenterApprox || p.n_starts >= 1, "kcenter_greedy_cuda: n_starts must be >= 1");
  DeviceGuard guard(device);
  cudaStream_t stream = as_stream(stream_handle);
  int sms = 0;
  OFDB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // One resident wave of the per-iteration kernel: its registers (38-40 on sm_90), not the 2048
  // threads of an SM, bound the blocks per SM (6 of 256 threads, not 8: a grid sized for 8 ran as
  // a full wave plus a second one of 2 blocks per SM, a third of the occupancy, every iteration).
  int per_sm_f32 = 0, per_sm_f16 = 0;
  OFDB_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_f32, update_kernel<float, true, true>,
                                                                kThreads, 0));
  OFDB_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_f16, update_kernel<__half, true, true>,
                                                                kThreads, 0));
  const int per_sm = per_sm_f32 < per_sm_f16 ? per_sm_f32 : per_sm_f16;
  const int blocks_cap = sms * (per_sm > 0 ? per_sm : 1);
  const int64_t width = kcenter_width(p);
  Scratch scratch(stream);
  if (!kcenter_projects(p)) {
    select_points<float>(features, width, p, indices, radius, blocks_cap, stream, scratch);
  } else if (p.half_projection) {
    const __half* z = project<__half>(features, p, width, blocks_cap, stream, scratch);
    select_points<__half>(z, width, p, indices, radius, blocks_cap, stream, scratch);
  } else {
    const float* z = project<float>(features, p, width, blocks_cap, stream, scratch);
    select_points<float>(z, width, p, indices, radius, blocks_cap, stream, scratch);
  }
}

}  // namespace ofdb
