"""``charrnn train``: options to configs, a session, and the rendering of its events."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Optional

import click

from charrnn.cli.common import (
    DEFAULT_CHECKPOINT_DIR, ByteProgress, check_appendable, emit_json, explicit_options, fail, reports_errors,
    writing_cache,
)
from charrnn.cli.exits import Interrupted
from charrnn.cli.training_output import TrainingOutput, finished_document
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
            raise Interrupted(signal_number)
        self.signal_number = signal_number
        click.echo(
            "\nStopping after this step and saving a checkpoint (press Ctrl-C again to abort without saving)",
            err=True,
        )


@click.command("train")
@click.argument("corpus", nargs=-1, type=click.Path(allow_dash=True))
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
@click.option("--steps", type=int, help="Stop after this many steps in the model's life.")
@click.option("--epochs", type=float,
              help=f"Stop after this many passes over the corpus [default: {DEFAULT_EPOCHS:g} if no --steps].")
@click.option("--val-fraction", type=float, default=0.05, show_default=True,
              help="Hold out this fraction at the end of the corpus for validation (0: none).")
@click.option("--val-file", multiple=True, type=click.Path(),
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
@click.option("--checkpoint-dir", default=DEFAULT_CHECKPOINT_DIR, show_default=True, type=click.Path(),
              help="Folder for this run's checkpoints (with --resume: the resumed checkpoint's folder).")
@click.option("--checkpoint-keep", type=int, default=0, show_default=True,
              help="Keep only the K newest step checkpoints, besides latest and best (0: keep all).")
@click.option("--resume", type=click.Path(), help="Continue training this checkpoint, saving beside it.")
@click.option("--overwrite", is_flag=True,
              help="Replace another run's checkpoints in the folder (removed once this run has saved).")
@click.option("--log-every", type=int, default=100, show_default=True,
              help="Without a terminal, print a progress line every N steps (0: never).")
@click.option("--log-jsonl", type=click.Path(),
              help="Append one JSON object per logged or validated step to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary of the run on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, samples or summary on stderr (errors still).")
@click.pass_context
@reports_errors
def train_command(ctx: click.Context, corpus: tuple[str, ...], **options: Any) -> None:
    """Train a model on the text in CORPUS files (read in order and joined); - is standard input.

    With --resume, CORPUS may be left out to train on the files the checkpoint was trained on.
    Checkpoints go to --checkpoint-dir as step_NNNNNNNN.npz and latest.npz, plus best.npz (lowest
    validation loss). Every option can also be set as CHARRNN_TRAIN_<OPTION>, e.g.
    CHARRNN_TRAIN_HIDDEN_SIZE=256.

    Exit codes: 0 done, 1 failure while running (NaN loss, failed write), 2 bad usage or input,
    130/143 interrupted by SIGINT/SIGTERM after saving a checkpoint.
    """
    from charrnn import runner
    from charrnn.config import ScheduleConfig
    from charrnn.errors import ConfigError
    from charrnn.session import TrainRequest, open_session

    if not corpus and not options["resume"]:
        raise click.UsageError("give at least one CORPUS file (or --resume a checkpoint)")
    if options["log_every"] < 0:
        raise ConfigError(f"--log-every must be zero or positive, got {options['log_every']}")
    if options["log_jsonl"]:
        check_appendable(options["log_jsonl"], "--log-jsonl")  # before any work, not at the first log line
    options["max_steps"], options["max_epochs"] = options.pop("steps"), options.pop("epochs")
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
        val_paths=options["val_file"],
        resume=options["resume"],
        overwrite=options["overwrite"],
        explicit=_explicit(ctx),
    )
    progress = ByteProgress("tokenizing", options["quiet"])
    try:
        with writing_cache(request.cache_dir):
            session = open_session(request, progress)
    finally:
        progress.close()
    stop = StopFlag()
    previous = {s: signal.signal(s, stop.handle) for s in EXIT_INTERRUPTED}
    output = TrainingOutput(options["quiet"], options["log_every"], options["log_jsonl"])
    try:
        finished = output.run(runner.run(session, stop))
    except Interrupted as exc:
        fail("aborted without saving; the last checkpoint written is intact", exc.exit_code)
    finally:
        session.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if options["as_json"]:
        best = os.path.join(session.checkpoint_dir, "best.npz")
        emit_json(finished_document(finished, best if os.path.exists(best) else None))
    if finished.interrupted and stop.signal_number is not None:
        click.echo(f"Interrupted; checkpoint saved to {finished.checkpoint_path}", err=True)
        sys.exit(EXIT_INTERRUPTED[stop.signal_number])


def _explicit(ctx: click.Context) -> frozenset[str]:
    """The config fields whose options the user gave (so that resuming can check them)."""
    flags = {"max_steps": "steps", "max_epochs": "epochs"}
    names = (*MODEL_OPTIONS, *TRAIN_OPTIONS, "tokenizer", "max_vocab", "checkpoint_dir")
    given = explicit_options(ctx, [flags.get(n, n) for n in names])
    return frozenset(n for n in names if flags.get(n, n) in given)
