"""PNG encoder, atomic writes and tar/npz shard writers of ``ofdb-fast generate``."""

from __future__ import annotations

import io
import os
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from ofdb_fast.fractal import writers


def _fractal_like(rng, h, w):
    """Mostly black with a few bright blobs, like an OFDB image."""
    image = np.zeros((h, w, 3), np.uint8)
    mask = rng.random((h, w)) < 0.12
    image[mask] = rng.integers(1, 256, (int(mask.sum()), 3), dtype=np.uint8)
    return image


@pytest.mark.parametrize("shape", [(1, 1, 3), (37, 53, 3), (64, 64, 3), (5, 7)])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_roundtrip_pixel_exact(rng, shape, level):
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    if len(shape) == 3 and shape[0] > 8:
        image = _fractal_like(rng, *shape[:2])
    data = writers.encode_png(image, level)
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(decoded, image)


def test_png_readable_by_opencv_and_noncontiguous(rng):
    cv2 = pytest.importorskip("cv2")
    base = _fractal_like(rng, 53, 37)
    view = base.transpose(1, 0, 2)  # non-contiguous [37, 53, 3]
    data = writers.encode_png(view)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_array_equal(decoded, view)


def test_png_strategy_changes_bytes_not_pixels(rng):
    image = _fractal_like(rng, 64, 64)
    rle = writers.encode_png(image, 1, zlib.Z_RLE)
    default = writers.encode_png(image, 1, zlib.Z_DEFAULT_STRATEGY)
    assert rle != default
    for data in (rle, default):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), image)


def test_png_compresses_black_images():
    data = writers.encode_png(np.zeros((512, 512, 3), np.uint8))
    assert len(data) < 5_000  # raw is 786 KB


@pytest.mark.parametrize(
    "image, level, err, match",
    [
        (np.zeros((4, 4, 3), np.float32), 1, TypeError, "image must have dtype uint8"),
        (np.zeros((4, 4, 4), np.uint8), 1, ValueError, r"image must have shape \[H, W, 3\]"),
        (np.zeros((0, 4, 3), np.uint8), 1, ValueError, "image must be at least 1x1"),
        (np.zeros((4, 4, 3), np.uint8), 10, ValueError, "level must be in 0..9"),
    ],
)
def test_png_bad_input(image, level, err, match):
    with pytest.raises(err, match=match):
        writers.encode_png(image, level)


def test_temp_names():
    path = os.path.join("d", "image_3.png")
    tmp = writers.temp_path(path)
    assert os.path.dirname(tmp) == "d"
    assert os.path.basename(tmp) == f".image_3.png.tmp-{os.getpid()}"
    assert writers.is_temp_name(os.path.basename(tmp))
    for name in ("image_3.png", ".tmp-12", ".x.tmp-", ".x.tmp-12a", "x.tmp-12"):
        assert not writers.is_temp_name(name), name


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = str(tmp_path / "a.bin")
    writers.atomic_write_bytes(path, b"one")
    writers.atomic_write_bytes(path, b"two")
    assert open(path, "rb").read() == b"two"
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]


def test_atomic_write_failure_leaves_nothing(tmp_path, monkeypatch):
    path = str(tmp_path / "a.bin")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        writers.atomic_write_bytes(path, b"data")
    assert os.listdir(tmp_path) == []


def test_atomic_write_under_a_regular_file_fails_cleanly(tmp_path):
    # Runs as root in CI, where chmod cannot make a directory unwritable; a path below a
    # regular file fails for every user (ENOTDIR) before anything is created.
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(OSError):
        writers.atomic_write_bytes(str(blocker / "a.bin"), b"data")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_tar_shard_members_and_determinism(tmp_path, rng):
    images = [_fractal_like(rng, 16, 24) for _ in range(3)]
    paths = []
    for name in ("a.tar", "b.tar"):
        path = str(tmp_path / name)
        with writers.TarShardWriter(path) as w:
            for j, image in enumerate(images):
                w.add(100 + j, writers.encode_png(image), label=j % 2)
        paths.append(path)
    assert open(paths[0], "rb").read() == open(paths[1], "rb").read()
    with tarfile.open(paths[0]) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["000000100.png", "000000100.cls", "000000101.png", "000000101.cls",
                                             "000000102.png", "000000102.cls"]
        assert all(m.mtime == 0 and m.uname == "" for m in members)
        for j, image in enumerate(images):
            png = tar.extractfile(f"{100 + j:09d}.png").read()
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), image)
            assert tar.extractfile(f"{100 + j:09d}.cls").read() == str(j % 2).encode()
    assert sorted(os.listdir(tmp_path)) == ["a.tar", "b.tar"]


def test_npz_shard_streamed_roundtrip_and_determinism(tmp_path, rng):
    images = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    labels, indices = np.array([0, 0, 1, 1, 2]), np.arange(10, 15)
    for name in ("a.npz", "b.npz"):
        with writers.NpzShardWriter(str(tmp_path / name), 5, 6, 7, labels, indices) as w:
            w.add(images[:2])
            w.add(images[2:])
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as data:
        assert sorted(data.files) == ["images", "indices", "labels"]
        np.testing.assert_array_equal(data["images"], images)
        assert data["labels"].dtype == np.int64 and data["indices"].dtype == np.int64
        np.testing.assert_array_equal(data["labels"], labels)
        np.testing.assert_array_equal(data["indices"], indices)


def test_shard_writer_error_removes_temp(tmp_path):
    path = str(tmp_path / "s.npz")
    with pytest.raises(RuntimeError, match="shard incomplete"):
        with writers.NpzShardWriter(path, 3, 2, 2, np.zeros(3), np.arange(3)) as w:
            w.add(np.zeros((2, 2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="boom"):
        with writers.TarShardWriter(str(tmp_path / "s.tar")):
            raise ValueError("boom")
    assert os.listdir(tmp_path) == []


def test_npz_shard_rejects_wrong_images(tmp_path):
    with writers.NpzShardWriter(str(tmp_path / "s.npz"), 2, 4, 4, np.zeros(2), np.arange(2)) as w:
        with pytest.raises(ValueError, match=r"images must have shape \[b, 4, 4, 3\]"):
            w.add(np.zeros((1, 4, 5, 3), np.uint8))
        with pytest.raises(ValueError, match="at most 2 more rows"):
            w.add(np.zeros((3, 4, 4, 3), np.uint8))
        w.add(np.zeros((2, 4, 4, 3), np.uint8))
