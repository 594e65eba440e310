"""The counter-based RNG: C++ (csrc/common/rng.h) and its NumPy mirror agree bit for bit."""

import numpy as np
import pytest

from ofdb_fast import _ext
from ofdb_fast.reference import _rng

needs_ext = pytest.mark.skipif(not _ext.available(), reason="ofdb_fast._C is not built")


def test_mix64_known_values():
    # SplitMix64 finaliser: fixed point at 0, and a hand-checked value for 1.
    assert int(_rng.mix64(0)) == 0
    assert int(_rng.mix64(1)) == 0x5692161D100B05E5


@needs_ext
@pytest.mark.parametrize("seed,stream,item", [(0, 0, 0), (1, _rng.STREAM_CHAOS, 7), (2**64 - 1, 16, 2**40 + 3)])
def test_cpp_matches_numpy(seed, stream, item):
    C = _ext.load()
    n = 1000
    key = _rng.stream_key(seed, stream, item)
    np.testing.assert_array_equal(C.rng_bits(seed, stream, item, n), _rng.bits(key, np.arange(n)))
    np.testing.assert_array_equal(C.rng_u01(seed, stream, item, n), _rng.u01(key, np.arange(n)))


def test_u01_range_and_moments():
    key = _rng.stream_key(123, _rng.STREAM_AUGMENT, 0)
    u = _rng.u01(key, np.arange(200_000))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002


def test_streams_and_items_are_independent():
    a = _rng.bits(_rng.stream_key(0, 1, 0), np.arange(64))
    b = _rng.bits(_rng.stream_key(0, 2, 0), np.arange(64))
    c = _rng.bits(_rng.stream_key(0, 1, 1), np.arange(64))
    d = _rng.bits(_rng.stream_key(1, 1, 0), np.arange(64))
    assert len({*a.tolist(), *b.tolist(), *c.tolist(), *d.tolist()}) == 256


def test_below_is_in_range_and_covers():
    key = _rng.stream_key(5, 2, 9)
    k = _rng.below(key, np.arange(10_000), 3)
    assert k.min() == 0 and k.max() == 2
    assert np.all(np.abs(np.bincount(k) / 10_000 - 1 / 3) < 0.02)


def test_uniform_reversed_bounds_follow_numpy_semantics():
    key = _rng.stream_key(0, 1, 0)
    u = _rng.u01(key, np.arange(10))
    np.testing.assert_array_equal(_rng.uniform(key, np.arange(10), 2.0, 1.0), 2.0 + (1.0 - 2.0) * u)
