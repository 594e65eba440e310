"""kcenter_greedy cpu: the int8 prefilter must not change a single bit of the result.

The prefilter (csrc/patchcore/kcenter_greedy_cpu.cpp) skips rows that an int8 copy proves unchanged.
Its contract is exactness: indices and the covering-radius trajectory equal those of the plain float32
scan (``prefilter=False``) on any data, including random data where near-ties are common, data whose
rows are exactly representable in int8 (zero quantisation error, many exact ties), one outlier that
sets a coarse scale, huge and tiny magnitudes, and widths that are not a multiple of the int8 chunk.
"""

from __future__ import annotations

import numpy as np
import pytest

from ofdb_fast import _ext
from ofdb_fast.testing import backend_params

pytestmark = pytest.mark.parametrize("backend", backend_params("cpu"))


def both(x, n_select, *, method="approx", proj_dim=0, seed=0, radius=True):
    """(indices, radius) with the prefilter on and off."""
    C = _ext.load()
    code = C.KCENTER_APPROX if method == "approx" else C.KCENTER_EXACT
    x = np.ascontiguousarray(x, dtype=np.float32)
    on = C.kcenter_greedy_cpu(x, proj_dim, code, 10, n_select, seed, radius, True)
    off = C.kcenter_greedy_cpu(x, proj_dim, code, 10, n_select, seed, radius, False)
    return on, off


def assert_same(on, off):
    np.testing.assert_array_equal(on[0], off[0])
    np.testing.assert_array_equal(on[1], off[1])


@pytest.mark.parametrize("width", [1, 16, 37, 128, 200])
@pytest.mark.parametrize("method", ["approx", "exact"])
def test_random_gaussian(backend, width, method, rng):
    x = rng.standard_normal((3000, width)).astype(np.float32)
    assert_same(*both(x, 300, method=method))


@pytest.mark.parametrize("radius", [True, False])
def test_large_enough_for_both_threads(backend, radius, rng):
    # 9,000 rows: two thread blocks of the loop on a 2-core machine (4,096 rows per thread minimum).
    x = rng.standard_normal((9000, 64)).astype(np.float32)
    assert_same(*both(x, 900, radius=radius))


def test_with_projection(backend, rng):
    x = rng.standard_normal((2000, 300)).astype(np.float32)
    assert_same(*both(x, 200, proj_dim=128))


def test_int8_exact_rows_and_ties(backend, rng):
    # Integer rows within [-127, 127] with max 127: the quantisation error is exactly 0 and distances tie often.
    x = rng.integers(-3, 4, size=(2500, 24)).astype(np.float32)
    x[0, 0] = 127.0
    on, off = both(x, 400)
    assert_same(on, off)
    assert len(set(on[0].tolist())) == 400


def test_duplicated_rows(backend, rng):
    base = rng.standard_normal((40, 32)).astype(np.float32)
    x = base[rng.integers(0, 40, 2000)]
    assert_same(*both(x, 60))


def test_one_outlier_sets_a_coarse_scale(backend, rng):
    # max |z| = 1e4 makes every other row quantise to (almost) zero: the filter must fall back, not err.
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    x[7, 3] = 1e4
    assert_same(*both(x, 200))


@pytest.mark.parametrize("magnitude", [1e30, 1e18, 1e-10, 1e-14, 1e-30])
def test_extreme_magnitudes(backend, magnitude, rng):
    # 1e18 and 1e30: squared distances overflow float32 to inf; 1e-14 and 1e-30: below the filter's range
    # guard or into float32 subnormals.
    x = (rng.standard_normal((1500, 20)) * magnitude).astype(np.float32)
    assert_same(*both(x, 150))


def test_mixed_magnitude_rows(backend, rng):
    x = rng.standard_normal((2000, 16)).astype(np.float32)
    x[::50] *= np.float32(1e6)
    x[1::50] *= np.float32(1e-6)
    assert_same(*both(x, 400))


def test_all_rows_selected(backend, rng):
    x = rng.standard_normal((300, 8)).astype(np.float32)
    on, off = both(x, 300)
    assert_same(on, off)
    assert sorted(on[0].tolist()) == list(range(300))
    assert on[1][-1] == 0.0


def test_rows_wider_than_the_filter_limit(backend, rng):
    # Beyond 32,768 columns the int8 sums could overflow int32: the filter steps aside.
    x = rng.standard_normal((40, 33_000)).astype(np.float32)
    assert_same(*both(x, 10))
