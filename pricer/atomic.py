"""Writes that can't be half-done: a file or a folder is written under a temporary name beside
its place, flushed to disk, then moved into place with `os.replace` (atomic on one filesystem).
A full disk, a kill or Ctrl-C leaves the old file or folder as it was, never a torn one, and
no temporary is left behind by an error.

A folder can't be swapped for another in one step when it exists (``rename`` won't replace a
non-empty folder), so `replacing_folder` moves the old one aside, moves the new one in, then
deletes the old: a crash in between leaves the complete old folder beside its place, never a
folder that is half one and half the other.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def _temporary(path: Path) -> Path:
    # hidden, beside the target (same filesystem, so os.replace is a rename), unique per writer
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def fsync_tree(path: Path) -> None:
    """Flush a file, or every file of a folder and the folders themselves, to disk."""
    path = Path(path)
    if not path.is_dir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        return
    for item in path.rglob("*"):
        if item.is_symlink():
            continue
        if item.is_dir():
            _fsync_dir(item)
        else:
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(path)


def _fsync_dir(folder: Path) -> None:
    """A rename is durable once its folder is flushed (POSIX; a no-op where folders can't be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder: the rename is as durable as they allow
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path to write the file to; when the block ends without an error the file is
    flushed and replaces `path` in one step. On an error the temporary is removed and `path`
    is untouched.

    Example::

        with replacing(out) as tmp:
            table.to_parquet(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """`Path.write_text`, all or nothing."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """`Path.write_bytes`, all or nothing."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def replacing_folder(out: str | Path) -> Iterator[Path]:
    """An empty staging folder to build the folder in; when the block ends without an error it
    is flushed and takes `out`'s place (a previous `out` is moved aside, then deleted). On an
    error the staging folder is deleted and `out` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = _temporary(out)
    staged.mkdir()
    try:
        yield staged
        fsync_tree(staged)
        if out.exists() or out.is_symlink():
            aside = _temporary(out)
            os.replace(out, aside)
            os.replace(staged, out)
            _fsync_dir(out.parent)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(staged, out)
            _fsync_dir(out.parent)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
