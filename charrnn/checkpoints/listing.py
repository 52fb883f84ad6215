"""What ``charrnn ls`` reports about a folder of checkpoints: each file's step, tokens, losses and size,
and which files are its best and its latest; and about a folder of runs (``checkpoints/``, a folder per
run): each run's model, corpus, step and best validation loss, and which run is the newest.

Only each file's metadata is read (``checkpoint.read_metadata``), so listing a folder of large
checkpoints costs kilobytes. A step file that holds the same model at the same step as ``best.npz`` or
``latest.npz`` is marked as such. Nothing here prints; the command renders ``describe`` or ``to_dict``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from charrnn.checkpoints import checkpoint, folder_files
from charrnn.checkpoints.metadata import TRAINING
from charrnn.errors import CharRNNError, CheckpointError

SUFFIX = ".npz"


@dataclass(frozen=True)
class Listed:
    """One ``.npz`` file of a folder, and what its metadata says (None throughout if it cannot be read)."""

    path: str
    size_bytes: int
    step: Optional[int] = None
    tokens_seen: Optional[int] = None
    train_loss_nats: Optional[float] = None  # smoothed, at ``step``
    val_loss_nats: Optional[float] = None  # the latest validation, at ``val_step``
    val_step: Optional[int] = None
    contents: Optional[str] = None  # "training", or "model" for a sampling-only file
    run_id: Optional[str] = None
    same_as: tuple[str, ...] = ()  # "best.npz" and/or "latest.npz": the same model at the same step
    problem: Optional[str] = None  # why the file could not be read as a checkpoint
    bidirectional: Optional[bool] = None  # a blank-filling model (charrnn fill), not a generating one

    @property
    def name(self) -> str:
        """The file's name in its folder."""
        return os.path.basename(self.path)


def _finite(value: Optional[float]) -> Optional[float]:
    return value if value is not None and math.isfinite(value) else None


def _read(path: str) -> Optional[Listed]:
    """What ``path``'s metadata says; None if the file is gone (a running training pruned it meanwhile)."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return None
    try:
        meta = checkpoint.read_metadata(path)
    except CharRNNError as exc:
        if not os.path.lexists(path):
            return None  # removed while it was being read: not unreadable, just no longer there
        problem = str(exc)
        if problem.startswith(path):  # the message names the file, which its row already does
            problem = problem[len(path):].lstrip(" :")
        return Listed(path, size, problem=problem)
    progress = meta.progress
    return Listed(path, size, progress.step, progress.tokens_seen, _finite(progress.smoothed_loss_nats),
                  _finite(progress.val_loss_nats), progress.val_step, meta.contents, meta.run_id,
                  bidirectional=meta.model_config.bidirectional)


def _order(item: Listed) -> tuple:
    """By step; at one step the step file, best.npz, latest.npz, then other files by name; unreadable
    files last."""
    if folder_files.STEP_NAME.match(item.name):
        rank = 0
    elif item.name in (folder_files.BEST_NAME, folder_files.LATEST_NAME):
        rank = 1 + (folder_files.BEST_NAME, folder_files.LATEST_NAME).index(item.name)
    else:
        rank = 3
    return (item.step is None, item.step or 0, rank, item.name)


def list_folder(directory: str) -> list[Listed]:
    """The ``.npz`` files of ``directory`` (not its hidden unfinished writes), in order (see ``_order``).

    Raises CheckpointError if ``directory`` is not a folder.
    """
    if not os.path.isdir(directory):
        what = "is not a folder" if os.path.exists(directory) else "does not exist"
        raise CheckpointError(f"{directory} {what}; give a folder of checkpoints (default: "
                              f"{os.path.join('checkpoints', '')})")
    names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX) and not n.startswith("."))
    # A training that prunes its step files may remove any of them at any moment; a file that
    # vanishes between the listing of names and its reading is simply not listed.
    read = [_read(os.path.join(directory, name)) for name in names if os.path.isfile(os.path.join(directory, name))]
    items = [item for item in read if item is not None]
    marks = {name: next((i for i in items if i.name == name and i.step is not None), None)
             for name in (folder_files.BEST_NAME, folder_files.LATEST_NAME)}
    marked = []
    for item in items:
        same = tuple(name for name, found in marks.items()
                     if found is not None and found is not item and item.step is not None
                     and (found.run_id, found.step) == (item.run_id, item.step))
        marked.append(dataclasses.replace(item, same_as=same) if same else item)
    return sorted(marked, key=_order)


def _note(item: Listed) -> str:
    if item.problem is not None:
        return f"unreadable: {item.problem}"
    notes = []
    if item.name == folder_files.BEST_NAME:
        notes.append("best: lowest validation loss")
    elif item.name == folder_files.LATEST_NAME:
        notes.append("latest: where training resumes")
    notes += [f"= {name}" for name in item.same_as]
    if item.contents != TRAINING:
        notes.append("model only (exported)")
    if item.bidirectional:  # its losses read both sides of every token: not comparable with the others'
        notes.append("bidirectional (fills blanks)")
    return ", ".join(notes)


def _size(size_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"


def describe(items: list[Listed]) -> list[str]:
    """A table, one line per file: name, step, tokens, training and validation loss, size, notes."""

    def number(value: Optional[float], digits: int = 4) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    rows = [("file", "step", "tokens", "train loss", "val loss", "size", "")]
    for item in items:
        known = item.step is not None
        rows.append((item.name, f"{item.step:,}" if known else "—", f"{item.tokens_seen:,}" if known else "—",
                     number(item.train_loss_nats), number(item.val_loss_nats), _size(item.size_bytes), _note(item)))
    widths = [max(len(row[column]) for row in rows) for column in range(6)]
    return [
        "  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:6], widths[1:])]
                  + ([row[6]] if row[6] else [])).rstrip()
        for row in rows
    ]


def to_dict(directory: str, items: list[Listed]) -> dict[str, Any]:
    """Plain data for ``--json``: the folder, its best and latest files (or null), and every file."""

    def path_of(name: str) -> Optional[str]:
        return next((i.path for i in items if i.name == name and i.problem is None), None)

    return {
        "folder": directory,
        "best": path_of(folder_files.BEST_NAME),
        "latest": path_of(folder_files.LATEST_NAME),
        "checkpoints": [
            {
                "file": item.name, "path": item.path, "size_bytes": item.size_bytes, "step": item.step,
                "tokens_seen": item.tokens_seen, "train_loss_nats": item.train_loss_nats,
                "val_loss_nats": item.val_loss_nats, "val_step": item.val_step, "contents": item.contents,
                "same_as": list(item.same_as), "problem": item.problem,
                "direction": None if item.bidirectional is None else
                ("bidirectional" if item.bidirectional else "left-to-right"),
            }
            for item in items
        ],
    }


@dataclass(frozen=True)
class Run:
    """A run's folder: its newest checkpoint and its best, and what the newest says about the model."""

    folder: str
    latest: Optional[Listed]  # latest.npz, else the highest step file
    best: Optional[Listed]  # best.npz, if the folder has a readable one
    model: Optional[str]  # e.g. "rnn 128, char" (None if no checkpoint there can be read)
    corpus: tuple[str, ...]  # the corpus files' names
    written_ns: int  # when a checkpoint was last written there


def _model(meta: Any) -> str:
    config = meta.model_config
    layers = f"{config.num_layers}×" if config.num_layers > 1 else ""
    return f"{layers}{config.cell} {config.hidden_size}, {meta.tokenizer.kind}"


def list_runs(root: str) -> list[Run]:
    """The run folders of ``root`` (``root`` itself too if it holds checkpoints), oldest first: the last
    is the newest run, the one commands given no checkpoint read."""
    runs = []
    for folder in folder_files.run_folders(root):
        items = [item for item in list_folder(folder) if item.problem is None]
        named = {item.name: item for item in items}
        steps = [item for item in items if folder_files.STEP_NAME.match(item.name)]
        latest = named.get(folder_files.LATEST_NAME) or (max(steps, key=lambda i: i.step) if steps else None)
        best = named.get(folder_files.BEST_NAME)
        model, corpus = None, ()
        described = latest or best
        if described is not None:
            try:
                meta = checkpoint.read_metadata(described.path)
            except CharRNNError:
                pass
            else:
                model = _model(meta)
                corpus = tuple("stdin" if path == "-" else os.path.basename(path) for path in meta.corpus.get("paths", ()))
        runs.append(Run(folder, latest, best, model, corpus, folder_files.last_written_ns(folder) or 0))
    return runs


def _written(run: Run) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(run.written_ns / 1e9).astimezone()


def describe_runs(runs: list[Run]) -> list[str]:
    """A table, one line per run, oldest first: folder, model, corpus, step, best validation loss and its
    step, when it was last written; the newest marked as the one read by default."""

    def cell(value: Any, text: Callable[[Any], str]) -> str:
        return "—" if value is None else text(value)

    rows = [("run", "model", "corpus", "step", "best val loss", "at step", "written", "")]
    for index, run in enumerate(runs):
        latest, best = run.latest, run.best
        rows.append((
            run.folder, run.model or "—", ", ".join(run.corpus) or "—",
            cell(latest and latest.step, lambda v: f"{v:,}"),
            cell(best and best.val_loss_nats, lambda v: f"{v:.4f}"),
            cell(best and best.val_step, lambda v: f"{v:,}"),
            _written(run).strftime("%Y-%m-%d %H:%M"),
            "newest: read when no checkpoint is given" if index == len(runs) - 1 else "",
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(7)]
    left = (0, 1, 2, 6)
    return [
        "  ".join([cell.ljust(width) if column in left else cell.rjust(width)
                   for column, (cell, width) in enumerate(zip(row[:7], widths))] + ([row[7]] if row[7] else [])).rstrip()
        for row in rows
    ]


def runs_to_dict(root: str, runs: list[Run]) -> dict[str, Any]:
    """Plain data for ``ls --json`` over a folder of runs: the runs, oldest first, and the newest's folder."""
    return {
        "folder": root,
        "newest": runs[-1].folder if runs else None,
        "runs": [
            {
                "folder": run.folder, "latest": run.latest.path if run.latest else None,
                "best": run.best.path if run.best else None, "step": run.latest.step if run.latest else None,
                "tokens_seen": run.latest.tokens_seen if run.latest else None,
                "train_loss_nats": run.latest.train_loss_nats if run.latest else None,
                "best_val_loss_nats": run.best.val_loss_nats if run.best else None,
                "best_step": run.best.val_step if run.best else None,
                "model": run.model, "corpus": list(run.corpus), "written": _written(run).isoformat(timespec="seconds"),
            }
            for run in runs
        ],
    }
