"""Loss curves from a training log (``charrnn train --log-jsonl``) drawn to a PNG with matplotlib.

The log holds one JSON object per line, one per logged step::

    {"step": 500, "epoch": 0.71, "tokens": 400000, "train_loss_nats": 3.2, "train_bits_per_char": 4.6,
     "val_loss_nats": 3.4, "val_bits_per_char": 4.9, "learning_rate": 0.1, "tokens_per_s": 21000.0,
     "elapsed_s": 19.0, "run_start_step": 0, "run_start_tokens": 0, "model": "rnn, hidden 128, vocabulary
     2,580", "corpus": "tang300.txt"}

``val_*`` are null (or absent) on steps without validation. A resumed run appends to the same log,
so a step can appear more than once when training went back to an earlier checkpoint: the last
record of each step wins. ``run_start_*`` (where the run that wrote the record started: a resumed run
is marked there), ``model`` and ``corpus`` (the title) came later: logs without them still plot. The
best checkpoint is marked where the validation loss is lowest (its first step, as best.npz keeps it).
matplotlib is an optional extra (``plot``, see install.py), imported only here,
only when drawing, and through the object-oriented Agg API so no GUI backend or global pyplot state
is touched.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from numbers import Real
from typing import Any, Optional

from charrnn import files
from charrnn.install import extra_hint
from charrnn.errors import CharRNNError, ConfigError

DPI = 100  # pixels = inches · DPI; any value works, a round one keeps the figure size exact
MAX_SIDE_PX = 10_000  # a typo like --width-px 120000 would otherwise try to allocate gigabytes


class TrainingLogError(CharRNNError):
    """A training log that is missing, unreadable, malformed or empty."""


class PlotWriteError(CharRNNError):
    """The picture could not be written (exit 1, a failure while running, as for checkpoints)."""

    exit_code = 1


class MissingDependencyError(CharRNNError):
    """An optional extra the command needs is not installed.

    Exit code 2 (the default), like bad input: nothing was attempted, and the user must change their
    setup before running again; a script should not retry it as it might a failure while running.
    """


@dataclass(frozen=True)
class LogRecord:
    """The fields of one log line that the plot uses."""

    step: int
    tokens: int  # tokens seen in the model's life
    train_loss_nats: float
    train_bits_per_char: float
    val_loss_nats: Optional[float] = None
    val_bits_per_char: Optional[float] = None
    run_start_step: Optional[int] = None  # where the run that wrote this record started (0: a new model)
    run_start_tokens: Optional[int] = None
    model: Optional[str] = None  # e.g. "rnn, hidden 128, vocabulary 2,580"
    corpus: Optional[str] = None  # the corpus files' names


def _text(record: dict[str, Any], key: str) -> Optional[str]:
    value = record.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _whole(record: dict[str, Any], key: str) -> Optional[int]:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value != int(value):
        return None  # an optional field: one that is not a whole number is left out
    return int(value)


def _number(record: dict[str, Any], key: str, where: str, optional: bool = False) -> Optional[float]:
    value = record.get(key)
    if value is None and optional:
        return None
    # bool is a subclass of int, but true is no loss.
    if not isinstance(value, Real) or isinstance(value, bool):
        found = "missing" if key not in record else f"{value!r}, not a number"
        raise TrainingLogError(f"{where}: '{key}' is {found}; is this a charrnn --log-jsonl file?")
    return float(value)


def _parse_line(line: str, where: str) -> LogRecord:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TrainingLogError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(record, dict):
        raise TrainingLogError(f"{where}: expected a JSON object, found {type(record).__name__}")
    step, tokens = _number(record, "step", where), _number(record, "tokens", where)
    if step != int(step) or tokens != int(tokens):
        raise TrainingLogError(f"{where}: 'step' and 'tokens' must be whole numbers")
    return LogRecord(
        step=int(step),
        tokens=int(tokens),
        train_loss_nats=_number(record, "train_loss_nats", where),
        train_bits_per_char=_number(record, "train_bits_per_char", where),
        val_loss_nats=_number(record, "val_loss_nats", where, optional=True),
        val_bits_per_char=_number(record, "val_bits_per_char", where, optional=True),
        run_start_step=_whole(record, "run_start_step"),
        run_start_tokens=_whole(record, "run_start_tokens"),
        model=_text(record, "model"),
        corpus=_text(record, "corpus"),
    )


def read_log(path: str) -> list[LogRecord]:
    """The records of the log at ``path``, one per step (the last written wins), sorted by step.

    Blank lines are skipped. Raises TrainingLogError naming the file and line of a malformed record,
    or when the file is missing, unreadable or holds no records.
    """
    by_step: dict[int, LogRecord] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    record = _parse_line(line, f"{path}, line {number}")
                    by_step[record.step] = record
    except FileNotFoundError:
        hint = f"write one with 'charrnn train ... --log-jsonl {path}'"
        raise TrainingLogError(f"no training log at {path}; {hint}") from None
    except UnicodeDecodeError as exc:
        raise TrainingLogError(f"{path} is not UTF-8 text (byte {exc.start}); is it a charrnn training log?") from None
    except OSError as exc:
        raise TrainingLogError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not by_step:
        raise TrainingLogError(f"{path} holds no training records; is training still starting up?")
    return [by_step[step] for step in sorted(by_step)]


def _matplotlib() -> tuple[Any, Any, Any]:
    """(Figure, FigureCanvasAgg, EngFormatter), or MissingDependencyError with the install command."""
    try:
        # The package itself first: its submodules may already be loaded, and importing only them
        # would not notice a removed (or, in tests, hidden) matplotlib.
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import EngFormatter
    except ImportError:
        raise MissingDependencyError(f"plotting needs matplotlib: {extra_hint('plot')}") from None
    return Figure, FigureCanvasAgg, EngFormatter


def best_record(records: list[LogRecord]) -> Optional[LogRecord]:
    """The validated record of the lowest validation loss (the first at a tie, as best.npz keeps it)."""
    validated = [r for r in records if r.val_loss_nats is not None and math.isfinite(r.val_loss_nats)]
    return min(validated, key=lambda r: (r.val_loss_nats, r.step)) if validated else None


def resume_points(records: list[LogRecord]) -> list[tuple[int, int]]:
    """(step, tokens) where a resumed run started, for each resumed run that wrote a record."""
    return sorted({(r.run_start_step, r.run_start_tokens) for r in records
                   if r.run_start_step and r.run_start_tokens is not None})


def title_of(records: list[LogRecord], log_name: str) -> str:
    """What was trained on what, from the newest record that says (else the log's name)."""
    described = next((r for r in reversed(records) if r.model), None)
    if described is None:
        return log_name
    corpus = f" on {described.corpus}" if described.corpus else ""
    return f"{described.model}{corpus} ({log_name})"


def build_figure(records: list[LogRecord], title: str, width_px: int, height_px: int) -> Any:
    """The matplotlib Figure of ``render_png``: two panels, the best checkpoint and resumed runs marked,
    the legend below the panels (off the curves at any size)."""
    for name, value in (("--width-px", width_px), ("--height-px", height_px)):
        if not 0 < value <= MAX_SIDE_PX:
            raise ConfigError(f"{name} must be between 1 and {MAX_SIDE_PX:,}, got {value}")
    Figure, FigureCanvasAgg, EngFormatter = _matplotlib()
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize="medium")
    tokens = [r.tokens for r in records]
    validated = [r for r in records if r.val_loss_nats is not None]
    best = best_record(records)
    panels = (
        ("loss (nats per token)", [r.train_loss_nats for r in records], [r.val_loss_nats for r in validated],
         None if best is None else best.val_loss_nats),
        ("bits per character", [r.train_bits_per_char for r in records],
         [math.nan if r.val_bits_per_char is None else r.val_bits_per_char for r in validated],
         None if best is None else best.val_bits_per_char),
    )
    for axes, (ylabel, train_values, val_values, best_value) in zip(figure.subplots(1, 2), panels):
        axes.plot(tokens, train_values, label="train (smoothed)", linewidth=1.2)
        if validated:
            axes.plot([r.tokens for r in validated], val_values, "o-", label="validation", markersize=4)
        if best is not None and best_value is not None:
            axes.plot([best.tokens], [best_value], "*", color="crimson", markersize=13, zorder=3,
                      label=f"best checkpoint (step {best.step:,})")
        for number, (step, start_tokens) in enumerate(resume_points(records)):
            axes.axvline(start_tokens, color="0.45", linestyle="--", linewidth=1,
                         label="resumed" if number == 0 else None)
            axes.annotate(f"resumed at step {step:,}", (start_tokens, 1), xycoords=("data", "axes fraction"),
                          xytext=(3, -3), textcoords="offset points", ha="left", va="top", fontsize="x-small",
                          color="0.35")
        axes.set_xlabel("tokens seen")
        axes.set_ylabel(ylabel)
        axes.xaxis.set_major_formatter(EngFormatter())
        axes.grid(True, alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    # Below both panels, outside them: inside an axes a legend covers the curves of a small picture.
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small", frameon=False)
    return figure


def render_png(records: list[LogRecord], title: str, width_px: int, height_px: int) -> bytes:
    """Two panels side by side, loss in nats per token and in bits per character, against tokens seen.

    Training loss is a line; validation loss is markers joined by a line at the steps that have it; a
    star marks the best checkpoint and a dashed line where each resumed run started. Returns PNG bytes
    of exactly ``width_px`` × ``height_px`` pixels.
    """
    figure = build_figure(records, title, width_px, height_px)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # A small picture simply gets the default spacing; the warning would only be noise on stderr.
        warnings.filterwarnings("ignore", message="constrained_layout not applied")
        # No bbox_inches="tight": it crops the canvas and the image would not have the requested size.
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so no half-written PNG remains."""
    try:
        files.atomic_write(path, data)
    except OSError as exc:
        raise PlotWriteError(f"cannot write {path}: {exc.strerror or exc}; choose another -o path") from None


def plot_log(log_path: str, output_path: str, width_px: int = 1200, height_px: int = 800) -> list[LogRecord]:
    """Read the log at ``log_path`` and write its loss curves to ``output_path``; return the records."""
    files.require_regular_or_absent(output_path, "-o ")  # before any work: a link or device is never written
    records = read_log(log_path)
    title = title_of(records, os.path.basename(log_path))
    write_atomically(output_path, render_png(records, title, width_px, height_px))
    return records
