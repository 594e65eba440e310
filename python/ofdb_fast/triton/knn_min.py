"""Fused Triton kernel: k smallest squared L2 distances from queries to a memory bank.

Math: ``d(q, b) = |q|^2 - 2 q.b + |b|^2``, clamped at 0 (rounding can make it slightly
negative), the expansion ``knn_score``'s ``cpu``/``torch`` backends use. The ``q.b`` tile is a
``tl.dot`` (tensor cores for float16/bfloat16) with **float32 accumulation**; ``|q|^2`` is
summed in float32 from the queries as the kernel sees them (rounded to the bank dtype) and
``|b|^2`` is precomputed once per bank in float32 (``bank_sqnorm``). The ``[Q, M]`` distance
matrix is never materialised: each program keeps a running top-k in registers.

Parallel mapping: grid ``(Q / BLOCK_Q, n_split)``. Program ``(i, s)`` owns ``BLOCK_Q``
queries and the ``s``-th contiguous range of bank tiles (split-M, so batch 1 with ~800 queries
still fills the GPU). For each ``BLOCK_M`` bank tile it accumulates ``[BLOCK_Q, BLOCK_M]``
dot products over ``D`` in ``BLOCK_D`` chunks, turns them into distances and merges them into
its running best: k = 1 keeps ``(min, argmin)``; k > 1 keeps ``k`` slots (padded to a power of
two ``KP``) and, k times per tile, moves the tile's smallest entry into the slot holding the
current worst ``(value, index)`` when it is strictly smaller. Partials ``[n_split, Q, k]`` are
merged on the device by torch (``argmin`` for k = 1; a sort by index then a stable sort by
value for k > 1): no host sync, so the whole call can be captured in a CUDA graph.

Tie-breaking: equal distances resolve to the lowest bank index (``tl.argmin`` keeps the
left-most, a slot is replaced only by a strictly smaller value, splits are merged in bank
order), as every ``knn_score`` backend.

Dtypes: ``bank`` float16, bfloat16 or float32; ``queries`` any float dtype, rounded to the
bank's dtype (one cast). float32 uses ``input_precision="ieee"`` (no TF32), so it matches the
float32 backends of ``knn_score``. Under ``TRITON_INTERPRET=1`` (CPU tests) the tiles are
widened to float32 before the dot (the interpreter's NumPy dot cannot multiply bfloat16),
which computes the same products: half-precision products are exact in float32.
Output: distances ``[Q, k]`` float32 ascending per row, indices ``[Q, k]`` int64.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ._launch import device_of_launch

BANK_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_K = 32  # the register top-k is k passes per tile: meant for PatchCore's k (1 .. a few)


@triton.jit
def _knn_min_kernel(
    q_ptr,  # [Q, D] bank dtype, contiguous
    b_ptr,  # [M, D] float16 / bfloat16 / float32, contiguous
    bnorm_ptr,  # [M] float32: |b|^2
    out_d_ptr,  # [S, Q, K] float32 partial distances
    out_i_ptr,  # [S, Q, K] int64 partial indices
    n_q, n_bank, dim, tiles_per_split,
    K: tl.constexpr, KP: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_F32: tl.constexpr, IEEE: tl.constexpr,
):
    pid_q = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    row_ok = rows < n_q
    q_base = rows.to(tl.int64)[:, None] * dim
    lanes_d = tl.arange(0, BLOCK_D)

    qnorm = tl.zeros((BLOCK_Q,), dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        dd = d0 + lanes_d
        q = tl.load(q_ptr + q_base + dd[None, :], mask=row_ok[:, None] & (dd < dim)[None, :], other=0.0)
        q = q.to(tl.float32)
        qnorm += tl.sum(q * q, axis=1)

    lanes_m = tl.arange(0, BLOCK_M)
    if K == 1:
        best_d = tl.full((BLOCK_Q,), float("inf"), tl.float32)
        best_i = tl.full((BLOCK_Q,), -1, tl.int64)
    else:
        slots = tl.arange(0, KP)
        # Slots >= K hold -inf so they are never the worst; empty slots hold +inf with
        # distinct negative indices (a split with fewer than K rows leaves some empty).
        best_d = tl.where(slots < K, float("inf"), float("-inf"))[None, :] + tl.zeros((BLOCK_Q, KP), tl.float32)
        best_i = (-1 - slots).to(tl.int64)[None, :] + tl.zeros((BLOCK_Q, KP), tl.int64)

    m_start = split * tiles_per_split * BLOCK_M
    m_end = tl.minimum(n_bank, m_start + tiles_per_split * BLOCK_M)
    for m0 in range(m_start, m_end, BLOCK_M):
        cols = m0 + lanes_m
        col_ok = cols < m_end
        b_base = cols.to(tl.int64)[None, :] * dim
        acc = tl.zeros((BLOCK_Q, BLOCK_M), dtype=tl.float32)
        for d0 in range(0, dim, BLOCK_D):
            dd = d0 + lanes_d
            d_ok = dd < dim
            q = tl.load(q_ptr + q_base + dd[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            b = tl.load(b_ptr + b_base + dd[:, None], mask=d_ok[:, None] & col_ok[None, :], other=0.0)
            if DOT_F32:
                q = q.to(tl.float32)
                b = b.to(tl.float32)
            if IEEE:
                acc = tl.dot(q, b, acc, input_precision="ieee")
            else:
                acc = tl.dot(q, b, acc)
        bnorm = tl.load(bnorm_ptr + cols, mask=col_ok, other=0.0)
        dist = tl.maximum(qnorm[:, None] - 2.0 * acc + bnorm[None, :], 0.0)
        dist = tl.where(col_ok[None, :], dist, float("inf"))
        if K == 1:
            t_min = tl.min(dist, axis=1)
            t_arg = tl.argmin(dist, axis=1, tie_break_left=True)
            better = t_min < best_d  # strict: an earlier (lower) index keeps a tie
            best_d = tl.where(better, t_min, best_d)
            best_i = tl.where(better, (m0 + t_arg).to(tl.int64), best_i)
        else:
            for _ in tl.static_range(K):
                v = tl.min(dist, axis=1)
                j = tl.argmin(dist, axis=1, tie_break_left=True)
                worst = tl.max(best_d, axis=1)
                is_worst = best_d == worst[:, None]
                worst_i = tl.max(tl.where(is_worst, best_i, -(1 << 62)), axis=1)
                take = v < worst
                slot = is_worst & (best_i == worst_i[:, None]) & take[:, None]
                best_d = tl.where(slot, v[:, None], best_d)
                best_i = tl.where(slot, (m0 + j).to(tl.int64)[:, None], best_i)
                dist = tl.where(lanes_m[None, :] == j[:, None], float("inf"), dist)

    out_base = (split.to(tl.int64) * n_q + rows.to(tl.int64)) * K
    if K == 1:
        tl.store(out_d_ptr + out_base, best_d, mask=row_ok)
        tl.store(out_i_ptr + out_base, best_i, mask=row_ok)
    else:
        mask = row_ok[:, None] & (slots < K)[None, :]
        tl.store(out_d_ptr + out_base[:, None] + slots[None, :], best_d, mask=mask)
        tl.store(out_i_ptr + out_base[:, None] + slots[None, :], best_i, mask=mask)


def bank_sqnorm(bank: torch.Tensor) -> torch.Tensor:
    """``|b|^2`` per bank row ``[M]`` float32, from the values the kernel reads (float32 sums)."""
    b = bank.to(torch.float32)
    return (b * b).sum(dim=1)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return int(torch.cuda.get_device_properties(device).multi_processor_count)


def _config(n_q: int, n_bank: int, dim: int, dtype: torch.dtype, device: torch.device) -> dict:
    if device.type != "cuda":  # TRITON_INTERPRET: big blocks, few interpreted programs
        return dict(BLOCK_Q=32, BLOCK_M=64, BLOCK_D=32, num_warps=1, num_stages=1)
    if dtype == torch.float32:
        return dict(BLOCK_Q=64, BLOCK_M=64, BLOCK_D=32, num_warps=4, num_stages=3)
    block_q = 128 if n_q >= 128 * 2 * _sm_count(device) else 64
    return dict(BLOCK_Q=block_q, BLOCK_M=128, BLOCK_D=64, num_warps=8 if block_q == 128 else 4, num_stages=3)


def knn_min_triton(
    queries: torch.Tensor,  # [Q, D] float, same device as bank
    bank: torch.Tensor,  # [M, D] float16 / bfloat16 / float32
    k: int = 1,
    *,
    sqnorm: torch.Tensor | None = None,  # [M] float32, bank_sqnorm(bank); computed when None
    n_split: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest squared L2 distances per query (see the module docstring).

    Inputs are assumed valid (the public ``knn_score`` and ``FastScorer`` check them):
    ``1 <= k <= min(M, MAX_K)``, finite values, same device.

    Args:
        queries: ``[Q, D]`` float tensor; rounded to ``bank.dtype``.
        bank: ``[M, D]`` float16, bfloat16 or float32 tensor.
        k: neighbours per query.
        sqnorm: ``[M]`` float32 bank norms (pass it to avoid recomputing per call).
        n_split: number of bank ranges run in parallel; ``None`` fills the GPU.

    Returns:
        ``(distances [Q, k] float32 ascending, indices [Q, k] int64)``, ties to the lowest index.

    Example:
        >>> d, i = knn_min_triton(q.half(), bank.half(), 1, sqnorm=bank_sqnorm(bank.half()))  # doctest: +SKIP
    """
    n_q, dim = int(queries.shape[0]), int(queries.shape[1])
    n_bank = int(bank.shape[0])
    device = bank.device
    if bank.dtype not in BANK_DTYPES:
        raise TypeError(f"bank must have a float16, bfloat16 or float32 dtype, got {bank.dtype}")
    q = queries.to(bank.dtype).contiguous()
    b = bank.contiguous()
    norms = bank_sqnorm(b) if sqnorm is None else sqnorm.to(torch.float32).contiguous()
    if n_q == 0:
        return (torch.zeros((0, k), dtype=torch.float32, device=device),
                torch.zeros((0, k), dtype=torch.int64, device=device))
    cfg = _config(n_q, n_bank, dim, b.dtype, device)
    block_q, block_m = cfg["BLOCK_Q"], cfg["BLOCK_M"]
    q_blocks = triton.cdiv(n_q, block_q)
    m_tiles = triton.cdiv(n_bank, block_m)
    if n_split is None:
        n_split = max(1, triton.cdiv(4 * _sm_count(device), q_blocks)) if device.type == "cuda" else 1
    tiles_per_split = triton.cdiv(m_tiles, max(1, min(int(n_split), m_tiles)))
    n_split = triton.cdiv(m_tiles, tiles_per_split)  # no empty splits
    part_d = torch.empty((n_split, n_q, k), dtype=torch.float32, device=device)
    part_i = torch.empty((n_split, n_q, k), dtype=torch.int64, device=device)
    kp = max(2, triton.next_power_of_2(k))
    with device_of_launch(device):
        _knn_min_kernel[(q_blocks, n_split)](
            q, b, norms, part_d, part_i, n_q, n_bank, dim, tiles_per_split,
            K=k, KP=kp, BLOCK_Q=block_q, BLOCK_M=block_m, BLOCK_D=cfg["BLOCK_D"],
            DOT_F32=_interpreting() or b.dtype == torch.float32, IEEE=b.dtype == torch.float32,
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
    return merge_partials(part_d, part_i, k)


def merge_partials(part_d: torch.Tensor, part_i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[S, Q, k]`` per-split results (splits in bank order) -> ``[Q, k]`` by (value, index)."""
    n_split, n_q, _ = part_d.shape
    if n_split == 1 and k == 1:
        return part_d[0], part_i[0]
    d = part_d.permute(1, 0, 2).reshape(n_q, n_split * k)
    i = part_i.permute(1, 0, 2).reshape(n_q, n_split * k)
    if k == 1:
        pos = d.argmin(dim=1, keepdim=True)  # first minimum = lowest split = lowest index
        return d.gather(1, pos), i.gather(1, pos)
    # Empty slots carry +inf: after the value sort they come last, behind every real row.
    i, perm = torch.sort(i, dim=1)
    d = d.gather(1, perm)
    d, perm = torch.sort(d, dim=1, stable=True)
    i = i.gather(1, perm)
    return d[:, :k].contiguous(), i[:, :k].contiguous()
