// Minimal CUDA-on-CPU shim for tests (tests/ops/test_cuda_shim.py): runs a kernel's blocks one
// after another, each block's threads as std::threads with real barriers (__syncthreads) and
// per-warp barriers (shuffles), so kernel source compiles and runs unchanged as C++20. It checks
// a kernel's logic (indexing, ties, barriers, early exits), not its speed or the GPU's rounding
// of operations the kernels do not pin (they use explicitly rounded intrinsics where it matters).
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>
#include <algorithm>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct float2 { float x, y; };

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace fake {
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>>* warp_barriers = nullptr;
inline std::vector<uint64_t>* exchange = nullptr;  // one 8-byte slot per thread
inline thread_local int tid_linear = 0;

template <class K, class... A>
void launch(K kernel, dim3 grid, dim3 block, A... args) {
  gridDim = grid;
  blockDim = block;
  const int nt = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> bb(nt);
        std::vector<std::unique_ptr<std::barrier<>>> wb;
        for (int w = 0; w < (nt + 31) / 32; ++w) wb.emplace_back(new std::barrier<>(std::min(32, nt - 32 * w)));
        std::vector<uint64_t> ex(nt);
        block_barrier = &bb;
        warp_barriers = &wb;
        exchange = &ex;
        std::vector<std::thread> th;
        th.reserve(nt);
        for (int t = 0; t < nt; ++t) {
          th.emplace_back([=]() {
            threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            blockIdx = dim3(bx, by, bz);
            tid_linear = t;
            kernel(args...);
          });
        }
        for (auto& x : th) x.join();
      }
}

template <class T>
T shfl(T v, int src_lane_fn(int lane, int arg), int arg) = delete;

template <class T>
T warp_exchange(T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "8-byte slots");
  const int t = tid_linear, w = t / 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  (*exchange)[t] = bits;
  (*warp_barriers)[w]->arrive_and_wait();
  T out;
  const uint64_t got = (*exchange)[w * 32 + src_lane];
  std::memcpy(&out, &got, sizeof(T));
  (*warp_barriers)[w]->arrive_and_wait();
  return out;
}
}  // namespace fake

inline void __syncthreads() { fake::block_barrier->arrive_and_wait(); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int off) {
  const int lane = fake::tid_linear % 32;
  return fake::warp_exchange(v, lane ^ off);
}
template <class T>
T __shfl_down_sync(unsigned, T v, int off) {
  const int lane = fake::tid_linear % 32;
  return fake::warp_exchange(v, lane + off < 32 ? lane + off : lane);
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline int atomicMax(int* p, int v) {
  int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
using std::max;
using std::min;
inline float fminf(float a, float b) { return std::fmin(a, b); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline float sqrtf(float a) { return std::sqrt(a); }
