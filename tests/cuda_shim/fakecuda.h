// Minimal CUDA-on-CPU shim for tests (tests/ops/test_cuda_shim.py): kernel source compiles and
// runs unchanged as C++20. A launch runs its blocks one after another; a block's threads are
// cooperative fibers on the calling OS thread, each with its own stack, switched only at barriers:
// __syncthreads is a real block barrier, a shuffle a real warp barrier. The switch is a few
// instructions of assembly on x86-64 (a reduction over a warp is ~10 switches per lane, so the
// ~0.3 us of ucontext's signal-mask system calls would dominate); ucontext elsewhere. So it checks a
// kernel's logic (indexing, ties, barriers, early exits, shared-memory hand-offs), not its speed
// or the GPU's rounding of operations the kernels do not pin (they use explicitly rounded
// intrinsics where it matters).
//
// Each barrier phase runs the live threads in a fixed order: ascending thread index, or
// descending with FAKECUDA_REVERSE=1 in the environment. A kernel that reads shared memory another
// thread writes without a barrier between them gets a stale value under one of the two orders, so
// the tests run both. A barrier that not every thread reaches is reported as a deadlock (abort)
// instead of hanging.
#pragma once
#include <sys/mman.h>
// The assembly stack switch on x86-64; ucontext elsewhere, or everywhere with -DFAKECUDA_UCONTEXT
// (how CI tests that path on x86-64).
#if defined(__x86_64__) && !defined(FAKECUDA_UCONTEXT)
#define FAKECUDA_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

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

// Set by the scheduler before it switches to a thread (one OS thread runs them all).
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace fake {
constexpr size_t kStackBytes = 256 * 1024;

struct Barrier {
  int expected = 0, count = 0;
  unsigned generation = 0;
};
#if defined(FAKECUDA_ASM_SWITCH)
// switch_stack(&from_sp, to_sp): saves the callee-saved registers on the current stack, stores its
// pointer in *from_sp, loads to_sp and restores the registers saved there (System V ABI).
extern "C" void fakecuda_switch_stack(void** from_sp, void* to_sp);
asm(R"(
  .text
  .globl fakecuda_switch_stack
  .type fakecuda_switch_stack, @function
fakecuda_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fakecuda_switch_stack, .-fakecuda_switch_stack
  .section .note.GNU-stack, "", @progbits
  .text
)");
struct Context {
  void* sp = nullptr;
};
#else
using Context = ucontext_t;
#endif

struct Fiber {
  Context context;
  void* stack = nullptr;
  bool done = false;
};

inline Context scheduler;
inline std::vector<Fiber> fibers;  // stacks kept from launch to launch
inline Barrier block_barrier;
inline std::vector<Barrier> warp_barriers;
inline std::vector<uint64_t> exchange;  // shuffles: two 8-byte slots per thread (see warp_exchange)
inline std::vector<unsigned> exchange_parity;  // per thread: the slot its next shuffle writes
inline int tid_linear = 0;               // the running thread
inline bool progress = false;            // some thread arrived at a barrier or finished this round
inline std::function<void()> body;       // the kernel call of the current launch

inline void switch_to(Context& from, Context& to) {
#if defined(FAKECUDA_ASM_SWITCH)
  fakecuda_switch_stack(&from.sp, to.sp);
#else
  swapcontext(&from, &to);
#endif
}

inline void yield() { switch_to(fibers[tid_linear].context, scheduler); }

inline void arrive_and_wait(Barrier& b) {
  progress = true;
  const unsigned generation = b.generation;
  if (++b.count == b.expected) {
    b.count = 0;
    ++b.generation;
    return;
  }
  while (b.generation == generation) yield();
}

inline void fiber_main() {
  body();
  fibers[tid_linear].done = true;
  progress = true;
#if defined(FAKECUDA_ASM_SWITCH)
  switch_to(fibers[tid_linear].context, scheduler);  // never resumed
  std::abort();
#endif
}  // (ucontext: returns to `scheduler` through uc_link)

// A fresh fiber whose first switch-in starts fiber_main on its own stack.
inline void start_fiber(Fiber& f) {
  f.done = false;
#if defined(FAKECUDA_ASM_SWITCH)
  // From the top: fiber_main's return-address slot (unused: it never returns), fiber_main's address
  // (popped by the switch's ret, 16-byte aligned so fiber_main starts as if called), six registers.
  uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + kStackBytes - 64) & ~uintptr_t{15};
  void** slot = reinterpret_cast<void**>(top);
  slot[1] = nullptr;
  slot[0] = reinterpret_cast<void*>(&fiber_main);
  for (int r = 1; r <= 6; ++r) slot[-r] = nullptr;
  f.context.sp = slot - 6;
#else
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack;
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = &scheduler;
  makecontext(&f.context, fiber_main, 0);
#endif
}

inline bool reverse_order() {
  const char* v = std::getenv("FAKECUDA_REVERSE");
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}

template <class K, class... A>
void launch(K kernel, dim3 grid, dim3 block, A... args) {
  gridDim = grid;
  blockDim = block;
  const int nt = static_cast<int>(block.x * block.y * block.z);
  if (nt < 1 || nt > 1024) {
    std::fprintf(stderr, "fakecuda: %d threads per block (1..1024)\n", nt);
    std::abort();
  }
  while (static_cast<int>(fibers.size()) < nt) {
    Fiber f;
    f.stack = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (f.stack == MAP_FAILED) {
      std::perror("fakecuda: mmap");
      std::abort();
    }
    fibers.push_back(f);
  }
  const bool reverse = reverse_order();
  body = [=]() { kernel(args...); };
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = dim3(bx, by, bz);
        block_barrier = Barrier{nt, 0, 0};
        warp_barriers.assign((nt + 31) / 32, Barrier{});
        for (int w = 0; w < (nt + 31) / 32; ++w) warp_barriers[w].expected = std::min(32, nt - 32 * w);
        exchange.assign(2 * nt, 0);
        exchange_parity.assign(nt, 0);
        for (int t = 0; t < nt; ++t) start_fiber(fibers[t]);
        int live = nt;
        while (live > 0) {
          progress = false;
          for (int k = 0; k < nt; ++k) {
            const int t = reverse ? nt - 1 - k : k;
            if (fibers[t].done) continue;
            tid_linear = t;
            threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            switch_to(scheduler, fibers[t].context);
            if (fibers[t].done) --live;
          }
          if (live > 0 && !progress) {
            std::fprintf(stderr, "fakecuda: deadlock in block (%u, %u, %u): %d of %d threads wait at a barrier "
                         "the others never reach\n", bx, by, bz, live, nt);
            std::abort();
          }
        }
      }
  body = nullptr;
}

// One barrier per shuffle: shuffles alternate between two slots, and a lane can only write the
// slot of shuffle i + 2 after the barrier of shuffle i + 1, which every lane reaches only after
// reading its value of shuffle i.
template <class T>
T warp_exchange(T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "8-byte slots");
  const int t = tid_linear, w = t / 32;
  const unsigned parity = exchange_parity[t];
  exchange_parity[t] ^= 1u;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  exchange[2 * t + parity] = bits;
  arrive_and_wait(warp_barriers[w]);
  T out;
  const uint64_t got = exchange[2 * (w * 32 + src_lane) + parity];
  std::memcpy(&out, &got, sizeof(T));
  return out;
}
}  // namespace fake

inline void __syncthreads() { fake::arrive_and_wait(fake::block_barrier); }
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
// Threads never run at the same time here, so plain read-modify-writes are atomic.
inline int atomicAdd(int* p, int v) {
  const int old = *p;
  *p = old + v;
  return old;
}
inline int atomicMax(int* p, int v) {
  const int old = *p;
  if (old < v) *p = v;
  return old;
}
using std::max;
using std::min;
inline float fminf(float a, float b) { return std::fmin(a, b); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline float sqrtf(float a) { return std::sqrt(a); }
