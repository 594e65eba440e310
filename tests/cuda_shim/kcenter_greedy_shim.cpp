// kcenter_greedy's CUDA source run on the CPU (tests/ops/_cuda_shim.py builds and drives this): the
// whole of csrc/patchcore/kcenter_greedy_cuda.cu, host function included, with every
// `kernel<<<grid, block, smem, stream>>>(args)` rewritten to `fake::launch(kernel, grid, block, args)`
// (fakecuda.h) and device memory replaced by host memory (stub/). So the launch sequence, grid sizes
// and scratch use are the .cu's own, not a copy.
//
//   kcenter_greedy_shim IN OUT N D PROJ_DIM METHOD N_STARTS N_SELECT SEED RADIUS HALF SMS
// IN: N * D float32 rows (C order). OUT: N_SELECT int64 indices, then N_SELECT float64 radii when
// RADIUS is 1. METHOD: 0 approx, 1 exact (kKCenterApprox / kKCenterExact). SMS: the fake device's
// multiprocessor count (with 6 blocks per SM it caps the grid of the per-iteration kernel).
#include "fakecuda.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#define OFDB_WITH_CUDA 1
#include "kcenter_greedy_kernels.inc"  // written by the test: the rewritten .cu

namespace {
bool read_exact(const char* path, void* dst, size_t bytes) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return false;
  const size_t got = std::fread(dst, 1, bytes, f);
  std::fclose(f);
  return got == bytes;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 13) {
    std::fprintf(stderr, "usage: %s IN OUT N D PROJ_DIM METHOD N_STARTS N_SELECT SEED RADIUS HALF SMS\n", argv[0]);
    return 2;
  }
  ofdb::KCenterParams p;
  p.n_points = std::atoll(argv[3]);
  p.dim = std::atoll(argv[4]);
  p.proj_dim = std::atoll(argv[5]);
  p.method = std::atoi(argv[6]);
  p.n_starts = std::atoll(argv[7]);
  p.n_select = std::atoll(argv[8]);
  p.seed = std::strtoull(argv[9], nullptr, 10);
  const bool with_radius = std::atoi(argv[10]) != 0;
  p.half_projection = std::atoi(argv[11]) != 0;
  g_fake_sms = std::atoi(argv[12]);
  std::vector<float> x(static_cast<size_t>(p.n_points * p.dim));
  if (!read_exact(argv[1], x.data(), x.size() * sizeof(float))) {
    std::fprintf(stderr, "%s: cannot read %lld x %lld float32\n", argv[1], (long long)p.n_points, (long long)p.dim);
    return 2;
  }
  // Garbage-filled like device memory, so an output the kernels forget to write shows.
  std::vector<int64_t> indices(p.n_select, -7);
  std::vector<double> radius(p.n_select, -7.0);
  try {
    ofdb::kcenter_greedy_cuda(x.data(), p, indices.data(), with_radius ? radius.data() : nullptr, 0, 0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kcenter_greedy_cuda: %s\n", e.what());
    return 3;
  }
  FILE* f = std::fopen(argv[2], "wb");
  if (f == nullptr) return 2;
  std::fwrite(indices.data(), sizeof(int64_t), indices.size(), f);
  if (with_radius) std::fwrite(radius.data(), sizeof(double), radius.size(), f);
  return std::fclose(f) == 0 ? 0 : 2;
}
