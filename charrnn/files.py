"""Writing files safely: never half-written, and JSON that holds any file name.

A file is written to a temporary file in the same folder, flushed and fsynced, then renamed over the
target: a crash leaves the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import suppress
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


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


def json_text(value: Any, **options: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, **options)`` that can always be encoded as UTF-8.

    A file name that is not valid UTF-8 reaches Python with its bad bytes as lone surrogates
    (``os.fsdecode``), which UTF-8 cannot encode; they are written as ``\\udcXX`` escapes, which
    ``json.loads`` turns back into the same string, so the name round-trips exactly. Other text is
    kept as it is (Chinese stays readable).
    """
    text = json.dumps(value, ensure_ascii=False, **options)
    # Outside strings JSON is pure ASCII, so every surrogate found is inside a string, where an
    # escape is valid.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_bytes(value: Any, **options: Any) -> bytes:
    """``json_text`` encoded as UTF-8."""
    return json_text(value, **options).encode("utf-8")


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
