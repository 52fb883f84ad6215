"""Helpers shared by the commands: error reporting, informational messages, finding the checkpoint to read."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
from typing import Any, Callable, Iterator, Optional

import click

from charrnn import files
from charrnn.cli.exits import write_stderr, write_stdout
from charrnn.cli.options import option
from charrnn.config import DEFAULT_CHECKPOINT_DIR
from charrnn.errors import CharRNNError, CheckpointError, ConfigError



def fail(message: str, exit_code: int) -> None:
    """Print ``Error: message`` on stderr and exit with ``exit_code``."""
    write_stderr(f"Error: {message}")
    sys.exit(exit_code)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a CharRNNError raised by the library into one stderr line and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CharRNNError as exc:
            fail(str(exc), exc.exit_code)

    return wrapper


class OutputFileError(CharRNNError):
    """A file the command writes besides its checkpoints (a log, the token cache) failed while running."""

    exit_code = 1


# errno values that say a folder or file cannot be written at all (rather than that a write failed
# for want of space or of a working disk): bad input, found before any work is done.
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT}


def check_appendable(path: str, option: str) -> None:
    """ConfigError unless ``path`` can be opened for appending: a writable file, or a new one in a
    writable folder. Checked without creating anything, so a run refused later leaves no empty file."""
    if os.path.isdir(path):
        raise ConfigError(f"{option} {path} is a folder; give the name of a file")
    files.require_regular_or_absent(path, f"{option} ")
    folder = os.path.dirname(path) or "."
    if os.path.exists(path):
        problem = None if os.access(path, os.W_OK) else "the file is not writable"
    elif not os.path.isdir(folder):
        problem = f"the folder {folder} does not exist"
    else:
        problem = None if os.access(folder, os.W_OK | os.X_OK) else f"the folder {folder} is not writable"
    if problem:
        raise ConfigError(f"cannot write {option} {path}: {problem}; give another path")


@contextlib.contextmanager
def writing_cache(cache_dir: str) -> Iterator[None]:
    """Turn a failure to write the token cache into one clear error: exit 2 for a folder that cannot be
    written at all (found as the first file is created, before tokenizing), exit 1 for a write that
    fails on the way (a full disk)."""
    try:
        yield
    except OSError as exc:
        folder = os.path.abspath(cache_dir)
        if exc.filename is not None and os.path.commonpath([os.path.abspath(exc.filename), folder]) != folder:
            raise  # not the cache's
        error = ConfigError if exc.errno in UNWRITABLE else OutputFileError
        raise error(f"cannot write to the cache folder {cache_dir}: {exc.strerror or exc}; pass --cache-dir") from None


def inform(quiet: bool, message: str) -> None:
    """An informational line on stderr, unless ``quiet``."""
    if not quiet:
        write_stderr(message)


def examples(*commands: str) -> str:
    """The end of a command's --help: ``commands``, one per line, kept as written (click's \\b)."""
    return "\b\nExamples:\n" + "\n".join(f"  {command}" for command in commands)


CHECKPOINT_HELP = ("Checkpoint file, or a folder for its best.npz, else latest.npz [default: the newest run's "
                   f"folder in {DEFAULT_CHECKPOINT_DIR}/].")


def checkpoint_option(help: str = CHECKPOINT_HELP) -> Callable[[Any], Any]:
    """-c/--checkpoint CKPT: the same option on every command that reads a checkpoint."""
    return option("-c", "--checkpoint", type=click.Path(), metavar="CKPT", help=help)


def resolve_checkpoint(path: Optional[str], quiet: bool, newest: bool = False) -> str:
    """The checkpoint file a command reads, for every command the same way.

    A file is itself. A folder means its ``best.npz``, the model with the lowest validation loss, else
    ``latest.npz``, else its newest step file; with ``newest`` (for resuming, which must continue from
    the end) its checkpoint of the highest step (``folder_files.find_newest``: a best.npz newer than
    latest.npz included). A folder of run folders (``checkpoints/``, where every new run has its own),
    and no ``path`` at all, mean the newest run's folder: the one a checkpoint was last written to. The
    file chosen in a folder is named on stderr (``using ...``) unless ``quiet``.
    """
    from charrnn.checkpoints import folder_files

    if path is not None and not os.path.isdir(path):
        return path  # a file, or nothing: loading it says what is wrong
    folder = path
    if path is None or folder_files.find_latest(path) is None:
        folder = folder_files.newest_run(DEFAULT_CHECKPOINT_DIR if path is None else path)
    found = None
    if folder is not None:
        found = folder_files.find_newest(folder) if newest else folder_files.find_model(folder)
    if found is None:
        where = (path if path is not None else DEFAULT_CHECKPOINT_DIR).rstrip(os.sep)
        raise CheckpointError(
            f"no checkpoint in {where}/; train one with 'charrnn train CORPUS' or pass a checkpoint file"
        )
    inform(quiet, f"using {found}")
    return found


def checkpoint_argument(argument: Optional[str], option_value: Optional[str]) -> Optional[str]:
    """The one checkpoint given as an argument or as -c/--checkpoint (UsageError if given as both)."""
    if argument is not None and option_value is not None:
        raise click.UsageError("give the checkpoint once: as an argument or as -c/--checkpoint")
    return argument if argument is not None else option_value


class ProgressBar:
    """A tqdm bar on stderr, created on the first report (so a cache hit shows nothing).

    Drawn only when stderr is a terminal (tqdm's ``disable=None``), never with ``hidden`` (-q, or a
    terminal stdout whose text is progress enough), and only after ``delay`` seconds, so that quick
    work shows no bar at all. Use as an ``on_progress(done, total)`` callback, then ``close()``.
    """

    def __init__(self, description: str, hidden: bool, unit: str = "B", delay: float = 0.0) -> None:
        self.description, self.hidden, self.unit, self.delay = description, hidden, unit, delay
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=self.unit, unit_scale=self.unit == "B", desc=self.description,
                            file=sys.stderr, disable=True if self.hidden else None, dynamic_ncols=True,
                            delay=self.delay)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Finish the bar, if one was shown."""
        if self.bar is not None:
            self.bar.close()


def emit_json(document: Any) -> None:
    """Print ``document`` as the one JSON document on stdout (UTF-8 as is, NaN as null).

    A file name that is not UTF-8 appears with ``\\udcXX`` escapes (see ``files.json_text``); on a
    stdout whose encoding cannot carry a character, it is a ``\\uXXXX`` escape (exits.write_stdout).
    """
    write_stdout(files.json_text(files.finite_or_none(document), allow_nan=False, indent=2))


def echo_text(text: str) -> None:
    """Print ``text``, which shows file names, on stdout: byte for byte even where a name is not UTF-8
    (its undecodable bytes written as the bytes they stand for, so that a script can use the path it
    reads), and with control characters escaped on a terminal (exits.write_stdout)."""
    write_stdout(text, shows_names=True)


def format_score(score: Any) -> str:
    """One line for a validation or evaluation score."""
    return (
        f"{score.loss_nats:.4f} nats/token, {score.bits_per_char:.4f} bits/char, "
        f"perplexity {score.perplexity:.2f}"
    )
