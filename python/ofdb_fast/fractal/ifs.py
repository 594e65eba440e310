"""IFS system sampling (fractal4AD / Anderson-Farrell SVD sampler), pure NumPy.

Conventions
-----------
- A system with ``n`` maps is a float64 array ``[n, 2, 3]``; row ``k`` is ``[[a, b, e], [c, d, f]]``
  and map ``k`` is ``(x, y) -> (a x + b y + e, c x + d y + f)``. Batches are zero-padded to
  ``[S, K, 2, 3]`` with ``n_maps [S]`` giving the valid prefix of each system.
- The prior (reference a.1, reproduced exactly): ``n`` uniform in ``min_n..max_n`` inclusive;
  ``2n`` orthogonal factors ``W_j = R(theta_j) diag(s_j0, s_j1)`` with reflections
  ``s = sign(U[0,1) - 0.5)`` and rotations ``theta ~ U(-pi, pi)``; ``U_k = W_k``, ``V_k = W_{n+k}``;
  sigma-factor ``alpha ~ U(beta)``, default ``beta = ((5 + n) / 2, (6 + n) / 2)``; singular values
  from the sequential :func:`sample_svs`; ``A_k = U_k diag(S_k) V_k``; translations ``U(-bval, bval)``.
  No system-level rejection. ``constrain=False`` draws all ``6n`` parameters ``U(-1, 1)``.
- Every uniform is ``lo + (hi - lo) * u`` with ``u in [0, 1)`` drawn by one ``rng.random()``: bit for
  bit what ``Generator.uniform(lo, hi)`` returns, and also defined when round-off (or a reversed
  ``beta``) gives ``lo > hi``: NumPy 1.x (the reference's) then returned ``lo + (hi - lo) u``, while
  NumPy >= 2 raises "high - low < 0", which would crash rare systems at the feasibility edge.
- ``A_k`` is evaluated without fused multiply-adds, element by element:
  ``A[i, j] = (U[i, 0] * S0) * V[0, j] + (U[i, 1] * S1) * V[1, j]`` (what ``U @ diag(S) @ V`` gives
  without FMA); ``W_j`` is exact (products with +-1).
- The reference intends to clamp ``alpha`` to ``[0, 3n]`` but its ``a == 0`` typo makes the clamp a
  no-op; we reproduce the no-op and instead validate ``beta`` up front (``0 <= beta <= 3 min_n``).
  For one map the default beta ``(3, 3.5)`` exceeds the feasible ``3n = 3`` (the reference then
  yields singular values > 1), so ``min_n = 1`` requires an explicit ``beta``.

RNG modes
---------
``rng="pcg64"``: one ``np.random.default_rng(seed)`` drives ALL systems in sequence, with the
reference's exact call order per system::

    integers(min_n, max_n + 1) -> random((2n, 2, 1)) -> uniform(-pi, pi, 2n) -> uniform(*beta)
    -> sample_svs: uniform(lo, hi) x (2n - 1) -> uniform(-bval, bval, (n, 2))

Deviation: the reference uses a fresh *unseeded* generator per system (not reproducible); a single
seeded generator makes a file reproducible and lets tests replay the call order bit for bit.

``rng="counter"`` (default): the same operations in the same order, but draw ``t`` of system ``i``
is ``_rng.u01(stream_key(seed, STREAM_SYSTEM, i), t)``::

    t = 0                 n = min_n + below(key, 0, max_n - min_n + 1)
    t = 1 .. 4n           reflections, C order over (j, axis) of the [2n, 2] array
    t = 4n+1 .. 6n        rotation angles theta_0 .. theta_{2n-1}
    t = 6n+1              alpha
    t = 6n+2 .. 8n        sample_svs (s1_0, s2_0, s1_1, s2_1, ..., s2_last)
    t = 8n+1 .. 10n       translations, C order over (k, axis) of [n, 2]
    constrain=False:  t = 1 .. 6n  the [n, 2, 3] parameters in C order

So system ``i`` depends only on ``(seed, i)`` and the hyper-parameters: sampling systems
``[start, start + m)`` equals those rows of a larger sample. :func:`sample_systems` runs this
vectorised over systems (grouped by ``n``); :func:`sample_system` with a :class:`CounterDraws`
is the readable scalar spec it is tested against. Results are bit-exact on one machine; across
machines only ``np.cos``/``np.sin`` may differ in the last ulp (NumPy's libm/SIMD dispatch).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..reference import _rng

SAMPLER_VERSION = 1  # bump when the counter layout or any sampled operation changes
RNG_MODES = ("counter", "pcg64")
_CHUNK = 1 << 16  # systems per vectorised chunk (bounds temporary memory to ~100 MB)


@dataclasses.dataclass
class IFSParams:
    """A batch of IFS systems.

    Attributes:
        systems: ``[S, K, 2, 3]`` float64, zero beyond ``n_maps[s]``.
        n_maps: ``[S]`` int32, ``1 <= n_maps[s] <= K``.
        hparams: sampling metadata: ``num_systems``, ``n`` = ``(min_n, max_n + 1)``, ``bval``,
            ``beta`` (None = per-n default), ``seed``, ``rng``, ``start``, ``version``.
    """

    systems: np.ndarray
    n_maps: np.ndarray
    hparams: dict

    def __len__(self) -> int:
        return int(self.systems.shape[0])

    def subset(self, idx) -> "IFSParams":
        """Systems ``idx`` (indices, slice or mask), same ``K``; ``hparams`` copied with
        ``num_systems`` updated."""
        systems = np.ascontiguousarray(self.systems[idx])
        n_maps = np.ascontiguousarray(self.n_maps[idx])
        if systems.ndim != 4:
            raise ValueError(f"idx must select a 1-D set of systems, got systems of shape {systems.shape}")
        hparams = dict(self.hparams)
        hparams["num_systems"] = int(systems.shape[0])
        return IFSParams(systems, n_maps, hparams)

    def system(self, i: int) -> np.ndarray:
        """System ``i`` without padding, ``[n, 2, 3]``."""
        return self.systems[i, : int(self.n_maps[i])]


class CounterDraws:
    """The subset of ``np.random.Generator`` that :func:`sample_system` uses, drawing from the
    shared counter RNG: call ``t`` (each array element counts once, C order) uses counter ``t``
    of ``stream_key(seed, STREAM_SYSTEM, item)``. The scalar spec of ``rng="counter"``."""

    def __init__(self, seed: int, item: int, stream: int = _rng.STREAM_SYSTEM):
        self.key = _rng.stream_key(seed, stream, item)
        self.counter = 0

    def _next(self, count: int) -> np.ndarray:
        u = _rng.u01(self.key, np.arange(self.counter, self.counter + count, dtype=np.uint64))
        self.counter += count
        return u

    def random(self, size=None):
        shape = () if size is None else tuple(np.atleast_1d(size))
        u = self._next(int(np.prod(shape, dtype=np.int64)))
        return float(u[0]) if size is None else u.reshape(shape)

    def integers(self, low, high):
        value = _rng.below(self.key, self.counter, int(high) - int(low))
        self.counter += 1
        return int(low) + int(value)


def _uniform(rng, lo, hi, size=None):
    """``Generator.uniform(lo, hi, size)`` bit for bit, without NumPy 2's ``lo <= hi`` check."""
    return lo + (hi - lo) * rng.random(size)


def default_beta(n: int) -> tuple[float, float]:
    """The reference's sigma-factor range for ``n`` maps: ``((5 + n) / 2, (6 + n) / 2)``."""
    return ((5 + n) / 2, (6 + n) / 2)


def sample_svs(n: int, alpha: float, rng) -> np.ndarray:
    """Singular-value pairs with ``0 <= s2 <= s1 <= 1`` and ``sum_k (s1_k + 2 s2_k) == alpha``.

    Sequential conditional uniforms (reference a.1): ``p`` is the budget left, ``q`` the part of it
    that this pair must absorb because later pairs take at most 3 each.

    Args:
        n: number of pairs (maps), ``>= 1``.
        alpha: sigma-factor; feasible in ``[0, 3n]`` (not clamped, as in the reference).
        rng: a ``np.random.Generator`` or :class:`CounterDraws`; ``2n - 1`` ``random()`` draws.

    Returns:
        ``[n, 2]`` float64 ``(s1, s2)`` pairs.

    Example:
        >>> s = sample_svs(3, 4.2, np.random.default_rng(0))
        >>> bool(abs((s[:, 0] + 2 * s[:, 1]).sum() - 4.2) < 1e-12)
        True
    """
    svs = np.zeros((n, 2))
    p = alpha
    q = alpha - 3 * n + 3
    for k in range(n - 1):
        s1 = _uniform(rng, max(0.0, q / 3), min(1.0, p))
        p -= s1
        q -= s1
        s2 = _uniform(rng, max(0.0, q / 2), min(s1, p / 2))
        p -= 2 * s2
        q = q - 2 * s2 + 3
        svs[k] = s1, s2
    s2 = _uniform(rng, max(0.0, (p - 1) / 2), p / 3)
    svs[n - 1] = p - 2 * s2, s2
    return svs


def _orthogonal(signs: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``W = R(theta) diag(signs)``: ``[..., 2]`` signs, ``[...]`` angles -> ``[..., 2, 2]`` (exact)."""
    c, s = np.cos(theta), np.sin(theta)
    w = np.empty(theta.shape + (2, 2))
    w[..., 0, 0] = c * signs[..., 0]
    w[..., 0, 1] = -s * signs[..., 1]
    w[..., 1, 0] = s * signs[..., 0]
    w[..., 1, 1] = c * signs[..., 1]
    return w


def _compose(u: np.ndarray, svs: np.ndarray, v: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """``[..., n, 2, 3]`` maps from ``U, V [..., n, 2, 2]``, ``svs, trans [..., n, 2]`` (no FMA)."""
    out = np.empty(svs.shape[:-1] + (2, 3))
    us0 = u[..., :, 0] * svs[..., None, 0]  # U[:, i, 0] * S0 for i = 0, 1
    us1 = u[..., :, 1] * svs[..., None, 1]
    for j in range(2):
        out[..., :, j] = us0 * v[..., None, 0, j] + us1 * v[..., None, 1, j]
    out[..., :, 2] = trans
    return out


def sample_system(n, rng, *, beta=None, bval: float = 1.0, constrain: bool = True) -> np.ndarray:
    """One IFS system with the reference's operations and call order.

    Args:
        n: number of maps, or ``(lo, hi)`` to draw it with ``rng.integers(lo, hi)`` (hi exclusive).
        rng: ``np.random.Generator`` (``rng="pcg64"``) or :class:`CounterDraws` (``rng="counter"``).
        beta: ``(lo, hi)`` sigma-factor range; None = ``((5 + n) / 2, (6 + n) / 2)``.
        bval: translations are ``U(-bval, bval)``.
        constrain: False draws all ``6n`` parameters ``U(-1, 1)`` instead.

    Returns:
        ``[n, 2, 3]`` float64 system.

    Example:
        >>> sample_system((2, 5), np.random.default_rng(0)).shape[1:]
        (2, 3)
    """
    if isinstance(n, tuple):
        n = int(rng.integers(n[0], n[1]))
    if not constrain:
        return np.asarray(_uniform(rng, -1.0, 1.0, (n, 2, 3)), dtype=np.float64)
    signs = np.sign(rng.random((2 * n, 2, 1)) - 0.5)[..., 0]
    theta = _uniform(rng, -math.pi, math.pi, 2 * n)
    w = _orthogonal(signs, theta)
    lo, hi = default_beta(n) if beta is None else beta
    alpha = _uniform(rng, lo, hi)
    svs = sample_svs(n, alpha, rng)
    trans = _uniform(rng, -bval, bval, (n, 2))
    return _compose(w[:n], svs, w[n:], trans)


def _svs_batch(n: int, alpha: np.ndarray, u: np.ndarray) -> np.ndarray:
    """:func:`sample_svs` vectorised over systems: ``alpha [m]``, ``u [m, 2n - 1]`` -> ``[m, n, 2]``."""
    m = alpha.shape[0]
    svs = np.empty((m, n, 2))
    p = alpha.copy()
    q = alpha - 3 * n + 3
    for k in range(n - 1):
        lo, hi = np.maximum(0.0, q / 3), np.minimum(1.0, p)
        s1 = lo + (hi - lo) * u[:, 2 * k]
        p = p - s1
        q = q - s1
        lo, hi = np.maximum(0.0, q / 2), np.minimum(s1, p / 2)
        s2 = lo + (hi - lo) * u[:, 2 * k + 1]
        p = p - 2 * s2
        q = q - 2 * s2 + 3
        svs[:, k, 0], svs[:, k, 1] = s1, s2
    lo, hi = np.maximum(0.0, (p - 1) / 2), p / 3
    s2 = lo + (hi - lo) * u[:, 2 * n - 2]
    svs[:, n - 1, 0], svs[:, n - 1, 1] = p - 2 * s2, s2
    return svs


def _counter_group(keys: np.ndarray, n: int, beta, bval: float, constrain: bool) -> np.ndarray:
    """Systems with ``n`` maps for the counter keys ``[m]``: ``[m, n, 2, 3]`` (layout in module doc)."""
    if not constrain:
        u = _rng.u01(keys[:, None], np.arange(1, 6 * n + 1, dtype=np.uint64)[None, :])
        return (-1.0 + (1.0 - -1.0) * u).reshape(-1, n, 2, 3)
    u = _rng.u01(keys[:, None], np.arange(1, 10 * n + 1, dtype=np.uint64)[None, :])
    signs = np.sign(u[:, : 4 * n] - 0.5).reshape(-1, 2 * n, 2)
    theta = -math.pi + (math.pi - -math.pi) * u[:, 4 * n : 6 * n]
    w = _orthogonal(signs, theta)
    lo, hi = default_beta(n) if beta is None else beta
    alpha = lo + (hi - lo) * u[:, 6 * n]
    svs = _svs_batch(n, alpha, u[:, 6 * n + 1 : 8 * n])
    trans = -bval + (bval - -bval) * u[:, 8 * n : 10 * n].reshape(-1, n, 2)
    return _compose(w[:, :n], svs, w[:, n:], trans)


def _check_args(num_systems, min_n, max_n, bval, beta, rng, start, seed) -> None:
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    if int(num_systems) != num_systems or num_systems < 0:
        raise ValueError(f"num_systems must be an integer >= 0, got {num_systems!r}")
    if int(min_n) != min_n or min_n < 1:
        raise ValueError(f"min_n must be an integer >= 1, got {min_n!r}")
    if int(max_n) != max_n or max_n < min_n:
        raise ValueError(f"max_n must be an integer >= min_n ({min_n}), got {max_n!r}")
    if not (np.isfinite(bval) and bval > 0):
        raise ValueError(f"bval must be finite and > 0, got {bval!r}")
    if beta is not None:
        if len(beta) != 2 or not all(np.isfinite(b) and 0 <= b <= 3 * min_n for b in beta):
            raise ValueError(f"beta must be (lo, hi) with 0 <= lo, hi <= 3 * min_n = {3 * min_n} "
                             f"(larger sigma-factors force singular values > 1), got {beta!r}")
    if beta is None and min_n == 1:
        raise ValueError("beta must be given when min_n = 1: the default beta (3, 3.5) for one map "
                         "exceeds the feasible sigma-factor 3n = 3 (singular values would exceed 1), got None")
    if rng not in RNG_MODES:
        raise ValueError(f"rng must be one of {RNG_MODES}, got {rng!r}")
    if int(start) != start or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    if rng == "pcg64" and start != 0:
        raise ValueError(f"start must be 0 with rng='pcg64' (a sequential stream), got {start!r}")


def sample_systems(num_systems: int, *, min_n: int = 2, max_n: int = 4, bval: float = 1.0,
                   beta=None, seed: int = 0, rng: str = "counter", start: int = 0,
                   constrain: bool = True) -> IFSParams:
    """Sample systems ``start .. start + num_systems - 1`` of the stream given by ``seed``.

    Args:
        num_systems: how many systems (``>= 0``).
        min_n, max_n: map counts, inclusive range.
        bval: translation bound.
        beta: ``(lo, hi)`` sigma-factor range for every n; None = the reference's per-n default.
        seed: RNG seed.
        rng: ``"counter"`` (vectorised, system i depends only on (seed, i)) or ``"pcg64"``
            (one sequential ``np.random.default_rng(seed)``; see the module docstring).
        start: index of the first system (counter mode only), for sharded sampling.
        constrain: False draws all parameters ``U(-1, 1)`` (not contractive; reference option).

    Returns:
        :class:`IFSParams` with ``systems [num_systems, max_n, 2, 3]``.

    Example:
        >>> p = sample_systems(1000, seed=1)
        >>> p.systems.shape, sorted(set(p.n_maps.tolist()))
        ((1000, 4, 2, 3), [2, 3, 4])
    """
    _check_args(num_systems, min_n, max_n, bval, beta, rng, start, seed)
    num_systems, min_n, max_n, start = int(num_systems), int(min_n), int(max_n), int(start)
    bval = float(bval)
    beta = None if beta is None else (float(beta[0]), float(beta[1]))
    systems = np.zeros((num_systems, max_n, 2, 3))
    n_maps = np.zeros(num_systems, dtype=np.int32)
    if rng == "pcg64":
        gen = np.random.default_rng(seed)
        for i in range(num_systems):
            system = sample_system((min_n, max_n + 1), gen, beta=beta, bval=bval, constrain=constrain)
            n_maps[i] = system.shape[0]
            systems[i, : system.shape[0]] = system
    else:
        for c0 in range(0, num_systems, _CHUNK):
            c1 = min(num_systems, c0 + _CHUNK)
            keys = _rng.stream_key(seed, _rng.STREAM_SYSTEM, np.arange(start + c0, start + c1, dtype=np.uint64))
            n = min_n + _rng.below(keys, 0, max_n - min_n + 1)
            n_maps[c0:c1] = n
            for value in range(min_n, max_n + 1):
                rows = np.flatnonzero(n == value)
                if rows.size:
                    systems[c0 + rows, :value] = _counter_group(keys[rows], value, beta, bval, constrain)
    hparams = {"num_systems": num_systems, "n": (min_n, max_n + 1), "bval": bval, "beta": beta,
               "seed": int(seed), "rng": rng, "start": start, "version": SAMPLER_VERSION}
    if not constrain:
        hparams["constrain"] = False
    return IFSParams(systems, n_maps, hparams)


def ifs_probabilities(systems: np.ndarray, n_maps: np.ndarray | None = None) -> np.ndarray:
    """Map probabilities ``p_k = |det A_k| / sum_j |det A_j|`` (reference a.2).

    Args:
        systems: ``[S, K, 2, 3]`` float64 (or ``[K, 2, 3]`` for one system).
        n_maps: ``[S]`` valid map counts; None = all ``K``.

    Returns:
        ``[S, K]`` (or ``[K]``) float64, zero beyond ``n_maps``. Deviation: where every determinant
        is zero the reference divides 0/0 (NaN); we return uniform probabilities over the valid maps.

    Example:
        >>> ifs_probabilities(np.array([[[2., 0, 0], [0, 1, 0]], [[1., 0, 0], [0, 1, 0]]]))
        array([0.66666667, 0.33333333])
    """
    systems = np.asarray(systems, dtype=np.float64)
    single = systems.ndim == 3
    if single:
        systems = systems[None]
    if systems.ndim != 4 or systems.shape[2:] != (2, 3):
        raise ValueError(f"systems must have shape [S, K, 2, 3], got {systems.shape}")
    S, K = systems.shape[:2]
    n_maps = np.full(S, K) if n_maps is None else np.asarray(n_maps).reshape(S)
    valid = np.arange(K)[None, :] < n_maps[:, None]
    det = np.abs(systems[..., 0, 0] * systems[..., 1, 1] - systems[..., 0, 1] * systems[..., 1, 0])
    det = np.where(valid, det, 0.0)
    total = det.sum(axis=1, keepdims=True)
    uniform = valid / np.maximum(n_maps[:, None], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        probs = np.where(total > 0, det / total, uniform)
    return probs[0] if single else probs
