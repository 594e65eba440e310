"""Triton kernels for ``patch_aggregate`` (PatchCore patch features).

Math: with the reference's conventions (:mod:`ofdb_fast.reference.patch_aggregate`), every
output element ``out[n, t]`` (patch ``n = (b, y, x)``, feature ``t``) is a fixed linear
combination of input taps: the two ``adaptive_avg_pool1d`` stages average over bins of
``(layer, c, dy, dx)`` entries, and for deeper layers each entry is a bilinear blend of four
source positions of the layer's own (zero-padded) grid. The weights over ``(layer, c, dy, dx)``
depend only on ``t``, the bilinear blend only on ``(y, x)``: the pooling (over features) and
the bilinear alignment (over positions) are linear maps on different axes, so they commute.
The host builds, once per shape (cached):

- tap tables per layer ``[n_t, R]``: channel, offset ``dy * p + dx`` and weight
  ``sum 1 / (|aggregator bin| * |MeanMapper bin|)`` (overlapping bins and repeated inputs
  simply add up), padded with zero weights to the longest row ``R`` (on the device transposed
  to ``[R, n_t]``, so a tap's columns are one contiguous load);
- bilinear tables per deeper layer: source rows ``y0, y1`` and weights for every output row,
  likewise for columns (``align_corners=False``, as ``F.interpolate``).

Two kernels, one or two launches per layer over the feature range ``[t_lo, t_hi)`` it
contributes to (later layers add into the output where ranges meet):

1. ``_pool_taps_kernel``, on the layer's OWN grid: one program per ``BLOCK_P`` consecutive
   pixels of one image x ``BLOCK_T`` features; for each of the ``R`` taps it gathers
   ``x[b, ch[t], y + dy[t], x + dx[t]]`` (0 outside the map: the unfold's zero padding). For a
   fixed tap and feature, consecutive pixels are consecutive addresses (``(y + dy) * W + x + dx
   = p + dy * W + dx``), so the gather is coalesced along the pixel axis whatever the channel.
   The ``C * p * p`` patch vectors are never materialised. The first layer (and any layer on
   the first layer's grid) writes straight into the output.
2. ``_upsample_add_kernel``, deeper layers only: the bilinear blend of the pooled ``[B*h*w,
   n_t]`` rows (four contiguous row reads per patch) added into the output. The pooled rows
   are 1/(p*p) of what the reference interpolates, and at WRN50 layer3 a quarter of the patches.

Inputs are used as contiguous float32 maps (a copy only for other dtypes or layouts, e.g.
channels-last). Numerics: float32 accumulation; summation order differs from the reference
(one weighted sum per layer, then the bilinear blend, instead of interpolate-then-two-means):
error about 1e-7 relative to the magnitude of the taps.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl

from ..reference.patch_aggregate import adaptive_bins, bilinear_taps
from ._launch import device_of_launch


@triton.jit
def _pool_taps_kernel(
    x_ptr,  # [B, C, H, W] float32, contiguous: this layer's map
    out_ptr,  # [B * H * W, out_stride] float32: columns col0 .. col0 + n_t - 1 written
    tap_ch_ptr, tap_off_ptr, tap_w_ptr,  # [R, n_t] int32, int32, float32
    n_t, out_stride, col0, n_channels, height, width, n_taps,
    PATCH: tl.constexpr, PAD: tl.constexpr, ACCUMULATE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr,
):
    b = tl.program_id(1)
    pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # pixel of image b, row-major
    cols = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    n_pix = height * width
    pix_ok = pix < n_pix
    col_ok = cols < n_t
    y = pix // width
    x = pix % width
    image = x_ptr + b.to(tl.int64) * n_channels * n_pix
    acc = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    for r in range(0, n_taps):
        ch = tl.load(tap_ch_ptr + r * n_t + cols, mask=col_ok, other=0)
        off = tl.load(tap_off_ptr + r * n_t + cols, mask=col_ok, other=0)
        w = tl.load(tap_w_ptr + r * n_t + cols, mask=col_ok, other=0.0)
        dy = off // PATCH - PAD
        dx = off % PATCH - PAD
        yy = y[:, None] + dy[None, :]
        xx = x[:, None] + dx[None, :]
        ok = pix_ok[:, None] & (w != 0.0)[None, :] & (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        shift = ch.to(tl.int64) * n_pix + dy * width + dx  # [BLOCK_T]: one tap's column offsets
        v = tl.load(image + shift[None, :] + pix[:, None], mask=ok, other=0.0)
        acc += v * w[None, :]
    rows = b.to(tl.int64) * n_pix + pix
    out_offs = rows[:, None] * out_stride + (col0 + cols)[None, :]
    out_mask = pix_ok[:, None] & col_ok[None, :]
    if ACCUMULATE:
        acc += tl.load(out_ptr + out_offs, mask=out_mask, other=0.0)
    tl.store(out_ptr + out_offs, acc, mask=out_mask)


@triton.jit
def _upsample_add_kernel(
    src_ptr,  # [B * h * w, n_t] float32: one deeper layer pooled on its own grid
    out_ptr,  # [B * H0 * W0, n_out] float32: columns t_lo .. t_lo + n_t - 1 written
    ys0_ptr, ys1_ptr, wy0_ptr, wy1_ptr,  # [H0] bilinear rows
    xs0_ptr, xs1_ptr, wx0_ptr, wx1_ptr,  # [W0] bilinear columns
    n_rows, n_t, t_lo, n_out, height, width, grid_h, grid_w,
    ACCUMULATE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < n_rows
    col_ok = cols < n_t
    per_image = grid_h * grid_w
    b = rows // per_image
    y = (rows % per_image) // grid_w
    x = rows % grid_w
    ys0 = tl.load(ys0_ptr + y, mask=row_ok, other=0)
    ys1 = tl.load(ys1_ptr + y, mask=row_ok, other=0)
    wy0 = tl.load(wy0_ptr + y, mask=row_ok, other=0.0)
    wy1 = tl.load(wy1_ptr + y, mask=row_ok, other=0.0)
    xs0 = tl.load(xs0_ptr + x, mask=row_ok, other=0)
    xs1 = tl.load(xs1_ptr + x, mask=row_ok, other=0)
    wx0 = tl.load(wx0_ptr + x, mask=row_ok, other=0.0)
    wx1 = tl.load(wx1_ptr + x, mask=row_ok, other=0.0)
    image = b.to(tl.int64) * height
    acc = tl.zeros((BLOCK_N, BLOCK_T), dtype=tl.float32)
    for corner in tl.static_range(4):
        if corner // 2 == 0:
            yy = ys0
            wy = wy0
        else:
            yy = ys1
            wy = wy1
        if corner % 2 == 0:
            xx = xs0
            wx = wx0
        else:
            xx = xs1
            wx = wx1
        wyx = wy * wx
        src = ((image + yy) * width + xx) * n_t
        ok = (row_ok & (wyx != 0.0))[:, None] & col_ok[None, :]
        v = tl.load(src_ptr + src[:, None] + cols[None, :], mask=ok, other=0.0)
        acc += v * wyx[:, None]
    out_offs = rows.to(tl.int64)[:, None] * n_out + (t_lo + cols)[None, :]
    out_mask = row_ok[:, None] & col_ok[None, :]
    if ACCUMULATE:
        acc += tl.load(out_ptr + out_offs, mask=out_mask, other=0.0)
    tl.store(out_ptr + out_offs, acc, mask=out_mask)


@functools.lru_cache(maxsize=64)
def tap_tables(
    channels: tuple[int, ...], patch_size: int, pretrain: int, target: int
) -> tuple[tuple[int, int, np.ndarray, np.ndarray, np.ndarray], ...]:
    """Per layer ``(t_lo, t_hi, channel [n_t, R] int32, offset [n_t, R] int32,
    weight [n_t, R] float32)`` with ``n_t = t_hi - t_lo`` (empty range: ``t_lo == t_hi``).

    ``out[:, t] = sum over layers and r of weight * patch_vector_l[channel * p * p + offset]``.
    """
    taps_per_channel = patch_size * patch_size
    n_layers = len(channels)
    pre_bins = [adaptive_bins(c * taps_per_channel, pretrain) for c in channels]
    # weights[layer][t] maps a patch-vector index v = c * p * p + dy * p + dx to its weight.
    weights: list[dict[int, dict[int, float]]] = [{} for _ in range(n_layers)]
    for t, (start, end) in enumerate(adaptive_bins(n_layers * pretrain, target)):
        for u in range(start, end):
            layer, j = divmod(u, pretrain)
            lo, hi = pre_bins[layer][j]
            w = 1.0 / ((end - start) * (hi - lo))
            row = weights[layer].setdefault(t, {})
            for v in range(lo, hi):
                row[v] = row.get(v, 0.0) + w
    tables = []
    for layer in range(n_layers):
        ts = sorted(weights[layer])
        if not ts:
            empty = np.zeros((0, 1), np.int32)
            tables.append((0, 0, empty, empty, empty.astype(np.float32)))
            continue
        t_lo, t_hi = ts[0], ts[-1] + 1
        n_taps = max(len(row) for row in weights[layer].values())
        channel = np.zeros((t_hi - t_lo, n_taps), np.int32)
        offset = np.zeros((t_hi - t_lo, n_taps), np.int32)
        weight = np.zeros((t_hi - t_lo, n_taps), np.float32)
        for t, row in weights[layer].items():
            vs = np.fromiter(sorted(row), dtype=np.int64, count=len(row))
            channel[t - t_lo, : len(vs)] = vs // taps_per_channel
            offset[t - t_lo, : len(vs)] = vs % taps_per_channel
            weight[t - t_lo, : len(vs)] = [row[v] for v in vs.tolist()]
        tables.append((t_lo, t_hi, channel, offset, weight))
    return tuple(tables)


@functools.lru_cache(maxsize=64)
def interp_tables(height: int, width: int, grid_h: int, grid_w: int) -> tuple[np.ndarray, ...]:
    """Bilinear rows ``(y0, y1, wy0, wy1)`` ``[grid_h]`` and columns ``(x0, x1, wx0, wx1)``
    ``[grid_w]`` of a resize ``(height, width) -> (grid_h, grid_w)``, int32 / float32."""
    out = []
    for n_in, n_out in ((height, grid_h), (width, grid_w)):
        i0, i1, w0, w1 = bilinear_taps(n_in, n_out)
        out += [i0.astype(np.int32), i1.astype(np.int32), w0.astype(np.float32), w1.astype(np.float32)]
    return tuple(out)


def launch_config(device_type: str) -> dict[str, int]:
    """Block sizes and warps of both kernels for a launch on ``device_type``."""
    if device_type == "cuda":
        # pool: 128 consecutive pixels x 16 features, 4 warps (a warp reads 32 consecutive pixels
        # of one tap's channel plane, 128 bytes; 16 accumulators a thread). upsample: 32 patches
        # x 32 features, 8 warps (a warp reads 32 consecutive features of one pooled row). Both
        # compile for sm_90 without spills at about 90 / 65 registers (ptxas -v, triton 3.6 and
        # 3.8), where 128 x 32 / 4 warps needed 135-160 and 32 x 64 / 4 warps 233-254.
        return dict(BLOCK_P=128, BLOCK_T=16, POOL_WARPS=4, BLOCK_N=32, BLOCK_UT=32, UP_WARPS=8)
    # TRITON_INTERPRET: bigger blocks mean fewer interpreted programs
    return dict(BLOCK_P=256, BLOCK_T=64, POOL_WARPS=1, BLOCK_N=128, BLOCK_UT=64, UP_WARPS=1)


_DEVICE_TABLES: dict = {}


def _on_device(key: tuple, arrays: tuple[np.ndarray, ...], device: torch.device) -> tuple:
    cache_key = (key, str(device))
    if cache_key not in _DEVICE_TABLES:
        if len(_DEVICE_TABLES) > 256:
            _DEVICE_TABLES.clear()
        _DEVICE_TABLES[cache_key] = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays)
    return _DEVICE_TABLES[cache_key]


def patch_aggregate_triton(
    features: list,  # L torch tensors [B, C_l, H_l, W_l], same device
    *,
    patch_size: int,
    pretrain_embed_dimension: int,
    target_embed_dimension: int,
) -> torch.Tensor:
    """Launch the kernels (per layer: pool on its grid, plus the bilinear blend for a layer on
    another grid); returns ``[B*H0*W0, target]`` float32."""
    device = features[0].device
    n_batch, _, grid_h, grid_w = features[0].shape
    n_rows = n_batch * grid_h * grid_w
    channels = tuple(int(f.shape[1]) for f in features)
    tables = tap_tables(channels, patch_size, pretrain_embed_dimension, target_embed_dimension)
    overlap = any(tables[i][0] < tables[i - 1][1] for i in range(1, len(tables)) if tables[i][1] > tables[i][0])
    alloc = torch.zeros if overlap else torch.empty
    out = alloc((n_rows, target_embed_dimension), dtype=torch.float32, device=device)
    if n_rows == 0:
        return out
    cfg = launch_config(device.type)
    pad = (patch_size - 1) // 2
    covered = 0
    for layer, (feature, (t_lo, t_hi, channel, offset, weight)) in enumerate(zip(features, tables)):
        if t_hi == t_lo:
            continue
        x = feature.to(torch.float32).contiguous()
        _, n_channels, height, width = x.shape
        key = (channels, patch_size, pretrain_embed_dimension, target_embed_dimension, layer)
        tap_ch, tap_off, tap_w = _on_device(key, (channel.T, offset.T, weight.T), device)
        n_t = t_hi - t_lo
        accumulate = t_lo < covered
        resized = (height, width) != (grid_h, grid_w)
        if resized:  # pool on the layer's grid into its own buffer, then blend into the output
            dst, stride, col0, acc_pool = torch.empty((n_batch * height * width, n_t), dtype=torch.float32,
                                                      device=device), n_t, 0, False
        else:
            dst, stride, col0, acc_pool = out, target_embed_dimension, t_lo, accumulate
        with device_of_launch(device):
            grid = (triton.cdiv(height * width, cfg["BLOCK_P"]), n_batch, triton.cdiv(n_t, cfg["BLOCK_T"]))
            _pool_taps_kernel[grid](
                x, dst, tap_ch, tap_off, tap_w,
                n_t, stride, col0, n_channels, height, width, channel.shape[1],
                PATCH=patch_size, PAD=pad, ACCUMULATE=acc_pool,
                BLOCK_P=cfg["BLOCK_P"], BLOCK_T=cfg["BLOCK_T"], num_warps=cfg["POOL_WARPS"],
            )
            if resized:
                bil = _on_device(("bilinear", height, width, grid_h, grid_w),
                                 interp_tables(height, width, grid_h, grid_w), device)
                grid = (triton.cdiv(n_rows, cfg["BLOCK_N"]), triton.cdiv(n_t, cfg["BLOCK_UT"]))
                _upsample_add_kernel[grid](
                    dst, out, *bil,
                    n_rows, n_t, t_lo, target_embed_dimension, height, width, grid_h, grid_w,
                    ACCUMULATE=accumulate, BLOCK_N=cfg["BLOCK_N"], BLOCK_T=cfg["BLOCK_UT"],
                    num_warps=cfg["UP_WARPS"],
                )
        covered = max(covered, t_hi)
    return out
