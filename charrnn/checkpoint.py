"""Checkpoints: one ``.npz`` file with every array and a JSON metadata entry, written atomically.

Layout of the archive, format 2 (each entry a plain numeric ``.npy``; nothing is ever pickled)::

    meta          uint8   UTF-8 JSON: format, versions, configs, tokenizer, corpus, progress, RNG
    param.<name>  float   model parameters (W_xh, W_hh, b_h, ..., W_hy, b_y)
    optim.<key>   float   optimizer state: <slot>.<parameter> (sum_sq.W_hy, m.W_hy, ...), Adam's step
    state.<key>   float   (B, H) recurrent state of the training streams per layer: h.0, c.0, h.1, ...

Format 1 (charrnn 0.1: one vanilla layer, Adagrad, ``optim.<parameter>`` and ``state.hidden``) is
migrated on load.

The file holds no timestamps, so the same seeded run writes the same bytes. Loading uses
``allow_pickle=False`` and checks every entry, so a file from a stranger can fail to
load but can never run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
import zlib
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from charrnn import __version__, files, model, optim
from charrnn.config import ModelConfig, TrainConfig, from_dict
from charrnn.errors import CharRNNError, CheckpointError, CheckpointWriteError, ConfigError, TrainingError
from charrnn.run_folder import Identity
from charrnn.tokenizer import Tokenizer
from charrnn.train import Progress

FORMAT_NAME = "charrnn-checkpoint"
FORMAT_VERSION = 2
LATEST_NAME = "latest.npz"
BEST_NAME = "best.npz"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_STEP_NAME = re.compile(r"^step_(\d+)\.npz$")


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


@dataclass
class Checkpoint:
    """Everything needed to sample from a model or to continue training it exactly."""

    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Tokenizer
    params: model.Params
    optimizer_state: optim.OptimizerState
    state: model.State
    progress: Progress
    rng_state: dict[str, Any]
    corpus: CorpusInfo
    run_id: str  # the model's identity, the same in every checkpoint of its life (see run_identity)
    charrnn_version: str = __version__
    format_version: int = FORMAT_VERSION  # as stored in the file, before any migration


def run_identity(model_config: ModelConfig, train_config: TrainConfig, tokenizer: Tokenizer) -> str:
    """A model's identity: a hash of what is fixed for its whole life (shape, vocabulary, seed, batching).

    Derived rather than drawn at random, so that the same seeded command still writes the same bytes;
    two runs share it only if they train the same model from the same seed, step for step.
    """
    fixed = {
        "model": dataclasses.asdict(model_config),
        "train": {name: getattr(train_config, name) for name in ("rng_seed", "batch_size", "seq_length", "optimizer")},
        "tokenizer": tokenizer.to_dict(),
    }
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def step_filename(step: int) -> str:
    """File name of the checkpoint written at ``step``."""
    return f"step_{step:08d}.npz"


# --- writing ------------------------------------------------------------------------------------------


def _metadata(ckpt: Checkpoint) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "charrnn_version": ckpt.charrnn_version,
        "run_id": ckpt.run_id,
        "model": dataclasses.asdict(ckpt.model_config),
        "train": dataclasses.asdict(ckpt.train_config),
        "tokenizer": ckpt.tokenizer.to_dict(),
        "corpus": dataclasses.asdict(ckpt.corpus),
        "progress": dataclasses.asdict(ckpt.progress),
        "smoothed_loss_nats": _json_float(ckpt.progress.smoothed_loss_nats),
        "rng_state": ckpt.rng_state,
    }


def _json_float(value: float) -> Optional[float]:
    return value if np.isfinite(value) else None


def to_bytes(ckpt: Checkpoint) -> bytes:
    """The checkpoint serialized as ``.npz`` bytes."""
    # A corpus name that is not UTF-8 is written with escapes that loading turns back into that name.
    meta = files.json_bytes(_metadata(ckpt), sort_keys=True)
    arrays = {"meta": np.frombuffer(meta, dtype=np.uint8)}
    arrays.update({f"param.{name}": value for name, value in ckpt.params.items()})
    arrays.update({f"optim.{name}": value for name, value in ckpt.optimizer_state.items()})
    arrays.update({f"state.{name}": value for name, value in ckpt.state.items()})
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


def require_finite(ckpt: Checkpoint) -> None:
    """Raise TrainingError if any parameter, optimizer slot or carried state is NaN or infinite.

    Such a model is garbage that samples garbage; writing it would replace the last good checkpoint.
    """
    groups = (("parameter", ckpt.params), ("optimizer state", ckpt.optimizer_state), ("state", ckpt.state))
    for kind, arrays in groups:
        for name, value in arrays.items():
            if not np.isfinite(value).all():
                raise TrainingError(
                    f"the model's {kind} {name} is no longer finite at step {ckpt.progress.step}: training "
                    "diverged; nothing was saved over the last checkpoint; try a lower --learning-rate"
                )


def write(ckpt: Checkpoint, path: str) -> None:
    """Write ``ckpt`` to ``path`` atomically, after checking that every array in it is finite."""
    require_finite(ckpt)
    atomic_write(path, to_bytes(ckpt))


def prepare_directory(directory: str) -> None:
    """Create ``directory`` if needed and prove it is writable, before any training time is spent."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        # Found before any training: bad input (exit 2), unlike a write that fails later.
        raise ConfigError(
            f"cannot write checkpoints to {directory}: {exc.strerror or exc}; "
            "choose another folder with --checkpoint-dir"
        ) from None


def step_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, path) of the ``step_*.npz`` files in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted((int(m.group(1)), os.path.join(directory, name)) for name in names if (m := _STEP_NAME.match(name)))


def save(ckpt: Checkpoint, directory: str) -> str:
    """Write ``ckpt`` as ``step_<step>.npz`` and ``latest.npz`` in ``directory``; return the latter.

    Raises TrainingError, writing nothing, if any array is not finite (see ``require_finite``).
    """
    require_finite(ckpt)
    data = to_bytes(ckpt)
    # latest.npz first: a crash between the two writes then leaves it the newest file, the one to resume.
    latest = os.path.join(directory, LATEST_NAME)
    atomic_write(latest, data)
    atomic_write(os.path.join(directory, step_filename(ckpt.progress.step)), data)
    return latest


def prune_step_files(directory: str, keep: int) -> None:
    """Remove the step checkpoints beyond the ``keep`` newest (0: keep all); never latest or best."""
    if keep > 0:
        for _, path in step_checkpoints(directory)[:-keep]:
            with suppress(OSError):
                os.unlink(path)


# --- reading ------------------------------------------------------------------------------------------


def find_latest(directory: str) -> Optional[str]:
    """The newest checkpoint in ``directory``: ``latest.npz``, else the highest step file, else None."""
    latest = os.path.join(directory, LATEST_NAME)
    if os.path.isfile(latest):
        return latest
    steps = step_checkpoints(directory)
    return steps[-1][1] if steps else None


def _read_entries(path: str) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":
            what = "empty" if not magic else "not an .npz archive"
            raise CheckpointError(f"{path} is not a charrnn checkpoint ({what}; truncated or the wrong file?)")
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except CharRNNError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CheckpointError(
                f"{path} holds pickled Python objects; refusing to load it (unpickling can run code)"
            ) from None
        raise CheckpointError(f"{path} is corrupt ({exc})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); use an earlier checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - whatever a crafted archive makes numpy raise, say so plainly
        raise CheckpointError(f"{path} is corrupt ({type(exc).__name__}: {exc})") from None


def _decode_meta(path: str, raw: np.ndarray) -> dict[str, Any]:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path} has a malformed metadata entry")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has unreadable metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a charrnn checkpoint")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {version}, newer than this charrnn "
            f"({__version__}, format {FORMAT_VERSION}) reads; upgrade charrnn"
        )
    return meta


def _migrate(meta: dict[str, Any], entries: dict[str, np.ndarray]) -> None:
    """Bring a format-1 checkpoint to format 2, in place."""
    if meta["format_version"] == 1:
        # Format 1 had one vanilla layer trained with Adagrad on all of the text.
        meta.setdefault("train", {})["val_fraction"] = 0.0
        for name in [n for n in entries if n.startswith("optim.")]:
            entries["optim.sum_sq." + name[len("optim."):]] = entries.pop(name)
        if "state.hidden" in entries:
            entries["state.h.0"] = entries.pop("state.hidden")
        meta["format_version"] = 2


def _check_array(path: str, name: str, value: np.ndarray, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if value.shape != shape or value.dtype != np.dtype(dtype):
        raise CheckpointError(
            f"{path}: entry {name} has shape {value.shape} and dtype {value.dtype}, "
            f"but the model needs {shape} {dtype}"
        )
    return value


def _expected_entries(model_config: ModelConfig, train_config: TrainConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    dtype = model_config.dtype
    shapes = model.param_shapes(model_config)
    expected = {f"param.{n}": (s, dtype) for n, s in shapes.items()}
    for name, shape in optim.state_layout(train_config.optimizer, shapes).items():
        expected[f"optim.{name}"] = (shape, "int64" if name == "step" else dtype)
    for name in model.initial_state(model_config, 0):
        expected[f"state.{name}"] = ((train_config.batch_size, model_config.hidden_size), dtype)
    return expected


def load(path: str) -> Checkpoint:
    """Read and validate a checkpoint (migrating older formats); raises CheckpointError saying what is wrong."""
    entries = _read_entries(path)
    if "meta" not in entries:
        raise CheckpointError(f"{path} is not a charrnn checkpoint (no metadata entry)")
    meta = _decode_meta(path, entries.pop("meta"))
    stored_version = meta["format_version"]
    try:
        _migrate(meta, entries)
        model_config = from_dict(ModelConfig, meta["model"])
        train_config = from_dict(TrainConfig, meta["train"])
        tokenizer = Tokenizer.from_dict(meta["tokenizer"])
        progress = from_dict(Progress, meta["progress"])
        corpus = meta.get("corpus") or {}
        corpus_info = CorpusInfo(
            tuple(corpus.get("paths", ())),
            tuple(corpus.get("encodings", ())),
            int(corpus.get("num_tokens", 0)),
            str(corpus.get("sha256", "")),
            tuple(corpus.get("val_paths", ())),
            str(corpus.get("ids_dtype", "<i4")),
            corpus.get("max_vocab"),
        )
        rng_state = meta["rng_state"]
    except CharRNNError as exc:
        raise CheckpointError(f"{path} has invalid settings: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path} has incomplete metadata (missing {exc})") from None
    if tokenizer.vocab_size != model_config.vocab_size:
        raise CheckpointError(
            f"{path}: vocabulary of {tokenizer.vocab_size} tokens for a model of {model_config.vocab_size}"
        )

    expected = _expected_entries(model_config, train_config)
    if set(entries) != set(expected):
        missing, extra = sorted(set(expected) - set(entries)), sorted(set(entries) - set(expected))
        raise CheckpointError(f"{path} does not match its model (missing {missing}, unexpected {extra})")
    arrays = {name: _check_array(path, name, entries[name], *expected[name]) for name in expected}

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}

    return Checkpoint(
        model_config=model_config,
        train_config=train_config,
        tokenizer=tokenizer,
        params=group("param."),
        optimizer_state=group("optim."),
        state=group("state."),
        progress=progress,
        rng_state=rng_state,
        corpus=corpus_info,
        # Checkpoints before run identities were stored get theirs derived, as it was for new ones.
        run_id=str(meta.get("run_id") or run_identity(model_config, train_config, tokenizer)),
        charrnn_version=str(meta.get("charrnn_version", "")),
        format_version=stored_version,
    )


def read_identity(path: str) -> Optional[Identity]:
    """Whose checkpoint ``path`` is (run identity and step), or None if it cannot be read as one.

    Reads only the metadata entry, so looking over a folder of large checkpoints stays cheap.
    """
    try:
        with zipfile.ZipFile(path) as archive, archive.open("meta.npy") as entry:
            meta = _decode_meta(path, np.lib.format.read_array(entry, allow_pickle=False))
        _migrate(meta, {})
        run_id = meta.get("run_id") or run_identity(
            from_dict(ModelConfig, meta["model"]), from_dict(TrainConfig, meta["train"]),
            Tokenizer.from_dict(meta["tokenizer"]),
        )
        step = meta["progress"]["step"]
        if not isinstance(run_id, str) or not isinstance(step, int) or isinstance(step, bool):
            return None
        return Identity(run_id, step)
    except (CharRNNError, OSError, zipfile.BadZipFile, KeyError, TypeError, ValueError, EOFError, zlib.error):
        return None
