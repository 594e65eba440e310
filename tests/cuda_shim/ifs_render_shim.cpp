// ifs_render's CUDA source run on the CPU (tests/ops/_cuda_shim.py builds this, test_cuda_shim.py
// runs it): the whole of csrc/fractal/ifs_render_cuda.cu, host function included, with its launches
// rewritten to fake::launch (fakecuda.h: each block's threads are fibers with real block and warp
// barriers) and kMaxGridY shrunk from 65535 to 2, so the host loop over grid.y chunks runs. 9
// hand-picked configs (including chains that overflow to inf part-way through a group of steps)
// and 24 seeded random ones (sizes, K, point counts, every switch) compare the RGB images and the
// int32 counts with ifs_render_cpu bit for bit. Prints one line per run and "N/M equal"; exits
// non-zero on any difference.
#include "fakecuda.h"
#include <cstdio>
#include <random>
#define OFDB_WITH_CUDA 1
#include "ifs_render_kernels.inc"  // written by the test: the rewritten .cu

using namespace ofdb::ifs;

void render_fake(const RenderParams& p, const double* sys, const int64_t* nm, const int64_t* ids, const double* pr,
                 int32_t* cnt, uint8_t* rgb) {
  auto ptr = [](const void* q) { return reinterpret_cast<uintptr_t>(q); };
  ifs_render_cuda(p, ptr(sys), ptr(nm), ptr(ids), ptr(pr), ptr(cnt), ptr(rgb), 0, 0);
}

int main() {
  std::mt19937_64 g(7);
  std::uniform_real_distribution<double> U(0, 1);
  int fails = 0, runs = 0;
  constexpr int kFixed = 9, kRandom = 24;  // hand-picked configs, then seeded random ones
  for (int cfg = 0; cfg < kFixed + kRandom; ++cfg) {
    RenderParams p;
    p.n_images = 5;
    p.n_max_maps = 4;
    p.n_points = 2999 + cfg % 4;  // not always a multiple of the chain's group of 4 steps
    p.height = cfg % 2 ? 29 : 24;
    p.width = cfg % 3 ? 24 : 31;
    p.seed = 11 + cfg;
    if (cfg == 1) { p.jitter = false; p.translate = 0; p.scale = false; p.flips = false; p.blur = false; }
    if (cfg == 2) p.color = false;
    if (cfg == 3) p.patch = true;
    if (cfg == 4) { p.blur = false; p.flips = false; }
    if (cfg == 5) { p.scale = false; p.jitter_tries = 1; p.has_probs = true; }
    if (cfg == 6) { p.height = p.width = 1; }
    if (cfg >= kFixed) {  // every switch and range at random (background is CPU-only)
      auto coin = [&] { return U(g) < 0.5; };
      p.n_images = 1 + g() % 7;
      p.n_max_maps = 1 + g() % 6;
      p.n_points = 200 + g() % 3800;
      p.height = 1 + g() % 40;
      p.width = 1 + g() % 40;
      p.jitter = coin();
      p.jitter_tries = 1 + g() % 4;
      p.translate = coin() ? 0.0 : 0.3 * U(g);
      p.scale = coin();
      p.flips = coin();
      p.color = coin();
      p.patch = coin();
      p.blur = coin();
      p.blur_lo = 0.2 + U(g);
      p.blur_hi = p.blur_lo + U(g);
      p.has_probs = coin();
    }
    const int K = p.n_max_maps;
    std::vector<double> sys(p.n_images * K * 6), probs(p.n_images * K);
    std::vector<int64_t> nm(p.n_images), ids(p.n_images);
    for (int b = 0; b < p.n_images; ++b) {
      nm[b] = cfg < kFixed ? 2 + b % 3 : 1 + static_cast<int64_t>(g() % K);
      ids[b] = 100 * cfg + 3 * b;
      double tot = 0;
      for (int k = 0; k < K; ++k) {
        const double t1 = U(g) * 6.28, t2 = U(g) * 6.28, s1 = 0.3 + 0.6 * U(g), s2 = 0.15 + (s1 - 0.15) * U(g);
        const double c1 = cos(t1), n1 = sin(t1), c2 = cos(t2), n2 = sin(t2);
        double* r = &sys[(b * K + k) * 6];
        // R(t1) diag(s1, s2) R(t2): rows a b e / c d f
        r[0] = c1 * s1 * c2 - n1 * s2 * n2; r[1] = -c1 * s1 * n2 - n1 * s2 * c2; r[2] = 2 * U(g) - 1;
        r[3] = n1 * s1 * c2 + c1 * s2 * n2; r[4] = -n1 * s1 * n2 + c1 * s2 * c2; r[5] = 2 * U(g) - 1;
        probs[b * K + k] = k < nm[b] ? U(g) + 0.1 : 0.0;
        tot += probs[b * K + k];
      }
      for (int k = 0; k < K; ++k) probs[b * K + k] /= tot;
    }
    if (cfg == 7 || cfg == 8) {  // expanding maps: the chain overflows to inf after a few hundred steps
      for (int b = 0; b < p.n_images; ++b)
        for (int k = 0; k < K; ++k) {
          double* r = &sys[(b * K + k) * 6];
          const double f = cfg == 7 ? 3.0 + b : 1.0 + 0.37 * (b + 1);
          r[0] *= f * 4; r[1] *= f * 4; r[3] *= f * 4; r[4] *= f * 4;
        }
      p.jitter = false;
    }
    const double* pr = p.has_probs ? probs.data() : nullptr;
    for (int counts_only = 0; counts_only < 2; ++counts_only) {
      p.counts_only = counts_only;
      const int64_t n_pix = (int64_t)p.height * p.width;
      std::vector<int32_t> c_cpu(n_pix * p.n_images), c_fake(n_pix * p.n_images);
      std::vector<uint8_t> r_cpu(n_pix * p.n_images * 3, 0xAB), r_fake(n_pix * p.n_images * 3, 0xCD);
      ifs_render_cpu(p, sys.data(), nm.data(), ids.data(), pr, c_cpu.data(), r_cpu.data());
      render_fake(p, sys.data(), nm.data(), ids.data(), pr, c_fake.data(), r_fake.data());
      bool ok = counts_only ? c_cpu == c_fake : r_cpu == r_fake;
      long nz = 0;
      if (counts_only) for (auto v : c_cpu) nz += v != 0; else for (auto v : r_cpu) nz += v != 0;
      ++runs;
      if (!ok) ++fails;
      printf("cfg %d %s: %s (non-zero %ld)\n", cfg, counts_only ? "counts" : "rgb", ok ? "equal" : "DIFFER", nz);
    }
  }
  printf("%d/%d equal\n", runs - fails, runs);
  return fails != 0;
}
