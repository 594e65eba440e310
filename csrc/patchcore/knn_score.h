// knn_score: exact k nearest neighbours by squared L2 distance (CPU, OpenMP).
//
// Math: d(q, b) = |q|^2 - 2 q.b + |b|^2, clamped at 0 (the faiss IndexFlatL2 expansion).
// Numerics: dot products accumulate in the input type T over vector lanes (4, 8 or 16 floats
// with SSE/NEON, AVX, AVX-512), then a fixed pairwise lane reduction; norms accumulate in
// double; the expansion is evaluated in double and rounded to float once. So float32 input means float32 dot products (error about
// 1e-7 * |q| |b| * sqrt(D / lanes)), float64 input means float64 throughout. FMA where the
// target has it.
// Tie-breaking: every (query, bank row) pair is computed by the same instruction sequence, so
// duplicated bank rows give equal distances; equal float32 distances keep the lowest bank
// index first (bank rows are scanned in increasing index order, insertion is stable).
#pragma once

#include <cstdint>

namespace ofdb {

// queries:  [n_queries, dim] row-major, T = float or double
// bank:     [n_bank, dim] row-major
// out_dist: [n_queries, k] float32, ascending per row
// out_idx:  [n_queries, k] int64, bank indices of out_dist
// Requires 1 <= k <= n_bank, dim >= 1. Parallel over blocks of queries; thread-safe, no
// allocation proportional to n_bank beyond O(threads * block) scratch.
template <typename T>
void knn_score_cpu(const T* queries, const T* bank, int64_t n_queries, int64_t n_bank,
                   int64_t dim, int64_t k, float* out_dist, int64_t* out_idx);

}  // namespace ofdb
