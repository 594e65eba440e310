#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>
typedef void* cudaStream_t;
typedef int cudaError_t;
constexpr int cudaSuccess = 0;
enum { cudaMemcpyHostToDevice = 1, cudaDevAttrMultiProcessorCount = 16 };
inline const char* cudaGetErrorString(int) { return "fake"; }
inline int cudaGetLastError() { return 0; }
inline int cudaMemcpyAsync(void* d, const void* s, size_t n, int, cudaStream_t) { std::memcpy(d, s, n); return 0; }
inline int cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) { std::memset(d, v, n); return 0; }
inline int g_fake_sms = 2;
inline int cudaDeviceGetAttribute(int* v, int, int) { *v = g_fake_sms; return 0; }
#define OFDB_CUDA_CHECK(expr) do { if ((expr) != 0) throw std::runtime_error(#expr); } while (0)
#define OFDB_CUDA_CHECK_LAUNCH() OFDB_CUDA_CHECK(cudaGetLastError())
namespace ofdb {
inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }
inline int ceil_div(long long a, long long b) { return static_cast<int>((a + b - 1) / b); }
class DeviceGuard { public: explicit DeviceGuard(int) {} };
class Scratch {
 public:
  explicit Scratch(cudaStream_t) {}
  ~Scratch() { for (void* p : blocks_) std::free(p); }
  template <typename T> T* get(int64_t count) {
    // garbage-filled, like cudaMallocAsync memory
    const size_t bytes = static_cast<size_t>(count > 0 ? count : 1) * sizeof(T);
    void* p = std::malloc(bytes);
    std::memset(p, 0x7f, bytes);
    blocks_.push_back(p);
    return static_cast<T*>(p);
  }
 private:
  std::vector<void*> blocks_;
};
}
template <class K> inline int cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, K, int, size_t) { *n = 6; return 0; }
