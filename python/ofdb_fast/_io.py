"""Shared file-system plumbing: atomic writes, overwrite refusal, staged output directories.

Every ofdb_fast command follows one rule: never leave a half-written file where a user (or a
resuming run) would take it for a complete one, and never replace user data unasked.

Conventions:
- A file appears only through ``os.replace`` of a temporary file in the *same directory* (a
  rename within one file system is atomic on POSIX), so a path that exists is complete.
- Temporary names are ``.{name}.{token}.tmp-{pid}`` (unique, from :func:`atomic_write` and
  friends) or ``.{name}.tmp-{pid}`` (deterministic, :func:`temp_path`, for streaming writers
  that own their target). :func:`is_temp_name` recognises both, so a resume can delete leftovers
  of an interrupted run, whatever wrote them.
- Temporary files are created with mode ``0o666`` minus the umask, i.e. the permissions a plain
  ``open(path, "w")`` gives (``tempfile.mkstemp``'s ``0o600`` would make outputs private).
- On any error (``BaseException``: Ctrl-C included) the temporary file is removed and the error
  propagates; the target is then untouched (or, for a new target, absent).
- ``fsync`` is opt-in (``fsync=True``). ``os.replace`` alone protects against an interrupted or
  crashed process; ``fsync`` adds protection against power loss / kernel crash, at a cost of
  milliseconds per file that a dataset of 10^5 images cannot pay. Files that are expensive to
  recreate and are replaced in place (training checkpoints, parameter files) use it; the
  directory entry itself is not fsynced.
- Text is written exactly as given (``newline=""``: no newline translation), UTF-8.
- Overwrite refusals read ``f"{what} {path} already exists; {hint}"`` for files and
  ``f"{what} {path} is not empty; {hint}"`` for directories, where ``hint`` says which flag or
  argument allows the replacement.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

TEMP_MARK = ".tmp-"
DEFAULT_HINT = "pass --overwrite to replace it"


# ------------------------------------------------------------------------ temp names
def temp_path(path: str | os.PathLike) -> str:
    """The deterministic temp name for ``path``: ``.{name}.tmp-{pid}`` beside it.

    For writers that stream into one temp file per target (tar/npz shards); two writers of the
    same target in one process would collide, so :func:`atomic_write` uses unique names instead.
    """
    directory, name = os.path.split(os.fspath(path))
    return os.path.join(directory, f".{name}{TEMP_MARK}{os.getpid()}")


def is_temp_name(name: str) -> bool:
    """True for a temp file name this module creates (any pid), given the base name only."""
    if not name.startswith("."):
        return False
    head, mark, pid = name.rpartition(TEMP_MARK)
    return bool(mark) and len(head) > 1 and pid.isdigit()


def _create_temp(path: str) -> tuple[int, str]:
    """Create a new unique temp file beside ``path``; return ``(fd, temp path)``."""
    directory, name = os.path.split(path)
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}{TEMP_MARK}{os.getpid()}")
        try:
            # O_EXCL: never share a temp file with another writer; 0o666 lets the umask decide.
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def remove_quietly(path: str | os.PathLike) -> None:
    """``os.remove`` that ignores a file already gone."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------ atomic files
def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], *, fsync: bool = False,
                 makedirs: bool = False) -> None:
    """Let ``write(tmp)`` create the file at the temp path ``tmp``, then move it to ``path``.

    For libraries that want a file name (``safetensors.torch.save_file``, ``PIL.Image.save``).
    ``write`` may replace or truncate ``tmp``; it must leave the complete file there.

    Args:
        path: the final file.
        write: called once with the temp path (a ``str`` in ``path``'s directory).
        fsync: flush the file to stable storage before the rename (see the module docstring).
        makedirs: create ``path``'s parent directories first.

    Raises:
        Whatever ``write`` or the file system raises; the temp file is removed first and
        ``path`` is untouched.
    """
    path = os.fspath(path)
    if makedirs:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = _create_temp(path)
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False, makedirs: bool = False,
                encoding: str | None = None, newline: str | None = None) -> Iterator[IO]:
    """Context manager: a file object on a temp file, moved to ``path`` when the block succeeds.

    Args:
        path: the final file.
        mode: ``"wb"`` or ``"w"`` (text: ``encoding`` default UTF-8, ``newline`` default ``""``).
        fsync, makedirs: as in :func:`atomic_write`.

    Example:
        >>> with atomic_open("out.bin") as f:  # doctest: +SKIP
        ...     f.write(b"data")
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    if makedirs:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        if mode == "w":
            f = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="" if newline is None else newline)
        else:
            f = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        remove_quietly(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False, makedirs: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb", fsync=fsync, makedirs=makedirs) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False, makedirs: bool = False) -> None:
    """Write ``text`` to ``path`` atomically, UTF-8, newlines exactly as given."""
    with atomic_open(path, "w", fsync=fsync, makedirs=makedirs) as f:
        f.write(text)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (``\\n`` line ends): ``header`` then ``rows``; write it with :func:`atomic_write_text`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      fsync: bool = False, makedirs: bool = False) -> None:
    """Write ``json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\\n"`` atomically.

    The object is serialised before the temp file is created, so an unserialisable ``obj``
    raises ``TypeError`` and touches nothing.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    atomic_write_text(path, text, fsync=fsync, makedirs=makedirs)


# ------------------------------------------------------------------------ refusals
def refuse_overwrite(path: str | os.PathLike, overwrite: bool, what: str = "", *, hint: str = DEFAULT_HINT,
                     error: type[Exception] = OSError) -> None:
    """Raise ``error`` when the file ``path`` exists and ``overwrite`` is false.

    Message: ``f"{what} {path} already exists; {hint}"`` (``what`` names the flag or the kind
    of file, e.g. ``"--save_path"``, ``"report"``; empty: the path alone).
    """
    if not overwrite and os.path.exists(path):
        raise error(f"{what + ' ' if what else ''}{os.fspath(path)} already exists; {hint}")


def refuse_nonempty_dir(path: str | os.PathLike, overwrite: bool, what: str, *, hint: str = DEFAULT_HINT,
                        error: type[Exception] = OSError) -> None:
    """Raise ``error`` when ``path`` is a file, or a non-empty directory and not ``overwrite``.

    Messages: ``f"{what} {path} exists and is not a directory"`` and
    ``f"{what} {path} is not empty; {hint}"``.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise error(f"{what} {p} exists and is not a directory")
    if not overwrite and p.is_dir() and any(p.iterdir()):
        raise error(f"{what} {p} is not empty; {hint}")


def prepare_output_dir(path: str | os.PathLike, overwrite: bool, what: str, *, hint: str = DEFAULT_HINT,
                       error: type[Exception] = OSError) -> Path:
    """:func:`refuse_nonempty_dir`, then create the directory (and parents); return it."""
    refuse_nonempty_dir(path, overwrite, what, hint=hint, error=error)
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


# ------------------------------------------------------------------------ directories
def swap_dir_into_place(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> None:
    """Move the complete directory ``tmp_dir`` to ``final_dir``, replacing an existing one.

    ``tmp_dir`` must be in ``final_dir``'s parent (same file system). An existing ``final_dir``
    is first renamed into a hidden ``.{name}.old-*`` directory beside it, the new one renamed
    into place, then the old one deleted; when the second rename fails the old directory is
    put back, so ``final_dir`` is always either the old or the new tree (empty for at most the
    instant between the two renames).
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if not final_dir.exists():
        os.replace(tmp_dir, final_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.old-", dir=final_dir.parent))
    os.replace(final_dir, old / final_dir.name)
    try:
        os.replace(tmp_dir, final_dir)
    except BaseException:
        os.replace(old / final_dir.name, final_dir)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old)


@contextlib.contextmanager
def staged_dir(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Context manager: a fresh hidden ``.{name}.tmp-*`` directory beside ``final_dir``.

    When the block succeeds the directory is swapped into place (:func:`swap_dir_into_place`);
    when it raises, the staged directory is deleted and ``final_dir`` is untouched. The parent
    directory must exist.

    Example:
        >>> with staged_dir(root / "bottle") as tmp:  # doctest: +SKIP
        ...     (tmp / "train").mkdir()
    """
    final_dir = Path(final_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}{TEMP_MARK}", dir=final_dir.parent))
    try:
        yield tmp
        swap_dir_into_place(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
