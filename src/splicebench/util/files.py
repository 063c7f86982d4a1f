"""Atomic file writes and the UTC clock used in every file the tool writes."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def utc_now_iso(timespec: str = "milliseconds") -> str:
    """Now in UTC as ISO 8601 with a Z suffix, e.g. 2026-11-25T18:30:12.345Z (timespec as datetime's)."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None, *, durable: bool = True) -> None:
    """Write data to path so that readers see the old file or the new one, never a part.

    The file gets `mode` (default: 0666 minus the umask, like open()); parent directories are
    created. On any failure the temporary file is removed and the old file stays. durable: its
    data reach the disk before the rename (fsync), so that a machine crash cannot leave an empty
    file either; without it the write survives the process, not the machine."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), (0o666 & ~_UMASK) if mode is None else mode)  # mkstemp makes 0600
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str, mode: int | None = None, *, durable: bool = True) -> None:
    """atomic_write_bytes for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), mode, durable=durable)
