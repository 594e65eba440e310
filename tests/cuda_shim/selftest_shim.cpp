// Checks of the shim itself (tests/ops/test_cuda_shim.py): it must run a correct kernel correctly in
// both thread orders, expose a kernel that reads shared memory before the barrier that publishes it
// (in at least one order), and report a barrier that some threads never reach.
//   selftest_shim sum       -> prints the block sums of a correct shared-memory tree reduction
//   selftest_shim racy      -> the same reduction without the barriers between its steps
//   selftest_shim shuffle   -> a warp sum by __shfl_xor_sync and a warp max by __shfl_down_sync
//   selftest_shim deadlock  -> __syncthreads inside a branch only half the block takes
#include "fakecuda.h"

#include <cstdio>
#include <cstring>
#include <vector>

constexpr int kThreads = 64;

template <bool kBarriers>
__global__ void block_sum_kernel(const int* x, int* out) {
  __shared__ int part[kThreads];
  const int t = threadIdx.x;
  part[t] = x[blockIdx.x * kThreads + t];
  if (kBarriers) __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (t < s) part[t] += part[t + s];
    if (kBarriers) __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = part[0];
}

__global__ void warp_kernel(const int* x, int* sums, int* maxes) {
  const int t = threadIdx.x, lane = t % 32;
  int s = x[t], m = x[t];
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_down_sync(0xffffffffu, m, off));
  sums[t] = s;  // every lane holds its warp's sum
  if (lane == 0) maxes[t / 32] = m;
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < kThreads / 2) __syncthreads();
  out[threadIdx.x] = 1;
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  const int blocks = 3;
  std::vector<int> x(blocks * kThreads), out(blocks, -1);
  for (int i = 0; i < blocks * kThreads; ++i) x[i] = (i * 37) % 101;
  if (!std::strcmp(mode, "sum") || !std::strcmp(mode, "racy")) {
    if (!std::strcmp(mode, "sum")) fake::launch(block_sum_kernel<true>, dim3(blocks), dim3(kThreads), x.data(), out.data());
    else fake::launch(block_sum_kernel<false>, dim3(blocks), dim3(kThreads), x.data(), out.data());
    for (int b = 0; b < blocks; ++b) {
      long want = 0;
      for (int t = 0; t < kThreads; ++t) want += x[b * kThreads + t];
      std::printf("block %d sum %d want %ld\n", b, out[b], want);
    }
    return 0;
  }
  if (!std::strcmp(mode, "shuffle")) {
    std::vector<int> sums(kThreads), maxes(kThreads / 32);
    fake::launch(warp_kernel, dim3(1), dim3(kThreads), x.data(), sums.data(), maxes.data());
    for (int t = 0; t < kThreads; ++t) std::printf("lane %d sum %d\n", t, sums[t]);
    for (int w = 0; w < kThreads / 32; ++w) std::printf("warp %d max %d\n", w, maxes[w]);
    return 0;
  }
  if (!std::strcmp(mode, "deadlock")) {
    fake::launch(divergent_barrier_kernel, dim3(1), dim3(kThreads), out.data());
    std::printf("no deadlock reported\n");
    return 0;
  }
  std::fprintf(stderr, "unknown mode %s\n", mode);
  return 2;
}
