// Device queries for has_cuda(); compiled only in CUDA builds.
#include <cuda_runtime.h>

namespace ofdb {
// Number of usable CUDA devices; 0 when no driver or no device (never throws).
int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}
}  // namespace ofdb
