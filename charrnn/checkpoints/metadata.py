"""A checkpoint's JSON metadata, decoded and checked field by field before any array is read.

A checkpoint can come from anywhere, and ``json.loads`` accepts far more than charrnn writes: NaN,
Infinity, 1e999 (read as infinity), 32.5 or ``true`` where a count belongs, numbers of thousands of
digits. Every field of ``model``, ``train``, ``tokenizer``, ``corpus``, ``progress`` and ``rng_state``
is checked here for type, range and finiteness, and the fields against each other, so that what
``checkpoint.load`` then allocates is exactly what a model of this configuration needs, and nothing
downstream (training, sampling, ``info``) meets a value it cannot handle. Missing fields take their
defaults, as older files lack the settings added since; unknown ones are ignored, as newer files may
add some.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Callable, NamedTuple, Optional, TypeVar

import numpy as np

from charrnn import __version__
from charrnn.config import ModelConfig, TrainConfig
from charrnn.settings import describe_value, from_dict, is_finite_number
from charrnn.errors import CharRNNError, CheckpointError
from charrnn.data.tokenizer import Tokenizer
from charrnn.progress import Progress

FORMAT_NAME = "charrnn-checkpoint"
# 1: charrnn 0.1 (one vanilla layer, Adagrad); 2: cells, layers, optimizers; 3: model.embed_size (an
# embedding W_xe before the first layer); 4: model.bidirectional (a blank-filling model with a right-to-left
# stack, param.*.back) and train.look_ahead. Older files are migrated when read.
FORMAT_VERSION = 4
# What a checkpoint holds, in its top-level "contents" field: absent, everything needed to continue
# training (TRAINING); "model", only what sampling and scoring need (MODEL, written by charrnn export:
# no optimizer state, no stream state).
TRAINING, MODEL = "training", "model"
# The metadata entry is mostly the vocabulary. A word vocabulary of a million tokens averages about
# 12 bytes a token in JSON (a Chinese word of 2 to 3 characters, quoted, with its comma); 64 MiB
# leaves room for a million tokens five times that long, and stops a crafted entry before json.loads
# turns it into Python objects many times its size.
META_MAX_BYTES = 64 * 2**20
# Counts, positions and steps index numpy arrays and are summed into int64: beyond that no run goes.
COUNT_LIMIT = 2**63 - 1
# Far beyond any recurrent network (deep ones have tens of layers); bounds the loops over the layers
# that build the expected entries, before the arrays can tell the truth.
MAX_LAYERS = 1000
# The corpus fingerprint's id types: what prepare writes (uint8/16/32) and the int32 of older files,
# in either byte order.
ID_DTYPES = frozenset(np.dtype(t).newbyteorder(order).str
                      for t in ("u1", "u2", "u4", "i4") for order in "<>")
_PROGRESS_COUNTS = ("step", "tokens_seen", "epoch", "position", "loss_ema_steps", "val_step", "best_val_step",
                    "validations_since_best", "lr_reductions")
_PROGRESS_AMOUNTS = ("epochs", "loss_ema", "val_loss_nats", "val_bits_per_char", "best_val_loss_nats",
                     "anneal_fraction")
_CONFIG_COUNTS = (("model", "vocab_size"), ("model", "hidden_size"), ("model", "embed_size"), ("train", "seq_length"),
                  ("train", "batch_size"), ("train", "max_steps"), ("train", "max_epochs"),
                  ("train", "lr_decay_after"), ("train", "look_ahead"), ("train", "val_block_tokens"),
                  ("train", "val_seed"), ("train", "lr_reductions"))
_CORPUS_LISTS = ("paths", "encodings", "val_paths")
_RUN_ID = re.compile("^[0-9a-f]{16}$")
RECORDED_BACKENDS = ("numpy", "numba")  # what a run records; "auto" is resolved before it trains
T = TypeVar("T")


class Metadata(NamedTuple):
    """The validated contents of the metadata entry (migrated to the current format)."""

    format_version: int  # as stored in the file
    charrnn_version: str
    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Tokenizer
    progress: Progress
    corpus: dict[str, Any]  # the fields of checkpoint.CorpusInfo
    rng_state: dict[str, Any]  # numpy's PCG64 state
    run_id: str  # the model's identity (derived for files written before identities were stored)
    backend: Optional[str]  # the kernels of the run that wrote it (None before they were recorded)
    contents: str = TRAINING  # TRAINING, or MODEL for a sampling-only file


def run_identity(model_config: ModelConfig, train_config: TrainConfig, tokenizer: Tokenizer) -> str:
    """A model's identity: a hash of what is fixed for its whole life (shape, vocabulary, seed, batching).

    Derived rather than drawn at random, so that the same seeded command still writes the same bytes;
    two runs share it only if they train the same model from the same seed, step for step.
    """
    model = dataclasses.asdict(model_config)
    if not model["embed_size"]:
        # Formats 1 and 2 had no embedding size (a format-1 file's identity is derived when it is read):
        # the one-table model keeps the identity it had before the setting existed.
        del model["embed_size"]
    if not model["bidirectional"]:  # likewise every one-directional model, from before format 4
        del model["bidirectional"]
    fixed = {
        "model": model,
        "train": {name: getattr(train_config, name) for name in ("rng_seed", "batch_size", "seq_length", "optimizer")},
        "tokenizer": tokenizer.to_dict(),
    }
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()[:16]


class _Invalid(Exception):
    """One field is wrong; ``validate`` adds the file's name."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_range(name: str, value: Any, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise _Invalid(f"{name} must be from {low} to {high}, got {describe_value(value)}")


def decode(path: str, raw: bytes) -> Any:
    """The metadata entry's bytes as JSON; raises CheckpointError if they are not UTF-8 JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path} has unreadable metadata (not UTF-8: {exc})") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} has unreadable metadata (not JSON: {exc})") from None
    except ValueError:  # Python refuses to read integers of more than 4,300 digits
        raise CheckpointError(f"{path} has unreadable metadata (a number thousands of digits long)") from None
    except RecursionError:
        raise CheckpointError(f"{path} has unreadable metadata (nested too deeply)") from None


def _section(holder: dict[str, Any], key: str, label: str = "") -> dict[str, Any]:
    label = label or key
    if key not in holder:
        raise _Invalid(f"{label} is missing")
    if not isinstance(holder[key], dict):
        raise _Invalid(f"{label} must be a JSON object, got {describe_value(holder[key])}")
    return holder[key]


def _built(section: str, build: Callable[..., T], *args: Any) -> T:
    """``build(*args)``, with a configuration error turned into _Invalid naming the section."""
    try:
        return build(*args)
    except CharRNNError as exc:
        raise _Invalid(f"{section}: {exc}") from None


def _corpus(meta: dict[str, Any]) -> dict[str, Any]:
    data = _section(meta, "corpus") if "corpus" in meta else {}
    corpus: dict[str, Any] = {}
    for name in _CORPUS_LISTS:
        if name in data:
            value = data[name]
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise _Invalid(f"corpus.{name} must be a list of strings, got {describe_value(value)}")
            corpus[name] = tuple(value)
    for name in ("num_tokens", "num_train_tokens"):
        if data.get(name) is not None:
            if not _is_int(data[name]):
                raise _Invalid(f"corpus.{name} must be a whole number, got {describe_value(data[name])}")
            _require_range(f"corpus.{name}", data[name], 0, COUNT_LIMIT)
            corpus[name] = data[name]
    if corpus.get("num_train_tokens", 0) > corpus.get("num_tokens", 0):
        raise _Invalid(f"corpus.num_train_tokens {corpus['num_train_tokens']} is more than the corpus's "
                       f"num_tokens {corpus.get('num_tokens', 0)}")
    if "sha256" in data:
        if not isinstance(data["sha256"], str):
            raise _Invalid(f"corpus.sha256 must be a string, got {describe_value(data['sha256'])}")
        corpus["sha256"] = data["sha256"]
    if "ids_dtype" in data:
        if not isinstance(data["ids_dtype"], str) or data["ids_dtype"] not in ID_DTYPES:
            raise _Invalid(f"corpus.ids_dtype must be one of {', '.join(sorted(ID_DTYPES))}, "
                           f"got {describe_value(data['ids_dtype'])}")
        corpus["ids_dtype"] = data["ids_dtype"]
    if data.get("max_vocab") is not None:
        if not _is_int(data["max_vocab"]):
            raise _Invalid(f"corpus.max_vocab must be a whole number or null, got {describe_value(data['max_vocab'])}")
        _require_range("corpus.max_vocab", data["max_vocab"], 1, COUNT_LIMIT)
        corpus["max_vocab"] = data["max_vocab"]
    return corpus


def _rng_state(meta: dict[str, Any]) -> dict[str, Any]:
    """numpy's PCG64 state: a 128-bit state, an odd 128-bit increment and a buffered 32-bit draw."""
    data = _section(meta, "rng_state")
    if data.get("bit_generator") != "PCG64":
        raise _Invalid(f"rng_state.bit_generator must be 'PCG64', got {describe_value(data.get('bit_generator'))}")
    inner = _section(data, "state", "rng_state.state")
    fields = {"state.state": (inner, "state", 2**128 - 1), "state.inc": (inner, "inc", 2**128 - 1),
              "has_uint32": (data, "has_uint32", 1), "uinteger": (data, "uinteger", 2**32 - 1)}
    for name, (holder, key, high) in fields.items():
        if key not in holder:
            raise _Invalid(f"rng_state.{name} is missing")
        if not _is_int(holder[key]):
            raise _Invalid(f"rng_state.{name} must be a whole number, got {describe_value(holder[key])}")
        _require_range(f"rng_state.{name}", holder[key], 0, high)
    if inner["inc"] % 2 == 0:
        raise _Invalid("rng_state.state.inc must be odd, as every PCG64 increment is")
    state = {"bit_generator": "PCG64", "state": {"state": inner["state"], "inc": inner["inc"]},
             "has_uint32": data["has_uint32"], "uinteger": data["uinteger"]}
    try:  # numpy's own rules for this version, so that resuming cannot fail on them
        np.random.PCG64(0).state = state
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"rng_state is refused by numpy ({exc})") from None
    return state


def _check_progress(progress: Progress, train_config: TrainConfig, corpus: dict[str, Any]) -> None:
    for name in _PROGRESS_COUNTS + _PROGRESS_AMOUNTS:
        _require_range(f"progress.{name}", getattr(progress, name), 0, COUNT_LIMIT)
    if progress.anneal_fraction > 1.0:
        raise _Invalid(f"progress.anneal_fraction must be from 0 to 1, got {progress.anneal_fraction}")
    for name in ("val_step", "best_val_step"):
        value = getattr(progress, name)
        if value is not None and value > progress.step:
            raise _Invalid(f"progress.{name} {value} is after progress.step {progress.step}")
    if progress.position:
        # The streams as corpus_data.prepare_streams cuts them: the held-out text split off (files that
        # record what is left for training say so; before that, the split was the tail, rounded as in
        # streams.split_validation), the rest in batch_size rows; a chunk is seq_length + 1 tokens.
        tokens = corpus.get("num_tokens", 0)
        train_tokens = corpus.get("num_train_tokens")
        if train_tokens is None:
            train_tokens = tokens - int(round(tokens * train_config.val_fraction))
        stream_length = train_tokens // train_config.batch_size
        if progress.position + train_config.seq_length + 1 > stream_length:
            raise _Invalid(
                f"progress.position {progress.position} is past the end of the streams: a corpus of {tokens} "
                f"tokens makes {train_config.batch_size} streams of {stream_length}"
            )


def validate(path: str, meta: Any) -> Metadata:
    """Check every field of decoded metadata ``meta``; raises CheckpointError naming the first bad one."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a charrnn checkpoint")
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"{path} has an invalid format version {describe_value(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {version}, newer than this charrnn "
            f"({__version__}, format {FORMAT_VERSION}) reads; upgrade charrnn"
        )
    try:
        charrnn_version = meta.get("charrnn_version", "")
        if not isinstance(charrnn_version, str):
            raise _Invalid(f"charrnn_version must be a string, got {describe_value(charrnn_version)}")
        contents = meta.get("contents", TRAINING)
        if "contents" in meta and contents != MODEL:  # a full checkpoint says nothing: only MODEL is written
            raise _Invalid(f"contents must be {MODEL!r} (a sampling-only checkpoint) or absent, "
                           f"got {describe_value(contents)}")
        smoothed = meta.get("smoothed_loss_nats")  # derived from progress when written; checked, not read
        if smoothed is not None and not is_finite_number(smoothed):
            raise _Invalid(f"smoothed_loss_nats must be a finite number or null, got {describe_value(smoothed)}")
        model_data = _section(meta, "model")
        if version < 3:  # formats 1 and 2 knew only the one-table model: no embedding before the first layer
            model_data = {**model_data, "embed_size": 0}
        if version < 4:  # formats 1 to 3 knew only left-to-right models
            model_data = {**model_data, "bidirectional": False}
        model_config = _built("model", from_dict, ModelConfig, model_data)
        if model_config.vocab_size is None:  # only a training request lacks it, never a trained model
            raise _Invalid("model.vocab_size is missing")
        train_data = _section(meta, "train")
        if version == 1:  # format 1 trained on all of the text: it held nothing out
            train_data = {**train_data, "val_fraction": 0.0}
        if version < 4:  # no look-ahead before format 4 (nor any model that reads one)
            train_data = {**train_data, "look_ahead": 0}
        if "val_split" not in train_data:  # written before the spread split existed: it held out the tail
            train_data = {**train_data, "val_split": "tail"}
        train_config = _built("train", from_dict, TrainConfig, train_data)
        if train_config.learning_rate is None:  # every trained model records the rate it used
            raise _Invalid("train.learning_rate is missing")
        for section, name in _CONFIG_COUNTS:
            config = model_config if section == "model" else train_config
            _require_range(f"{section}.{name}", getattr(config, name), 0, COUNT_LIMIT)
        _require_range("model.num_layers", model_config.num_layers, 1, MAX_LAYERS)
        corpus = _corpus(meta)
        progress = _built("progress", from_dict, Progress, _section(meta, "progress"))
        _check_progress(progress, train_config, corpus)
        rng_state = _rng_state(meta)
        tokenizer = _built("tokenizer", Tokenizer.from_dict, _section(meta, "tokenizer"))
        if tokenizer.vocab_size != model_config.vocab_size:
            raise _Invalid(
                f"a vocabulary of {tokenizer.vocab_size} tokens for a model of {model_config.vocab_size}"
            )
        run_id = meta.get("run_id")
        if run_id is None:
            run_id = run_identity(model_config, train_config, tokenizer)
        elif not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            raise _Invalid(f"run_id must be 16 hexadecimal digits, got {describe_value(run_id)}")
        backend = meta.get("backend")
        if backend is not None and backend not in RECORDED_BACKENDS:
            raise _Invalid(f"backend must be one of {', '.join(RECORDED_BACKENDS)} or null, got {describe_value(backend)}")
    except _Invalid as exc:
        raise CheckpointError(f"{path} has invalid metadata: {exc} (the file is damaged or was edited; "
                              "use another checkpoint)") from None
    return Metadata(
        version, charrnn_version, model_config, train_config, tokenizer, progress, corpus, rng_state, run_id,
        backend, contents,
    )
