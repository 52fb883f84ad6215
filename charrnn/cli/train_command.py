"""``charrnn train``: options to configs, a session, and the rendering of its events."""

from __future__ import annotations

import os
import secrets
import signal
import sys
from typing import Any, Optional

import click

from charrnn import config
from charrnn.cli.common import (
    ProgressBar, check_appendable, emit_json, examples, inform, reports_errors, resolve_checkpoint, writing_cache,
)
from charrnn.cli.exits import Interrupted, exit_interrupted
from charrnn.cli.options import build, config_options, given_fields, option, quiet_option
from charrnn.cli.training_output import TrainingOutput, finished_document, interrupted_line
from charrnn.config import ComputeConfig, DataConfig, ModelConfig, ScheduleConfig, TrainConfig

# The signals that stop training after the step under way, and save: a hang-up (the terminal or the
# ssh session went away) as surely as Ctrl-C or a scheduler's SIGTERM. SIGQUIT aborts (exits.py).
SAVING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CONFIGS = (DataConfig, ModelConfig, TrainConfig, ScheduleConfig, ComputeConfig)


class StopFlag:
    """Set by a SAVING_SIGNAL so training stops between steps and saves; a second signal, or SIGQUIT,
    aborts."""

    def __init__(self, quiet: bool) -> None:
        self.signal_number: Optional[int] = None
        self.quiet = quiet

    def __call__(self) -> int:
        """0 to go on, else the number of the signal that asks to stop."""
        return self.signal_number or 0

    def handle(self, signal_number: int, frame: Any) -> None:
        """Signal handler: remember the first signal, abort on the second."""
        if self.signal_number is not None or signal_number not in SAVING_SIGNALS:
            raise Interrupted(signal_number)
        self.signal_number = signal_number
        inform(self.quiet, "\nStopping after this step and saving a checkpoint (press Ctrl-C again to abort "
                           "without saving)")

    def install(self) -> dict[int, Any]:
        """Handle the SAVING_SIGNALS and SIGQUIT until the caller restores the handlers returned.

        A signal ignored when charrnn started stays ignored, as every command leaves it (exits.py): a
        script's background job (``charrnn train ... &``) is meant to outlive the terminal's Ctrl-C.
        """
        return {s: signal.signal(s, self.handle) for s in (*SAVING_SIGNALS, signal.SIGQUIT)
                if signal.getsignal(s) != signal.SIG_IGN}


@click.command("train", epilog=examples(
    'charrnn train --sample-corpus --steps 1000',
    'charrnn train poems.txt --val-file held_out.txt --cell gru --hidden-size 256 --checkpoint-dir tang',
    'charrnn train --resume tang --steps 5000',
    'cat *.txt | charrnn train - --max-seconds 600 --json -q > run.json',
))
@click.argument("corpus", nargs=-1, type=click.Path(allow_dash=True))
@config_options(*CONFIGS)
@option("--sample-corpus", is_flag=True,
        help="Train on the sample corpus installed with charrnn (300 Tang poems, 84 kB) instead of CORPUS files.")
@option("--val-file", multiple=True, type=click.Path(allow_dash=True), metavar="PATH",
        help="Validate on this text instead of a held-out fraction (repeatable; in CHARRNN_TRAIN_VAL_FILE, "
             f"paths separated by {os.pathsep!r}).")
@option("--resume", type=click.Path(), metavar="CKPT",
        help="Continue training this checkpoint, saving beside it (a folder: its newest checkpoint).")
@option("--overwrite", is_flag=True,
              help="Replace another run's checkpoints in the folder (removed once this run has saved).")
@option("--log-every", type=int, default=100, show_default=True, metavar="N",
              help="Without a terminal, print a progress line every N steps (0: never).")
@option("--log-jsonl", type=click.Path(), metavar="PATH",
              help="Append one JSON object per logged or validated step to this file.")
@option("--json", is_flag=True, help="Print a JSON summary of the run on stdout.")
@quiet_option("No progress, samples or summary on stderr (errors still).")
@click.pass_context
@reports_errors
def train_command(ctx: click.Context, corpus: tuple[str, ...], **options: Any) -> None:
    """Train a model on the text in CORPUS files (read in order and joined); - is standard input.

    With --resume, CORPUS may be left out to train on the files the checkpoint was trained on.
    Checkpoints go to a folder of the run's own, checkpoints/<name of the first CORPUS file>/ (or
    <name>-2/ and so on when that one holds another model), named under the first line on stderr and
    as "checkpoint_dir" in --json; --checkpoint-dir chooses the folder, and --resume writes beside the
    checkpoint it resumes. They are step_NNNNNNNN.npz and latest.npz, plus best.npz (lowest
    validation loss). Every option can also be set as CHARRNN_TRAIN_<OPTION>, e.g.
    CHARRNN_TRAIN_HIDDEN_SIZE=256.

    Exit codes: 0 done, 1 failure while running (NaN loss, failed write), 2 bad usage or input,
    130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP after saving a checkpoint (a signal ignored when
    charrnn starts, as in a script's background job, stays ignored).

    Under an MPI launcher (mpiexec -n N charrnn train ..., or srun) the N processes train one model,
    each on B/N of the --batch-size streams; the first one alone prints and writes (pip install
    '.[mpi]'; see docs/distributed.md).
    """
    from charrnn.cli.ranks import Launch, end_together
    from charrnn.training import distributed

    launch = ctx.find_root().obj  # joined by main() under an MPI launcher
    group = launch.group if isinstance(launch, Launch) else distributed.join()
    if group.size == 1:
        code = _train(ctx, corpus, options, group)
    else:
        code = end_together(launch if isinstance(launch, Launch) else Launch(group),
                            lambda: _train(ctx, corpus, options, group))
    if code:
        sys.exit(code)


def _train(ctx: click.Context, corpus: tuple[str, ...], options: dict[str, Any], group: Any) -> int:
    """The command in one process of ``group`` (distributed.Group); returns the exit code: 0, or 128 + the
    number of the signal that stopped the run."""
    from charrnn.training import distributed, runner
    from charrnn.training.session import open_session

    if not group.is_root:  # the root speaks and writes for every process
        options = {**options, "quiet": True, "json": False, "log_jsonl": None}
    random_seed = group.from_rank(secrets.randbits(32))  # the same in every process, drawn by the root
    with distributed.together(group):
        corpus, request = _request(ctx, corpus, options, random_seed)
    progress = ProgressBar("tokenizing", options["quiet"])
    try:
        with writing_cache(request.data.cache_dir):
            session = open_session(request, progress, group)
    finally:
        progress.close()
    stop = StopFlag(options["quiet"])
    previous = stop.install()
    output = TrainingOutput(options["quiet"], options["log_every"], options["log_jsonl"], session.checkpoint_dir)
    aborted: Optional[Interrupted] = None
    try:
        finished = output.run(runner.run_session(session, stop))
    except Interrupted as exc:
        aborted = exc
    finally:
        session.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if aborted is not None:  # only now, the folder's lock released: SIGQUIT ends the process on the spot
        exit_interrupted(aborted, "aborted without saving; the last checkpoint written is intact")
    if options["json"]:
        best = os.path.join(session.checkpoint_dir, "best.npz")
        document = finished_document(finished, best if os.path.exists(best) else None, session.checkpoint_dir)
        emit_json({**document, "processes": group.size})
    if finished.interrupted and finished.signal_number is not None:
        inform(options["quiet"], interrupted_line(finished, output.resumed_from))
        return 128 + finished.signal_number
    return 0


def _request(ctx: click.Context, corpus: tuple[str, ...], options: dict[str, Any], random_seed: int) -> Any:
    """(the corpus files, the TrainRequest) from the command line, checked."""
    from charrnn.data.corpus import is_standard_input, sample_corpus_path
    from charrnn.errors import ConfigError
    from charrnn.training.session import TrainRequest

    if options["sample_corpus"]:
        if corpus:
            raise click.UsageError("give CORPUS files or --sample-corpus, not both")
        corpus = (sample_corpus_path(),)
    if not corpus and not options["resume"]:
        raise click.UsageError("give at least one CORPUS file, or --sample-corpus (or --resume a checkpoint)")
    if any(map(is_standard_input, corpus)) and any(map(is_standard_input, options["val_file"])):
        raise click.UsageError("standard input (-) can be read only once: give it as CORPUS or as --val-file, not both")
    if options["log_every"] < 0:
        raise ConfigError(f"--log-every must be zero or positive, got {options['log_every']}")
    if options["log_jsonl"]:
        check_appendable(options["log_jsonl"], "--log-jsonl")  # before any work, not at the first log line
    explicit = given_fields(ctx, *CONFIGS)
    # The two settings whose defaults are rules (their help says so): when no limit is given,
    # DEFAULT_EPOCHS (a --max-seconds budget is a limit of its own: the run uses all of it, unless patience
    # ends it first); without a seed, a random one, recorded in the checkpoint.
    if options["steps"] is None and options["epochs"] is None and options["max_seconds"] is None:
        options["epochs"] = config.DEFAULT_EPOCHS
    if options["rng_seed"] is None:
        options["rng_seed"] = random_seed
    request = TrainRequest(
        corpus_paths=corpus,
        model=build(ModelConfig, options),
        train=build(TrainConfig, options),
        data=build(DataConfig, options),
        schedule=build(ScheduleConfig, options),
        val_paths=options["val_file"],
        # The start line names the file resumed, so the folder's choice need not be said twice.
        resume=resolve_checkpoint(options["resume"], quiet=True, newest=True) if options["resume"] else None,
        overwrite=options["overwrite"],
        explicit=explicit,
        compute=build(ComputeConfig, options),
    )
    return corpus, request
