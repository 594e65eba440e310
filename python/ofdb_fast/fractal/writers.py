"""Output writers for ``ofdb-fast generate``: a fast PNG encoder, atomic file writes, and
streaming tar / npz shard writers.

Conventions:
- Images are ``uint8 [H, W, 3]`` RGB (or ``[H, W]`` gray), C order.
- Every file appears only through ``os.replace`` of a temp file in the same directory
  (:mod:`ofdb_fast._io`: ``.{name}.{token}.tmp-{pid}`` for whole files, ``.{name}.tmp-{pid}``
  for streamed shards), so a file that exists is complete; an interrupted run leaves at most
  temp files, which :func:`is_temp_name` recognises and ``generate --resume`` removes.
- Output bytes are a pure function of the pixels and the options: no timestamps, user names
  or other host state go into PNG, tar or npz files (shards written on different machines are
  byte-identical to a single-machine run).

PNG encoding: fractal images are ~88% black, so zlib's run-length strategy (``Z_RLE``) with
filter type 0 on every row is the fastest encoder we measured that still compresses well.
Per 512x512 image, one core of the (busy) 2-core CI VM, on a synthetic OFDB-like image: this
encoder 2.1-2.3 ms / 85 KB; zlib default strategy level 1 2.4-2.5 ms / 66 KB; PIL
``compress_level=1`` 6.1 ms / 79 KB; PIL default (the reference's) 9.9 ms / 74 KB; cv2 level 1
RLE 6.0 ms / 92 KB; Huffman-only 5.2-9.0 ms / 175 KB. On 64 real ``ifs_render`` images (CPU
time): Z_RLE memLevel 8 1.80 ms / 72.3 KB, memLevel 9 2.04 ms / 72.3 KB, memLevel 7 1.75 ms /
72.4 KB, default strategy 2.1-2.4 ms / 67 KB. ``zlib`` releases the GIL while compressing, so a
thread pool scales across cores.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
import zlib

import numpy as np

from .._io import atomic_write_bytes, is_temp_name, remove_quietly, temp_path  # noqa: F401 (re-exported)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A fixed zip timestamp (the earliest zip can store) keeps npz shards byte-reproducible.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(image: np.ndarray, level: int = 1, strategy: int = zlib.Z_RLE) -> bytes:
    """Encode an 8-bit image as PNG bytes (filter type 0, zlib ``strategy`` at ``level``).

    Args:
        image: ``uint8 [H, W, 3]`` RGB or ``uint8 [H, W]`` gray.
        level: zlib level 0-9 (0 stores uncompressed).
        strategy: a zlib strategy constant; ``Z_RLE`` is fastest for mostly-black images.

    Returns:
        The PNG file contents; PIL/OpenCV read back exactly ``image``.

    Example:
        >>> data = encode_png(np.zeros((4, 5, 3), np.uint8))
        >>> data[:8] == PNG_SIGNATURE
        True
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim == 2:
        color_type, channels = 0, 1
    elif image.ndim == 3 and image.shape[2] == 3:
        color_type, channels = 2, 3
    else:
        raise ValueError(f"image must have shape [H, W, 3] or [H, W], got {list(image.shape)}")
    if not 0 <= int(level) <= 9:
        raise ValueError(f"level must be in 0..9, got {level}")
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1x1, got {list(image.shape)}")
    # Each scanline is prefixed by its filter byte (0 = None).
    raw = np.empty((height, width * channels + 1), np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = image.reshape(height, width * channels)
    compressor = zlib.compressobj(int(level), zlib.DEFLATED, 15, 8, strategy)
    idat = compressor.compress(raw) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


class _AtomicShard:
    """Base for shard writers: writes into the temp file, ``close`` renames it into place,
    ``abort`` (or an exception inside ``with``) removes it."""

    def __init__(self, path: str):
        self.path = path
        self.tmp = temp_path(path)
        self._file = open(self.tmp, "wb")
        self._done = False

    def _finish(self) -> None:  # subclasses write their trailer here
        pass

    def close(self) -> None:
        if self._done:
            return
        try:
            self._finish()
            self._file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        finally:
            remove_quietly(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class TarShardWriter(_AtomicShard):
    """A webdataset-style tar shard: per sample ``{index:09d}.png`` and ``{index:09d}.cls``
    (the label as decimal text), in the order added. Members have mtime 0, mode 0644, uid/gid 0
    and no user names, so the bytes depend only on the contents."""

    def __init__(self, path: str):
        super().__init__(path)
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def add(self, index: int, png: bytes, label: int) -> None:
        self._add(f"{int(index):09d}.png", png)
        self._add(f"{int(index):09d}.cls", str(int(label)).encode())

    def _finish(self) -> None:
        self._tar.close()


class NpzShardWriter(_AtomicShard):
    """An uncompressed ``.npz`` shard with ``images`` uint8 ``[n, H, W, 3]``, ``labels`` int64
    ``[n]`` and ``indices`` int64 ``[n]``, readable by ``np.load``. Images are streamed in
    (``add`` in order), so a shard never has to fit in memory."""

    def __init__(self, path: str, n: int, height: int, width: int, labels: np.ndarray, indices: np.ndarray):
        super().__init__(path)
        self._n = int(n)
        self._shape = (self._n, int(height), int(width), 3)
        self._labels = np.ascontiguousarray(labels, dtype=np.int64)
        self._indices = np.ascontiguousarray(indices, dtype=np.int64)
        if self._labels.shape != (self._n,) or self._indices.shape != (self._n,):
            raise ValueError(f"labels and indices must have shape [{self._n}], got "
                             f"{list(self._labels.shape)} and {list(self._indices.shape)}")
        self._zip = zipfile.ZipFile(self._file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._member = self._zip.open(self._zipinfo("images.npy"), "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": self._shape}
        np.lib.format.write_array_header_1_0(self._member, header)
        self._written = 0

    @staticmethod
    def _zipinfo(name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        return info

    def add(self, images: np.ndarray) -> None:
        """Append ``uint8 [b, H, W, 3]`` images (the next ``b`` of the shard)."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.shape[1:] != self._shape[1:] or self._written + images.shape[0] > self._n:
            raise ValueError(f"images must have shape [b, {', '.join(map(str, self._shape[1:]))}] with at most "
                             f"{self._n - self._written} more rows, got {list(images.shape)}")
        self._member.write(images.tobytes())
        self._written += images.shape[0]

    def _finish(self) -> None:
        if self._written != self._n:
            raise RuntimeError(f"{self.path}: shard incomplete ({self._written} of {self._n} images)")
        self._member.close()
        for name, array in (("labels.npy", self._labels), ("indices.npy", self._indices)):
            with self._zip.open(self._zipinfo(name), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
        self._zip.close()

    def abort(self) -> None:
        if not self._done:
            for closer in (getattr(self, "_member", None), getattr(self, "_zip", None)):
                try:
                    if closer is not None:
                        closer.close()
                except Exception:  # the temp file is deleted anyway
                    pass
        super().abort()
