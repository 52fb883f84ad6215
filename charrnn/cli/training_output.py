"""What ``charrnn train`` shows and logs while it runs.

On a terminal: a tqdm bar on stderr with the smoothed loss, the validation loss and tokens/s, and the
periodic samples written above it. Without a terminal (a shell script, a log file): a plain line
every ``--log-every`` steps instead, so logs stay readable. ``-q`` silences both. ``--log-jsonl``
appends one JSON object per logged step to a file, for plots and scripts.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from typing import IO, Any, Iterable, Iterator, Optional

from charrnn import files
from charrnn.cli.common import OutputFileError, format_score, inform
from charrnn.cli.exits import printable, write_stderr

LN2 = math.log(2)


class TrainingOutput:
    """Renders runner events; call ``handle`` for each, and it returns the Finished event at the end."""

    def __init__(self, quiet: bool, log_every: int, log_jsonl: Optional[str], checkpoint_dir: str = "") -> None:
        self.quiet = quiet
        self.checkpoint_dir = checkpoint_dir  # named under the opening line, so a script can find the run
        self.log_every = log_every
        self.log_path = log_jsonl
        self.log_file: Optional[IO[str]] = None
        self.bar: Any = None
        self.postfix: dict[str, str] = {}
        self.started = time.perf_counter()
        self.target_steps: Optional[int] = 0
        self.chars_per_token = 1.0
        # The latest step's record: complete, and then printed and logged, once that step's validation
        # (if any) has been reported.
        self.record: Optional[dict[str, Any]] = None
        self.last_logged = (self.started, 0)  # (time, tokens) at the last record, for tokens/s
        self.val: Optional[Any] = None  # the latest validation score
        self.resumed_from: Optional[str] = None  # the checkpoint this run continues, if any
        self.run_fields: dict[str, Any] = {}  # in every log record: where this run started, what it trains

    def run(self, events: Iterable[Any]) -> Any:
        """Consume all events; return the Finished event."""
        from charrnn.training import runner

        try:
            for event in events:
                if isinstance(event, runner.Finished):
                    self._complete_record()
                    self._finish(event)
                    return event
                self.handle(event)
        finally:
            if self.record is not None and self.record.pop("print_line", False):
                self._print_line(self.record)  # the last progress line before an error, too
            if self.bar is not None:
                self.bar.close()
            if self.log_file is not None:
                with contextlib.suppress(OSError):  # a failed write was reported already
                    self.log_file.close()
        raise RuntimeError("training ended without a Finished event")

    def handle(self, event: Any) -> None:
        """Show or log one event."""
        from charrnn.training import runner
        from charrnn.training.loop import StepResult

        if isinstance(event, runner.Sampled):
            self._complete_record()  # that step's validation, if any, has been reported by now
        if isinstance(event, runner.Started):
            self._start(event)
        elif isinstance(event, StepResult):
            self._step(event)
        elif isinstance(event, runner.Evaluated):
            self.val = event.score
            self.postfix.update(val=f"{event.score.loss_nats:.3f}", bpc=f"{event.score.bits_per_char:.3f}")
            if self.bar is not None:  # drawn now: the final validation comes after the last step's redraw
                self.bar.set_postfix(self.postfix)
            if self.record is not None and self.record["step"] == event.step:
                self.record.update(val_loss_nats=event.score.loss_nats, val_bits_per_char=event.score.bits_per_char)
            self._complete_record()
        elif isinstance(event, runner.RateReduced):
            self._write_unless_quiet(
                f"note: {event.validations_without_best} validations in a row brought no new best: learning rate "
                f"reduced to {event.learning_rate:.3g} at step {event.step:,} (reduction {event.reductions} of "
                f"{event.max_reductions}, --lr-reductions)"
            )
        elif isinstance(event, runner.Sampled) and not self.quiet:
            self._write(f"--- sample at step {event.step} (temperature {event.temperature:g}) ---\n{event.text}\n---")

    def _write_unless_quiet(self, text: str) -> None:
        if not self.quiet:
            self._write(text)

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(printable(text, sys.stderr), file=sys.stderr)
        else:
            write_stderr(text)

    def _start(self, event: Any) -> None:
        from tqdm import tqdm

        self.resumed_from = event.resumed_from
        if event.target_steps is not None and event.target_steps <= event.start_step:
            nothing_to_train(event, self.quiet)
            return
        describe_start(event, self.quiet, self.checkpoint_dir)
        self.run_fields = {
            "run_start_step": event.start_step, "run_start_tokens": event.start_tokens,
            "model": describe_model(event), "corpus": describe_corpus(event.corpus_paths),
        }
        self.last_logged = (self.started, event.start_tokens)
        self.target_steps = event.target_steps
        self.chars_per_token = event.chars_per_token
        if self.log_path:
            with self._writing_log():
                # Appended to when resuming; never through a link, nor to a device or a pipe.
                self.log_file = files.open_for_append(self.log_path, "--log-jsonl ")
        if not self.quiet and sys.stderr.isatty():
            self.bar = tqdm(total=event.target_steps, initial=event.start_step, unit="step", file=sys.stderr,
                            dynamic_ncols=True)

    def _step(self, event: Any) -> None:
        self._complete_record()
        if self.bar is not None:
            self.postfix.update(loss=f"{event.smoothed_loss_nats:.3f}", tok_s=f"{event.tokens_per_s:,.0f}")
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update(1)
        logged = bool(self.log_every) and event.step % self.log_every == 0
        if not logged and self.log_file is None:
            return
        # A step that is not a logging step may still be validated: its record waits for that.
        self.record = self._record(event)
        if logged:
            self._stamp_rate(self.record)
            if self.bar is None and not self.quiet:
                self.record["print_line"] = True

    def _record(self, event: Any) -> dict[str, Any]:
        now = time.perf_counter()
        return {
            "step": event.step,
            "epoch": event.epochs,
            "tokens": event.tokens_seen,
            "train_loss_nats": event.smoothed_loss_nats,
            "train_bits_per_char": event.smoothed_loss_nats / LN2 / self.chars_per_token,
            "val_loss_nats": None,
            "val_bits_per_char": None,
            "learning_rate": event.learning_rate,
            "tokens_per_s": event.tokens_per_s,  # this step's; replaced by the rate since the last record
            "elapsed_s": now - self.started,
            **self.run_fields,
        }

    def _stamp_rate(self, record: dict[str, Any]) -> None:
        """Set the record's tokens/s to the rate since the previous record (steadier than one step's)."""
        now = self.started + record["elapsed_s"]
        since_time, since_tokens = self.last_logged
        if now > since_time and record["tokens"] > since_tokens:
            record["tokens_per_s"] = (record["tokens"] - since_tokens) / (now - since_time)
        self.last_logged = (now, record["tokens"])
        record["logged"] = True

    def _print_line(self, record: dict[str, Any]) -> None:
        val = f", val {self.val.loss_nats:.4f}" if self.val is not None else ""
        limit = "" if self.target_steps is None else f"/{self.target_steps:,}"
        write_stderr(f"step {record['step']:,}{limit}: loss {record['train_loss_nats']:.4f} nats/token"
                     f"{val}, {record['tokens_per_s']:,.0f} tokens/s, {record['elapsed_s']:.1f} s")

    def _complete_record(self) -> None:
        """Print the latest step's progress line and append its log record, as each is due."""
        record, self.record = self.record, None
        if record is None:
            return
        if record.pop("print_line", False):
            self._print_line(record)
        if self.log_file is None:
            return
        if not record.pop("logged", False):
            if record["val_loss_nats"] is None:
                return  # neither a logging step nor a validated one
            self._stamp_rate(record)
            record.pop("logged")
        with self._writing_log():
            self.log_file.write(files.json_text(files.finite_or_none(record)) + "\n")
            self.log_file.flush()

    @contextlib.contextmanager
    def _writing_log(self) -> Iterator[None]:
        """A failed write to the log ends the run (exit 1) with one line, keeping the last checkpoint."""
        try:
            yield
        except OSError as exc:
            raise OutputFileError(
                f"cannot write the training log {self.log_path}: {exc.strerror or exc}; training stopped, the "
                "last checkpoint written is intact"
            ) from None

    def _finish(self, event: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        describe_finish(event, self.quiet, self.resumed_from)


def nothing_to_train(event: Any, quiet: bool) -> None:
    """The one line of a run whose model has already reached its limit (ConfigError for a new model)."""
    from charrnn.errors import ConfigError

    config, start = event.train_config, event.start_step
    if event.resumed_from is None:
        raise ConfigError(f"--epochs {config.max_epochs:g} is less than one step ({event.steps_per_epoch} steps per "
                          "epoch); give a larger --epochs, or --steps")
    if config.max_steps is not None and config.max_steps <= start:
        more = f"--steps {start + config.max_steps} would train {config.max_steps:,} more"
        inform(quiet, f"note: nothing to train: {event.resumed_from} is at step {start:,} already, and --steps "
                      f"{config.max_steps} counts from the model's first step ({more})")
    else:
        inform(quiet, f"note: nothing to train: {event.resumed_from} has trained the --epochs {config.max_epochs:g} "
                      "it may (counted from the model's first step); give a larger --epochs, or --steps")


def describe_start(event: Any, quiet: bool, checkpoint_dir: str = "") -> None:
    """The lines that open a run: what model, how much data, where its checkpoints go."""
    verb = f"resuming {event.resumed_from} at step {event.start_step}" if event.resumed_from else "training"
    config = event.model_config
    layers = f"{config.num_layers}×{config.cell}" if config.num_layers > 1 else config.cell
    if config.bidirectional:
        layers = f"bidirectional {layers} (look-ahead {event.train_config.look_ahead})"
    inform(quiet, f"{verb}: {layers}, vocabulary {config.vocab_size}, hidden {config.hidden_size}, "
                f"{event.num_parameters:,} parameters, {event.num_train_tokens:,} training tokens, "
                f"{event.num_val_tokens:,} validation tokens, {event.steps_per_epoch} steps per epoch, "
                f"rng seed {event.train_config.rng_seed}, {event.backend} backend")
    inform(quiet, describe_encoding(event.corpus_paths, event.corpus_encodings, event.encoding_option))
    if checkpoint_dir:
        inform(quiet, f"checkpoints: {os.path.join(checkpoint_dir, '')}")
    if event.validation:
        inform(quiet, f"validation: {event.validation}")
    for note in event.notes:
        inform(quiet, f"note: {note}")


def describe_model(event: Any) -> str:
    """The model in a few words, for a plot's title: ``rnn, hidden 128, vocabulary 2,580``."""
    config = event.model_config
    layers = f"{config.num_layers}×{config.cell}" if config.num_layers > 1 else config.cell
    return f"{layers}, hidden {config.hidden_size}, vocabulary {config.vocab_size:,}"


def describe_corpus(paths: tuple[str, ...]) -> str:
    """The corpus files' names (``stdin`` for standard input), for a plot's title."""
    return ", ".join("stdin" if path == "-" else os.path.basename(path) or path for path in paths)


def describe_encoding(paths: tuple[str, ...], encodings: tuple[str, ...], option: str) -> str:
    """Which codec the corpus was read in, and whether it was detected: a wrong guess shows here first."""
    if len(set(encodings)) == 1:
        codecs = encodings[0]
    else:  # files in different codecs: say which is which
        codecs = ", ".join(f"{os.path.basename(path) or path} {codec}" for path, codec in zip(paths, encodings))
    how = "detected; --encoding overrides" if option == "auto" else "--encoding"
    return f"encoding: {codecs} ({how})"


def unchanged(resumed_from: Optional[str]) -> str:
    """What is on disk after a run that trained no step: nothing new."""
    return "nothing was saved" if resumed_from is None else f"{resumed_from} is unchanged"


def describe_finish(event: Any, quiet: bool, resumed_from: Optional[str] = None) -> None:
    """The summary line that closes a run (none after a run that trained no step: it has said why)."""
    rate = event.tokens_this_run / event.seconds if event.seconds > 0 else 0.0
    # None only when no step was trained and nothing resumed (stopped by a signal before the first step).
    saved = f"checkpoint {event.checkpoint_path}" if event.checkpoint_path else "no checkpoint was written"
    validation = f"; validation {format_score(event.val_score)}" if event.val_score else ""
    if event.steps_this_run == 0:  # a signal before the first step, or nothing to train: said already
        if event.checkpoint_path and event.checkpoint_path != resumed_from:
            # The resumed best.npz was newer than latest.npz (a crash between the two saves).
            inform(quiet, f"saved step {event.steps:,} of {resumed_from} as {event.checkpoint_path}, which was behind it")
        return
    if event.out_of_time:
        validated = ", validated" if event.val_score else ""
        steps = f"{event.steps_this_run:,} step{'s' if event.steps_this_run != 1 else ''}"
        inform(quiet, f"note: --max-seconds reached after {steps} of this run; stopped{validated} and saved")
    if event.stopped_early:
        at_step = "" if event.best_step is None else f" at step {event.best_step:,}"
        after = (f" after {event.lr_reductions} reduction{'s' if event.lr_reductions != 1 else ''} of the learning rate"
                 if event.lr_reductions else "")
        inform(quiet, f"stopped early at step {event.steps:,}: {event.validations_since_best} validations in a row "
                    f"brought no new best{after}; the best, {event.best_val_loss_nats:.4f} nats/token{at_step}, is in "
                    "best.npz (--patience 0 never stops early)")
    inform(quiet, f"trained to step {event.steps} ({event.steps_this_run} steps, {event.tokens_this_run:,} "
                f"tokens this run) in {event.seconds:.1f} s ({rate:,.0f} tokens/s); smoothed loss "
                f"{event.smoothed_loss_nats:.4f} nats/token{validation}; {saved}")


def interrupted_line(event: Any, resumed_from: Optional[str]) -> str:
    """The line that ends a run stopped by a signal: what it saved, or that it saved nothing."""
    if event.steps_this_run == 0:
        return f"Interrupted before the first step; {unchanged(resumed_from)}"
    return f"Interrupted; checkpoint saved to {event.checkpoint_path}"


def finished_document(event: Any, best_path: Optional[str], checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
    """The ``--json`` summary of a training run."""
    score = event.val_score
    return {
        "checkpoint_dir": checkpoint_dir,
        "checkpoint": event.checkpoint_path,
        "best_checkpoint": best_path,
        "steps": event.steps,
        "steps_this_run": event.steps_this_run,
        "tokens": event.tokens_seen,
        "tokens_this_run": event.tokens_this_run,
        "train_loss_nats": event.smoothed_loss_nats,
        "val_loss_nats": score.loss_nats if score else None,
        "val_bits_per_char": score.bits_per_char if score else None,
        "tokens_per_s": event.tokens_this_run / event.seconds if event.seconds > 0 else None,
        "seconds": event.seconds,
        "interrupted": event.interrupted,
        "backend": event.backend,
        "out_of_time": event.out_of_time,
        "stopped_early": event.stopped_early,
        "best_step": event.best_step,
        "best_val_loss_nats": event.best_val_loss_nats,
        # A bidirectional model's losses are of p(x_t | both sides): not comparable with a left-to-right one's.
        "direction": "bidirectional" if event.bidirectional else "left-to-right",
        "lr_reductions": event.lr_reductions,
    }
