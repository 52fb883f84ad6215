"""A training run's data: the corpus as token ids (from the token cache), its validation text, its streams.

A fresh run takes the vocabulary of its corpus; a resumed run keeps its checkpoint's and re-expresses the
corpus in it (``translate``). The corpus is fingerprinted, so a resumed run can tell whether it sees the
same text as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from typing import Iterator, NamedTuple, Optional, Union

import numpy as np

from charrnn.checkpoints.checkpoint import CorpusInfo
from charrnn.config import DataConfig, TrainConfig
from charrnn.data import token_cache
from charrnn.data.corpus import (
    TextReader, check_standard_input_once, display_name, is_standard_input, open_corpus_file,
)
from charrnn.data.streams import (
    SegmentStreams, gather_segments, split_streams, split_validation, spread_block_tokens, spread_split, streams_fit,
)
from charrnn.data.tokenizer import Tokenizer
from charrnn.errors import CorpusError, VocabularyError

# Validation ids held in memory at most when --eval-tokens 0 asks to validate on all of a --val-file.
MAX_VALIDATION_TOKENS = 50_000_000


def fingerprint(ids: np.ndarray, dtype: str) -> str:
    """sha256 of ``ids`` stored as ``dtype``, computed a slice at a time to keep memory flat."""
    digest = hashlib.sha256()
    for start in range(0, len(ids), 1 << 22):
        digest.update(np.ascontiguousarray(ids[start : start + (1 << 22)], dtype=dtype).data)
    return digest.hexdigest()


def translate(prepared: token_cache.PreparedCorpus, tokenizer: Tokenizer) -> np.ndarray:
    """The prepared ids re-expressed in ``tokenizer``'s vocabulary (for resuming on other text)."""
    target = {token: i for i, token in enumerate(tokenizer.vocab)}
    fallback = tokenizer.unknown_id
    lookup = np.array([target.get(t, -1 if fallback is None else fallback) for t in prepared.tokenizer.vocab])
    missing = [t for t, i in zip(prepared.tokenizer.vocab, lookup.tolist()) if i < 0]
    if missing:
        shown = ", ".join(repr(t) for t in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise VocabularyError(f"the corpus has tokens the checkpoint's vocabulary lacks: {shown}")
    return lookup.astype(token_cache.smallest_id_dtype(tokenizer.vocab_size))[prepared.ids]


def read_validation(
    paths: tuple[str, ...], encoding: str, tokenizer: Tokenizer, eval_tokens: int
) -> tuple[np.ndarray, int]:
    """(ids of the validation files' text in ``tokenizer``'s vocabulary, tokens outside it).

    Validation keeps its ids in memory, so only what it uses is read: the first ``eval_tokens`` + 1
    tokens (--eval-tokens N scores N targets), or with ``eval_tokens`` 0, all of them. Standard input
    may never end, and its tokens may all be outside the vocabulary (which leaves them out): beyond
    MAX_VALIDATION_TOKENS tokens read, CorpusError says what to pass instead.
    """
    check_standard_input_once(paths)
    for path in paths:  # every file named must exist, even one that the tokens needed come before
        if not is_standard_input(path):
            with open_corpus_file(path):
                pass
    wanted = eval_tokens + 1 if eval_tokens else None
    dtype = token_cache.smallest_id_dtype(tokenizer.vocab_size)
    blocks: list[np.ndarray] = []
    known = unknown = 0
    for path in paths:
        reader = TextReader(display_name(path), encoding, source=path)
        read = [0]

        def text(reader: TextReader = reader, read: list = read) -> Iterator[str]:
            for chunk in reader.chunks():
                read[0] += len(chunk)
                yield chunk

        with contextlib.closing(tokenizer.encode_chunks(text())) as pieces:
            for ids, missing in pieces:
                blocks.append(ids[: None if wanted is None else wanted - known].astype(dtype))
                known, unknown = known + len(blocks[-1]), unknown + missing
                if wanted is not None and known >= wanted:
                    break
                if known + unknown > MAX_VALIDATION_TOKENS:
                    raise _too_long(paths, known, unknown)
        if not read[0]:
            raise CorpusError(f"{reader.path} is empty")
        if wanted is not None and known >= wanted:
            break
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=dtype), unknown


def _too_long(paths: tuple[str, ...], known: int, unknown: int) -> CorpusError:
    names = ", ".join(display_name(p) for p in paths)
    if unknown > known:
        return CorpusError(f"--val-file {names}: {unknown:,} of its first {known + unknown:,} tokens are outside the "
                           "model's vocabulary; give text in the language and encoding of the corpus")
    return CorpusError(
        f"--val-file {names} holds more than {MAX_VALIDATION_TOKENS:,} tokens, more than validation keeps in memory; "
        f"pass --eval-tokens N (at most {MAX_VALIDATION_TOKENS:,}) to validate on its first N tokens"
    )


def read_training_data(
    data: DataConfig,
    paths: tuple[str, ...],
    val_paths: tuple[str, ...],
    tokenizer: Optional[Tokenizer],
    kind: str,
    max_vocab: Optional[int],
    on_progress: token_cache.Progress,
    notes: list[str],
    eval_tokens: int = 0,
) -> tuple[Tokenizer, np.ndarray, Optional[np.ndarray], CorpusInfo]:
    """(tokenizer, corpus ids memory-mapped from the token cache, validation-file ids, what the corpus is).

    ``tokenizer`` None takes the corpus's own vocabulary (a fresh run); a resumed run passes the
    checkpoint's. Validation-file tokens outside the vocabulary are left out (or become the unknown
    token), with a note appended to ``notes``; only the ``eval_tokens`` that validation scores are
    read (see read_validation).
    """
    prepared = token_cache.prepare(paths, kind, data.encoding, max_vocab, data.cache_dir, on_progress=on_progress,
                                   spool_limit_mb=data.spool_limit_mb)
    ids = prepared.ids
    if tokenizer is None:
        tokenizer = prepared.tokenizer
    elif prepared.tokenizer != tokenizer:
        ids = translate(prepared, tokenizer)
    val_ids = None
    if val_paths:
        val_ids, unknown = read_validation(val_paths, data.encoding, tokenizer, eval_tokens)
        if unknown:
            fate = "become the unknown token" if tokenizer.unknown else "are left out of validation"
            notes.append(f"{unknown:,} validation tokens are outside the vocabulary and {fate}")
    # Absolute paths, so that resuming without naming the corpus works from any folder.
    info = CorpusInfo(
        tuple(p if is_standard_input(p) else os.path.abspath(p) for p in prepared.paths), prepared.encodings,
        len(ids), prepared.ids_sha256,
        tuple(p if is_standard_input(p) else os.path.abspath(p) for p in val_paths), ids.dtype.str, max_vocab,
    )
    return tokenizer, ids, val_ids, info


def line_end_id(tokenizer: Tokenizer) -> Optional[int]:
    """The id of the line-end token, where the spread split ends its blocks; None if the text has none."""
    return tokenizer.vocab.index("\n") if "\n" in tokenizer.vocab else None


class TrainingData(NamedTuple):
    """What prepare_streams makes of a corpus."""

    streams: Union[np.ndarray, SegmentStreams]  # (B, L) training token ids
    val_ids: Optional[np.ndarray]  # (N_val,) validation ids; None when validation is off
    config: TrainConfig  # with its batch size and split settled
    validation: str  # what the validation text is, for the training header
    num_train_tokens: int  # the corpus's tokens left for training (before the streams drop N mod B)


def prepare_streams(
    ids: np.ndarray,
    val_ids: Optional[np.ndarray],
    config: TrainConfig,
    shrinkable: bool,
    notes: list[str],
    line_end: Optional[int] = None,
    eval_tokens: int = 0,
    batch_multiple: int = 1,
) -> TrainingData:
    """The training streams and validation ids of a corpus: validation split off, the rest cut into streams.

    Without a validation file, ``config.val_fraction`` of the corpus is held out as ``config.val_split``
    says: its tail, or blocks spread across it (streams.spread_split, blocks ending at the ``line_end``
    token). The spread split's block length is settled here on a fresh run and returned in the config;
    at most ``eval_tokens`` + 1 of its held-out tokens are kept (0: all), from blocks spread over all of
    it. A batch size the user did not give (``shrinkable``) shrinks to fit a small corpus, to a multiple
    of ``batch_multiple`` (the processes that share the batch), and the returned config says so.
    """
    segments = None
    if val_ids is not None:
        described = f"the validation file ({len(val_ids):,} tokens)"
    elif config.val_fraction == 0:
        described = "off (--val-fraction 0)"
    elif config.val_split == "tail":
        ids, val_ids = split_validation(ids, config.val_fraction)
        described = f"the last {config.val_fraction:.0%} of the corpus ({len(val_ids):,} tokens; --val-split tail)"
    else:
        if config.val_block_tokens is None:
            config = dataclasses.replace(config, val_block_tokens=spread_block_tokens(len(ids), config.val_fraction))
        segments, held_out = spread_split(ids, config.val_fraction, config.val_block_tokens, line_end, config.val_seed)
        val_ids = gather_segments(ids, held_out, eval_tokens + 1 if eval_tokens else None)
        held_tokens = int((held_out[:, 1] - held_out[:, 0]).sum())
        lines = "of whole lines " if line_end is not None else ""
        described = (f"{held_tokens:,} tokens ({config.val_fraction:.0%}) held out in {len(held_out):,} blocks "
                     f"{lines}spread across the corpus (--val-split spread)")
        if len(val_ids) < held_tokens:
            described += f"; {len(val_ids):,} of them, from blocks spread over all, are scored (--eval-tokens)"
    if val_ids is not None and len(val_ids) < 2:
        notes.append("the validation text is shorter than 2 tokens; validation is off")
        val_ids, described = None, "off (the held-out text is shorter than 2 tokens)"
    train_count = len(ids) if segments is None else int((segments[:, 1] - segments[:, 0]).sum())
    if shrinkable and not streams_fit(train_count, config.batch_size, config.seq_length):
        fitting = train_count // (config.seq_length + 1)
        fitting -= fitting % batch_multiple
        if fitting >= 1:
            notes.append(
                f"the corpus is too short for {config.batch_size} streams of --seq-length {config.seq_length}; "
                f"using --batch-size {fitting}"
            )
            config = dataclasses.replace(config, batch_size=fitting)
    if segments is None:
        streams: Union[np.ndarray, SegmentStreams] = split_streams(ids, config.batch_size, config.seq_length)
    else:
        streams = SegmentStreams(ids, segments, config.batch_size, config.seq_length)
    return TrainingData(streams, val_ids, config, described, train_count)
