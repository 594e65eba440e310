"""Tests for ofdb_fast._io: atomic writes, refusals, staged directories."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ofdb_fast import _io


def _boom(*_args, **_kwargs):
    raise OSError(28, "No space left on device")


def test_temp_names():
    tmp = _io.temp_path(os.path.join("d", "image_3.png"))
    assert tmp == os.path.join("d", f".image_3.png.tmp-{os.getpid()}")
    assert _io.is_temp_name(os.path.basename(tmp))
    assert _io.is_temp_name(".a.bin.0f1e2d3c.tmp-12")
    for name in ("image_3.png", ".tmp-12", ".x.tmp-", ".x.tmp-12a", "x.tmp-12"):
        assert not _io.is_temp_name(name), name


def test_write_bytes_text_json_replace_and_leave_no_temp(tmp_path):
    p = tmp_path / "a.bin"
    _io.atomic_write_bytes(p, b"one")
    _io.atomic_write_bytes(str(p), b"two")
    assert p.read_bytes() == b"two"
    _io.atomic_write_text(tmp_path / "t.csv", "x,é\r\ny\n")
    assert (tmp_path / "t.csv").read_bytes() == "x,é\r\ny\n".encode()  # no newline translation, UTF-8
    _io.atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    text = (tmp_path / "j.json").read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1, 2], "b": 1}
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "j.json", "t.csv"]


def test_plain_file_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        _io.atomic_write_bytes(tmp_path / "a", b"x")
        _io.atomic_write(tmp_path / "b", lambda tmp: open(tmp, "wb").close())
    finally:
        os.umask(umask)
    for name in ("a", "b"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644  # not mkstemp's 0o600


@pytest.mark.parametrize("fsync", [False, True])
def test_atomic_write_path_callback(tmp_path, fsync):
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert os.path.dirname(tmp) == str(tmp_path / "sub")
        assert _io.is_temp_name(os.path.basename(tmp))
        with open(tmp, "w") as f:
            f.write("payload")

    _io.atomic_write(tmp_path / "sub" / "f.txt", write, fsync=fsync, makedirs=True)
    assert (tmp_path / "sub" / "f.txt").read_text() == "payload"
    assert os.listdir(tmp_path / "sub") == ["f.txt"] and not os.path.exists(seen[0])


def test_failure_in_writer_keeps_original_and_removes_temp(tmp_path):
    p = tmp_path / "keep.txt"
    p.write_text("original")

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("partial")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        _io.atomic_write(p, write)
    with pytest.raises(KeyboardInterrupt):
        with _io.atomic_open(p, "w") as f:
            f.write("partial")
            raise KeyboardInterrupt
    assert p.read_text() == "original"
    assert os.listdir(tmp_path) == ["keep.txt"]


@pytest.mark.parametrize("fsync", [False, True])
def test_failing_replace_keeps_original_and_removes_temp(tmp_path, monkeypatch, fsync):
    p = tmp_path / "keep.bin"
    p.write_bytes(b"original")
    monkeypatch.setattr(_io.os, "replace", _boom)
    with pytest.raises(OSError, match="No space left"):
        _io.atomic_write_bytes(p, b"new", fsync=fsync)
    with pytest.raises(OSError, match="No space left"):
        _io.atomic_write(p, lambda tmp: open(tmp, "wb").close(), fsync=fsync)
    assert p.read_bytes() == b"original"
    assert os.listdir(tmp_path) == ["keep.bin"]


def test_unserialisable_json_touches_nothing(tmp_path):
    with pytest.raises(TypeError):
        _io.atomic_write_json(tmp_path / "j.json", {"x": object()})
    assert os.listdir(tmp_path) == []


def test_missing_directory_fails_cleanly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(OSError):
        _io.atomic_write_bytes(blocker / "a.bin", b"data")
    with pytest.raises(OSError):
        _io.atomic_write_bytes(tmp_path / "no" / "a.bin", b"data")
    assert os.listdir(tmp_path) == ["file"]


def test_bad_mode():
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w', got 'a'"):
        with _io.atomic_open("x", "a"):
            pass


def test_refuse_overwrite(tmp_path):
    p = tmp_path / "out.npz"
    _io.refuse_overwrite(p, False, "--save_path")  # absent: fine
    p.write_bytes(b"x")
    _io.refuse_overwrite(p, True, "--save_path")
    with pytest.raises(OSError, match=f"^--save_path {p} already exists; pass --overwrite to replace it$"):
        _io.refuse_overwrite(p, False, "--save_path")
    with pytest.raises(FileExistsError, match=f"^{p} already exists; pass overwrite=True$"):
        _io.refuse_overwrite(p, False, hint="pass overwrite=True", error=FileExistsError)


def test_refuse_nonempty_dir_and_prepare(tmp_path):
    out = tmp_path / "a" / "b"
    assert _io.prepare_output_dir(out, False, "--out") == out and out.is_dir()
    _io.prepare_output_dir(out, False, "--out")  # empty: fine
    (out / "f").write_text("x")
    with pytest.raises(ValueError, match=f"^--out {out} is not empty; pass --overwrite to replace it$"):
        _io.refuse_nonempty_dir(out, False, "--out", error=ValueError)
    _io.prepare_output_dir(out, True, "--out")
    assert (out / "f").exists()  # overwrite allows, never deletes
    with pytest.raises(OSError, match="--out .*/f exists and is not a directory"):
        _io.refuse_nonempty_dir(out / "f", True, "--out")


def test_staged_dir_new_and_replace(tmp_path):
    final = tmp_path / "cat"
    with _io.staged_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".cat.tmp-")
        (tmp / "one").write_text("1")
    assert sorted(os.listdir(final)) == ["one"]
    with _io.staged_dir(final) as tmp:
        (tmp / "two").write_text("2")
    assert sorted(os.listdir(final)) == ["two"]
    assert os.listdir(tmp_path) == ["cat"]  # no .tmp- / .old- leftovers


def test_staged_dir_failure_keeps_old_tree(tmp_path):
    final = tmp_path / "cat"
    final.mkdir()
    (final / "old").write_text("o")
    with pytest.raises(RuntimeError, match="fail"):
        with _io.staged_dir(final) as tmp:
            (tmp / "new").write_text("n")
            raise RuntimeError("fail")
    assert os.listdir(final) == ["old"] and os.listdir(tmp_path) == ["cat"]


def test_swap_restores_old_tree_when_second_rename_fails(tmp_path, monkeypatch):
    final, tmp = tmp_path / "cat", tmp_path / ".cat.tmp-x"
    final.mkdir()
    (final / "old").write_text("o")
    tmp.mkdir()
    real_replace = os.replace

    def replace(src, dst):
        if str(src) == str(tmp):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(_io.os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        _io.swap_dir_into_place(tmp, final)
    assert os.listdir(final) == ["old"]
    assert sorted(os.listdir(tmp_path)) == [".cat.tmp-x", "cat"]  # the caller owns tmp
