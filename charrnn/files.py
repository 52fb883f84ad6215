"""Writing a file so that it is never half-written: a temporary file in the same folder, flushed and
fsynced, then renamed over the target. A crash leaves the old file or the new one, never a mix."""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    # The rename is durable only once the directory entry itself reaches the disk.
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; on failure remove the temporary file and raise OSError.

    The new file gets the permissions a plain ``open`` would give it (mkstemp's 0600 would hide it
    from other users).
    """
    directory = os.path.dirname(path) or "."
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp_path)
        raise
    _fsync_directory(directory)
