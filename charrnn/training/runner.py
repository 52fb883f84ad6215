"""Running a training session: train, validate, sample and checkpoint on schedule, reporting events.

Nothing here prints; the command line turns the events into a progress bar, samples on stderr and a
summary line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import numpy as np

from charrnn.checkpoints import checkpoint, folder_files
from charrnn.checkpoints.checkpoint import Checkpoint
from charrnn.errors import TrainingError
from charrnn.inference import sampling, scoring
from charrnn.model import network, optim
from charrnn.training import distributed, loop
from charrnn.config import ModelConfig, SampleConfig, TrainConfig
from charrnn.training.session import Session, to_checkpoint


@dataclass(frozen=True)
class Started:
    """Training is about to begin."""

    model_config: ModelConfig
    train_config: TrainConfig
    num_parameters: int
    num_train_tokens: int
    num_val_tokens: int
    steps_per_epoch: int
    start_step: int
    start_tokens: int  # tokens seen before this run
    target_steps: Optional[int]  # the step limit; None when only a time budget ends the run
    chars_per_token: float  # average over (the start of) the training text, for bits per character
    corpus_paths: tuple[str, ...]
    corpus_encodings: tuple[str, ...]  # the codec each corpus file was read in (detected, or as given)
    encoding_option: str  # --encoding: "auto" when the codecs above were detected
    resumed_from: Optional[str]
    notes: tuple[str, ...]  # things the user should know (e.g. a changed corpus)
    backend: str  # the kernels the run trains with: "numpy" or "numba"
    validation: str = ""  # what the validation text is (corpus_data.prepare_streams)


@dataclass(frozen=True)
class Evaluated:
    """The model was scored on the validation text."""

    step: int
    score: scoring.Score
    is_best: bool  # lowest validation loss so far (best.npz was just written)


@dataclass(frozen=True)
class RateReduced:
    """--patience validations in a row brought no new best, so the learning rate was reduced."""

    step: int
    learning_rate: float  # the rate from the next step on
    reductions: int  # reductions so far in the model's life
    max_reductions: int  # --lr-reductions
    validations_without_best: int


@dataclass(frozen=True)
class Sampled:
    """Text drawn from the model during training."""

    step: int
    temperature: float
    text: str


@dataclass(frozen=True)
class Saved:
    """A checkpoint was written."""

    step: int
    path: str


@dataclass(frozen=True)
class Finished:
    """Training ended, by reaching its limit or because it was asked to stop."""

    steps: int  # total steps in the model's life
    steps_this_run: int
    tokens_seen: int  # in the model's life
    tokens_this_run: int
    smoothed_loss_nats: float
    val_score: Optional[scoring.Score]  # the last validation, if any
    seconds: float
    checkpoint_path: Optional[str]
    interrupted: bool  # asked to stop (a signal)
    out_of_time: bool  # stopped by --max-seconds
    backend: str  # the kernels it trained with
    stopped_early: bool = False  # --patience validations in a row brought no new best
    validations_since_best: int = 0
    best_step: Optional[int] = None  # the step of the lowest validation loss (best.npz), if known
    best_val_loss_nats: Optional[float] = None
    bidirectional: bool = False  # the model predicts each token from both sides (charrnn fill)
    lr_reductions: int = 0  # plateau reductions of the learning rate in the model's life
    # The signal that stopped the run, if one did; in a run on several processes (distributed.py), the one
    # any of them received, so that every process ends the same way.
    signal_number: Optional[int] = None


Event = Union[Started, loop.StepResult, Evaluated, RateReduced, Sampled, Saved, Finished]


def _target_steps(session: Session) -> Optional[int]:
    config, progress = session.train_config, session.trainee.progress
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.max_epochs is not None:
        per_epoch = loop.steps_per_epoch(session.streams, config.seq_length)
        remaining = config.max_epochs - loop.epochs_done(progress, session.streams, config.seq_length)
        limits.append(progress.step + max(0, math.ceil(round(remaining * per_epoch, 9))))
    return max(progress.step, min(limits)) if limits else None


def _chars_per_token(session: Session, token_lengths: np.ndarray) -> float:
    """Characters per token of the training text, measured on at most its first million tokens."""
    if (token_lengths == 1).all():
        return 1.0
    batch, length = session.streams.shape
    head = session.streams[:, : max(1, min(length, 1_000_000 // batch))]
    return float(token_lengths[head].mean())


def _patience_note(session: Session) -> tuple[str, ...]:
    """A note when a resumed model has already used up its --patience: its next validation decides."""
    patience, progress = session.request.schedule.patience, session.trainee.progress
    waited = progress.validations_since_best
    if session.val_ids is None or not patience or waited < patience:
        return ()
    if progress.lr_reductions < session.train_config.lr_reductions:
        then = "its learning rate is reduced at its next validation unless that is a new best"
    else:
        then = "it stops at its next validation unless that is a new best (--patience 0 never stops early)"
    return (f"the model has had {waited} validations in a row without a new best, as many as --patience {patience} "
            f"allows: {then}",)


def training_sample(session: Session, length: int, temperature: float = 1.0) -> str:
    """Text from the current model, primed with a random token.

    Its randomness comes from (seed, step), not the training generator, so sampling more or less
    often never changes the trained weights.
    """
    rng = np.random.default_rng([session.train_config.rng_seed, session.trainee.progress.step])
    prime = rng.integers(session.model_config.vocab_size, size=1)
    config = SampleConfig(length=length, temperature=temperature)
    banned = sampling.banned_ids(session.tokenizer.unknown_id)
    generated = sampling.generate(session.trainee.params, session.model_config, prime, config, rng, banned)
    return session.tokenizer.decode(prime.tolist() + [int(ids[0]) for ids in generated])


def _best_so_far(session: Session) -> tuple[Optional[int], Optional[float]]:
    """(step, validation loss) of the run's best model: the progress's, or the run's best.npz in the folder
    if that is better (folder.Claim.best_on_disk: written by a run that ended before saving the step it
    validated, or on a branch of the run's history that was resumed from an earlier checkpoint)."""
    progress = session.trainee.progress
    best = (progress.best_val_step, progress.best_val_loss_nats)
    on_disk = session.claim.best_on_disk if session.claim is not None else None
    if on_disk is not None and on_disk.best_val_loss_nats is not None and (
            best[1] is None or on_disk.best_val_loss_nats < best[1]):
        return on_disk.step, on_disk.best_val_loss_nats  # a best.npz is written at the step it validated
    return best


def _before_write(session: Session) -> None:
    """Stop (CheckpointWriteError) before writing anything if the folder's lock is no longer this run's."""
    if session.lock is not None:
        session.lock.verify()


def _validate(session: Session, token_lengths: np.ndarray) -> Iterator[Event]:
    """Score the validation text, record it in the progress, and write best.npz on a new best.

    A new best is a loss below the best so far (``_best_so_far``), so best.npz is never replaced by a
    worse model.
    """
    progress = session.trainee.progress
    limit = session.request.schedule.eval_tokens
    val_ids = session.val_ids if not limit else session.val_ids[: limit + 1]
    group = session.group
    score = scoring.score_ids(
        session.trainee.params, session.model_config, val_ids, token_lengths, session.train_config.batch_size,
        session.trainee.kernels, window=session.train_config.seq_length, look_ahead=session.train_config.look_ahead,
        share=(group.rank, group.size),
    )
    if group.size > 1:  # each process scored its share of the streams: the whole text's totals
        tokens, characters, nats = group.sums([score.tokens_scored, score.characters_scored, score.total_nats])
        score = scoring.Score(int(tokens), int(characters), nats, score.tokens_unknown)
    progress.val_step = progress.step
    progress.val_loss_nats = score.loss_nats
    progress.val_bits_per_char = score.bits_per_char
    best_loss = _best_so_far(session)[1]
    # The root decides: only it holds the folder's claim, which may know of a better best.npz on disk.
    is_best = bool(group.from_rank(int(best_loss is None or score.loss_nats < best_loss)))
    if is_best:
        progress.best_val_loss_nats, progress.best_val_step = score.loss_nats, progress.step
        progress.validations_since_best = 0
        path = os.path.join(session.checkpoint_dir, folder_files.BEST_NAME)
        ckpt = _checkpoint_to_write(session)
        with distributed.together(group):  # the root writes; a failure there stops every process
            if ckpt is not None:
                _before_write(session)
                checkpoint.write(ckpt, path)
                if session.claim is not None:
                    session.claim.best_on_disk = None  # replaced by a better one
                _written(session, path)
        yield Saved(progress.step, path)
    else:
        progress.validations_since_best += 1
    yield Evaluated(progress.step, score, is_best)


def _written(session: Session, *paths: str) -> None:
    """After each write: the previous run's files go once this run has a model on disk (run_folder)."""
    if session.claim is not None:
        session.claim.after_write(paths)


def _latest_is_behind(session: Session) -> bool:
    """True if the run resumed a checkpoint of its folder newer than the folder's latest.npz (a best.npz
    written just before a crash): saved even when nothing is left to train, so that latest.npz is again
    the newest checkpoint, as scripts expect."""
    resumed, directory = session.resumed_from, session.checkpoint_dir
    if resumed is None or os.path.abspath(os.path.dirname(resumed)) != os.path.abspath(directory):
        return False
    latest = checkpoint.read_identity(os.path.join(directory, folder_files.LATEST_NAME))
    return latest is None or (latest.run_id == session.run_id and latest.step < session.trainee.progress.step)


def _checkpoint_to_write(session: Session) -> Optional[Checkpoint]:
    """The session as a checkpoint, in the process that writes (None in the others).

    With several processes every one of them must call this at the same point: their models are
    compared, and the root gathers every stream's hidden state, so that the checkpoint holds the whole
    (B, H) batch and resumes on any number of processes.
    """
    group = session.group
    if group.size == 1:
        return to_checkpoint(session)
    distributed.require_same_parameters(session.trainee.params, group, session.trainee.progress.step)
    hidden = group.gather_rows(session.trainee.hidden)
    return dataclasses.replace(to_checkpoint(session), hidden=hidden) if group.is_root else None


def _save(session: Session) -> str:
    """Write the step checkpoint and latest.npz, then prune old step files; returns latest's path."""
    directory = session.checkpoint_dir
    ckpt = _checkpoint_to_write(session)
    with distributed.together(session.group):  # the root writes; a failure there stops every process
        if ckpt is not None:
            _before_write(session)
            path = folder_files.save(ckpt, directory)
            _written(session, path, os.path.join(directory, folder_files.step_filename(session.trainee.progress.step)))
            folder_files.prune_step_files(directory, session.request.schedule.checkpoint_keep)
    return os.path.join(directory, folder_files.LATEST_NAME)


def _steps_together(steps: Iterator[loop.StepResult], group: distributed.Group) -> Iterator[loop.StepResult]:
    """The loop's steps. Its errors (a loss that is not finite, a diverging run) come from the mean loss,
    which every process shares, so each process raises them at the same step."""
    try:
        yield from steps
    except TrainingError as error:
        raise distributed.raise_together(error) if group.size > 1 else error


def _exchange(session: Session, should_stop: Callable[[], int], out_of_time: Callable[[], bool]
              ) -> Optional[distributed.GradientExchange]:
    """For a run on several processes: the all-reduce that averages every step's gradient and agrees on
    stopping, installed as the trainee's ``combine``. None for one process."""
    group = session.group
    if group.size == 1:
        return None

    def vote() -> int:
        signal = int(should_stop())
        return 128 + signal if signal else distributed.OUT_OF_TIME if out_of_time() else 0

    exchange = distributed.GradientExchange(
        session.trainee.params, group, vote, sparse_embedding=session.train_config.optimizer == "adagrad"
    )
    session.trainee.combine = exchange
    exchange.agree()  # a stop asked before the first step trains nothing, as in one process
    return exchange


def _stop_reason(exchange: Optional[distributed.GradientExchange], should_stop: Callable[[], int],
                 out_of_time: Callable[[], bool]) -> tuple[Optional[int], bool]:
    """(the signal that asked the run to stop or None, whether --max-seconds ran out), at the run's end:
    in a run on several processes, what any of them saw, agreed in one last vote."""
    if exchange is None:
        signal = int(should_stop())
        return signal or None, out_of_time()
    code = exchange.agree()
    return (code - 128 if code >= 128 else None), code == distributed.OUT_OF_TIME


def _after_plateau(session: Session) -> Optional[RateReduced]:
    """After ``--patience`` validations without a new best: reduce the rate if reductions are left
    (returning the event), else None, which stops the run early."""
    config, progress = session.train_config, session.trainee.progress
    if progress.lr_reductions >= config.lr_reductions:
        return None
    waited = progress.validations_since_best
    progress.lr_reductions += 1
    progress.validations_since_best = 0
    rate = optim.learning_rate_at(config, progress.epoch, progress.lr_reductions, progress.anneal_fraction)
    return RateReduced(progress.step, rate, progress.lr_reductions, config.lr_reductions, waited)


def run_session(
    session: Session, should_stop: Callable[[], int] = lambda: 0, clock: Callable[[], float] = time.perf_counter
) -> Iterator[Event]:
    """Train ``session`` to its limit, yielding events; validates, samples and saves on schedule.

    At the end the model is validated (if there is validation text) and saved. ``schedule.max_seconds``
    is checked between steps, after the first: a run always trains at least one step (so it always
    ends with a model of its own, saved). When ``should_stop()`` turns true (the number of the signal
    that asks, or True) the current step finishes, the model is saved and the run ends with
    ``Finished(interrupted=True)``. After ``schedule.patience`` validations in a row without a new best
    (never if it is 0) the learning rate is reduced (``RateReduced``), up to ``lr_reductions`` times in
    the model's life; after that the run stops early the same way, with ``Finished(stopped_early=True)``.
    With ``schedule.max_seconds`` and ``anneal``, the rate follows ``optim.anneal_factor`` of the share
    of the budget used (by ``clock``, seconds); a resumed run continues the anneal from where its
    checkpoint left it, spreading the rest over its own budget. If training fails (a NaN loss, a failed
    write) nothing is saved over the last good checkpoint.
    """
    schedule, trainee = session.request.schedule, session.trainee
    progress = trainee.progress
    started = clock()
    first_step, first_tokens = progress.step, progress.tokens_seen
    token_lengths = session.tokenizer.token_lengths()
    validating = session.val_ids is not None
    yield Started(
        session.model_config,
        session.train_config,
        network.count_parameters(trainee.params),
        session.streams.size,
        0 if session.val_ids is None else len(session.val_ids),
        loop.steps_per_epoch(session.streams, session.train_config.seq_length),
        first_step,
        first_tokens,
        _target_steps(session),
        _chars_per_token(session, token_lengths),
        session.corpus.paths,
        session.corpus.encodings,
        session.request.data.encoding,
        session.resumed_from,
        tuple(session.notes) + _patience_note(session),
        trainee.kernels.name,
        session.validation,
    )
    saved_path, saved_step, last_score = None, None, None
    deadline = None if schedule.max_seconds is None else started + schedule.max_seconds
    annealing = schedule.max_seconds is not None and session.train_config.anneal
    anneal_from = progress.anneal_fraction

    def out_of_time() -> bool:
        # A budget never ends a run before its first step: a run that starts always ends with a model
        # trained by it, validated and saved (a budget of a nanosecond still means one step).
        return deadline is not None and clock() >= deadline and progress.step > first_step

    stopped_early = False
    group = session.group
    exchange = _exchange(session, should_stop, out_of_time)  # None for one process

    def stopping() -> bool:
        if exchange is None:
            return stopped_early or bool(should_stop()) or out_of_time()
        return stopped_early or exchange.stop_code != 0  # agreed by every process in the step's all-reduce

    for result in _steps_together(loop.train_steps(trainee, session.streams, session.train_config, stopping), group):
        yield result
        step = result.step
        if group.size > 1 and step % distributed.CHECK_EVERY_STEPS == 0:
            distributed.require_same_parameters(trainee.params, group, step)
        if validating and schedule.eval_every and step % schedule.eval_every == 0:
            for event in _validate(session, token_lengths):
                last_score = event.score if isinstance(event, Evaluated) else last_score
                yield event
            if schedule.patience and progress.validations_since_best >= schedule.patience:
                reduced = _after_plateau(session)
                stopped_early = reduced is None
                if reduced is not None:
                    yield reduced
        if annealing:  # the share of the budget used, for the next step's rate: the root's clock, for all
            used = min(1.0, group.float_from_rank((clock() - started) / schedule.max_seconds))
            progress.anneal_fraction = anneal_from + (1.0 - anneal_from) * used
        # A bidirectional model fills blanks; it has no text of its own to show. The root alone shows text.
        if (schedule.sample_every and step % schedule.sample_every == 0 and not session.model_config.bidirectional
                and group.is_root):
            yield Sampled(step, 1.0, training_sample(session, schedule.sample_length))
        if schedule.checkpoint_every and step % schedule.checkpoint_every == 0:
            saved_path = _save(session)
            saved_step = step
            yield Saved(step, saved_path)
    if progress.step > first_step:
        if validating and progress.val_step != progress.step:
            for event in _validate(session, token_lengths):
                last_score = event.score if isinstance(event, Evaluated) else last_score
                yield event
        if saved_step != progress.step:
            saved_path = _save(session)
            yield Saved(progress.step, saved_path)
    elif group.from_rank(int(_latest_is_behind(session))):  # the root's folder decides
        saved_path = _save(session)
        yield Saved(progress.step, saved_path)
    best_step, best_loss = _best_so_far(session)
    stop_signal, ran_out = _stop_reason(exchange, should_stop, out_of_time)
    yield Finished(
        steps=progress.step,
        steps_this_run=progress.step - first_step,
        tokens_seen=progress.tokens_seen,
        tokens_this_run=progress.tokens_seen - first_tokens,
        smoothed_loss_nats=progress.smoothed_loss_nats,
        val_score=last_score,
        seconds=clock() - started,
        checkpoint_path=saved_path or session.resumed_from,
        interrupted=stop_signal is not None,
        backend=trainee.kernels.name,
        out_of_time=not (stopped_early or stop_signal is not None) and ran_out and not loop.is_finished(
            progress, session.streams, session.train_config),
        stopped_early=stopped_early,
        validations_since_best=progress.validations_since_best,
        best_step=best_step,
        best_val_loss_nats=best_loss,
        bidirectional=session.model_config.bidirectional,
        lr_reductions=progress.lr_reductions,
        signal_number=stop_signal,
    )
