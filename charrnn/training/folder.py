"""The folder a training run writes its checkpoints to: locked, claimed and cleaned, so no model is lost.

A run first takes an OS lock on the folder (``flock`` on ``.charrnn.lock``): the kernel holds it for the
life of the process and drops it when the process dies however it dies, so a crash never leaves a
stale lock, and a second run on the same folder is refused with the holder's process id. Holding the
lock, the run may remove the temporary files of writes that an earlier process never finished (it was
killed mid-save), because no other run can be writing there.

The lock is a lock only while it is the file at ``.charrnn.lock``: were that file deleted or replaced
during the run, a second run would lock the new one and both would write the same folder. So before
every save the run checks that the path still names the file it locked (device and inode) and stops
(exit 1, nothing written) if not. The lock file itself is opened without following a link and must be
a regular file with one name: a link planted there (``ln -s ../notes.txt .charrnn.lock``) would make
the run write its process id into another file.

Then the run claims the folder. The checkpoints already in it either belong to the run's own past (the
same run identity, at or before the step it starts from) or to something the run would destroy: another
model, or a later stretch of its own history. Those are refused unless the user said ``--overwrite``;
with it they are removed, but only once the new run has written its first checkpoint, so that at every
moment the folder holds a model someone can use. The run's own ``best.npz`` is neither, at whatever
step it was written (even after the step the run starts from: the last run validated, found a new
best, and ended before its next periodic save): it is the best model of this run so far, kept, and
replaced only by a better one (``Claim.best_on_disk``), so no resume ever makes best.npz worse.

A new run given no folder gets one of its own, never another model's: ``checkpoints/<corpus name>/``,
or the first of ``<corpus name>-2/``, ``-3/``... that holds no checkpoint and no other run (``secure_run_folder``).
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import stat
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from charrnn import files
from charrnn.checkpoints import checkpoint, folder_files
from charrnn.checkpoints.checkpoint import Identity
from charrnn.data.corpus import is_standard_input
from charrnn.errors import CheckpointWriteError, ConfigError

LOCK_NAME = ".charrnn.lock"
# What files.atomic_write leaves behind when its process dies between creating and renaming the file.
_CHECKPOINT_TEMP = re.compile(r"^\.(latest|best|step_\d+)\.npz\..+\.tmp$")
_CHECKPOINT_FILE = re.compile(r"^(latest|best|step_\d+)\.npz$")

try:
    import fcntl
except ImportError:  # Windows: no advisory locks through this module; runs there are not locked
    fcntl = None  # type: ignore[assignment]


class FolderInUse(ConfigError):
    """Another live charrnn run holds the folder's lock."""


class FolderLock:
    """An exclusive lock on a checkpoint folder, held until ``release`` or the process ends.

    The lock file is removed on release, so a finished run leaves nothing behind; a lock file left by a
    killed process locks nothing (the kernel released its lock) and is taken over by the next run.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd: Optional[int] = None

    def _refuse_odd_file(self, status: os.stat_result) -> None:
        kind = files.non_regular_kind(status.st_mode)
        if kind is None and status.st_nlink > 1:
            kind = "a file with other names (hard links)"
        if kind is not None:
            raise ConfigError(
                f"cannot lock {self.directory}: its lock file {self.path} is {kind}, which charrnn never writes "
                "into; remove it (a lock file holds only a process id) or choose another folder with --checkpoint-dir"
            )

    def acquire(self) -> None:
        """Take the lock, or raise ConfigError naming the process that holds it, or saying that the lock
        file is not a plain file of its own (a link, a device, a hard link to another file)."""
        while True:
            with suppress(FileNotFoundError, NotADirectoryError):
                self._refuse_odd_file(os.lstat(self.path))  # before opening: opening a device can act
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NO_FOLLOW, 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    self._refuse_odd_file(os.lstat(self.path))
                raise ConfigError(
                    f"cannot lock {self.directory}: {exc.strerror or exc}; choose another folder with --checkpoint-dir"
                ) from None
            try:
                self._refuse_odd_file(os.fstat(fd))  # what was opened, if the path changed after the lstat
            except ConfigError:
                os.close(fd)
                raise
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ConfigError(f"cannot lock {self.directory}: {exc.strerror or exc}") from None
                who = f"process {holder}" if holder else "another process"
                raise FolderInUse(
                    f"{self.directory} is in use by another charrnn run ({who}); wait for it to finish "
                    "or write elsewhere with --checkpoint-dir"
                ) from None
            # The holder may have removed the file between our open and our lock: then we hold a lock on
            # a file no one else will open, and must lock the one now at the path instead.
            if _same_file(self.path, fd):
                break
            os.close(fd)
        with suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def verify(self) -> None:
        """Raise CheckpointWriteError unless the lock file at the path is still the one this run locked.

        Called before every save: once the file is deleted or replaced, another run can lock the folder
        and write to it too, so this run must write nothing more.
        """
        if self._fd is not None and not _same_file(self.path, self._fd):
            raise CheckpointWriteError(
                f"the lock file {self.path} was removed or replaced while this run held it, so another run may "
                f"be writing to {self.directory}; stopped without saving, the checkpoints already written are "
                "intact (never delete the lock file of a running training)"
            )

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order, so no one locks a file being removed).

        A lock file that is no longer this run's (it was replaced) is another run's, and left alone.
        """
        if self._fd is not None:
            if _same_file(self.path, self._fd):
                with suppress(OSError):
                    os.unlink(self.path)
            os.close(self._fd)
            self._fd = None


_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _same_file(path: str, fd: int) -> bool:
    """True if ``path`` (not followed if a link) names the open file ``fd``."""
    try:
        named, opened = os.lstat(path), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino) and stat.S_ISREG(named.st_mode)


def _read_holder(fd: int) -> str:
    with suppress(OSError):
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return ""


def remove_stale_temporary_files(directory: str) -> list[str]:
    """Remove checkpoint writes that a dead process left unfinished; returns their names.

    Only safe while holding the folder's lock: then no live charrnn run is writing here, so every
    unfinished write is a dead one's, whatever process number its name carries (the token cache, which
    has no lock, must ask whether that process still runs: files.remove_orphaned_temporaries).
    """
    removed = []
    with suppress(OSError):
        for name in os.listdir(directory):
            if _CHECKPOINT_TEMP.match(name):
                with suppress(OSError):
                    os.unlink(os.path.join(directory, name))
                    removed.append(name)
    return sorted(removed)


def checkpoint_files(directory: str) -> list[str]:
    """Paths of the checkpoints in ``directory`` (latest, best and step files), sorted by name."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, name) for name in names if _CHECKPOINT_FILE.match(name))


@dataclass
class Claim:
    """What a run found in its folder: files it may replace once it has written a checkpoint of its own,
    and the best.npz of its own history (kept until the run does better; None once replaced)."""

    directory: str
    to_remove: list[str] = field(default_factory=list)
    best_on_disk: Optional[Identity] = None

    def after_write(self, written: Sequence[str]) -> None:
        """Once files of this run are on disk, remove the previous run's (except those just replaced)."""
        replaced = {os.path.abspath(path) for path in written}
        for path in self.to_remove:
            if os.path.abspath(path) not in replaced:
                with suppress(FileNotFoundError):
                    os.unlink(path)
        self.to_remove = []


def claim(
    directory: str,
    identity: Optional[Identity],
    read_identity: Callable[[str], Optional[Identity]],
    overwrite: bool,
    advice: str,
) -> Claim:
    """Decide whether a run may write to ``directory``; raise ConfigError if it would destroy a model.

    ``identity`` is the run's own (None for a fresh run: every file there belongs to someone else).
    ``read_identity(path)`` tells whose a checkpoint file is (None when the file cannot be read). The
    files of the run's own past are kept; anything else is refused, or with ``overwrite`` marked for
    removal after the run's first write. ``advice`` ends the refusal: what the user can do instead.
    """
    foreign: list[tuple[str, Optional[Identity]]] = []
    best_on_disk = None
    for path in checkpoint_files(directory):
        found = read_identity(path)
        if identity is not None and found is not None and found.run_id == identity.run_id:
            if os.path.basename(path) == folder_files.BEST_NAME:
                best_on_disk = found  # this run's best so far, at any step: kept (see the module's docstring)
                continue
            if found.step <= identity.step:
                continue
        foreign.append((path, found))
    if foreign and not overwrite:
        # Name the file that matters most: latest.npz if it is among them, else the first.
        path, found = next((f for f in foreign if os.path.basename(f[0]) == "latest.npz"), foreign[0])
        if identity is None:
            what = f"already holds a checkpoint ({path})"
        elif found is None:
            what = f"holds a checkpoint that cannot be read ({path})"
        elif found.run_id == identity.run_id:
            what = f"holds a later checkpoint of this run ({path}, step {found.step})"
        else:
            what = f"holds another model ({path})"
        raise ConfigError(f"{directory} {what}; {advice}")
    return Claim(directory, [path for path, _ in foreign], best_on_disk)


def target_directory(resume: Optional[str], checkpoint_dir: Optional[str]) -> Optional[str]:
    """Where a run writes: ``checkpoint_dir`` if given, else (when resuming) the folder of the checkpoint
    it resumes, else None: a new run's folder of its own (``secure_run_folder``).

    A resume that wrote to a default folder instead would put one model's life in two places.
    """
    if checkpoint_dir is not None:
        return checkpoint_dir
    if resume is not None:
        return os.path.dirname(resume) or "."
    return None


def run_folder_name(corpus_paths: Sequence[str]) -> str:
    """The name of a new run's folder: its first corpus file's name without the extension (``stdin`` for
    standard input), so that ``charrnn train tang300.txt`` writes to ``checkpoints/tang300/``."""
    first = corpus_paths[0] if corpus_paths else ""
    if is_standard_input(first):
        return "stdin"
    stem = os.path.splitext(os.path.basename(os.path.normpath(first)))[0].lstrip(".")
    return stem or "corpus"


def secure_run_folder(root: str, name: str, notes: list[str]) -> tuple[FolderLock, Claim, list[str]]:
    """Create, lock and return a new run's own folder under ``root``: (lock, claim, the folders created,
    deepest first, for a run that fails to start to remove).

    The folder is ``root/name``, or ``root/name-2``, ``-3``... the first that holds no checkpoint and is
    not being written by another run: a model already there is never touched, and two runs started at
    once on the same corpus get two folders. Raises ConfigError when ``root`` cannot be written.
    """
    for number in itertools.count(1):
        directory = os.path.join(root, name if number == 1 else f"{name}-{number}")
        if checkpoint_files(directory) or (os.path.lexists(directory) and not os.path.isdir(directory)):
            continue
        created = [path for path in (directory, root) if not os.path.isdir(path)]
        folder_files.prepare_directory(directory)
        lock = FolderLock(directory)
        try:
            lock.acquire()
        except FolderInUse:
            continue
        if checkpoint_files(directory):  # a run that finished between the look and the lock
            lock.release()
            continue
        removed = remove_stale_temporary_files(directory)
        if removed:
            notes.append(f"removed {len(removed)} unfinished checkpoint write(s) left by a process that died")
        return lock, Claim(directory), created
    raise AssertionError("unreachable")


def secure(
    directory: str, identity: Optional[Identity], overwrite: bool, advice: str, notes: list[str]
) -> tuple[FolderLock, Claim]:
    """Create, lock and claim the checkpoint folder, before any training time is spent.

    Raises ConfigError when the folder cannot be written, is in use, or holds what the run would
    destroy (see ``claim``), OutputPathError when a checkpoint's name in it is not a regular file (a
    link, a pipe: never written through); notes the unfinished writes of dead processes it removed.
    """
    folder_files.prepare_directory(directory)
    lock = FolderLock(directory)
    lock.acquire()
    try:
        for path in checkpoint_files(directory):  # before reading any: a named pipe would block the read
            files.require_regular_or_absent(path, "checkpoint ")
        removed = remove_stale_temporary_files(directory)
        if removed:
            notes.append(f"removed {len(removed)} unfinished checkpoint write(s) left by a process that died")
        found = claim(directory, identity, checkpoint.read_identity, overwrite, advice)
    except BaseException:
        lock.release()
        raise
    return lock, found
