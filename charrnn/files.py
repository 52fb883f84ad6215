"""Writing files safely: never half-written, never left behind, and JSON that holds any file name.

A file is written to a temporary file in the same folder, flushed and fsynced, then renamed over the
target: a crash leaves the old file or the new one, never a mix. Every temporary file is named for
the process that made it, so one left by a process that died (kill -9, a power cut) can be told from
one that a live process is still writing, and removed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import tempfile
from contextlib import suppress
from typing import Any

# The host is part of the owner's name because a folder on a network file system can be shared by
# processes on several machines, and a process number means something only on its own machine.
_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]
# .<what>.<pid>@<host>.<mkstemp's random letters>.tmp (mkstemp never puts a dot in its letters)
_TEMPORARY = re.compile(r"^\..+\.(\d+)@([0-9a-f]{8})\.[^.]+\.tmp$")
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


def plain_permissions(fd: int) -> None:
    """Give an open file the permissions a plain ``open`` would (mkstemp's 0600 hides it from other users)."""
    os.fchmod(fd, 0o666 & ~_umask())


def make_temporary(directory: str, what: str) -> tuple[int, str]:
    """Create ``directory/.<what>.<pid>@<host>.<random>.tmp`` as ``tempfile.mkstemp`` does: (fd, path)."""
    return tempfile.mkstemp(dir=directory, prefix=f".{what}.{os.getpid()}@{_HOST}.", suffix=".tmp")


def _process_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no harmless probe (os.kill ends the process on Windows): keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but belongs to another user, or we cannot tell: keep the file
    return True


def remove_orphaned_temporaries(directory: str) -> list[str]:
    """Remove the temporary files in ``directory`` whose process, on this machine, no longer runs.

    Returns the paths removed. A live process's file is never touched (a process number that has been
    reused since keeps its file too, which errs on the safe side).
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _TEMPORARY.match(name)
        if match and match.group(2) == _HOST and not _process_alive(int(match.group(1))):
            path = os.path.join(directory, name)
            with suppress(OSError):
                os.unlink(path)
                removed.append(path)
    return removed


def finite_or_none(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has neither), through dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


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

    The new file gets the permissions a plain ``open`` would give it.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp_path = make_temporary(directory, os.path.basename(path))
    try:
        plain_permissions(fd)
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
