"""Opening a training session: lock the checkpoint folder, read the data, build or resume the model.

``open_session`` turns what the user asked for (a TrainRequest) into a Session ready to train, or
raises a CharRNNError saying what to fix; ``runner.run_session`` then trains it. Reading the corpus
into streams is corpus_data's job, what a resume may change is resume's, and the folder's lock and
claim are folder's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from charrnn import memory
from charrnn.checkpoints import checkpoint, metadata
from charrnn.checkpoints.checkpoint import Checkpoint, CorpusInfo
from charrnn.config import (
    DEFAULT_CHECKPOINT_DIR, DEFAULT_EPOCHS, ComputeConfig, DataConfig, ModelConfig, ScheduleConfig, TrainConfig,
)
from charrnn.data import token_cache
from charrnn.data.corpus import is_standard_input
from charrnn.data.streams import SegmentStreams
from charrnn.data.tokenizer import Tokenizer
from charrnn.errors import CheckpointError, ConfigError
from charrnn.model import backend, network, optim
from charrnn.mpi_environment import ranks_on_this_node
from charrnn.training import corpus_data, distributed, folder, loop, resume


@dataclass(frozen=True)
class TrainRequest:
    """What the user asked for: the corpus and every setting, as the configs they belong to.

    ``model`` has no vocabulary size yet (the corpus decides it). ``explicit`` names the settings the
    user gave: when resuming, only those are held against the checkpoint (resume.py), and a
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
    streams: Union[np.ndarray, SegmentStreams]  # (B, L) training token ids
    val_ids: Optional[np.ndarray]  # (N_val,) validation token ids; None when validation is off
    trainee: loop.Trainee  # the model, its optimizer state, carried hidden state, progress and generator
    run_id: str
    resumed_from: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    validation: str = ""  # what the validation text is (corpus_data.prepare_streams)
    lock: Optional[folder.FolderLock] = None  # held on the checkpoint folder until close()
    claim: Optional[folder.Claim] = None  # the previous run's files, removed after the first write
    group: distributed.Group = distributed.SOLO  # the processes training this model together (distributed.py)

    @property
    def checkpoint_dir(self) -> str:
        """The folder this run writes its checkpoints to."""
        return self.request.schedule.checkpoint_dir

    def close(self) -> None:
        """Release the checkpoint folder for other runs."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


# The options that size a model, and the field each sets: any of them can be what makes a model too
# large (an embedding of 10^8 as surely as a hidden size of 10^6), so a refusal names those that matter.
_MODEL_SIZES = (("--hidden-size", "hidden_size"), ("--num-layers", "num_layers"), ("--embed-size", "embed_size"),
                ("--max-vocab", "vocab_size"))


def _check_memory(model_config: ModelConfig, train_config: TrainConfig,
                  group: distributed.Group = distributed.SOLO) -> None:
    """Refuse (ConfigError) a model and batch that need more memory than the machine has available.

    The advice names the batch options when the activations are the largest part, and every model
    size option whose halving alone would save a tenth of the need or more. With several processes
    each holds the model and its share of the batch, and those on this machine (as the launcher says;
    all of them if it does not) need their parts together.
    """
    slots = len(optim.SLOTS[train_config.optimizer])
    here = min(group.size, ranks_on_this_node() or group.size)
    share = -(-train_config.batch_size // group.size)

    def need(config: ModelConfig) -> dict[str, int]:
        parts = network.training_memory(config, share, train_config.seq_length, slots)
        return {name: size * here for name, size in parts.items()}

    parts = need(model_config)
    total = sum(parts.values())
    model_sized = " or ".join(
        name for name, field in _MODEL_SIZES
        if getattr(model_config, field) > 1
        and total - sum(need(dataclasses.replace(model_config, **{field: getattr(model_config, field) // 2})).values())
        >= total / 10
    ) or "--hidden-size or --num-layers"
    if max(parts, key=parts.__getitem__) == "activations":
        advice = f"lower --batch-size or --seq-length (or {model_sized})"
    else:
        advice = f"lower {model_sized}"
    memory.require(parts, "training this model", advice)


def require_a_limit(train: TrainConfig, schedule: ScheduleConfig) -> None:
    """ConfigError unless something says when training stops: --steps, --epochs or --max-seconds (a model
    trained on a budget alone records no step or epoch limit, so its resume needs one again)."""
    if train.max_steps is None and train.max_epochs is None and schedule.max_seconds is None:
        raise ConfigError("give --steps, --epochs or --max-seconds to say when training stops")


def _fresh(request: TrainRequest, on_progress: token_cache.Progress, group: distributed.Group) -> Session:
    notes: list[str] = []
    train_config = request.train
    require_a_limit(train_config, request.schedule)
    if "look_ahead" in request.explicit and not request.model.bidirectional:
        raise ConfigError("--look-ahead is how far a --bidirectional model's right-to-left stack reads past each "
                          "window; give --bidirectional too, or leave --look-ahead out")
    if request.val_paths:
        if "val_fraction" in request.explicit and train_config.val_fraction:
            raise ConfigError("give --val-fraction or --val-file, not both")
        train_config = dataclasses.replace(train_config, val_fraction=0.0)
    # Before tokenizing, with the smallest vocabulary: a model too large at any vocabulary is refused
    # at once rather than after minutes of work.
    _check_memory(dataclasses.replace(request.model, vocab_size=1), train_config, group)
    tokenizer, ids, val_ids, corpus = corpus_data.read_training_data(
        request.data, request.corpus_paths, request.val_paths, None, request.data.tokenizer, request.data.max_vocab,
        on_progress, notes, request.schedule.eval_tokens,
    )
    model_config = dataclasses.replace(request.model, vocab_size=tokenizer.vocab_size)
    train_config = train_config.settled(model_config)
    shrinkable = "batch_size" not in request.explicit
    if request.val_paths and "val_split" in request.explicit:
        raise ConfigError("give --val-split or --val-file, not both")
    streams, val_ids, train_config, validation, train_tokens = corpus_data.prepare_streams(
        ids, val_ids, train_config, shrinkable, notes, corpus_data.line_end_id(tokenizer), request.schedule.eval_tokens,
        group.size,
    )
    corpus = dataclasses.replace(corpus, num_train_tokens=train_tokens)
    _check_memory(model_config, train_config, group)
    trainee = loop.new_trainee(model_config, train_config, backend.select(request.compute.backend))
    run_id = metadata.run_identity(model_config, train_config, tokenizer)
    return Session(request, model_config, train_config, tokenizer, corpus, streams, val_ids, trainee, run_id, None, notes,
                   validation)


def _resumed(request: TrainRequest, ckpt: Checkpoint, on_progress: token_cache.Progress) -> Session:
    path = request.resume
    stored = {**dataclasses.asdict(ckpt.model_config), **dataclasses.asdict(ckpt.train_config)}
    stored.update(tokenizer=ckpt.tokenizer.kind, max_vocab=ckpt.corpus.max_vocab)
    given = {**dataclasses.asdict(request.model), **dataclasses.asdict(request.train), **dataclasses.asdict(request.data)}
    resume.check_conflicts(given, request.explicit, stored)
    train_config, notes = resume.resumed_train_config(ckpt.train_config, request.train, request.explicit)
    require_a_limit(train_config, request.schedule)
    paths = request.corpus_paths or ckpt.corpus.paths
    if not request.corpus_paths and any(is_standard_input(p) for p in paths):
        # Reading it now would wait on the terminal for text that is long gone.
        raise ConfigError(
            f"{path} was trained on text from standard input, which cannot be read again; pass the corpus "
            f"again, e.g. charrnn train - --resume {path} < corpus.txt"
        )
    val_paths = request.val_paths or ckpt.corpus.val_paths
    if not request.val_paths and any(is_standard_input(p) for p in val_paths):
        raise ConfigError(
            f"{path} was validated on text from standard input, which cannot be read again; pass it again, "
            f"e.g. charrnn train --resume {path} --val-file - < held_out.txt"
        )
    if val_paths and ckpt.train_config.val_fraction > 0:
        raise ConfigError("this model holds out --val-fraction of its corpus; it cannot also take --val-file")
    _, ids, val_ids, corpus = corpus_data.read_training_data(
        request.data, paths, val_paths, ckpt.tokenizer, ckpt.tokenizer.kind, ckpt.corpus.max_vocab, on_progress, notes,
        request.schedule.eval_tokens,
    )
    streams, val_ids, _, validation, train_tokens = corpus_data.prepare_streams(
        ids, val_ids, train_config, False, notes, corpus_data.line_end_id(ckpt.tokenizer), request.schedule.eval_tokens
    )
    corpus = dataclasses.replace(corpus, num_train_tokens=train_tokens)
    progress, hidden = ckpt.progress, ckpt.hidden
    same_data = corpus.sha256 == ckpt.corpus.sha256
    if not same_data and corpus.ids_dtype != ckpt.corpus.ids_dtype:
        # Fingerprinted in another id type (older checkpoints hashed int32 ids): compare in that type.
        same_data = corpus_data.fingerprint(ids, ckpt.corpus.ids_dtype) == ckpt.corpus.sha256
    if same_data and progress.position + train_config.seq_length + 1 > streams.shape[1]:
        # Its metadata put the position inside the streams of the corpus it claims (metadata).
        raise CheckpointError(f"{path} is inconsistent: its position {progress.position} is past the end of "
                              "the streams of the corpus it was trained on; use another checkpoint")
    if not same_data:
        # Positions in other text mean nothing: start its streams from the beginning.
        notes.append("the corpus differs from the one the checkpoint was trained on; starting at its beginning")
        progress = dataclasses.replace(progress, position=0)
        hidden = {key: np.zeros_like(value) for key, value in hidden.items()}
    if "learning_rate" in request.explicit and (progress.lr_reductions or progress.anneal_fraction):
        notes.append("--learning-rate starts the learning-rate schedule over: no plateau reductions, no anneal yet")
        progress = dataclasses.replace(progress, lr_reductions=0, anneal_fraction=0.0)
    rng = np.random.default_rng()
    rng.bit_generator.state = ckpt.rng_state
    trainee = loop.Trainee(
        ckpt.model_config, ckpt.params, ckpt.optimizer_state, hidden, progress, rng,
        kernels=backend.select(request.compute.backend),
    )
    return Session(
        request, ckpt.model_config, train_config, ckpt.tokenizer, corpus, streams, val_ids, trainee, ckpt.run_id, path,
        notes, validation,
    )


def _checkpoint_to_resume(path: str) -> Checkpoint:
    """The checkpoint ``path``, refused (CheckpointError) if it cannot be trained on."""
    ckpt = checkpoint.load(path)
    if not ckpt.resumable:
        raise CheckpointError(
            f"{path} is a sampling-only checkpoint (charrnn export: no optimizer or stream state), "
            "so training cannot continue from it; resume the checkpoint it was exported from"
        )
    return ckpt


def _secure(request: TrainRequest, ckpt: Optional[Checkpoint], notes: list[str]
            ) -> tuple[folder.FolderLock, folder.Claim, list[str], str]:
    """Lock the folder the run writes to: (lock, claim, folders created, the folder)."""
    directory = folder.target_directory(request.resume, request.schedule.checkpoint_dir)
    if ckpt is None:
        identity = None
        # --resume of the folder continues from its newest checkpoint, whichever file that is.
        advice = (f"continue it with --resume {directory}, write elsewhere with --checkpoint-dir, "
                  "or replace it with --overwrite")
    else:
        identity = checkpoint.Identity(ckpt.run_id, ckpt.progress.step)
        advice = "write elsewhere with --checkpoint-dir, or replace those files with --overwrite"
    if directory is None:
        if request.overwrite:
            notes.append("--overwrite replaces checkpoints only in a --checkpoint-dir given; a new run without one "
                         "gets a folder of its own")
        name = folder.run_folder_name(request.corpus_paths)
        lock, claim, created = folder.secure_run_folder(DEFAULT_CHECKPOINT_DIR, name, notes)
        return lock, claim, created, claim.directory
    created = [] if os.path.isdir(directory) else [directory]
    lock, claim = folder.secure(directory, identity, request.overwrite, advice, notes)
    return lock, claim, created, directory


def _require_files_for_every_process(request: TrainRequest, group: distributed.Group) -> None:
    """Refuse standard input in a run on several processes: it reaches only one of them."""
    if group.size > 1 and any(is_standard_input(p) for p in (*request.corpus_paths, *request.val_paths)):
        raise ConfigError(
            "standard input (-) reaches only the first process of an MPI job; save the text to a file and "
            "give its name, so that every process can read it"
        )


def _share_batch(session: Session, group: distributed.Group) -> None:
    """Give this process its streams of the batch and their hidden state (every stream, for one process)."""
    session.group = group
    if group.size == 1:
        return
    batch_size = session.train_config.batch_size
    rows = distributed.streams_of_rank(batch_size, group)
    trainee = session.trainee
    trainee.rows = rows
    trainee.hidden = {name: np.ascontiguousarray(state[rows]) for name, state in trainee.hidden.items()}
    session.notes.append(
        f"training on {group.size} processes of an MPI job, {batch_size // group.size} of the {batch_size} streams each"
    )


def _run_description(session: Session) -> bytes:
    """What every process of a run must share, hashed by ``distributed.require_same_run``: the settings, the
    vocabulary, the data, where training stands and the model itself."""
    request, trainee = session.request, session.trainee
    schedule = dataclasses.asdict(request.schedule)
    del schedule["checkpoint_dir"]  # the root's choice alone: it is the only one that writes
    data = dataclasses.asdict(request.data)
    del data["cache_dir"]  # each machine may keep its own cache
    validation = None if session.val_ids is None else hashlib.sha256(np.ascontiguousarray(session.val_ids).data)
    return json.dumps({
        "model": dataclasses.asdict(session.model_config),
        "train": dataclasses.asdict(session.train_config),
        "data": data,
        "schedule": schedule,
        "backend": trainee.kernels.name,
        "tokenizer": session.tokenizer.to_dict(),
        "corpus": [session.corpus.sha256, int(session.streams.size)],
        "validation": None if validation is None else validation.hexdigest(),
        "progress": dataclasses.asdict(trainee.progress),
        "parameters": distributed.parameters_digest(trainee.params).hex(),
    }, sort_keys=True, default=str).encode()


def open_session(
    request: TrainRequest,
    on_progress: token_cache.Progress = lambda done, total: None,
    group: distributed.Group = distributed.SOLO,
) -> Session:
    """Read the corpus and build or load the model; raises CharRNNError for anything the user can fix.

    ``on_progress(bytes_done, bytes_total)`` reports tokenizing a corpus that is not yet in the cache.

    The checkpoint folder is locked for the run (call ``Session.close`` at its end) and must not hold
    another model, nor a later stretch of the resumed model's life, unless ``overwrite`` (see
    folder): replacing another model's ``latest.npz`` by accident would lose it. A new run given no
    folder gets a new one of its own under checkpoints/ (``folder.secure_run_folder``).

    With several processes (``group``, training/distributed.py) the root alone locks the folder, then
    reads the corpus first, filling the token cache, which the others then read from. Each stage ends
    with the processes comparing outcomes, so that an error in any of them ends all of them with it; at
    the end they compare settings, data and models, and any difference is a ConfigError in all of them.
    """
    notes: list[str] = []
    lock: Optional[folder.FolderLock] = None
    claim: Optional[folder.Claim] = None
    created: list[str] = []
    directory = ""
    try:
        with distributed.together(group):
            _require_files_for_every_process(request, group)
            ckpt = None if request.resume is None else _checkpoint_to_resume(request.resume)
            distributed.streams_of_rank((request.train if ckpt is None else ckpt.train_config).batch_size, group)
            if group.is_root:
                lock, claim, created, directory = _secure(request, ckpt, notes)
        directory = group.text_from_rank(directory)
        request = dataclasses.replace(request, schedule=dataclasses.replace(request.schedule, checkpoint_dir=directory))
        session: Optional[Session] = None
        for root_turn in (True, False):  # the root fills the token cache; the others then read it from there
            with distributed.together(group):
                if group.is_root == root_turn:
                    session = _fresh(request, on_progress, group) if ckpt is None else _resumed(request, ckpt, on_progress)
        assert session is not None
        with distributed.together(group):
            _share_batch(session, group)
        distributed.require_same_run(_run_description(session), group)
    except BaseException:
        if lock is not None:
            lock.release()  # removes the lock file
        for path in created:  # leave no empty folder behind for a run that never started
            with suppress(OSError):
                os.rmdir(path)
        raise
    session.lock, session.claim = lock, claim
    session.notes[:0] = notes
    config = session.model_config
    if config.dropout > 0 and config.num_layers == 1:
        session.notes.append("--dropout acts between stacked layers; with one layer it has no effect")
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
