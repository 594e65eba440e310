// knn_score on the CPU: blocked |q|^2 - 2 q.b + |b|^2 with a per-query sorted top-k.
//
// Parallel mapping: one OpenMP task per block of up to kQueryBlock queries (dynamic schedule;
// blocks shrink, down to one register tile, so that every thread gets about two of them).
// Inside a block, the bank is walked in blocks of kBankBlock rows (kept in L2); each bank
// block is multiplied against the query block in register tiles of kQueryTile x kBankTile
// dot products, then every query's top-k is updated from the block's distances in bank
// order. Ragged tiles repeat a valid row (results discarded), so every pair runs the same
// code and duplicated bank rows produce bit-identical distances (ties: lowest index first).
#include "patchcore/knn_score.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace ofdb {
namespace {

constexpr int64_t kQueryBlock = 64;
constexpr int64_t kBankBlock = 128;
// Register tile of dot products: accumulators + one query vector + kBankTile bank vectors must
// fit the vector register file (32 registers with AVX-512, 16 otherwise).
#if defined(__AVX512F__)
constexpr int kQueryTile = 8;
constexpr int kBankTile = 3;
#else
constexpr int kQueryTile = 4;
constexpr int kBankTile = 2;
#endif

// GCC/Clang vector extensions, one hardware register wide (64 bytes with AVX-512, 32 with AVX).
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;  // SSE2 / NEON
#endif
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(kVecBytes)));
  static constexpr int kLanes = kVecBytes / sizeof(T);
};
template <typename T>
using vec_t = typename Vec<T>::type;

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

template <typename T>
inline T reduce_lanes(vec_t<T> acc) {
  constexpr int L = Vec<T>::kLanes;
  T tmp[L];
  std::memcpy(tmp, &acc, sizeof(acc));
  for (int width = L / 2; width > 0; width /= 2)
    for (int l = 0; l < width; ++l) tmp[l] = tmp[l] + tmp[l + width];
  return tmp[0];
}

// out[i][j] = q_i . b_j for a kQueryTile x kBankTile tile of rows. The D % lanes tail is
// zero-padded into one more vector step, so every pair follows the same sequence.
template <typename T>
inline void dot_tile(const T* const* q, const T* const* b, int64_t dim,
                     T out[kQueryTile][kBankTile]) {
  constexpr int L = Vec<T>::kLanes;
  vec_t<T> acc[kQueryTile][kBankTile];
  for (int i = 0; i < kQueryTile; ++i)
    for (int j = 0; j < kBankTile; ++j) acc[i][j] = vec_t<T>{};
  int64_t d = 0;
  for (; d + L <= dim; d += L) {
    vec_t<T> bv[kBankTile];
    for (int j = 0; j < kBankTile; ++j) bv[j] = load_vec(b[j] + d);
    for (int i = 0; i < kQueryTile; ++i) {
      const vec_t<T> qv = load_vec(q[i] + d);
      for (int j = 0; j < kBankTile; ++j) acc[i][j] = madd(qv, bv[j], acc[i][j]);
    }
  }
  const int64_t tail = dim - d;
  if (tail > 0) {
    T pad[L] = {};
    vec_t<T> bv[kBankTile];
    for (int j = 0; j < kBankTile; ++j) {
      std::memcpy(pad, b[j] + d, tail * sizeof(T));
      bv[j] = load_vec(pad);
    }
    for (int i = 0; i < kQueryTile; ++i) {
      std::memcpy(pad, q[i] + d, tail * sizeof(T));
      const vec_t<T> qv = load_vec(pad);
      for (int j = 0; j < kBankTile; ++j) acc[i][j] = madd(qv, bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < kQueryTile; ++i)
    for (int j = 0; j < kBankTile; ++j) out[i][j] = reduce_lanes<T>(acc[i][j]);
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

}  // namespace

template <typename T>
void knn_score_cpu(const T* queries, const T* bank, int64_t n_queries, int64_t n_bank,
                   int64_t dim, int64_t k, float* out_dist, int64_t* out_idx) {
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
  block = std::clamp<int64_t>((block + kQueryTile - 1) / kQueryTile * kQueryTile, kQueryTile, kQueryBlock);
  const int64_t n_blocks = (n_queries + block - 1) / block;
#pragma omp parallel
  {
    std::vector<float> dist(kQueryBlock * kBankBlock);
    double query_norm[kQueryBlock];
    int64_t count[kQueryBlock];
#pragma omp for schedule(dynamic, 1)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      const int64_t q0 = blk * block;
      const int64_t nq = std::min(block, n_queries - q0);
      for (int64_t i = 0; i < nq; ++i) {
        query_norm[i] = squared_norm(queries + (q0 + i) * dim, dim);
        count[i] = 0;
      }
      for (int64_t m0 = 0; m0 < n_bank; m0 += kBankBlock) {
        const int64_t nm = std::min(kBankBlock, n_bank - m0);
        for (int64_t i0 = 0; i0 < nq; i0 += kQueryTile) {
          const T* q[kQueryTile];
          for (int i = 0; i < kQueryTile; ++i)
            q[i] = queries + (q0 + std::min<int64_t>(i0 + i, nq - 1)) * dim;
          for (int64_t j0 = 0; j0 < nm; j0 += kBankTile) {
            const T* b[kBankTile];
            for (int j = 0; j < kBankTile; ++j)
              b[j] = bank + (m0 + std::min<int64_t>(j0 + j, nm - 1)) * dim;
            T dots[kQueryTile][kBankTile];
            dot_tile<T>(q, b, dim, dots);
            for (int i = 0; i < kQueryTile && i0 + i < nq; ++i) {
              for (int j = 0; j < kBankTile && j0 + j < nm; ++j) {
                const double d2 = query_norm[i0 + i] - 2.0 * static_cast<double>(dots[i][j]) +
                                  bank_norm[m0 + j0 + j];
                dist[(i0 + i) * kBankBlock + j0 + j] = static_cast<float>(std::max(d2, 0.0));
              }
            }
          }
        }
        for (int64_t i = 0; i < nq; ++i) {
          float* dists = out_dist + (q0 + i) * k;
          int64_t* idxs = out_idx + (q0 + i) * k;
          const float* row = dist.data() + i * kBankBlock;
          for (int64_t j = 0; j < nm; ++j) topk_insert(row[j], m0 + j, dists, idxs, &count[i], k);
        }
      }
    }
  }
}

template void knn_score_cpu<float>(const float*, const float*, int64_t, int64_t, int64_t,
                                   int64_t, float*, int64_t*);
template void knn_score_cpu<double>(const double*, const double*, int64_t, int64_t, int64_t,
                                    int64_t, float*, int64_t*);

}  // namespace ofdb
