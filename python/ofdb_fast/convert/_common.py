"""What every converter shares: the conversion report, the manifest, the source/destination checks.

Conventions (each converter's module docstring adds its own):
- The report is a :class:`ConversionReport` (a converter may subclass it to list more kinds of
  skipped files); it is returned, printed by the CLI and saved as ``conversion_report.json``
  beside ``manifest.csv`` in every category directory written.
- ``manifest.csv`` has one row per output image, sorted as the converter writes them; UTF-8,
  ``\\n`` line ends, the ``csv`` module's minimal quoting.
- The source is only read. A destination equal to the source, inside it or containing it is a
  ``ValueError``; a non-empty destination is refused (``OSError``) unless ``overwrite``, which
  replaces only the category directories the converter writes.
- Category names are plain directory names: non-empty, no ``/``, not starting with ``.`` (so
  neither ``..`` nor a hidden staging directory).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from .._io import refuse_nonempty_dir

PNG_LEVEL = 1  # zlib level of written PNGs: lossless at any level; 1 is the fastest to write


@dataclasses.dataclass
class ConversionReport:
    """What a conversion found and wrote (also saved as ``conversion_report.json``)."""

    # The list fields the summary prints, in this order (a subclass appends its own).
    LISTED: ClassVar[tuple[str, ...]] = ("unreadable", "images_without_label", "labels_without_image",
                                         "excluded", "ignored")

    dataset: str
    source: str
    destination: str
    settings: dict[str, Any]
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    unreadable: list[str] = dataclasses.field(default_factory=list)
    images_without_label: list[str] = dataclasses.field(default_factory=list)
    labels_without_image: list[str] = dataclasses.field(default_factory=list)
    excluded: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _count_lines(self) -> list[str]:
        return ["  " + ", ".join(f"{k} {v}" for k, v in self.counts.items())]

    def summary(self) -> str:
        """Human-readable multi-line summary (the CLI prints it)."""
        lines = [f"{self.dataset}: {self.source} -> {self.destination}" + (" (dry run, nothing written)"
                                                                         if self.dry_run else "")]
        lines.extend(self._count_lines())
        for key in self.LISTED:
            items = getattr(self, key)
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                lines.append(f"  {key.replace('_', ' ')} ({len(items)}): {shown}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value (``Part9`` before ``Part10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def is_plain_name(name: Any) -> bool:
    """True for a usable category directory name (see the module docstring)."""
    return isinstance(name, str) and bool(name) and "/" not in name and not name.startswith(".")


def check_paths(src: Any, dst: Any, categories: Sequence[str], overwrite: bool, hint: str) -> tuple[Path, Path]:
    """Validate a converter's source, destination and category names; return them as paths.

    Checks, in this order: ``src`` is a directory (``OSError``), every category is a plain
    name (``ValueError``), ``src`` and ``dst`` do not overlap (``ValueError``), ``dst`` is
    absent, empty or ``overwrite`` (``OSError`` whose message ends with ``hint``).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise OSError(f"source {src} does not exist or is not a directory")
    for category in categories:
        if not is_plain_name(category):
            raise ValueError(f"category must be a plain directory name, got {category!r}")
    rs, rd = src.resolve(), dst.resolve()
    if rd == rs or rs in rd.parents or rd in rs.parents:
        raise ValueError(f"destination {dst} must not be the source {src}, inside it, or contain it "
                         f"(the source is never modified)")
    refuse_nonempty_dir(dst, overwrite, "destination", hint=hint)
    return src, dst
