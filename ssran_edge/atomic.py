"""Atomic writes: a temp file in the destination folder, renamed over the final name on success, so
a reader never sees a partial checkpoint, card, engine or output; plus the hash that manifests use."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path in the destination folder; on success rename it onto `path` (atomic on
    POSIX), on failure remove it. Readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should read like any new file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_writable(path: str | Path, what: str) -> Path:
    """Refuse, before any work, an output file that could not be written at the end: a folder in its
    place, a regular file in its parent path, or a folder this process cannot write. Creates the
    missing parent folders (the write would), probes with a temp file, leaves nothing else. The error
    names the path as `shown_path` writes it: one line whatever characters the name holds."""
    from ssran_edge.errors import DataError, one_line, shown_path

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {shown_path(path)}: is a folder; give a file name")
    existing = next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        raise DataError(f"{what} {shown_path(path)}: {shown_path(existing)} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.probe-").close()
    except OSError as exc:
        raise DataError(f"{what} {shown_path(path)}: cannot be written ({exc.strerror or one_line(exc)})") from None
    return path


class WriterLock:
    """One writer per output: an exclusive, non-blocking flock on a hidden lock file, held until
    release() (the kernel drops it if the process dies, so a killed writer never blocks the next).
    OSError from creating the lock file reaches the caller, which names its output."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """True if this process now holds the lock; False if another one does."""
        import fcntl

        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: the next writer makes a fresh one
            os.close(self._fd)
            self._fd = None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (weights, ONNX and engines are hashed in manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")
