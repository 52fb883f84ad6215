"""Writing files safely: never half-written, never left behind, never through a link, and JSON that
holds any file name.

A file is written to a temporary file in the same folder, flushed and fsynced, then renamed over the
target: a crash leaves the old file or the new one, never a mix. Every temporary file is named for
the process that made it, so one left by a process that died (kill -9, a power cut) can be told from
one that a live process is still writing, and removed.

Every file charrnn writes (checkpoints, exports, plots, the training log, cache entries, the folder
lock) is either created or replaces a regular file. A path that names anything else is refused with
OutputPathError (exit 2) and left as it is: a symbolic link (the rename would replace the link, and a
write through it would change whatever it points to: another model, a terminal, /proc/self/fd/1), a
device, a named pipe, a socket or a folder. The check is ``lstat`` before the temporary file is made
and again just before the rename; a file opened to append is opened with ``O_NOFOLLOW`` and checked
with ``fstat`` once open, so no link is followed even if one appears between the two.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import socket
import stat
import tempfile
from contextlib import suppress
from typing import IO, Any, Optional

from charrnn.errors import OutputPathError

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


def non_regular_kind(mode: int) -> Optional[str]:
    """What a file of ``st_mode`` ``mode`` is, as words ("a symbolic link", "a device", ...), or None for a
    regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refusal(path: str, kind: str, what: str) -> OutputPathError:
    return OutputPathError(
        f"cannot write {what}{path}: it is {kind}, not a regular file (charrnn never replaces such a file, "
        "nor writes through it); remove it or give another path"
    )


def require_regular_or_absent(path: str, what: str = "") -> None:
    """Raise OutputPathError unless ``path`` is absent or a regular file (not a link to one).

    ``what`` names the path in the message, e.g. ``"-o "``. A path that cannot be examined (a folder on
    the way that is missing or unreadable) passes: writing it reports that better.
    """
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    kind = non_regular_kind(mode)
    if kind is not None:
        raise _refusal(path, kind, what)


def open_for_append(path: str, what: str = "") -> IO[str]:
    """``path`` opened to append UTF-8 text, created if absent; OutputPathError unless it is a regular file.

    ``O_NOFOLLOW`` refuses a symbolic link at the path however late it appears, ``O_NONBLOCK`` keeps a
    named pipe from blocking the open (it is then refused), and the open file is checked with fstat.
    """
    require_regular_or_absent(path, what)  # before opening: opening a device can itself do something
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refusal(path, "a symbolic link", what) from None
        raise
    try:
        kind = non_regular_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise _refusal(path, kind, what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def replace_file(source: str, target: str) -> None:
    """``os.replace(source, target)``, refused (OutputPathError, ``source`` left) unless ``target`` is absent
    or a regular file."""
    require_regular_or_absent(target)
    os.replace(source, target)


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

    The new file gets the permissions a plain ``open`` would give it. Raises OutputPathError, writing
    nothing, if ``path`` is there but is not a regular file (see the module's docstring).
    """
    require_regular_or_absent(path)
    directory = os.path.dirname(path) or "."
    fd, tmp_path = make_temporary(directory, os.path.basename(path))
    try:
        plain_permissions(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        replace_file(tmp_path, path)  # checked again: the write may have taken a while
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp_path)
        raise
    _fsync_directory(directory)
