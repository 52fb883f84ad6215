"""Checkpoints: one ``.npz`` file with every array and a JSON metadata entry, written atomically.

The format and its reading and writing; the files of a checkpoint folder are folder_files.py's.

Layout of the archive, format 4 (each entry a plain numeric ``.npy``; nothing is ever pickled)::

    meta          uint8   UTF-8 JSON: format, versions, configs, tokenizer, corpus, progress, RNG
    param.<name>  float   model parameters (W_xe with an embedding size, W_xh, W_hh, b_h, ..., W_hy, b_y; a
                          bidirectional model's right-to-left stack as W_xh.back, W_hh.back, ..., W_hy.back)
    optim.<key>   float   optimizer state: <slot>.<parameter> (sum_sq.W_hy, m.W_hy, ...), Adam's step
    state.<key>   float   (B, H) recurrent state of the training streams per layer: h.0, c.0, h.1, ...

Older formats are migrated on load: format 1 (charrnn 0.1: one vanilla layer, Adagrad,
``optim.<parameter>`` and ``state.hidden``), format 2 (the same entries as format 3; both lack
``model.embed_size``, as both hold the one-table model: embedding size 0) and format 3 (no
``model.bidirectional`` nor ``train.look_ahead``: a left-to-right model). The carried ``state.`` entries of
a bidirectional model are its forward stack's: the backward stack starts every window from zero.

A sampling-only checkpoint (``export``, the metadata's ``"contents": "model"``) holds the same metadata
and the ``param.`` entries only: enough to sample and score, not to continue training.

The file holds no timestamps, so the same seeded run writes the same bytes. Loading uses
``allow_pickle=False`` and checks every entry, so a file from a stranger can fail to
load but can never run code.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from charrnn import __version__, files
from charrnn.checkpoints import metadata
from charrnn.model import network, optim
from charrnn.checkpoints.metadata import FORMAT_NAME, FORMAT_VERSION, MODEL, TRAINING, Metadata
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CharRNNError, CheckpointError, CheckpointWriteError, TrainingError
from charrnn.checkpoints.archive import NpzArchive, open_archive
from charrnn.data.tokenizer import Tokenizer
from charrnn.progress import Progress

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class CorpusInfo:
    """Which text a model was trained on, so a resumed run can tell whether it sees the same data."""

    paths: tuple[str, ...] = ()
    encodings: tuple[str, ...] = ()
    num_tokens: int = 0  # of the corpus (training text and any held-out fraction)
    sha256: str = ""  # of the corpus token ids, stored as ids_dtype
    val_paths: tuple[str, ...] = ()  # a separate validation text (--val-file), if any
    ids_dtype: str = "<i4"
    max_vocab: Optional[int] = None  # --max-vocab the vocabulary was built with
    num_train_tokens: Optional[int] = None  # left for training after the validation split (None in older files)


@dataclass
class Checkpoint:
    """Everything needed to sample from a model or to continue training it exactly."""

    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Tokenizer
    params: network.Params
    optimizer_state: optim.OptimizerState
    hidden: network.Hidden
    progress: Progress
    rng_state: dict[str, Any]
    corpus: CorpusInfo
    run_id: str  # the model's identity, the same in every checkpoint of its life (see run_identity)
    backend: Optional[str] = None  # the kernels ("numpy", "numba") of the run that wrote it; None: not recorded
    charrnn_version: str = __version__
    format_version: int = FORMAT_VERSION  # as stored in the file, before any migration
    contents: str = TRAINING  # MODEL: sampling-only, with no optimizer or stream state (see export)

    @property
    def resumable(self) -> bool:
        """True if training can continue from this checkpoint (it holds the optimizer and stream state)."""
        return self.contents == TRAINING

    def __post_init__(self) -> None:
        # The file records the learning rate the model trains at, never "the default".
        self.train_config = self.train_config.settled(self.model_config)


@dataclass(frozen=True)
class Identity:
    """Which run a checkpoint belongs to and how far it had trained (and its best validation loss)."""

    run_id: str
    step: int
    best_val_loss_nats: Optional[float] = None


# --- writing ------------------------------------------------------------------------------------------


def _metadata(ckpt: Checkpoint) -> dict[str, Any]:
    # A full checkpoint writes no "contents", so its bytes are those of the files before the field existed.
    contents = {} if ckpt.resumable else {"contents": ckpt.contents}
    return {
        **contents,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "charrnn_version": ckpt.charrnn_version,
        "run_id": ckpt.run_id,
        "backend": ckpt.backend,
        "model": dataclasses.asdict(ckpt.model_config),
        "train": dataclasses.asdict(ckpt.train_config),
        "tokenizer": ckpt.tokenizer.to_dict(),
        "corpus": dataclasses.asdict(ckpt.corpus),
        "progress": dataclasses.asdict(ckpt.progress),
        "smoothed_loss_nats": files.finite_or_none(ckpt.progress.smoothed_loss_nats),
        "rng_state": ckpt.rng_state,
    }


def to_bytes(ckpt: Checkpoint) -> bytes:
    """The checkpoint serialized as ``.npz`` bytes."""
    # A corpus name that is not UTF-8 is written with escapes that loading turns back into that name.
    meta = files.json_bytes(_metadata(ckpt), sort_keys=True)
    arrays = {"meta": np.frombuffer(meta, dtype=np.uint8)}
    arrays.update({f"param.{name}": value for name, value in ckpt.params.items()})
    arrays.update({f"optim.{name}": value for name, value in ckpt.optimizer_state.items()})
    arrays.update({f"state.{name}": value for name, value in ckpt.hidden.items()})
    buffer = io.BytesIO()
    # Written entry by entry rather than with np.savez, which stamps every entry with the current
    # time: a fixed timestamp makes a seeded run's checkpoints identical byte for byte.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asarray(value, order="C"), allow_pickle=False)
    return buffer.getvalue()


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` always holds either the old or the new content.

    Raises CheckpointWriteError (the previous file left in place) if the write fails.
    """
    try:
        files.atomic_write(path, data)
    except OSError as exc:
        raise CheckpointWriteError(
            f"cannot write checkpoint {path}: {exc.strerror or exc}; the previous checkpoint is untouched"
        ) from None


# The largest magnitude an array of each kind may hold, in a checkpoint loaded or saved. Far beyond any
# trained model (docs/reliability.md, "Loaded arrays": the weights of trained models stay below 10,
# and each optimizer step moves a weight by at most about the learning rate, the gradients being
# clipped elementwise), yet so far below float32's 3.4e38 that no sum a forward pass forms can overflow
# (a layer sums at most about 10^5 products of a weight and an input each below 10^4: < 10^13). An LSTM's
# cell state may legitimately add up to one per token over a long stream, so carried state gets more
# room; Adagrad's sums of squares grow with the steps (at most clip² per step) and get the most.
MAX_ABS_PARAMETER = 1e4
MAX_ABS_HIDDEN_STATE = 1e6
MAX_ABS_OPTIMIZER_STATE = 1e30
_BOUNDS = {"parameter": MAX_ABS_PARAMETER, "optimizer state": MAX_ABS_OPTIMIZER_STATE,
           "hidden state": MAX_ABS_HIDDEN_STATE}
# Optimizer state that is a sum or mean of squares (or Adam's step count): never negative, and a
# negative value would make the update divide by the square root of a negative number.
_NON_NEGATIVE_SLOTS = ("sum_sq.", "mean_sq.", "v.")
_SCAN_BLOCK = 1 << 16  # elements scanned at a time: a block's temporaries stay in the cache


def array_problem(kind: str, name: str, value: np.ndarray) -> Optional[str]:
    """Why ``value``, the ``kind`` array ``name`` ("parameter", "optimizer state" or "hidden state"), is
    unusable (NaN, infinity, a magnitude beyond ``_BOUNDS[kind]``, a negative sum of squares), or None.

    One pass over the array, a block at a time, allocating no more than a block.
    """
    bound = _BOUNDS[kind]
    non_negative = kind == "optimizer state" and (name == "step" or name.startswith(_NON_NEGATIVE_SLOTS))
    flat = value.reshape(-1)
    with np.errstate(invalid="ignore"):
        for start in range(0, flat.size, _SCAN_BLOCK):
            block = flat[start:start + _SCAN_BLOCK]
            magnitudes = np.abs(block)
            if not magnitudes.max() <= bound:  # NaN fails every comparison
                if np.isnan(magnitudes).any():
                    return "is not finite (NaN)"
                worst = block[np.argmax(magnitudes)]
                if np.isinf(worst):
                    return "is not finite (infinity)"
                return f"holds {worst:.3g}, beyond ±{bound:.0e}, which no trained model comes near"
            if non_negative and block.min() < 0:
                return f"holds {block.min():.3g}, but as a sum of squares can never be negative"
    return None


def _arrays(ckpt: Checkpoint) -> Iterator[tuple[str, str, np.ndarray]]:
    for kind, arrays in (("parameter", ckpt.params), ("optimizer state", ckpt.optimizer_state),
                         ("hidden state", ckpt.hidden)):
        for name, value in arrays.items():
            yield kind, name, value


def require_finite(ckpt: Checkpoint) -> None:
    """Raise TrainingError if any parameter, optimizer slot or carried state is NaN, infinite or beyond
    the bounds ``load`` holds every checkpoint to (``array_problem``).

    Such a model is garbage that samples garbage; writing it would replace the last good checkpoint
    with a file that could not even be loaded.
    """
    for kind, name, value in _arrays(ckpt):
        problem = array_problem(kind, name, value)
        if problem is not None:
            raise TrainingError(
                f"the model's {kind} {name} {problem} at step {ckpt.progress.step}: training "
                "diverged; nothing was saved over the last checkpoint; try a lower --learning-rate"
            )


def write(ckpt: Checkpoint, path: str) -> None:
    """Write ``ckpt`` to ``path`` atomically, after checking that every array in it is finite."""
    require_finite(ckpt)
    atomic_write(path, to_bytes(ckpt))


def export(ckpt: Checkpoint) -> Checkpoint:
    """``ckpt`` for sampling only: the model, its vocabulary and its history, without the optimizer
    state and the training streams' state (most of a trained checkpoint's size with Adagrad)."""
    return dataclasses.replace(ckpt, optimizer_state={}, hidden={}, contents=MODEL)


# --- reading ------------------------------------------------------------------------------------------


def _read_meta(archive: NpzArchive) -> Metadata:
    if "meta" not in archive.entries:
        raise CheckpointError(f"{archive.path} is not a charrnn checkpoint (no metadata entry)")
    shape, dtype, _ = archive.headers["meta"]
    if dtype != np.uint8 or len(shape) != 1:
        raise CheckpointError(f"{archive.path} has a malformed metadata entry")
    if shape[0] > metadata.META_MAX_BYTES:
        raise CheckpointError(f"{archive.path} has {shape[0]:,} bytes of metadata, more than any checkpoint "
                              f"holds ({metadata.META_MAX_BYTES:,}); refusing it")
    archive.require("meta", shape, "uint8")
    raw = archive.read("meta").tobytes()
    return metadata.validate(archive.path, metadata.decode(archive.path, raw))


def _current_name(format_version: int, name: str) -> str:
    """Today's name of entry ``name`` of a file in checkpoint format ``format_version``."""
    if format_version == 1:  # one vanilla layer trained with Adagrad
        if name == "state.hidden":
            return "state.h.0"
        if name.startswith("optim."):
            return "optim.sum_sq." + name[len("optim."):]
    return name


def _expected_entries(meta: Metadata) -> dict[str, tuple[tuple[int, ...], str]]:
    model_config, train_config = meta.model_config, meta.train_config
    dtype = model_config.dtype
    shapes = network.param_shapes(model_config)
    expected = {f"param.{n}": (s, dtype) for n, s in shapes.items()}
    if meta.contents == MODEL:
        return expected
    for name, shape in optim.state_layout(train_config.optimizer, shapes).items():
        expected[f"optim.{name}"] = (shape, "int64" if name == "step" else dtype)
    for name in network.initial_hidden(model_config, 0):
        expected[f"state.{name}"] = ((train_config.batch_size, model_config.hidden_size), dtype)
    return expected


def load(path: str) -> Checkpoint:
    """Read and validate a checkpoint (migrating older formats); raises CheckpointError saying what is wrong.

    Everything is checked before any array is inflated: the zip directory and every .npy header
    (npz_archive: sizes, compression, no pickled objects), the metadata field by field
    (metadata), and every entry's name, shape, dtype and size against what the metadata's model
    needs. So a crafted file costs at most its metadata's size in memory before it is refused, and
    can never run code. Then every array's values (``array_problem``: finite, within bounds), so
    no command samples, scores or trains with a NaN, an infinity or a weight of 3e38; arrays come
    back C-contiguous and writeable whatever their stored layout (archive.NpzArchive.read).
    """
    with open_archive(path) as archive:
        meta = _read_meta(archive)
        expected = _expected_entries(meta)
        current = {name: _current_name(meta.format_version, name) for name in archive.entries if name != "meta"}
        stored = {now: name for name, now in current.items()}
        missing = sorted(set(expected) - set(stored))
        extra = sorted(name for name, now in current.items() if now not in expected or stored[now] != name)
        if missing or extra:  # an entry whose format-1 name and current name both appear is extra too
            raise CheckpointError(f"{path} does not match its model (missing {missing}, unexpected {extra})")
        for name, (shape, dtype) in expected.items():
            archive.require(stored[name], shape, dtype)
        arrays = {name: archive.read(stored[name]) for name in expected}

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}

    ckpt = Checkpoint(
        model_config=meta.model_config,
        train_config=meta.train_config,
        tokenizer=meta.tokenizer,
        params=group("param."),
        optimizer_state=group("optim."),
        hidden=group("state."),
        progress=meta.progress,
        rng_state=meta.rng_state,
        corpus=CorpusInfo(**meta.corpus),
        run_id=meta.run_id,
        backend=meta.backend,
        charrnn_version=meta.charrnn_version,
        format_version=meta.format_version,
        contents=meta.contents,
    )
    for kind, name, value in _arrays(ckpt):
        problem = array_problem(kind, name, value)
        if problem is not None:
            raise CheckpointError(f"{path}: its {kind} {name} {problem}; the file is damaged or was not "
                                  "written by charrnn; use another checkpoint")
    return ckpt


def read_metadata(path: str) -> Metadata:
    """The validated metadata of the checkpoint at ``path``, without reading its arrays (cheap for a
    folder of large files); raises CheckpointError as ``load`` does for the metadata."""
    with open_archive(path) as archive:
        return _read_meta(archive)


def read_identity(path: str) -> Optional[Identity]:
    """Whose checkpoint ``path`` is (run identity and step), or None if it cannot be read as one.

    Reads and checks only the metadata entry, so looking over a folder of large checkpoints stays cheap.
    """
    try:
        meta = read_metadata(path)
    except CharRNNError:
        return None
    return Identity(meta.run_id, meta.progress.step, meta.progress.best_val_loss_nats)
