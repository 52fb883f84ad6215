"""Opening a training session: read the corpus, split off validation text, build or resume the model.

``open_session`` turns what the user asked for (a TrainRequest) into a Session ready to train, or
raises a CharRNNError saying what to fix; ``runner.run`` then trains it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from charrnn import memory
from charrnn.checkpoints import checkpoint, metadata
from charrnn.data import token_cache
from charrnn.model import backend, network, optim
from charrnn.training import folder, loop
from charrnn.checkpoints.checkpoint import Checkpoint, CorpusInfo
from charrnn.config import CHANGEABLE, DEFAULT_EPOCHS, FIXED, ComputeConfig, DataConfig, ModelConfig, ScheduleConfig, TrainConfig, settings_on_resume
from charrnn.data.corpus import STANDARD_INPUT, is_standard_input, read_corpus
from charrnn.data.streams import split_streams, split_validation, streams_fit
from charrnn.errors import CheckpointError, ConfigError, VocabularyError
from charrnn.data.tokenizer import Tokenizer

@dataclass(frozen=True)
class TrainRequest:
    """What the user asked for: the corpus and every setting, as the configs they belong to.

    ``model`` has no vocabulary size yet (the corpus decides it). ``explicit`` names the settings the
    user gave: when resuming, only those are held against the checkpoint (settings_on_resume), and a
    batch size that was not given may shrink to fit a small corpus.
    """

    corpus_paths: tuple[str, ...]
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig(max_epochs=DEFAULT_EPOCHS)
    data: DataConfig = DataConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    val_paths: tuple[str, ...] = ()
    resume: Optional[str] = None
    overwrite: bool = False
    explicit: frozenset[str] = frozenset()
    compute: ComputeConfig = ComputeConfig()


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
    trainee: loop.Trainee  # the model, its optimizer state, carried hidden state, progress and generator
    run_id: str
    resumed_from: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    lock: Optional[folder.FolderLock] = None  # held on the checkpoint folder until close()
    claim: Optional[folder.Claim] = None  # the previous run's files, removed after the first write

    @property
    def checkpoint_dir(self) -> str:
        """The folder this run writes its checkpoints to."""
        return self.request.schedule.checkpoint_dir

    def close(self) -> None:
        """Release the checkpoint folder for other runs."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _fingerprint(ids: np.ndarray, dtype: str) -> str:
    """sha256 of ``ids`` stored as ``dtype``, computed a slice at a time to keep memory flat."""
    digest = hashlib.sha256()
    for start in range(0, len(ids), 1 << 22):
        digest.update(np.ascontiguousarray(ids[start : start + (1 << 22)], dtype=dtype).data)
    return digest.hexdigest()


def _translate(prepared: token_cache.PreparedCorpus, tokenizer: Tokenizer) -> np.ndarray:
    """The prepared ids re-expressed in ``tokenizer``'s vocabulary (for resuming on other text)."""
    target = {token: i for i, token in enumerate(tokenizer.vocab)}
    fallback = tokenizer.unknown_id
    lookup = np.array([target.get(t, -1 if fallback is None else fallback) for t in prepared.tokenizer.vocab])
    missing = [t for t, i in zip(prepared.tokenizer.vocab, lookup.tolist()) if i < 0]
    if missing:
        shown = ", ".join(repr(t) for t in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise VocabularyError(f"the corpus has tokens the checkpoint's vocabulary lacks: {shown}")
    return lookup.astype(token_cache.smallest_id_dtype(tokenizer.vocab_size))[prepared.ids]


def _read_data(
    request: TrainRequest,
    paths: tuple[str, ...],
    val_paths: tuple[str, ...],
    tokenizer: Optional[Tokenizer],
    kind: str,
    max_vocab: Optional[int],
    on_progress: token_cache.Progress,
    notes: list[str],
) -> tuple[Tokenizer, np.ndarray, Optional[np.ndarray], CorpusInfo]:
    """The corpus ids (memory-mapped from the token cache) and validation-file ids.

    A fresh run takes the vocabulary of the corpus; a resumed one keeps the checkpoint's.
    Validation-file tokens outside the vocabulary are left out (or become the unknown token).
    """
    data = request.data
    prepared = token_cache.prepare(paths, kind, data.encoding, max_vocab, data.cache_dir, on_progress=on_progress)
    ids = prepared.ids
    if tokenizer is None:
        tokenizer = prepared.tokenizer
    elif prepared.tokenizer != tokenizer:
        ids = _translate(prepared, tokenizer)
    val_ids = None
    if val_paths:
        val_ids, unknown = tokenizer.encode_known(read_corpus(val_paths, data.encoding).text)
        if unknown:
            fate = "become the unknown token" if tokenizer.unknown else "are left out of validation"
            notes.append(f"{len(unknown)} validation tokens are outside the vocabulary and {fate}")
    # Absolute paths, so that resuming without naming the corpus works from any folder.
    info = CorpusInfo(
        tuple(p if p == STANDARD_INPUT else os.path.abspath(p) for p in prepared.paths), prepared.encodings,
        len(ids), prepared.ids_sha256,
        tuple(os.path.abspath(p) for p in val_paths), ids.dtype.str, max_vocab,
    )
    return tokenizer, ids, val_ids, info


def _prepare_streams(
    ids: np.ndarray, val_ids: Optional[np.ndarray], config: TrainConfig, shrinkable: bool, notes: list[str]
) -> tuple[np.ndarray, Optional[np.ndarray], TrainConfig]:
    """Split off validation, cut the streams (shrinking a default batch size to fit a small corpus)."""
    if val_ids is None and config.val_fraction > 0:
        ids, val_ids = split_validation(ids, config.val_fraction)
    if val_ids is not None and len(val_ids) < 2:
        notes.append("the validation text is shorter than 2 tokens; validation is off")
        val_ids = None
    if shrinkable and not streams_fit(len(ids), config.batch_size, config.seq_length):
        fitting = len(ids) // (config.seq_length + 1)
        if fitting >= 1:
            notes.append(
                f"the corpus is too short for {config.batch_size} streams of --seq-length {config.seq_length}; "
                f"using --batch-size {fitting}"
            )
            config = dataclasses.replace(config, batch_size=fitting)
    return split_streams(ids, config.batch_size, config.seq_length), val_ids, config


def _check_memory(model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Refuse (ConfigError) a model and batch that need more memory than the machine has available."""
    parts = network.training_memory(
        model_config, train_config.batch_size, train_config.seq_length, len(optim.SLOTS[train_config.optimizer])
    )
    model_sized = "--hidden-size or --num-layers"
    if max(parts, key=parts.__getitem__) == "activations":
        advice = f"lower --batch-size or --seq-length (or {model_sized})"
    else:
        advice = f"lower {model_sized}"
    memory.require(parts, "training this model", advice)


def _fresh(request: TrainRequest, on_progress: token_cache.Progress) -> Session:
    notes: list[str] = []
    train_config = request.train
    if request.val_paths:
        if "val_fraction" in request.explicit and train_config.val_fraction:
            raise ConfigError("give --val-fraction or --val-file, not both")
        train_config = dataclasses.replace(train_config, val_fraction=0.0)
    # Before tokenizing, with the smallest vocabulary: a model too large at any vocabulary is refused
    # at once rather than after minutes of work.
    _check_memory(dataclasses.replace(request.model, vocab_size=1), train_config)
    tokenizer, ids, val_ids, corpus = _read_data(
        request, request.corpus_paths, request.val_paths, None, request.data.tokenizer, request.data.max_vocab,
        on_progress, notes,
    )
    model_config = dataclasses.replace(request.model, vocab_size=tokenizer.vocab_size)
    train_config = train_config.settled(model_config)
    shrinkable = "batch_size" not in request.explicit
    streams, val_ids, train_config = _prepare_streams(ids, val_ids, train_config, shrinkable, notes)
    _check_memory(model_config, train_config)
    trainee = loop.new_trainee(model_config, train_config, backend.select(request.compute.backend))
    run_id = metadata.run_identity(model_config, train_config, tokenizer)
    return Session(request, model_config, train_config, tokenizer, corpus, streams, val_ids, trainee, run_id, None, notes)


def _check_conflicts(request: TrainRequest, ckpt: Checkpoint) -> None:
    """Refuse a resume that explicitly asks for a setting the checkpoint fixes otherwise."""
    stored = {**dataclasses.asdict(ckpt.model_config), **dataclasses.asdict(ckpt.train_config)}
    stored.update(tokenizer=ckpt.tokenizer.kind, max_vocab=ckpt.corpus.max_vocab)
    given = {**dataclasses.asdict(request.model), **dataclasses.asdict(request.train), **dataclasses.asdict(request.data)}
    for name, (_, flag) in settings_on_resume(FIXED).items():
        if name in request.explicit and given[name] != stored[name]:
            raise ConfigError(
                f"{flag} {given[name]} conflicts with the checkpoint, which has {stored[name]}; "
                "leave it out when resuming (or train a new network)"
            )


def _resumed(request: TrainRequest, ckpt: Checkpoint, on_progress: token_cache.Progress) -> Session:
    path = request.resume
    _check_conflicts(request, ckpt)
    changeable = settings_on_resume(CHANGEABLE)
    changes = {name: getattr(request.train, name) for name in changeable if name in request.explicit}
    if request.explicit & {"max_steps", "max_epochs"}:
        # A new limit replaces both old ones: --steps alone means no epoch limit, and the other way round.
        changes["max_steps"], changes["max_epochs"] = request.train.max_steps, request.train.max_epochs
    train_config = dataclasses.replace(ckpt.train_config, **changes)
    notes = [
        f"{changeable[name][1]} is now {value}"
        for name, value in changes.items()
        if value is not None and value != getattr(ckpt.train_config, name)
    ]
    paths = request.corpus_paths or ckpt.corpus.paths
    if not request.corpus_paths and any(is_standard_input(p) for p in paths):
        # Reading it now would wait on the terminal for text that is long gone.
        raise ConfigError(
            f"{path} was trained on text from standard input, which cannot be read again; pass the corpus "
            f"again, e.g. charrnn train - --resume {path} < corpus.txt"
        )
    val_paths = request.val_paths or ckpt.corpus.val_paths
    if val_paths and ckpt.train_config.val_fraction > 0:
        raise ConfigError("this model holds out --val-fraction of its corpus; it cannot also take --val-file")
    _, ids, val_ids, corpus = _read_data(
        request, paths, val_paths, ckpt.tokenizer, ckpt.tokenizer.kind, ckpt.corpus.max_vocab, on_progress, notes
    )
    streams, val_ids, _ = _prepare_streams(ids, val_ids, train_config, False, notes)
    progress, hidden = ckpt.progress, ckpt.hidden
    same_data = corpus.sha256 == ckpt.corpus.sha256
    if not same_data and corpus.ids_dtype != ckpt.corpus.ids_dtype:
        # Fingerprinted in another id type (older checkpoints hashed int32 ids): compare in that type.
        same_data = _fingerprint(ids, ckpt.corpus.ids_dtype) == ckpt.corpus.sha256
    if same_data and progress.position + train_config.seq_length + 1 > streams.shape[1]:
        # Its metadata put the position inside the streams of the corpus it claims (metadata).
        raise CheckpointError(f"{path} is inconsistent: its position {progress.position} is past the end of "
                              "the streams of the corpus it was trained on; use another checkpoint")
    if not same_data:
        # Positions in other text mean nothing: start its streams from the beginning.
        notes.append("the corpus differs from the one the checkpoint was trained on; starting at its beginning")
        progress = dataclasses.replace(progress, position=0)
        hidden = {key: np.zeros_like(value) for key, value in hidden.items()}
    rng = np.random.default_rng()
    rng.bit_generator.state = ckpt.rng_state
    trainee = loop.Trainee(
        ckpt.model_config, ckpt.params, ckpt.optimizer_state, hidden, progress, rng,
        kernels=backend.select(request.compute.backend),
    )
    return Session(
        request, ckpt.model_config, train_config, ckpt.tokenizer, corpus, streams, val_ids, trainee, ckpt.run_id, path,
        notes,
    )


def _target_directory(request: TrainRequest) -> str:
    """Where the run writes: --checkpoint-dir if given, else (when resuming) the resumed checkpoint's folder.

    A resume that wrote to the default folder instead would replace whatever model lives there.
    """
    if request.resume is None or "checkpoint_dir" in request.explicit:
        return request.schedule.checkpoint_dir
    return os.path.dirname(request.resume) or "."


def _secure_folder(
    directory: str, identity: Optional[checkpoint.Identity], overwrite: bool, advice: str, notes: list[str]
) -> tuple[folder.FolderLock, folder.Claim]:
    """Create, lock and claim the checkpoint folder (see folder), before any training time is spent."""
    checkpoint.prepare_directory(directory)
    lock = folder.FolderLock(directory)
    lock.acquire()
    try:
        removed = folder.remove_stale_temporary_files(directory)
        if removed:
            notes.append(f"removed {len(removed)} unfinished checkpoint write(s) left by a process that died")
        claim = folder.claim(directory, identity, checkpoint.read_identity, overwrite, advice)
    except BaseException:
        lock.release()
        raise
    return lock, claim


def open_session(request: TrainRequest, on_progress: token_cache.Progress = lambda done, total: None) -> Session:
    """Read the corpus and build or load the model; raises CharRNNError for anything the user can fix.

    ``on_progress(bytes_done, bytes_total)`` reports tokenizing a corpus that is not yet in the cache.

    The checkpoint folder is locked for the run (call ``Session.close`` at its end) and must not hold
    another model, nor a later stretch of the resumed model's life, unless ``overwrite`` (see
    folder): replacing another model's ``latest.npz`` by accident would lose it.
    """
    directory = _target_directory(request)
    request = dataclasses.replace(request, schedule=dataclasses.replace(request.schedule, checkpoint_dir=directory))
    created = not os.path.isdir(directory)
    notes: list[str] = []
    if request.resume is None:
        identity, ckpt = None, None
        advice = ("continue it with --resume {path}, write elsewhere with --checkpoint-dir, "
                  "or replace it with --overwrite")
    else:
        ckpt = checkpoint.load(request.resume)
        if not ckpt.resumable:
            raise CheckpointError(
                f"{request.resume} is a sampling-only checkpoint (charrnn export: no optimizer or stream state), "
                "so training cannot continue from it; resume the checkpoint it was exported from"
            )
        identity = checkpoint.Identity(ckpt.run_id, ckpt.progress.step)
        advice = "write elsewhere with --checkpoint-dir, or replace those files with --overwrite"
    existing = checkpoint.find_latest(directory)
    lock, claim = _secure_folder(directory, identity, request.overwrite, advice.format(path=existing), notes)
    try:
        session = _fresh(request, on_progress) if ckpt is None else _resumed(request, ckpt, on_progress)
    except BaseException:
        lock.release()  # removes the lock file
        if created:  # leave no empty folder behind for a run that never started
            with suppress(OSError):
                os.rmdir(directory)
        raise
    session.lock, session.claim = lock, claim
    session.notes[:0] = notes
    config = session.model_config
    if config.dropout > 0 and config.num_layers == 1:
        session.notes.append("--dropout acts between stacked layers; with one layer it has no effect")
    patience, waited = request.schedule.patience, session.trainee.progress.validations_since_best
    if session.val_ids is not None and patience and waited >= patience:
        session.notes.append(
            f"the model has had {waited} validations in a row without a new best, as many as --patience {patience} "
            "allows: it stops at its next validation unless that is a new best (--patience 0 never stops early)"
        )
    return session


def to_checkpoint(session: Session) -> Checkpoint:
    """The session's current state as a checkpoint."""
    trainee = session.trainee
    return Checkpoint(
        model_config=session.model_config,
        train_config=session.train_config,
        tokenizer=session.tokenizer,
        params=trainee.params,
        optimizer_state=trainee.optimizer_state,
        hidden=trainee.hidden,
        progress=trainee.progress,
        rng_state=trainee.rng.bit_generator.state,
        corpus=session.corpus,
        run_id=session.run_id,
        backend=session.trainee.kernels.name,
    )
