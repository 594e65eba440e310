"""Small PNG charts drawn with Pillow (matplotlib is not a dependency): lines and histograms.

Conventions:
- A :class:`Plot` is described in data coordinates (``xlim``/``ylim``; points outside are
  clipped to the frame) and sized in CSS pixels (``width`` x ``height``). The PNG holds
  ``scale`` x that many pixels, so it stays crisp on high-density screens when the page shows it
  at ``width`` CSS pixels.
- Everything is drawn at ``SUPERSAMPLE`` x the PNG resolution and reduced with a Lanczos
  filter: Pillow's own lines are not antialiased.
- Text uses Pillow's bundled scalable font (``ImageFont.load_default(size)``, Pillow >= 10.1
  with FreeType); without FreeType it falls back to the fixed bitmap font.
- Colours are ``"#rrggbb"`` strings; :data:`PALETTE` gives distinguishable series colours.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PALETTE = ("#1c7ed6", "#e8590c", "#2f9e44", "#7048e8", "#d6336c", "#0c8599", "#f59f00")
GOOD_COLOR = "#1c7ed6"
DEFECT_COLOR = "#e03131"
SUPERSAMPLE = 2
_INK = (33, 37, 41)
_MUTED = (108, 117, 125)
_GRID = (233, 236, 239)
_MARGIN = {"left": 50, "right": 12, "top": 28, "bottom": 42}  # CSS pixels around the frame


def nice_ticks(lo: float, hi: float, n: int = 5, min_step: float = 0.0) -> list[float]:
    """About ``n`` round tick values (steps of 1, 2, 2.5 or 5 x 10^k, at least ``min_step``)
    inside ``[lo, hi]``.

    Example:
        >>> nice_ticks(0.0, 1.0)
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [float(lo)]
    raw = max((hi - lo) / max(1, n), min_step)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def tick_label(v: float, step: float) -> str:
    """A tick label with just enough decimals to tell ticks ``step`` apart (0.25 -> 2 decimals)."""
    decimals = 0
    while decimals < 10 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    return f"{v:.{decimals}f}"


def _font(size: float):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def _rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


@dataclass
class _Line:
    x: np.ndarray
    y: np.ndarray
    color: str
    label: str | None
    width: float
    dashed: bool


@dataclass
class _Bars:
    edges: np.ndarray
    counts: np.ndarray
    color: str
    label: str | None
    alpha: float


@dataclass
class Plot:
    """A line chart or histogram with a frame, grid, ticks, axis labels, title and legend.

    Example:
        >>> p = Plot(title="ROC", xlabel="FPR", ylabel="TPR")
        >>> p.line([0, 0.2, 1], [0, 0.9, 1], color=PALETTE[0], label="model")
        >>> p.png()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    xlim: tuple[float, float] = (0.0, 1.0)
    ylim: tuple[float, float] = (0.0, 1.0)
    width: int = 360
    height: int = 290
    scale: int = 2
    legend_loc: str = "lower right"  # "lower right" | "upper right" | "upper left"
    y_min_step: float = 0.0  # 1.0 for counts: no fractional ticks
    _items: list = field(default_factory=list, repr=False)

    def line(self, x: Sequence[float], y: Sequence[float], *, color: str, label: str | None = None,
             width: float = 2.0, dashed: bool = False) -> None:
        """Add a polyline ``x[i], y[i]`` (``[N]`` each)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"x and y must be 1-D of one length, got {x.shape} and {y.shape}")
        self._items.append(_Line(x, y, color, label, width, dashed))

    def bars(self, edges: Sequence[float], counts: Sequence[float], *, color: str, label: str | None = None,
             alpha: float = 0.45) -> None:
        """Add a histogram: ``counts [B]`` over bins ``edges [B + 1]``, translucent fill + outline."""
        edges, counts = np.asarray(edges, np.float64), np.asarray(counts, np.float64)
        if edges.shape != (counts.size + 1,):
            raise ValueError(f"edges must have len(counts) + 1 = {counts.size + 1} values, got {edges.size}")
        self._items.append(_Bars(edges, counts, color, label, alpha))

    # ------------------------------------------------------------------ drawing
    def _frame(self, k: float) -> tuple[float, float, float, float]:
        return (_MARGIN["left"] * k, _MARGIN["top"] * k, (self.width - _MARGIN["right"]) * k,
                (self.height - _MARGIN["bottom"]) * k)

    def render(self):
        """The chart as an RGB ``PIL.Image`` of ``scale * (width, height)`` pixels."""
        from PIL import Image, ImageDraw

        k = float(self.scale * SUPERSAMPLE)  # drawing pixels per CSS pixel
        img = Image.new("RGBA", (int(self.width * k), int(self.height * k)), (255, 255, 255, 255))
        draw = ImageDraw.Draw(img)
        x0, y0, x1, y1 = self._frame(k)
        (xa, xb), (ya, yb) = self.xlim, self.ylim
        if xb <= xa or yb <= ya:
            raise ValueError(f"xlim and ylim must be increasing, got {self.xlim} and {self.ylim}")

        def px(x, y):
            x = np.clip(np.asarray(x, np.float64), xa, xb)
            y = np.clip(np.asarray(y, np.float64), ya, yb)
            return x0 + (x - xa) / (xb - xa) * (x1 - x0), y1 - (y - ya) / (yb - ya) * (y1 - y0)

        small, title_font = _font(10.5 * k), _font(12.5 * k)
        # Grid and tick labels.
        for axis, (lo, hi) in (("x", self.xlim), ("y", self.ylim)):
            ticks = nice_ticks(lo, hi, min_step=self.y_min_step if axis == "y" else 0.0)
            step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
            for t in ticks:
                label = tick_label(t, step)
                if axis == "x":
                    gx = float(px(t, ya)[0])
                    draw.line([(gx, y0), (gx, y1)], fill=_GRID, width=int(k))
                    draw.line([(gx, y1), (gx, y1 + 3 * k)], fill=_MUTED, width=int(k))
                    draw.text((gx, y1 + 5 * k), label, fill=_MUTED, font=small, anchor="ma")
                else:
                    gy = float(px(xa, t)[1])
                    draw.line([(x0, gy), (x1, gy)], fill=_GRID, width=int(k))
                    draw.line([(x0 - 3 * k, gy), (x0, gy)], fill=_MUTED, width=int(k))
                    draw.text((x0 - 5 * k, gy), label, fill=_MUTED, font=small, anchor="rm")
        # Data: translucent bars on their own layer, then lines.
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        ldraw = ImageDraw.Draw(layer)
        for item in self._items:
            if isinstance(item, _Bars):
                fill = _rgb(item.color) + (int(255 * item.alpha),)
                for a, b, c in zip(item.edges[:-1], item.edges[1:], item.counts):
                    if c > 0:
                        (ax, cy), (bx, _) = px(a, c), px(b, ya)
                        ldraw.rectangle([float(ax), float(cy), float(bx), y1], fill=fill)
        img.alpha_composite(layer)
        for item in self._items:
            if isinstance(item, _Bars):  # outline of the histogram as a step line
                xs = np.repeat(item.edges, 2)[1:-1]
                ys = np.repeat(item.counts, 2)
                xs = np.concatenate([[item.edges[0]], xs, [item.edges[-1]]])
                ys = np.concatenate([[ya], ys, [ya]])
                gx, gy = px(xs, ys)
                draw.line(list(zip(gx.tolist(), gy.tolist())), fill=_rgb(item.color), width=int(1.2 * k))
            elif item.x.size:
                gx, gy = px(item.x, item.y)
                pts = list(zip(gx.tolist(), gy.tolist()))
                if item.dashed:
                    for seg in _dash(pts, 5 * k, 4 * k):
                        draw.line(seg, fill=_rgb(item.color), width=int(item.width * k * 0.6))
                else:
                    draw.line(pts, fill=_rgb(item.color), width=int(item.width * k), joint="curve")
        draw.rectangle([x0, y0, x1, y1], outline=_MUTED, width=int(k))
        # Labels and title.
        draw.text(((x0 + x1) / 2, self.height * k - 4 * k), self.xlabel, fill=_INK, font=small, anchor="md")
        if self.ylabel:
            tw = int(draw.textlength(self.ylabel, font=small)) + int(4 * k)
            th = int(14 * k)
            tag = Image.new("RGBA", (tw, th), (255, 255, 255, 0))
            ImageDraw.Draw(tag).text((tw / 2, th / 2), self.ylabel, fill=_INK, font=small, anchor="mm")
            tag = tag.rotate(90, expand=True)
            img.alpha_composite(tag, (int(2 * k), int((y0 + y1) / 2 - tag.height / 2)))
        draw.text((x0, 7 * k), self.title, fill=_INK, font=title_font, anchor="la")
        self._legend(draw, k, (x0, y0, x1, y1), small)
        size = (self.width * self.scale, self.height * self.scale)
        return img.convert("RGB").resize(size, Image.Resampling.LANCZOS)

    def _legend(self, draw, k: float, frame, font) -> None:
        entries = [it for it in self._items if it.label]
        if not entries:
            return
        x0, y0, x1, y1 = frame
        row, swatch, pad = 15 * k, 16 * k, 6 * k
        text_w = max(draw.textlength(it.label, font=font) for it in entries)
        w, h = swatch + 5 * k + text_w + 2 * pad, row * len(entries) + pad * 1.2
        left = x0 + 8 * k if self.legend_loc.endswith("left") else x1 - 8 * k - w
        top = y0 + 8 * k if self.legend_loc.startswith("upper") else y1 - 8 * k - h
        draw.rounded_rectangle([left, top, left + w, top + h], radius=4 * k, fill=(255, 255, 255),
                               outline=(206, 212, 218), width=int(k))
        for j, it in enumerate(entries):
            cy = top + pad * 0.6 + row * (j + 0.5)
            sx = left + pad
            if isinstance(it, _Bars):
                c = _rgb(it.color)
                tint = tuple(int(255 - it.alpha * (255 - v)) for v in c)
                draw.rectangle([sx, cy - 4.5 * k, sx + swatch, cy + 4.5 * k], fill=tint, outline=c, width=int(k))
            elif it.dashed:
                for seg in _dash([(sx, cy), (sx + swatch, cy)], 5 * k, 4 * k):
                    draw.line(seg, fill=_rgb(it.color), width=int(it.width * k * 0.6))
            else:
                draw.line([(sx, cy), (sx + swatch, cy)], fill=_rgb(it.color), width=int(it.width * k))
            draw.text((sx + swatch + 5 * k, cy), it.label, fill=_INK, font=font, anchor="lm")

    def png(self) -> bytes:
        """The chart encoded as PNG bytes."""
        buf = io.BytesIO()
        self.render().save(buf, format="PNG", optimize=True)
        return buf.getvalue()


def _dash(points: list[tuple[float, float]], on: float, off: float) -> list[list[tuple[float, float]]]:
    """Split a polyline into dashes of length ``on`` separated by gaps ``off`` (pixels)."""
    dashes, current, pos, drawing = [], [points[0]], 0.0, True
    period = (on, off)
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
        seg = math.hypot(bx - ax, by - ay)
        t = 0.0
        while seg - t > 1e-9:
            room = period[0 if drawing else 1] - pos
            step = min(room, seg - t)
            t += step
            pos += step
            p = (ax + (bx - ax) * t / seg, ay + (by - ay) * t / seg)
            if drawing:
                current.append(p)
            if pos >= period[0 if drawing else 1] - 1e-9:
                if drawing:
                    dashes.append(current)
                drawing, pos, current = not drawing, 0.0, [p]
    if drawing and len(current) > 1:
        dashes.append(current)
    return dashes


def histogram(values: Sequence[float], edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in bins ``edges`` (the last bin includes its right edge)."""
    return np.histogram(np.asarray(values, np.float64), bins=edges)[0]
