"""NumPy mirror of ``csrc/common/rng.h``: the counter-based RNG every backend shares.

A draw is a pure function of (seed, stream, item, counter)::

    key  = stream_key(seed, stream, item)
    bits = mix64(key + (counter + 1) * GOLDEN)      # SplitMix64 sequence from key
    u01  = (bits >> 11) * 2**-53                     # float64 in [0, 1)

All functions broadcast over NumPy integer arrays and return uint64 / float64 arrays (or
scalars for scalar input); uint64 arithmetic wraps modulo 2**64 exactly as in C++.
Constants are mirrored from ``csrc/common/rng.h``; change both together.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
SEED_SALT = np.uint64(0x243F6A8885A308D3)
STREAM_SALT = np.uint64(0x13198A2E03707344)
ITEM_SALT = np.uint64(0xA4093822299F31D0)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_MINUS_53 = 1.0 / 9007199254740992.0

# Stream ids (mirror of ofdb::rng::Stream).
STREAM_SYSTEM = 1
STREAM_JITTER = 2
STREAM_CHAOS = 3
STREAM_AUGMENT = 4
STREAM_BACKGROUND = 5
STREAM_PATCH = 6
STREAM_MULTI = 7
STREAM_CORESET = 16
STREAM_CLUSTER_NORMALS = 17
STREAM_SPLIT = 18


def _u64(x) -> np.ndarray:
    """uint64 view of ints (negative Python ints wrap as in C++ two's complement)."""
    if isinstance(x, (int, np.integer)):
        return np.asarray(int(x) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    return np.asarray(x).astype(np.uint64)


def mix64(z) -> np.ndarray:
    z = _u64(z)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def stream_key(seed, stream, item) -> np.ndarray:
    with np.errstate(over="ignore"):
        k = mix64(_u64(seed) * GOLDEN + SEED_SALT)
        k = mix64(k ^ (_u64(stream) * GOLDEN + STREAM_SALT))
        return mix64(k ^ (_u64(item) * GOLDEN + ITEM_SALT))


def bits(key, counter) -> np.ndarray:
    with np.errstate(over="ignore"):
        return mix64(_u64(key) + (_u64(counter) + np.uint64(1)) * GOLDEN)


def u01(key, counter) -> np.ndarray:
    """float64 in [0, 1) with 53 random bits."""
    return (bits(key, counter) >> np.uint64(11)).astype(np.float64) * _TWO_POW_MINUS_53


def uniform(key, counter, lo, hi) -> np.ndarray:
    """numpy ``Generator.uniform`` semantics: ``lo + (hi - lo) * u``, also when lo > hi."""
    return lo + (hi - lo) * u01(key, counter)


def below(key, counter, n) -> np.ndarray:
    """Integer in [0, n) (multiply-shift on the top 32 bits), as ``rng::below``."""
    top = bits(key, counter) >> np.uint64(32)
    with np.errstate(over="ignore"):
        return ((top * _u64(n)) >> np.uint64(32)).astype(np.int64)
