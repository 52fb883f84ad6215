"""The ``charrnn`` command: parse options, build configs, call the library, render the results.

This is the only module that imports click or tqdm, and the only one that writes to the terminal.
stdout carries only the product (sampled text); progress, samples during training and summaries go to
stderr. Library errors (CharRNNError) become one ``Error: ...`` line on stderr and the exit code the
error carries. Heavy modules (numpy, tqdm, jieba) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import functools
import signal
import sys
from typing import Any, Callable, Optional

import click
from click.core import ParameterSource

from charrnn import __version__
from charrnn.config import DTYPES, TOKENIZERS
from charrnn.errors import CharRNNError

EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
DEFAULT_EPOCHS = 50.0
DEFAULT_CHECKPOINT_DIR = "checkpoints"


def _fail(message: str, exit_code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(exit_code)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a CharRNNError raised by the library into one stderr line and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CharRNNError as exc:
            _fail(str(exc), exc.exit_code)

    return wrapper


def _info(quiet: bool, message: str) -> None:
    if not quiet:
        click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="charrnn")
def cli() -> None:
    """Train character- and word-level RNN language models and sample text from them.

    \b
    Quick start:
      charrnn train data/tang300.txt --steps 1000
      charrnn sample --seed 月

    Exit codes: 0 success, 1 failure while running, 2 bad usage or input,
    130/143 interrupted by SIGINT/SIGTERM (after saving a checkpoint).
    """


class _StopFlag:
    """Set by SIGINT or SIGTERM so training stops between steps and saves; a second signal aborts."""

    def __init__(self) -> None:
        self.signal_number: Optional[int] = None

    def __call__(self) -> bool:
        return self.signal_number is not None

    def handle(self, signal_number: int, frame: Any) -> None:
        if self.signal_number is not None:
            raise KeyboardInterrupt
        self.signal_number = signal_number
        click.echo(
            "\nStopping after this step and saving a checkpoint (press Ctrl-C again to abort without saving)",
            err=True,
        )


def _explicit(ctx: click.Context, names: list[str]) -> frozenset[str]:
    sources = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return frozenset(n for n in names if ctx.get_parameter_source(n) in sources)


@cli.command()
@click.argument("corpus", nargs=-1, type=click.Path(dir_okay=True))
@click.option("--tokenizer", type=click.Choice(TOKENIZERS), default="char", show_default=True,
              help="Tokens are characters, or words cut by jieba (precise mode).")
@click.option("--encoding", default="auto", show_default=True,
              help="Codec of the corpus files; auto tries a byte-order mark, UTF-8, then GB18030 (GBK).")
@click.option("--hidden-size", type=int, default=128, show_default=True, help="Hidden units H.")
@click.option("--seq-length", type=int, default=25, show_default=True, help="Steps of truncated BPTT.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Parallel streams per step.")
@click.option("--learning-rate", type=float, default=0.1, show_default=True, help="Adagrad learning rate.")
@click.option("--clip", type=float, default=5.0, show_default=True, help="Clip gradients to ±this.")
@click.option("--steps", "max_steps", type=int, help="Stop after this many steps in the model's life.")
@click.option("--epochs", "max_epochs", type=float,
              help=f"Stop after this many passes over the corpus [default: {DEFAULT_EPOCHS:g} if no --steps].")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--rng-seed", type=int, help="Seed for a reproducible run [default: random, recorded].")
@click.option("--sample-every", type=int, default=500, show_default=True,
              help="Print a sample every N steps (0: never).")
@click.option("--checkpoint-every", type=int, default=1000, show_default=True,
              help="Save a checkpoint every N steps (0: only at the end).")
@click.option("--checkpoint-dir", default=DEFAULT_CHECKPOINT_DIR, show_default=True, type=click.Path())
@click.option("--resume", type=click.Path(), help="Continue training this checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace the checkpoints already in --checkpoint-dir.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, samples or summary.")
@click.pass_context
@reports_errors
def train(ctx: click.Context, corpus: tuple[str, ...], **options: Any) -> None:
    """Train a model on the text in CORPUS files (read in order and joined).

    With --resume, CORPUS may be left out to train on the files the checkpoint was trained on.
    Checkpoints go to --checkpoint-dir as step_NNNNNNNN.npz and latest.npz.
    """
    from charrnn import session as sessions
    from charrnn.config import ScheduleConfig

    if not corpus and not options["resume"]:
        raise click.UsageError("give at least one CORPUS file (or --resume a checkpoint)")
    if options["max_steps"] is None and options["max_epochs"] is None and not options["resume"]:
        options["max_epochs"] = DEFAULT_EPOCHS
    model_names = ["hidden_size", "dtype"]
    train_names = ["seq_length", "batch_size", "learning_rate", "clip", "max_steps", "max_epochs", "rng_seed"]
    request = sessions.TrainRequest(
        corpus_paths=corpus,
        schedule=ScheduleConfig(
            checkpoint_dir=options["checkpoint_dir"],
            checkpoint_every=options["checkpoint_every"],
            sample_every=options["sample_every"],
        ),
        model_options={n: options[n] for n in model_names},
        train_options={n: options[n] for n in train_names},
        tokenizer=options["tokenizer"],
        encoding=options["encoding"],
        resume=options["resume"],
        overwrite=options["overwrite"],
        explicit=_explicit(ctx, model_names + train_names + ["tokenizer"]),
    )
    session = sessions.open_session(request)
    stop = _StopFlag()
    previous = {s: signal.signal(s, stop.handle) for s in EXIT_INTERRUPTED}
    try:
        finished = _render_training(sessions.run(session, stop), options["quiet"])
    except KeyboardInterrupt:
        _fail("aborted without saving; the last checkpoint written is intact", 130)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if finished.interrupted and stop.signal_number is not None:
        click.echo(f"Interrupted; checkpoint saved to {finished.checkpoint_path}", err=True)
        sys.exit(EXIT_INTERRUPTED[stop.signal_number])


def _render_training(events: Any, quiet: bool) -> Any:
    """Draw the progress bar, samples and summary for a stream of session events; return Finished."""
    from tqdm import tqdm

    from charrnn import session as sessions
    from charrnn.train import StepResult

    bar = None
    for event in events:
        if isinstance(event, sessions.Started):
            _describe_start(event, quiet)
            bar = tqdm(total=event.target_steps, initial=event.start_step, unit="step", file=sys.stderr,
                       disable=True if quiet else None, dynamic_ncols=True)
        elif isinstance(event, StepResult):
            bar.set_postfix(loss=f"{event.smoothed_loss_nats:.3f}", tok_s=f"{event.tokens_per_s:,.0f}",
                            refresh=False)
            bar.update(1)
        elif isinstance(event, sessions.Sampled) and not quiet:
            tqdm.write(f"--- sample at step {event.step} (temperature {event.temperature:g}) ---\n"
                       f"{event.text}\n---", file=sys.stderr)
        elif isinstance(event, sessions.Finished):
            bar.close()
            rate = event.tokens_this_run / event.seconds if event.seconds > 0 else 0.0
            _info(quiet, f"trained to step {event.steps} ({event.steps_this_run} steps, "
                         f"{event.tokens_this_run:,} tokens this run) in {event.seconds:.1f} s "
                         f"({rate:,.0f} tokens/s); smoothed loss {event.smoothed_loss_nats:.4f} nats/token; "
                         f"checkpoint {event.checkpoint_path}")
            return event
    raise RuntimeError("training ended without a Finished event")


def _describe_start(event: Any, quiet: bool) -> None:
    verb = f"resuming {event.resumed_from} at step {event.start_step}" if event.resumed_from else "training"
    config = event.model_config
    _info(quiet, f"{verb}: vocabulary {config.vocab_size}, hidden {config.hidden_size}, "
                 f"{event.num_parameters:,} parameters, {event.num_tokens:,} tokens, "
                 f"{event.steps_per_epoch} steps per epoch, rng seed {event.train_config.rng_seed}")
    for note in event.notes:
        _info(quiet, f"note: {note}")


@cli.command("sample")
@click.option("-c", "--checkpoint", type=click.Path(),
              help=f"Checkpoint to sample from [default: the newest in {DEFAULT_CHECKPOINT_DIR}/].")
@click.option("--seed", "seed_text", help="Priming text; the output starts with it [default: a random token].")
@click.option("--length", type=int, default=200, show_default=True, help="Tokens to generate.")
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Below 1: safer text; above 1: wilder; 0 means --greedy.")
@click.option("--top-k", type=int, help="Sample only among the K most likely tokens.")
@click.option("--greedy", is_flag=True, help="Always take the most likely token.")
@click.option("--rng-seed", type=int, help="Seed for reproducible samples.")
@click.option("--num-samples", type=int, default=1, show_default=True, help="Independent samples to draw.")
@click.option("-q", "--quiet", is_flag=True, help="No informational messages on stderr.")
@reports_errors
def sample_command(checkpoint: Optional[str], seed_text: Optional[str], quiet: bool, **options: Any) -> None:
    """Generate text from a trained checkpoint and print it on stdout."""
    import numpy as np

    from charrnn import checkpoint as checkpoints
    from charrnn.config import SampleConfig
    from charrnn.errors import CheckpointError, VocabularyError
    from charrnn.sample import generate

    config = SampleConfig(**options)
    if checkpoint is None:
        checkpoint = checkpoints.find_latest(DEFAULT_CHECKPOINT_DIR)
        if checkpoint is None:
            raise CheckpointError(
                f"no checkpoint in {DEFAULT_CHECKPOINT_DIR}/; train one with 'charrnn train CORPUS' "
                "or pass --checkpoint"
            )
        _info(quiet, f"sampling from {checkpoint}")
    ckpt = checkpoints.load(checkpoint)
    rng = np.random.default_rng(config.rng_seed)
    tokenizer = ckpt.tokenizer
    if seed_text:
        try:
            prime = tokenizer.encode(seed_text)
        except VocabularyError as exc:
            raise VocabularyError(f"--seed has {exc}") from None
    else:
        prime = rng.integers(tokenizer.vocab_size, size=1)
        seed_text = tokenizer.decode(prime.tolist())
    generated = np.array(list(generate(ckpt.params, prime, config, rng))).reshape(config.length, -1)
    for index in range(config.num_samples):
        if index:
            click.echo("")
        click.echo(seed_text + tokenizer.decode(generated[:, index].tolist()))


def main(*args: Any, **kwargs: Any) -> Any:
    """Console entry point."""
    return cli(*args, **kwargs)
