"""IFS system sampling: reference call-order replay, counter-mode sharding, acceptance invariants."""

import math

import numpy as np
import pytest

from ofdb_fast.fractal import ifs
from ofdb_fast.reference import _rng


def _unif(g, lo, hi, size=None):
    # Generator.uniform itself where NumPy 2 allows it; lo > hi keeps NumPy 1.x's lo + (hi - lo) * u.
    return g.uniform(lo, hi, size) if lo <= hi else lo + (hi - lo) * g.random(size)


def _replay_reference(seed, num_systems, min_n, max_n, beta=None, bval=1.0):
    """Hand-rolled replay of the reference's documented call order with one seeded Generator.

    Written independently of ifs.py with plain Python floats (IEEE, no FMA):
    integers -> random(2n,2,1) -> uniform(-pi,pi,2n) -> uniform(beta) -> sample_svs -> uniform(-b,b,(n,2)).
    """
    g = np.random.default_rng(seed)
    out = []
    for _ in range(num_systems):
        n = int(g.integers(min_n, max_n + 1))
        refl = g.random((2 * n, 2, 1))
        theta = _unif(g, -np.pi, np.pi, 2 * n)
        lo, hi = ((5 + n) / 2, (6 + n) / 2) if beta is None else beta
        alpha = _unif(g, lo, hi)
        p, q = alpha, alpha - 3 * n + 3
        svs = []
        for _k in range(n - 1):
            s1 = _unif(g, max(0, q / 3), min(1, p))
            p, q = p - s1, q - s1
            s2 = _unif(g, max(0, q / 2), min(s1, p / 2))
            p, q = p - 2 * s2, q - 2 * s2 + 3
            svs.append((s1, s2))
        s2 = _unif(g, max(0, (p - 1) / 2), p / 3)
        svs.append((p - 2 * s2, s2))
        trans = _unif(g, -bval, bval, (n, 2))
        ws = []
        for j in range(2 * n):
            c, s = float(np.cos(theta[j])), float(np.sin(theta[j]))
            r0, r1 = float(np.sign(refl[j, 0, 0] - 0.5)), float(np.sign(refl[j, 1, 0] - 0.5))
            ws.append([[c * r0, -s * r1], [s * r0, c * r1]])
        system = np.zeros((n, 2, 3))
        for k in range(n):
            u, v, (s1, s2) = ws[k], ws[n + k], svs[k]
            for i in range(2):
                for j in range(2):
                    system[k, i, j] = (u[i][0] * s1) * v[0][j] + (u[i][1] * s2) * v[1][j]
            system[k, :, 2] = trans[k]
        out.append(system)
    return out


@pytest.mark.parametrize("min_n,max_n,beta,bval", [(2, 4, None, 1.0), (1, 3, (1.0, 2.5), 0.5),
                                                   (3, 3, (4.0, 3.5), 2.0)])  # lo > hi: numpy semantics
def test_pcg64_replays_reference_call_order(min_n, max_n, beta, bval):
    params = ifs.sample_systems(150, min_n=min_n, max_n=max_n, beta=beta, bval=bval, seed=11, rng="pcg64")
    expected = _replay_reference(11, 150, min_n, max_n, beta, bval)
    for i, system in enumerate(expected):
        assert params.n_maps[i] == system.shape[0]
        np.testing.assert_array_equal(params.system(i), system)
        np.testing.assert_array_equal(params.systems[i, system.shape[0]:], 0.0)


def test_composition_equals_svd_product():
    # A_k = U_k diag(S_k) V_k; the FMA-free evaluation agrees with matmul to rounding.
    g = np.random.default_rng(5)
    signs = np.sign(g.random((4, 2)) - 0.5)
    theta = g.uniform(-np.pi, np.pi, 4)
    w = ifs._orthogonal(signs, theta)
    svs = np.array([[0.9, 0.3], [0.5, 0.5]])
    maps = ifs._compose(w[:2], svs, w[2:], np.zeros((2, 2)))
    for k in range(2):
        np.testing.assert_allclose(maps[k, :, :2], w[k] @ np.diag(svs[k]) @ w[2 + k], rtol=0, atol=1e-15)
        np.testing.assert_allclose(np.linalg.svd(maps[k, :, :2], compute_uv=False), svs[k], atol=1e-15)


@pytest.mark.parametrize("constrain", [True, False])
def test_counter_vectorised_matches_scalar_spec(constrain, monkeypatch):
    monkeypatch.setattr(ifs, "_CHUNK", 37)  # several chunks, uneven groups
    beta = (2.0, 2.5)
    params = ifs.sample_systems(120, min_n=1, max_n=5, beta=beta, bval=0.7, seed=2**63 + 5,
                                constrain=constrain)
    for i in range(120):
        spec = ifs.sample_system((1, 6), ifs.CounterDraws(2**63 + 5, i), beta=beta, bval=0.7, constrain=constrain)
        assert params.n_maps[i] == spec.shape[0]
        np.testing.assert_array_equal(params.system(i), spec)


def test_counter_default_beta_matches_scalar_spec():
    params = ifs.sample_systems(60, seed=0)
    for i in range(60):
        np.testing.assert_array_equal(params.system(i), ifs.sample_system((2, 5), ifs.CounterDraws(0, i)))


def test_counter_shard_equals_rows_of_larger_sample():
    whole = ifs.sample_systems(2000, seed=9)
    shard = ifs.sample_systems(1000, seed=9, start=1000)
    np.testing.assert_array_equal(shard.systems, whole.systems[1000:])
    np.testing.assert_array_equal(shard.n_maps, whole.n_maps[1000:])
    assert shard.hparams["start"] == 1000
    assert not np.array_equal(ifs.sample_systems(10, seed=10).systems, whole.systems[:10])


def test_counter_draw_layout_documented():
    # n is counter 0 and alpha is counter 6n+1 of stream_key(seed, STREAM_SYSTEM, i).
    params = ifs.sample_systems(50, seed=4)
    for i in range(50):
        key = _rng.stream_key(4, _rng.STREAM_SYSTEM, i)
        n = 2 + int(_rng.below(key, 0, 3))
        assert params.n_maps[i] == n
        alpha = (5 + n) / 2 + 0.5 * float(_rng.u01(key, 6 * n + 1))
        sv = np.linalg.svd(params.system(i)[:, :, :2], compute_uv=False)
        assert abs((sv[:, 0] + 2 * sv[:, 1]).sum() - alpha) < 1e-9


def _alphas_pcg64(seed, params):
    """alpha of every system, by replaying the pcg64 stream (counts of draws per system)."""
    g = np.random.default_rng(seed)
    alphas = []
    for n in params.n_maps:
        g.integers(2, 5)  # same call as the sampler: the bounded-int draw consumes the same bits
        g.random(4 * n + 2 * n)
        lo, hi = (5 + n) / 2, (6 + n) / 2
        alphas.append(g.uniform(lo, hi))
        g.random(2 * n - 1 + 2 * n)
    return np.array(alphas)


def _alphas_counter(seed, params):
    keys = _rng.stream_key(seed, _rng.STREAM_SYSTEM, np.arange(len(params), dtype=np.uint64))
    n = params.n_maps.astype(np.float64)
    return (5 + n) / 2 + 0.5 * _rng.u01(keys, 6 * params.n_maps.astype(np.uint64) + np.uint64(1))


@pytest.mark.parametrize("mode", ["counter", "pcg64"])
def test_acceptance_rule_holds_for_every_system(mode):
    num, bval = 3000, 0.8
    params = ifs.sample_systems(num, bval=bval, seed=21, rng=mode)
    alphas = (_alphas_counter if mode == "counter" else _alphas_pcg64)(21, params)
    assert set(params.n_maps.tolist()) == {2, 3, 4}
    counts = np.bincount(params.n_maps, minlength=5)[2:]
    assert np.all(np.abs(counts - num / 3) < 5 * math.sqrt(num * (1 / 3) * (2 / 3)))  # 5 sigma
    for n in (2, 3, 4):
        rows = np.flatnonzero(params.n_maps == n)
        maps = params.systems[rows, :n]
        sv = np.linalg.svd(maps[..., :2], compute_uv=False)  # [m, n, 2], descending
        assert sv.max() <= 1 + 1e-12
        np.testing.assert_allclose((sv[..., 0] + 2 * sv[..., 1]).sum(axis=1), alphas[rows], rtol=0, atol=1e-9)
        assert np.all((alphas[rows] >= (5 + n) / 2) & (alphas[rows] < (6 + n) / 2))
        assert np.all(np.abs(maps[..., 2]) <= bval)
        np.testing.assert_array_equal(params.systems[rows, n:], 0.0)
    assert np.all(np.isfinite(params.systems))


@pytest.mark.parametrize("n,alpha", [(1, 0.2), (1, 2.9), (2, 3.5), (3, 4.4), (4, 5.0), (7, 20.9)])
def test_sample_svs_pairs_and_budget(n, alpha):
    g = np.random.default_rng(n)
    for _ in range(200):
        svs = ifs.sample_svs(n, alpha, g)
        assert svs.shape == (n, 2)
        assert abs((svs[:, 0] + 2 * svs[:, 1]).sum() - alpha) < 1e-9
        assert np.all(svs >= -1e-12) and np.all(svs <= 1 + 1e-12)
        assert np.all(svs[:, 1] <= svs[:, 0] + 1e-12)


class _Midpoint:
    def random(self, size=None):
        return 0.5


def test_sample_svs_hand_computed():
    # n=1, alpha=1.5: s2 = mid(max(0, 0.25), 0.5) = 0.375, s1 = 1.5 - 0.75.
    np.testing.assert_array_equal(ifs.sample_svs(1, 1.5, _Midpoint()), [[0.75, 0.375]])
    # n=2, alpha=3: q=0 -> s1 = mid(0, 1) = 0.5; p=2.5, q=-0.5 -> s2 = mid(0, 0.5) = 0.25;
    # p=2, last: s2 = mid(0.5, 2/3) = 7/12, s1 = 2 - 7/6.
    np.testing.assert_allclose(ifs.sample_svs(2, 3.0, _Midpoint()), [[0.5, 0.25], [5 / 6, 7 / 12]], atol=1e-15)


def test_unconstrained_params_in_unit_box():
    params = ifs.sample_systems(500, seed=1, constrain=False)
    assert params.hparams["constrain"] is False
    for i in range(0, 500, 7):
        block = params.system(i)
        assert np.all((block >= -1) & (block < 1))


def test_translations_and_beta_override():
    params = ifs.sample_systems(400, min_n=1, max_n=1, bval=3.0, beta=(0.5, 0.6), seed=3)
    sv = np.linalg.svd(params.systems[:, 0, :, :2], compute_uv=False)
    total = sv[:, 0] + 2 * sv[:, 1]
    assert total.min() >= 0.5 - 1e-12 and total.max() < 0.6 + 1e-12
    assert np.abs(params.systems[..., 2]).max() <= 3.0
    assert np.abs(params.systems[..., 2]).max() > 1.0  # translations really use bval


def test_ifs_params_len_subset_and_hparams():
    params = ifs.sample_systems(10, seed=0, min_n=2, max_n=3)
    assert len(params) == 10
    assert params.hparams == {"num_systems": 10, "n": (2, 4), "bval": 1.0, "beta": None, "seed": 0,
                              "rng": "counter", "start": 0, "version": ifs.SAMPLER_VERSION}
    sub = params.subset(np.array([7, 2]))
    assert len(sub) == 2 and sub.hparams["num_systems"] == 2 and params.hparams["num_systems"] == 10
    np.testing.assert_array_equal(sub.systems[1], params.systems[2])
    np.testing.assert_array_equal(sub.n_maps, params.n_maps[[7, 2]])
    assert len(params.subset(slice(3, 3))) == 0
    with pytest.raises(ValueError, match="1-D set of systems"):
        params.subset(4)


def test_empty_sample():
    params = ifs.sample_systems(0)
    assert params.systems.shape == (0, 4, 2, 3) and params.n_maps.shape == (0,)


def test_ifs_probabilities():
    systems = np.zeros((3, 3, 2, 3))
    systems[0, 0, :, :2] = [[2.0, 1.0], [0.0, 1.0]]    # det 2
    systems[0, 1, :, :2] = [[0.0, 1.0], [-1.0, 0.0]]   # det 1
    systems[0, 2, :, :2] = [[5.0, 0.0], [0.0, 5.0]]    # padding: ignored
    systems[1, :, :, :2] = [[1.0, 0.5], [0.5, -0.25]]  # det -0.5 each -> |det|
    # system 2: all determinants zero -> uniform over its 2 valid maps (reference: NaN)
    probs = ifs.ifs_probabilities(systems, np.array([2, 3, 2]))
    np.testing.assert_allclose(probs, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]], atol=1e-15)
    np.testing.assert_allclose(ifs.ifs_probabilities(systems[1]), [1 / 3] * 3)
    params = ifs.sample_systems(100, seed=0)
    probs = ifs.ifs_probabilities(params.systems, params.n_maps)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(probs[np.arange(4)[None, :] >= params.n_maps[:, None]] == 0)
    with pytest.raises(ValueError, match=r"systems must have shape \[S, K, 2, 3\]"):
        ifs.ifs_probabilities(np.zeros((3, 2, 2)))


@pytest.mark.parametrize("kwargs,match", [
    ({"num_systems": -1}, "num_systems must be an integer >= 0"),
    ({"min_n": 0}, "min_n must be an integer >= 1"),
    ({"min_n": 3, "max_n": 2}, r"max_n must be an integer >= min_n \(3\)"),
    ({"bval": 0.0}, "bval must be finite and > 0"),
    ({"beta": (1.0, 7.0)}, r"beta must be \(lo, hi\) with 0 <= lo, hi <= 3 \* min_n = 6"),
    ({"min_n": 1}, r"beta must be given when min_n = 1: the default beta \(3, 3.5\)"),
    ({"rng": "mt19937"}, "rng must be one of"),
    ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*64\)"),
    ({"seed": 1.5}, r"seed must be an integer in \[0, 2\*\*64\), got 1.5"),
    ({"start": -2}, "start must be an integer >= 0"),
    ({"rng": "pcg64", "start": 5}, "start must be 0 with rng='pcg64'"),
])
def test_bad_arguments(kwargs, match):
    kwargs = {"num_systems": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        ifs.sample_systems(**kwargs)
