"""Opening a training session: read the corpus, split off validation text, build or resume the model.

``open_session`` turns what the user asked for (a TrainRequest) into a Session ready to train, or
raises a CharRNNError saying what to fix; ``runner.run`` then trains it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from charrnn import checkpoint, train
from charrnn.checkpoint import Checkpoint, CorpusInfo
from charrnn.config import ModelConfig, ScheduleConfig, TrainConfig
from charrnn.corpus import read_corpus, split_streams
from charrnn.errors import ConfigError, VocabularyError
from charrnn.tokenizer import Tokenizer

# Options that define the model or its training data: fixed for a model's life, so giving a different
# value when resuming is an error rather than something silently ignored.
FIXED_ON_RESUME = (
    "hidden_size", "num_layers", "cell", "activation", "dropout", "dtype", "tokenizer",
    "batch_size", "seq_length", "optimizer", "rng_seed", "val_fraction",
)
# Options that may change when resuming; the change is applied and reported.
CHANGEABLE_ON_RESUME = ("learning_rate", "lr_decay", "lr_decay_after", "clip")
OPTION_FLAGS = {name: "--" + name.replace("_", "-") for name in FIXED_ON_RESUME + CHANGEABLE_ON_RESUME}
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
    val_paths: tuple[str, ...] = ()
    resume: Optional[str] = None
    overwrite: bool = False
    explicit: frozenset[str] = frozenset()


@dataclass
class Session:
    """A model ready to train on its streams, with the settings and bookkeeping to do so."""

    request: TrainRequest
    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Tokenizer
    corpus: CorpusInfo
    streams: np.ndarray  # (B, L) training token ids
    val_ids: Optional[np.ndarray]  # (N_val,) validation token ids; None when validation is off
    state: train.TrainState
    resumed_from: Optional[str] = None
    notes: list[str] = field(default_factory=list)


def _fingerprint(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int32).tobytes()).hexdigest()


def split_validation(ids: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(training ids, validation ids): the validation part is the last round(N · fraction) tokens."""
    val_count = int(round(len(ids) * fraction))
    return ids[: len(ids) - val_count], ids[len(ids) - val_count :]


def _read_data(
    request: TrainRequest, paths: tuple[str, ...], val_paths: tuple[str, ...], tokenizer: Optional[Tokenizer]
) -> tuple[Tokenizer, np.ndarray, Optional[np.ndarray], CorpusInfo]:
    """Tokenize the corpus and any validation files; fit one vocabulary to both unless one is given.

    Returns the tokenizer, the corpus ids, the validation-file ids (None without one) and a record of
    the data.
    """
    texts = [read_corpus(paths, request.encoding)]
    if val_paths:
        texts.append(read_corpus(val_paths, request.encoding))
    if tokenizer is None:
        tokenizer, id_arrays = Tokenizer.fit_many([t.text for t in texts], request.tokenizer)
    else:
        try:
            id_arrays = [tokenizer.encode(t.text) for t in texts]
        except VocabularyError as exc:
            raise VocabularyError(f"the corpus does not fit the checkpoint's vocabulary: {exc}") from None
    all_ids = np.concatenate(id_arrays)
    info = CorpusInfo(texts[0].paths, texts[0].encodings, len(all_ids), _fingerprint(all_ids), tuple(val_paths))
    return tokenizer, id_arrays[0], (id_arrays[1] if val_paths else None), info


def _prepare_streams(session_ids: np.ndarray, val_ids: Optional[np.ndarray], config: TrainConfig, notes: list[str]):
    if val_ids is None and config.val_fraction > 0:
        session_ids, val_ids = split_validation(session_ids, config.val_fraction)
    if val_ids is not None and len(val_ids) < 2:
        notes.append("the validation text is shorter than 2 tokens; validation is off")
        val_ids = None
    return split_streams(session_ids, config.batch_size, config.seq_length), val_ids


def _fresh(request: TrainRequest) -> Session:
    notes: list[str] = []
    train_options = dict(request.train_options)
    if request.val_paths:
        if "val_fraction" in request.explicit and train_options.get("val_fraction"):
            raise ConfigError("give --val-fraction or --val-file, not both")
        train_options["val_fraction"] = 0.0
    if train_options.get("rng_seed") is None:
        train_options["rng_seed"] = secrets.randbits(32)
    train_config = TrainConfig(**train_options)
    tokenizer, ids, val_ids, corpus = _read_data(request, request.corpus_paths, request.val_paths, None)
    model_config = ModelConfig(vocab_size=tokenizer.vocab_size, **request.model_options)
    streams, val_ids = _prepare_streams(ids, val_ids, train_config, notes)
    state = train.new_state(model_config, train_config)
    return Session(request, model_config, train_config, tokenizer, corpus, streams, val_ids, state, None, notes)


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
    changes = {name: request.train_options[name] for name in CHANGEABLE_ON_RESUME if name in request.explicit}
    if request.explicit & {"max_steps", "max_epochs"}:
        changes["max_steps"] = request.train_options.get("max_steps")
        changes["max_epochs"] = request.train_options.get("max_epochs")
    train_config = dataclasses.replace(ckpt.train_config, **changes)
    notes = [
        f"{OPTION_FLAGS[name]} is now {value}"
        for name, value in changes.items()
        if value is not None and value != getattr(ckpt.train_config, name)
    ]
    paths = request.corpus_paths or ckpt.corpus.paths
    val_paths = request.val_paths or ckpt.corpus.val_paths
    if val_paths and ckpt.train_config.val_fraction > 0:
        raise ConfigError("this model holds out --val-fraction of its corpus; it cannot also take --val-file")
    _, ids, val_ids, corpus = _read_data(request, paths, val_paths, ckpt.tokenizer)
    streams, val_ids = _prepare_streams(ids, val_ids, train_config, notes)
    progress, hidden = ckpt.progress, ckpt.state
    if corpus.sha256 != ckpt.corpus.sha256:
        # Positions in other text mean nothing: start its streams from the beginning.
        notes.append("the corpus differs from the one the checkpoint was trained on; starting at its beginning")
        progress = dataclasses.replace(progress, position=0)
        hidden = {key: np.zeros_like(value) for key, value in hidden.items()}
    rng = np.random.default_rng()
    rng.bit_generator.state = ckpt.rng_state
    state = train.TrainState(ckpt.model_config, ckpt.params, ckpt.optimizer_state, hidden, progress, rng)
    return Session(
        request, ckpt.model_config, train_config, ckpt.tokenizer, corpus, streams, val_ids, state, path, notes
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
    config = session.model_config
    if config.dropout > 0 and config.num_layers == 1:
        session.notes.append("--dropout acts between stacked layers; with one layer it has no effect")
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
        state=state.hidden,
        progress=state.progress,
        rng_state=state.rng.bit_generator.state,
        corpus=session.corpus,
    )
