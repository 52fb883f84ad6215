"""The files of a checkpoint folder: latest.npz, best.npz and step_NNNNNNNN.npz; saving, finding, pruning.

A run saves its step checkpoint and ``latest.npz`` together, and ``best.npz`` whenever validation finds
a new best (training/runner.py). Readers take ``best.npz`` to sample or score with (``find_model``) and
the checkpoint of the highest step to resume from (``find_newest``): usually ``latest.npz``, but a run
that ended between a new best and its next periodic save (a crash, a kill) left a newer ``best.npz``,
the only record of its last steps. A folder of run folders (``checkpoints/``, where every new run gets
a folder of its own) is looked over with ``run_folders``; the newest run is what commands given no
checkpoint read.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from contextlib import suppress
from typing import Optional

from charrnn.checkpoints import checkpoint
from charrnn.checkpoints.checkpoint import Checkpoint
from charrnn.errors import CharRNNError, ConfigError

LATEST_NAME = "latest.npz"
BEST_NAME = "best.npz"
STEP_NAME = re.compile(r"^step_(\d+)\.npz$")


def step_filename(step: int) -> str:
    """File name of the checkpoint written at ``step``."""
    return f"step_{step:08d}.npz"


def prepare_directory(directory: str) -> None:
    """Create ``directory`` if needed and prove it is writable, before any training time is spent."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        # Found before any training: bad input (exit 2), unlike a write that fails later.
        raise ConfigError(
            f"cannot write checkpoints to {directory}: {exc.strerror or exc}; "
            "choose another folder with --checkpoint-dir"
        ) from None


def step_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, path) of the ``step_*.npz`` files in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted((int(m.group(1)), os.path.join(directory, name)) for name in names if (m := STEP_NAME.match(name)))


def save(ckpt: Checkpoint, directory: str) -> str:
    """Write ``ckpt`` as ``step_<step>.npz`` and ``latest.npz`` in ``directory``; return the latter.

    Raises TrainingError, writing nothing, if any array is not finite (see ``require_finite``).
    """
    checkpoint.require_finite(ckpt)
    data = checkpoint.to_bytes(ckpt)
    # latest.npz first: a crash between the two writes then leaves it the newest file, the one to resume.
    latest = os.path.join(directory, LATEST_NAME)
    checkpoint.atomic_write(latest, data)
    checkpoint.atomic_write(os.path.join(directory, step_filename(ckpt.progress.step)), data)
    return latest


def prune_step_files(directory: str, keep: int) -> None:
    """Remove the step checkpoints beyond the ``keep`` newest (0: keep all); never latest or best."""
    if keep > 0:
        for _, path in step_checkpoints(directory)[:-keep]:
            with suppress(OSError):
                os.unlink(path)


def find_latest(directory: str) -> Optional[str]:
    """The newest checkpoint in ``directory``: ``latest.npz``, else the highest step file, else None."""
    latest = os.path.join(directory, LATEST_NAME)
    if os.path.isfile(latest):
        return latest
    steps = step_checkpoints(directory)
    return steps[-1][1] if steps else None


def find_newest(directory: str) -> Optional[str]:
    """The checkpoint in ``directory`` to resume from: of ``latest.npz``, ``best.npz`` and the highest step
    file whose metadata can be read, the one of the highest step that can continue training; at equal
    steps latest, then the step file, then best. None if there is none.

    Reads only metadata. Files that are not regular files (a named pipe would block the read) and
    sampling-only ones (``export``) are passed over. When no file qualifies, ``find_latest``'s answer
    (so that loading it says what is wrong with it), else None.
    """
    candidates = [os.path.join(directory, LATEST_NAME)]
    candidates += [path for _, path in reversed(step_checkpoints(directory))]
    candidates.append(os.path.join(directory, BEST_NAME))
    newest: Optional[tuple[int, str]] = None
    step_file_seen = False
    for path in candidates:
        is_step_file = STEP_NAME.match(os.path.basename(path)) is not None
        if is_step_file and step_file_seen:
            continue  # only the highest readable step file counts
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            meta = checkpoint.read_metadata(path)
        except (OSError, CharRNNError):
            continue
        step_file_seen = step_file_seen or is_step_file
        if meta.contents == checkpoint.TRAINING and (newest is None or meta.progress.step > newest[0]):
            newest = (meta.progress.step, path)
    return find_latest(directory) if newest is None else newest[1]


def find_model(directory: str) -> Optional[str]:
    """The checkpoint of ``directory`` to sample or score with: ``best.npz`` (the lowest validation loss),
    else the newest (``find_latest``), else None."""
    best = os.path.join(directory, BEST_NAME)
    if os.path.isfile(best):
        return best
    return find_latest(directory)


def _checkpoint_times_ns(directory: str) -> list[int]:
    """Modification times of the checkpoints (latest, best, step files) directly in ``directory``."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    times = []
    for entry in entries:
        if entry.name in (LATEST_NAME, BEST_NAME) or STEP_NAME.match(entry.name):
            with suppress(OSError):
                if entry.is_file():
                    times.append(entry.stat().st_mtime_ns)
    return times


def run_folders(root: str) -> list[str]:
    """The folders of ``root`` that hold checkpoints, ``root`` itself among them if it does (the layout
    of charrnn before run folders), oldest first: ordered by when a checkpoint was last written there."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    candidates = [root] + [os.path.join(root, name) for name in names if not name.startswith(".")]
    dated = [(written, path) for path in candidates if (written := last_written_ns(path)) is not None]
    return [path for _, path in sorted(dated)]


def last_written_ns(directory: str) -> Optional[int]:
    """When a checkpoint was last written in ``directory`` (its newest modification time, in ns), or None
    if it holds none."""
    times = _checkpoint_times_ns(directory)
    return max(times) if times else None


def newest_run(root: str) -> Optional[str]:
    """The folder under ``root`` (or ``root``) where a checkpoint was written last, or None if there is none."""
    folders = run_folders(root)
    return folders[-1] if folders else None
