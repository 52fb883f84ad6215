"""A training session: start or resume a model, train it, sample and checkpoint on schedule.

The session reports what happens as a stream of events and prints nothing; the command line turns the
events into a progress bar, samples on stderr and a summary line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np

from charrnn import checkpoint, model, sample, train
from charrnn.checkpoint import Checkpoint, CorpusInfo
from charrnn.config import ModelConfig, SampleConfig, ScheduleConfig, TrainConfig
from charrnn.corpus import read_corpus, split_streams
from charrnn.errors import ConfigError, VocabularyError
from charrnn.tokenizer import Tokenizer

# Options that define the model or its data layout: fixed for a model's life, so giving a different
# value when resuming is an error rather than something silently ignored.
FIXED_ON_RESUME = ("hidden_size", "dtype", "tokenizer", "batch_size", "seq_length", "rng_seed")
OPTION_FLAGS = {name: "--" + name.replace("_", "-") for name in FIXED_ON_RESUME}
OPTION_FLAGS.update({"max_steps": "--steps", "max_epochs": "--epochs"})


@dataclass(frozen=True)
class TrainRequest:
    """What the user asked for. ``explicit`` names the options given on the command line.

    ``model_options`` holds ModelConfig fields except the vocabulary size (known once the corpus is
    read); ``train_options`` holds TrainConfig fields.
    """

    corpus_paths: tuple[str, ...]
    schedule: ScheduleConfig
    model_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "char"
    encoding: str = "auto"
    resume: Optional[str] = None
    overwrite: bool = False
    explicit: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Started:
    """Training is about to begin."""

    model_config: ModelConfig
    train_config: TrainConfig
    num_parameters: int
    num_tokens: int
    steps_per_epoch: int
    start_step: int
    target_steps: int
    resumed_from: Optional[str]
    notes: tuple[str, ...]  # things the user should know (e.g. a changed corpus)


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
    seconds: float
    checkpoint_path: Optional[str]
    interrupted: bool


Event = Union[Started, train.StepResult, Sampled, Saved, Finished]


@dataclass
class Session:
    """A model ready to train on its streams, with the settings and bookkeeping to do so."""

    request: TrainRequest
    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Tokenizer
    corpus: CorpusInfo
    streams: np.ndarray  # (B, L) token ids
    state: train.TrainState
    resumed_from: Optional[str] = None
    notes: list[str] = field(default_factory=list)


def _fingerprint(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int32).tobytes()).hexdigest()


def _fresh(request: TrainRequest) -> Session:
    text = read_corpus(request.corpus_paths, request.encoding)
    tokenizer, ids = Tokenizer.fit(text.text, request.tokenizer)
    model_config = ModelConfig(vocab_size=tokenizer.vocab_size, **request.model_options)
    train_options = dict(request.train_options)
    if train_options.get("rng_seed") is None:
        train_options["rng_seed"] = secrets.randbits(32)
    train_config = TrainConfig(**train_options)
    streams = split_streams(ids, train_config.batch_size, train_config.seq_length)
    corpus = CorpusInfo(text.paths, text.encodings, len(ids), _fingerprint(ids))
    state = train.new_state(model_config, train_config)
    return Session(request, model_config, train_config, tokenizer, corpus, streams, state)


def _check_conflicts(request: TrainRequest, ckpt: Checkpoint) -> None:
    stored = {**dataclasses.asdict(ckpt.model_config), **dataclasses.asdict(ckpt.train_config)}
    stored["tokenizer"] = ckpt.tokenizer.kind
    given = {**request.model_options, **request.train_options, "tokenizer": request.tokenizer}
    for name in FIXED_ON_RESUME:
        if name in request.explicit and given.get(name) != stored[name]:
            raise ConfigError(
                f"{OPTION_FLAGS[name]} {given.get(name)} conflicts with the checkpoint, which has "
                f"{stored[name]}; leave it out when resuming (or train a new model)"
            )


def _resumed(request: TrainRequest, path: str) -> Session:
    ckpt = checkpoint.load(path)
    _check_conflicts(request, ckpt)
    changes: dict[str, Any] = {}
    for name in ("learning_rate", "clip"):
        if name in request.explicit:
            changes[name] = request.train_options[name]
    if request.explicit & {"max_steps", "max_epochs"}:
        changes["max_steps"] = request.train_options.get("max_steps")
        changes["max_epochs"] = request.train_options.get("max_epochs")
    train_config = dataclasses.replace(ckpt.train_config, **changes)
    notes = [f"{OPTION_FLAGS.get(n, '--' + n.replace('_', '-'))} is now {v}" for n, v in changes.items() if v]

    paths = request.corpus_paths or ckpt.corpus.paths
    text = read_corpus(paths, request.encoding)
    try:
        ids = ckpt.tokenizer.encode(text.text)
    except VocabularyError as exc:
        raise VocabularyError(f"the corpus does not fit the checkpoint's vocabulary: {exc}") from None
    streams = split_streams(ids, train_config.batch_size, train_config.seq_length)
    corpus = CorpusInfo(text.paths, text.encodings, len(ids), _fingerprint(ids))
    progress, hidden = ckpt.progress, ckpt.hidden
    if corpus.sha256 != ckpt.corpus.sha256:
        # Positions in other text mean nothing: start its streams from the beginning.
        notes.append("the corpus differs from the one the checkpoint was trained on; starting at its beginning")
        progress = dataclasses.replace(progress, position=0)
        hidden = np.zeros_like(hidden)
    rng = np.random.default_rng()
    rng.bit_generator.state = ckpt.rng_state
    state = train.TrainState(ckpt.params, ckpt.optimizer_state, hidden, progress, rng)
    return Session(
        request, ckpt.model_config, train_config, ckpt.tokenizer, corpus, streams, state, path, notes
    )


def open_session(request: TrainRequest) -> Session:
    """Read the corpus and build or load the model; raises CharRNNError for anything the user can fix.

    A fresh run refuses a checkpoint folder that already holds a checkpoint unless ``overwrite``:
    replacing another model's ``latest.npz`` by accident would lose it.
    """
    directory = request.schedule.checkpoint_dir
    if request.resume is None:
        existing = checkpoint.find_latest(directory)
        if existing is not None and not request.overwrite:
            raise ConfigError(
                f"{directory} already holds a checkpoint ({existing}); continue it with --resume {existing}, "
                "write elsewhere with --checkpoint-dir, or replace it with --overwrite"
            )
        session = _fresh(request)
    else:
        session = _resumed(request, request.resume)
    checkpoint.prepare_directory(directory)
    return session


def to_checkpoint(session: Session) -> Checkpoint:
    """The session's current state as a checkpoint."""
    state = session.state
    return Checkpoint(
        model_config=session.model_config,
        train_config=session.train_config,
        tokenizer=session.tokenizer,
        params=state.params,
        optimizer_state=state.optimizer,
        hidden=state.hidden,
        progress=state.progress,
        rng_state=state.rng.bit_generator.state,
        corpus=session.corpus,
    )


def _target_steps(session: Session) -> int:
    config, progress = session.train_config, session.state.progress
    limits = []
    if config.max_steps is not None:
        limits.append(config.max_steps)
    if config.max_epochs is not None:
        per_epoch = train.steps_per_epoch(session.streams, config.seq_length)
        remaining = config.max_epochs - train.epochs_done(progress, session.streams, config.seq_length)
        limits.append(progress.step + max(0, math.ceil(round(remaining * per_epoch, 9))))
    return max(progress.step, min(limits))


def training_sample(session: Session, length: int, temperature: float = 1.0) -> str:
    """Text from the current model, primed with a random token.

    Its randomness comes from (seed, step), not the training generator, so sampling more or less
    often never changes the trained weights.
    """
    rng = np.random.default_rng([session.train_config.rng_seed, session.state.progress.step])
    prime = rng.integers(session.model_config.vocab_size, size=1)
    config = SampleConfig(length=length, temperature=temperature)
    ids = [int(step_ids[0]) for step_ids in sample.generate(session.state.params, prime, config, rng)]
    return session.tokenizer.decode(prime.tolist() + ids)


def run(session: Session, should_stop: Callable[[], bool] = lambda: False) -> Iterator[Event]:
    """Train ``session`` to its limit, yielding events; saves a checkpoint on schedule and at the end.

    When ``should_stop()`` turns true the current step finishes, a checkpoint is written and the run
    ends with ``Finished(interrupted=True)``. If training fails (a NaN loss, a failed write) nothing is
    saved over the last good checkpoint.
    """
    schedule, state = session.request.schedule, session.state
    started = time.perf_counter()
    first_step, first_tokens = state.progress.step, state.progress.tokens_seen
    yield Started(
        session.model_config,
        session.train_config,
        model.count_parameters(state.params),
        session.corpus.num_tokens,
        train.steps_per_epoch(session.streams, session.train_config.seq_length),
        first_step,
        _target_steps(session),
        session.resumed_from,
        tuple(session.notes),
    )
    saved_path, saved_step = None, None
    for result in train.run(state, session.streams, session.train_config, should_stop):
        yield result
        if schedule.sample_every and result.step % schedule.sample_every == 0:
            yield Sampled(result.step, 1.0, training_sample(session, schedule.sample_length))
        if schedule.checkpoint_every and result.step % schedule.checkpoint_every == 0:
            saved_path, saved_step = checkpoint.save(to_checkpoint(session), schedule.checkpoint_dir), result.step
            yield Saved(result.step, saved_path)
    if saved_step != state.progress.step and state.progress.step > first_step:
        saved_path = checkpoint.save(to_checkpoint(session), schedule.checkpoint_dir)
        yield Saved(state.progress.step, saved_path)
    yield Finished(
        steps=state.progress.step,
        steps_this_run=state.progress.step - first_step,
        tokens_seen=state.progress.tokens_seen,
        tokens_this_run=state.progress.tokens_seen - first_tokens,
        smoothed_loss_nats=state.progress.smoothed_loss_nats,
        seconds=time.perf_counter() - started,
        checkpoint_path=saved_path or session.resumed_from,
        interrupted=should_stop(),
    )
