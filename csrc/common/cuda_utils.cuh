// CUDA helpers shared by the .cu files.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

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
}  // namespace ofdb
