// Counter-based RNG shared by every backend (host and device).
//
// Mirrored bit for bit in python/ofdb_fast/reference/_rng.py; change both together.
//
// A draw is a pure function of (seed, stream, item, counter):
//   key   = stream_key(seed, stream, item)          three SplitMix64 finalisations
//   bits  = mix64(key + (counter + 1) * kGolden)    i.e. the SplitMix64 sequence from `key`
//   u01   = (bits >> 11) * 2^-53                     a double in [0, 1)
// Streams separate independent uses (system sampling, chaos game, augmentation, ...), items
// are images/systems/points, counters are the draw index inside one (stream, item).  No state
// is carried between calls, so results do not depend on batch size, thread or GPU count.
#pragma once

#include <cstdint>

#include "common/macros.h"

namespace ofdb {
namespace rng {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kSeedSalt = 0x243F6A8885A308D3ull;
constexpr uint64_t kStreamSalt = 0x13198A2E03707344ull;
constexpr uint64_t kItemSalt = 0xA4093822299F31D0ull;
constexpr double kTwoPowMinus53 = 1.0 / 9007199254740992.0;

// Stream ids. A constant is defined once here; _rng.py mirrors this table.
enum Stream : uint64_t {
  kStreamSystem = 1,      // IFS system sampling (fractal/ifs.py, counter mode)
  kStreamJitter = 2,      // per-image parameter jitter
  kStreamChaos = 3,       // chaos-game map choices, one draw per point
  kStreamAugment = 4,     // window, flips, colour, blur draws of one image
  kStreamBackground = 5,  // diamond-square background of one image
  kStreamPatch = 6,       // 3x3 splat mask of one image
  kStreamMulti = 7,       // multi-fractal composition of one image
  kStreamCoreset = 16,    // coreset projection matrix and starting points
  kStreamClusterNormals = 17,  // anomaly clustering: which normal images form the bank
  kStreamSplit = 18,      // dataset split shuffles and few-shot reference picks (Python only)
};

// SplitMix64 finaliser (Steele, Lea, Flood 2014). mix64(0) == 0, hence the salts below.
OFDB_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

OFDB_HD uint64_t stream_key(uint64_t seed, uint64_t stream, uint64_t item) {
  uint64_t k = mix64(seed * kGolden + kSeedSalt);
  k = mix64(k ^ (stream * kGolden + kStreamSalt));
  return mix64(k ^ (item * kGolden + kItemSalt));
}

OFDB_HD uint64_t bits(uint64_t key, uint64_t counter) {
  return mix64(key + (counter + 1) * kGolden);
}

// Double in [0, 1) with 53 random bits.
OFDB_HD double u01(uint64_t key, uint64_t counter) {
  return static_cast<double>(bits(key, counter) >> 11) * kTwoPowMinus53;
}

// numpy Generator.uniform semantics: lo + (hi - lo) * u, also when lo > hi. Two roundings on
// every backend: host code is built with -ffp-contract=off, and nvcc would otherwise fuse the
// multiply-add into one DFMA (measured in the SASS of kcenter's weights_kernel), which can
// change the float32 projection weights the CPU and NumPy backends draw.
OFDB_HD double uniform(uint64_t key, uint64_t counter, double lo, double hi) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(lo, __dmul_rn(hi - lo, u01(key, counter)));
#else
  return lo + (hi - lo) * u01(key, counter);
#endif
}

// Integer in [0, n) for n >= 1 (multiply-shift on the top 32 bits; bias < n / 2^32).
OFDB_HD uint32_t below(uint64_t key, uint64_t counter, uint32_t n) {
  return static_cast<uint32_t>(((bits(key, counter) >> 32) * static_cast<uint64_t>(n)) >> 32);
}

}  // namespace rng
}  // namespace ofdb
