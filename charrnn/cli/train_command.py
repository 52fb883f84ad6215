"""``charrnn train``: options to configs, a session, and the rendering of its events."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Iterable, Optional

import click

from charrnn.cli.common import (
    DEFAULT_CHECKPOINT_DIR,
    ByteProgress,
    explicit_options,
    fail,
    format_score,
    info,
    reports_errors,
)
from charrnn.config import ACTIVATIONS, CELLS, DTYPES, OPTIMIZERS, TOKENIZERS

EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
DEFAULT_EPOCHS = 50.0
MODEL_OPTIONS = ("hidden_size", "num_layers", "cell", "activation", "dropout", "dtype")
TRAIN_OPTIONS = (
    "seq_length", "batch_size", "optimizer", "learning_rate", "lr_decay", "lr_decay_after", "clip",
    "max_steps", "max_epochs", "rng_seed", "val_fraction",
)


class StopFlag:
    """Set by SIGINT or SIGTERM so training stops between steps and saves; a second signal aborts."""

    def __init__(self) -> None:
        self.signal_number: Optional[int] = None

    def __call__(self) -> bool:
        return self.signal_number is not None

    def handle(self, signal_number: int, frame: Any) -> None:
        """Signal handler: remember the first signal, abort on the second."""
        if self.signal_number is not None:
            raise KeyboardInterrupt
        self.signal_number = signal_number
        click.echo(
            "\nStopping after this step and saving a checkpoint (press Ctrl-C again to abort without saving)",
            err=True,
        )


@click.command("train")
@click.argument("corpus", nargs=-1, type=click.Path())
@click.option("--tokenizer", type=click.Choice(TOKENIZERS), default="char", show_default=True,
              help="Tokens are characters, or words cut by jieba (precise mode).")
@click.option("--encoding", default="auto", show_default=True,
              help="Codec of the text files; auto tries a byte-order mark, UTF-8, then GB18030 (GBK).")
@click.option("--max-vocab", type=int,
              help="Keep the N most frequent tokens; the rest become <unk> (for word vocabularies).")
@click.option("--cache-dir", default=os.path.join("data", ".cache"), show_default=True, type=click.Path(),
              help="Where tokenized corpora are kept (see charrnn prepare).")
@click.option("--cell", type=click.Choice(CELLS), default="rnn", show_default=True,
              help="Recurrent cell: vanilla rnn, lstm or gru.")
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="tanh", show_default=True,
              help="Nonlinearity of the vanilla rnn cell.")
@click.option("--hidden-size", type=int, default=128, show_default=True, help="Hidden units H per layer.")
@click.option("--num-layers", type=int, default=1, show_default=True, help="Stacked recurrent layers.")
@click.option("--dropout", type=float, default=0.0, show_default=True,
              help="Dropout rate between stacked layers while training.")
@click.option("--seq-length", type=int, default=25, show_default=True, help="Steps of truncated BPTT.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Parallel streams per step.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adagrad", show_default=True)
@click.option("--learning-rate", type=float, default=0.1, show_default=True,
              help="Learning rate (Adam and RMSProp usually want about 0.002).")
@click.option("--lr-decay", type=float, default=1.0, show_default=True,
              help="Multiply the learning rate by this after every epoch beyond --lr-decay-after.")
@click.option("--lr-decay-after", type=float, default=10.0, show_default=True,
              help="Epochs at the full learning rate before --lr-decay starts.")
@click.option("--clip", type=float, default=5.0, show_default=True, help="Clip gradients to ±this.")
@click.option("--steps", "max_steps", type=int, help="Stop after this many steps in the model's life.")
@click.option("--epochs", "max_epochs", type=float,
              help=f"Stop after this many passes over the corpus [default: {DEFAULT_EPOCHS:g} if no --steps].")
@click.option("--val-fraction", type=float, default=0.05, show_default=True,
              help="Hold out this fraction at the end of the corpus for validation (0: none).")
@click.option("--val-file", "val_files", multiple=True, type=click.Path(),
              help="Validate on this text instead of a held-out fraction (repeatable).")
@click.option("--eval-every", type=int, default=500, show_default=True,
              help="Validate every N steps (0: only at the end).")
@click.option("--eval-tokens", type=int, default=1_000_000, show_default=True,
              help="Validate on at most the first N validation tokens (0: all).")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--rng-seed", type=int, help="Seed for a reproducible run [default: random, recorded].")
@click.option("--sample-every", type=int, default=500, show_default=True,
              help="Print a sample every N steps (0: never).")
@click.option("--checkpoint-every", type=int, default=1000, show_default=True,
              help="Save a checkpoint every N steps (0: only at the end).")
@click.option("--checkpoint-dir", default=DEFAULT_CHECKPOINT_DIR, show_default=True, type=click.Path())
@click.option("--checkpoint-keep", type=int, default=0, show_default=True,
              help="Keep only the K newest step checkpoints, besides latest and best (0: keep all).")
@click.option("--resume", type=click.Path(), help="Continue training this checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace the checkpoints already in --checkpoint-dir.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, samples or summary.")
@click.pass_context
@reports_errors
def train_command(ctx: click.Context, corpus: tuple[str, ...], **options: Any) -> None:
    """Train a model on the text in CORPUS files (read in order and joined).

    With --resume, CORPUS may be left out to train on the files the checkpoint was trained on.
    Checkpoints go to --checkpoint-dir as step_NNNNNNNN.npz and latest.npz, plus best.npz (lowest
    validation loss).
    """
    from charrnn import runner
    from charrnn.config import ScheduleConfig
    from charrnn.session import TrainRequest, open_session

    if not corpus and not options["resume"]:
        raise click.UsageError("give at least one CORPUS file (or --resume a checkpoint)")
    if options["max_steps"] is None and options["max_epochs"] is None and not options["resume"]:
        options["max_epochs"] = DEFAULT_EPOCHS
    request = TrainRequest(
        corpus_paths=corpus,
        schedule=ScheduleConfig(
            checkpoint_dir=options["checkpoint_dir"],
            checkpoint_every=options["checkpoint_every"],
            sample_every=options["sample_every"],
            eval_every=options["eval_every"],
            eval_tokens=options["eval_tokens"],
            checkpoint_keep=options["checkpoint_keep"],
        ),
        model_options={n: options[n] for n in MODEL_OPTIONS},
        train_options={n: options[n] for n in TRAIN_OPTIONS},
        tokenizer=options["tokenizer"],
        encoding=options["encoding"],
        max_vocab=options["max_vocab"],
        cache_dir=options["cache_dir"],
        val_paths=options["val_files"],
        resume=options["resume"],
        overwrite=options["overwrite"],
        explicit=explicit_options(ctx, (*MODEL_OPTIONS, *TRAIN_OPTIONS, "tokenizer", "max_vocab")),
    )
    progress = ByteProgress("tokenizing", options["quiet"])
    try:
        session = open_session(request, progress)
    finally:
        progress.close()
    stop = StopFlag()
    previous = {s: signal.signal(s, stop.handle) for s in EXIT_INTERRUPTED}
    try:
        finished = render_training(runner.run(session, stop), options["quiet"])
    except KeyboardInterrupt:
        fail("aborted without saving; the last checkpoint written is intact", 130)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if finished.interrupted and stop.signal_number is not None:
        click.echo(f"Interrupted; checkpoint saved to {finished.checkpoint_path}", err=True)
        sys.exit(EXIT_INTERRUPTED[stop.signal_number])


def render_training(events: Iterable[Any], quiet: bool) -> Any:
    """Draw the progress bar, samples and summary for a stream of runner events; return Finished."""
    from tqdm import tqdm

    from charrnn import runner
    from charrnn.train import StepResult

    bar = None
    postfix: dict[str, str] = {}
    for event in events:
        if isinstance(event, runner.Started):
            describe_start(event, quiet)
            bar = tqdm(total=event.target_steps, initial=event.start_step, unit="step", file=sys.stderr,
                       disable=True if quiet else None, dynamic_ncols=True)
        elif isinstance(event, StepResult):
            postfix.update(loss=f"{event.smoothed_loss_nats:.3f}", tok_s=f"{event.tokens_per_s:,.0f}")
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
        elif isinstance(event, runner.Evaluated):
            postfix.update(val=f"{event.score.loss_nats:.3f}", bpc=f"{event.score.bits_per_char:.3f}")
        elif isinstance(event, runner.Sampled) and not quiet:
            tqdm.write(f"--- sample at step {event.step} (temperature {event.temperature:g}) ---\n"
                       f"{event.text}\n---", file=sys.stderr)
        elif isinstance(event, runner.Finished):
            bar.close()
            describe_finish(event, quiet)
            return event
    raise RuntimeError("training ended without a Finished event")


def describe_start(event: Any, quiet: bool) -> None:
    """The line that opens a run: what model, how much data."""
    verb = f"resuming {event.resumed_from} at step {event.start_step}" if event.resumed_from else "training"
    config = event.model_config
    layers = f"{config.num_layers}×{config.cell}" if config.num_layers > 1 else config.cell
    info(quiet, f"{verb}: {layers}, vocabulary {config.vocab_size}, hidden {config.hidden_size}, "
                f"{event.num_parameters:,} parameters, {event.num_train_tokens:,} training tokens, "
                f"{event.num_val_tokens:,} validation tokens, {event.steps_per_epoch} steps per epoch, "
                f"rng seed {event.train_config.rng_seed}")
    for note in event.notes:
        info(quiet, f"note: {note}")


def describe_finish(event: Any, quiet: bool) -> None:
    """The summary line that closes a run."""
    rate = event.tokens_this_run / event.seconds if event.seconds > 0 else 0.0
    validation = f"; validation {format_score(event.val_score)}" if event.val_score else ""
    info(quiet, f"trained to step {event.steps} ({event.steps_this_run} steps, {event.tokens_this_run:,} "
                f"tokens this run) in {event.seconds:.1f} s ({rate:,.0f} tokens/s); smoothed loss "
                f"{event.smoothed_loss_nats:.4f} nats/token{validation}; checkpoint {event.checkpoint_path}")
