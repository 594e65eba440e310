// knn_score on the CPU: blocked |q|^2 - 2 q.b + |b|^2 with a per-query sorted top-k.
//
// Parallel mapping: the bank is walked in super-blocks of kSuperRows rows; all threads first
// pack one super-block into panels of kNR rows, depth-major ([D][kNR]: the bank rows become
// vector lanes), shared by everyone, then each takes blocks of up to ~64 queries (dynamic
// schedule; blocks shrink, down to one register tile, so that every thread gets about two of
// them). The bank is thus packed once per call (packing it again for every query block cost
// as much as the arithmetic), and the packed copy never exceeds one super-block.
// Inside a query block (a small GEMM, BLIS-style):
// - the queries are packed into tiles of kMR rows stored depth-major ([D][kMR]);
// - the super-block is walked in blocks of kBankBlock rows (whole panels);
// - a register tile of kMR queries x kNR bank rows accumulates outer products: per depth d,
//   two vector loads of the panel, kMR broadcasts of q[i][d], 2 kMR fused multiply-adds;
// - depth is walked in chunks of kDepthChunk (outermost, so a chunk of the packed data stays
//   in cache while every tile x panel pair uses it); each chunk starts from fresh registers
//   and is added to the block's dot products in order, which also bounds float32 rounding;
// - then every query's top-k is updated from the block's distances, in bank order (a row whose
//   minimum cannot enter a full list is skipped after one vectorised min).
// Ties: every pair runs the same sequence of operations whatever its lane or tile (ragged
// tiles repeat their last query row, panels are padded with zero rows; those results are
// discarded), so duplicated bank rows give bit-identical distances and the stable insertion
// keeps the lowest index first.
#include "patchcore/knn_score.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace ofdb {
namespace {

// GCC/Clang vector extensions, one hardware register wide (64 bytes with AVX-512, 32 with AVX).
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kMR = 12;  // 24 accumulators + 2 panel vectors + 1 broadcast <= 32 registers
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
constexpr int kMR = 6;  // 12 + 2 + 1 <= 16 registers
#else
constexpr int kVecBytes = 16;  // SSE2 / NEON
constexpr int kMR = 6;
#endif

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(kVecBytes)));
  static constexpr int kLanes = kVecBytes / sizeof(T);
  static constexpr int kNR = 2 * kLanes;  // bank rows per panel: two vectors
};
template <typename T>
using vec_t = typename Vec<T>::type;

constexpr int64_t kBankBlock = 128;  // a multiple of every kNR
constexpr int64_t kSuperRows = 32 * kBankBlock;  // 4,096 rows: 16 MB of packed float32 at D = 1024
constexpr int64_t kDepthChunk = 128;
constexpr int64_t kQueryBlock = (64 + kMR - 1) / kMR * kMR;

template <typename T>
inline vec_t<T> load_vec(const T* p) {
  vec_t<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Explicit fused multiply-add where the target has it (the build forbids implicit contraction,
// which would otherwise halve the arithmetic throughput of this kernel).
inline vec_t<float> madd(vec_t<float> a, vec_t<float> b, vec_t<float> c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(a, b, c);
#elif defined(__FMA__) && defined(__AVX__)
  return _mm256_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}
inline vec_t<double> madd(vec_t<double> a, vec_t<double> b, vec_t<double> c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_pd(a, b, c);
#elif defined(__FMA__) && defined(__AVX__)
  return _mm256_fmadd_pd(a, b, c);
#else
  return a * b + c;
#endif
}

inline vec_t<float> broadcast(float x) {
#if defined(__AVX512F__)
  return _mm512_set1_ps(x);
#elif defined(__AVX__)
  return _mm256_set1_ps(x);
#else
  return vec_t<float>{} + x;
#endif
}
inline vec_t<double> broadcast(double x) {
#if defined(__AVX512F__)
  return _mm512_set1_pd(x);
#elif defined(__AVX__)
  return _mm256_set1_pd(x);
#else
  return vec_t<double>{} + x;
#endif
}

// panel[d * kNR + r] = bank row r, element d; rows past n_rows are zero. Rows are read
// contiguously (row-outer order); the panel (D x kNR) stays in cache while it fills.
template <typename T>
void pack_panel(const T* bank, int64_t n_rows, int64_t dim, T* panel) {
  constexpr int NR = Vec<T>::kNR;
  if (n_rows < NR) std::fill(panel, panel + dim * NR, T(0));
  for (int64_t r = 0; r < n_rows; ++r) {
    const T* row = bank + r * dim;
    for (int64_t d = 0; d < dim; ++d) panel[d * NR + r] = row[d];
  }
}

// tile[d * kMR + i] = query row min(i, n_rows - 1), element d (a ragged tile repeats its last
// row, so every lane computes something valid; the extra results are discarded).
template <typename T>
void pack_queries(const T* queries, int64_t n_rows, int64_t dim, T* tile) {
  for (int i = 0; i < kMR; ++i) {
    const T* row = queries + std::min<int64_t>(i, n_rows - 1) * dim;
    for (int64_t d = 0; d < dim; ++d) tile[d * kMR + i] = row[d];
  }
}

// dots[i * ld + r] (+)= sum over d in [d0, d1) of query i[d] * bank row r[d], for one packed
// query tile and one packed panel: stored when first, else added (the same order for every
// pair).
template <typename T>
inline void dot_tile(const T* tile, const T* panel, int64_t d0, int64_t d1, bool first, T* dots,
                     int64_t ld) {
  constexpr int L = Vec<T>::kLanes;
  constexpr int NR = Vec<T>::kNR;
  vec_t<T> acc[kMR][2];
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = vec_t<T>{};
  for (int64_t d = d0; d < d1; ++d) {
    const vec_t<T> b0 = load_vec(panel + d * NR);
    const vec_t<T> b1 = load_vec(panel + d * NR + L);
    for (int i = 0; i < kMR; ++i) {
      const vec_t<T> qs = broadcast(tile[d * kMR + i]);
      acc[i][0] = madd(qs, b0, acc[i][0]);
      acc[i][1] = madd(qs, b1, acc[i][1]);
    }
  }
  for (int i = 0; i < kMR; ++i) {
    T* row = dots + i * ld;
    if (!first) {
      acc[i][0] = acc[i][0] + load_vec(row);
      acc[i][1] = acc[i][1] + load_vec(row + L);
    }
    std::memcpy(row, &acc[i][0], sizeof(acc[i][0]));
    std::memcpy(row + L, &acc[i][1], sizeof(acc[i][1]));
  }
}

template <typename T>
double squared_norm(const T* x, int64_t dim) {
  double s = 0.0;
  for (int64_t d = 0; d < dim; ++d) s += static_cast<double>(x[d]) * static_cast<double>(x[d]);
  return s;
}

// Insert (dist, idx) into the ascending list (dists, idxs) of length *count <= k. Candidates
// arrive in increasing idx, so placing after equal distances keeps the lowest index first.
inline void topk_insert(float dist, int64_t idx, float* dists, int64_t* idxs, int64_t* count,
                        int64_t k) {
  if (*count == k && !(dist < dists[k - 1])) return;
  const int64_t pos = std::upper_bound(dists, dists + *count, dist) - dists;
  const int64_t n_move = std::min(*count, k - 1) - pos;
  if (n_move > 0) {
    std::memmove(dists + pos + 1, dists + pos, n_move * sizeof(float));
    std::memmove(idxs + pos + 1, idxs + pos, n_move * sizeof(int64_t));
  }
  dists[pos] = dist;
  idxs[pos] = idx;
  if (*count < k) ++*count;
}

// Minimum of row[0:n] (vector lanes, then the tail and the lanes in order).
inline float row_min(const float* row, int64_t n) {
  constexpr int L = Vec<float>::kLanes;
  float lo = INFINITY;
  int64_t j = 0;
  if (n >= L) {
    vec_t<float> acc = load_vec(row);
    for (j = L; j + L <= n; j += L) {
      const vec_t<float> v = load_vec(row + j);
      acc = v < acc ? v : acc;
    }
    for (int l = 0; l < L; ++l) lo = std::min(lo, acc[l]);
  }
  for (; j < n; ++j) lo = std::min(lo, row[j]);
  return lo;
}

}  // namespace

template <typename T>
void knn_score_cpu(const T* queries, const T* bank, int64_t n_queries, int64_t n_bank,
                   int64_t dim, int64_t k, float* out_dist, int64_t* out_idx) {
  constexpr int NR = Vec<T>::kNR;
  if (n_queries == 0) return;
  std::vector<double> bank_norm(n_bank);
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n_bank; ++j) bank_norm[j] = squared_norm(bank + j * dim, dim);

#ifdef _OPENMP
  const int64_t n_threads = omp_get_max_threads();
#else
  const int64_t n_threads = 1;
#endif
  // Big blocks re-read the bank less often; small ones keep every thread busy when Q is small.
  int64_t block = (n_queries + 2 * n_threads - 1) / (2 * n_threads);
  block = std::clamp<int64_t>((block + kMR - 1) / kMR * kMR, kMR, kQueryBlock);
  const int64_t n_blocks = (n_queries + block - 1) / block;
  const int64_t super_rows = std::min(kSuperRows, (n_bank + NR - 1) / NR * NR);
  std::vector<T> packed(super_rows * dim);  // one packed super-block, shared
  std::vector<int64_t> count(n_queries, 0);  // entries of each query's top-k so far
#pragma omp parallel
  {
    std::vector<T> tiles(kQueryBlock * dim);
    std::vector<T> dots(kQueryBlock * kBankBlock);
    std::vector<float> dist(kQueryBlock * kBankBlock);
    double query_norm[kQueryBlock];
    for (int64_t s0 = 0; s0 < n_bank; s0 += kSuperRows) {
      const int64_t ns = std::min(kSuperRows, n_bank - s0);
      const int64_t n_panels = (ns + NR - 1) / NR;
#pragma omp for schedule(static)
      for (int64_t p = 0; p < n_panels; ++p)
        pack_panel(bank + (s0 + p * NR) * dim, std::min<int64_t>(NR, ns - p * NR), dim, packed.data() + p * NR * dim);
      // (the implicit barrier: the super-block is packed before anyone reads it)
#pragma omp for schedule(dynamic, 1)
      for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const int64_t q0 = blk * block;
        const int64_t nq = std::min(block, n_queries - q0);
        for (int64_t i = 0; i < nq; ++i) query_norm[i] = squared_norm(queries + (q0 + i) * dim, dim);
        for (int64_t i0 = 0; i0 < nq; i0 += kMR)
          pack_queries(queries + (q0 + i0) * dim, std::min<int64_t>(kMR, nq - i0), dim, tiles.data() + i0 * dim);
        for (int64_t b0 = 0; b0 < ns; b0 += kBankBlock) {
          const int64_t nm = std::min(kBankBlock, ns - b0);
          const int64_t m0 = s0 + b0;
          const T* panels = packed.data() + b0 * dim;
          // dots rows cover whole tiles (ragged tiles compute throw-away rows).
          for (int64_t d0 = 0; d0 < dim; d0 += kDepthChunk) {
            const int64_t d1 = std::min(dim, d0 + kDepthChunk);
            for (int64_t j0 = 0; j0 < nm; j0 += NR)
              for (int64_t i0 = 0; i0 < nq; i0 += kMR)
                dot_tile<T>(tiles.data() + i0 * dim, panels + j0 * dim, d0, d1, d0 == 0,
                            dots.data() + i0 * kBankBlock + j0, kBankBlock);
          }
          for (int64_t i = 0; i < nq; ++i) {
            for (int64_t j = 0; j < nm; ++j) {
              const double d2 = query_norm[i] - 2.0 * static_cast<double>(dots[i * kBankBlock + j]) +
                                bank_norm[m0 + j];
              dist[i * kBankBlock + j] = static_cast<float>(std::max(d2, 0.0));
            }
          }
          for (int64_t i = 0; i < nq; ++i) {
            float* dists = out_dist + (q0 + i) * k;
            int64_t* idxs = out_idx + (q0 + i) * k;
            const float* row = dist.data() + i * kBankBlock;
            // A full list rejects every candidate that is not below its k-th entry: skip the
            // whole row when even its minimum is not (most rows, once the lists have filled).
            if (count[q0 + i] == k && !(row_min(row, nm) < dists[k - 1])) continue;
            for (int64_t j = 0; j < nm; ++j) topk_insert(row[j], m0 + j, dists, idxs, &count[q0 + i], k);
          }
        }
      }
      // (the implicit barrier: everyone is done with the super-block before it is overwritten)
    }
  }
}

template void knn_score_cpu<float>(const float*, const float*, int64_t, int64_t, int64_t,
                                   int64_t, float*, int64_t*);
template void knn_score_cpu<double>(const double*, const double*, int64_t, int64_t, int64_t,
                                    int64_t, float*, int64_t*);

}  // namespace ofdb
