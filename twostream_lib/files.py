"""Writing files so that no reader ever sees half of one (DESIGN: "nothing half-written is left behind").

Every file the library writes goes through :func:`atomic_write`: the content goes to a temporary
name in the target's folder (unique per process, so two writers never share it), is flushed to
disk, and is renamed over the target (``os.replace`` is atomic within one file system). On any error
the temporary file is removed and the target is left as it was; a full disk or a read-only folder
becomes a :class:`~twostream_lib.errors.StorageError` naming the file.

    atomic_write(path, "text")                                  # str: UTF-8 text
    atomic_write(path, b"bytes")                                # bytes
    atomic_write(path, lambda tmp: torch.save(state, tmp))      # any writer that takes a path
    atomic_write_json(path, {"a": 1})                           # indented JSON + newline

Where two processes could compute the same file (two notebooks run side by side), :func:`exclusive`
lets the second wait for the first and then read what it wrote instead of computing it again.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twostream_lib.errors import StorageError

__all__ = ["STORAGE_ERRNOS", "atomic_write", "atomic_write_json", "exclusive", "temporary_name"]

#: OS errors that mean "the disk cannot take this file", with the words used in messages.
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


def temporary_name(path: Path) -> Path:
    """``<dir>/.<stem>.<pid>.tmp<suffix>``: hidden, unique per process, with the target's suffix (writers
    such as ``cv2.VideoWriter``, ``np.savez`` and ``savefig`` choose their format from it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def atomic_write(path: str | Path, content: str | bytes | Callable[[Path], Any], *, fsync: bool = True) -> Path:
    """Write ``content`` to ``path`` atomically; returns ``path``.

    ``content`` is text (UTF-8), bytes, or a callable that writes the file at the path it is given.
    ``fsync`` flushes the file to disk before the rename (so a crash cannot leave an empty target).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        if isinstance(content, str):
            tmp.write_text(content, encoding="utf-8")
        elif isinstance(content, (bytes, bytearray, memoryview)):
            tmp.write_bytes(content)
        elif callable(content):
            content(tmp)
            if not tmp.exists():
                raise StorageError(f"{path}: the writer produced no file at {tmp.name}")
        else:
            raise TypeError(f"atomic_write: content must be str, bytes or a callable, got {type(content).__name__}")
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, StorageError) and err.errno in STORAGE_ERRNOS:
            raise StorageError(err.errno, f"{path}: {STORAGE_ERRNOS[err.errno]} while writing it "
                                          f"(nothing was changed there)") from err
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any, **kwargs) -> Path:
    """``obj`` as indented JSON (sorted keys unless ``sort_keys=False``) with a final newline, atomically."""
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("sort_keys", True)
    return atomic_write(path, json.dumps(obj, **kwargs) + "\n")


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created empty if missing) for the ``with`` block: a
    second process asking for the same lock waits until the first leaves its block, or dies (the
    system releases the lock with the process, so a crash leaves nothing to clean up). POSIX
    ``flock``; where it does not exist (Windows) the block runs unlocked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no advisory locks: only one process at a time runs there anyway
        yield path
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
