// CUDA helpers shared by the .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#define OFDB_CUDA_CHECK(expr)                                                         \
  do {                                                                                \
    cudaError_t err__ = (expr);                                                       \
    if (err__ != cudaSuccess)                                                         \
      throw std::runtime_error(std::string("CUDA error in " #expr ": ") +            \
                               cudaGetErrorString(err__));                            \
  } while (0)

// Launch errors are reported right after the launch, not at the next sync.
#define OFDB_CUDA_CHECK_LAUNCH() OFDB_CUDA_CHECK(cudaGetLastError())

namespace ofdb {
inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }
inline int ceil_div(long long a, long long b) { return static_cast<int>((a + b - 1) / b); }

// Makes `device` current for the scope (the caller's stream and pointers belong to it) and
// restores the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    OFDB_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) OFDB_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// Stream-ordered scratch allocations, released (also stream-ordered) when the scope ends, also
// when a later check throws.
class Scratch {
 public:
  explicit Scratch(cudaStream_t stream) : stream_(stream) {}
  ~Scratch() {
    for (void* p : blocks_) cudaFreeAsync(p, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename T>
  T* get(int64_t count) {
    void* p = nullptr;
    OFDB_CUDA_CHECK(cudaMallocAsync(&p, static_cast<size_t>(count > 0 ? count : 1) * sizeof(T), stream_));
    blocks_.push_back(p);
    return static_cast<T*>(p);
  }

 private:
  cudaStream_t stream_;
  std::vector<void*> blocks_;
};
}  // namespace ofdb
