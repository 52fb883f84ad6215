"""A training run's data: the corpus as token ids (from the token cache), its validation text, its streams.

A fresh run takes the vocabulary of its corpus; a resumed run keeps its checkpoint's and re-expresses the
corpus in it (``translate``). The corpus is fingerprinted, so a resumed run can tell whether it sees the
same text as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Optional

import numpy as np

from charrnn.checkpoints.checkpoint import CorpusInfo
from charrnn.config import DataConfig, TrainConfig
from charrnn.data import token_cache
from charrnn.data.corpus import STANDARD_INPUT, read_corpus
from charrnn.data.streams import split_streams, split_validation, streams_fit
from charrnn.data.tokenizer import Tokenizer
from charrnn.errors import VocabularyError


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


def read_training_data(
    data: DataConfig,
    paths: tuple[str, ...],
    val_paths: tuple[str, ...],
    tokenizer: Optional[Tokenizer],
    kind: str,
    max_vocab: Optional[int],
    on_progress: token_cache.Progress,
    notes: list[str],
) -> tuple[Tokenizer, np.ndarray, Optional[np.ndarray], CorpusInfo]:
    """(tokenizer, corpus ids memory-mapped from the token cache, validation-file ids, what the corpus is).

    ``tokenizer`` None takes the corpus's own vocabulary (a fresh run); a resumed run passes the
    checkpoint's. Validation-file tokens outside the vocabulary are left out (or become the unknown
    token), with a note appended to ``notes``.
    """
    prepared = token_cache.prepare(paths, kind, data.encoding, max_vocab, data.cache_dir, on_progress=on_progress)
    ids = prepared.ids
    if tokenizer is None:
        tokenizer = prepared.tokenizer
    elif prepared.tokenizer != tokenizer:
        ids = translate(prepared, tokenizer)
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


def prepare_streams(
    ids: np.ndarray, val_ids: Optional[np.ndarray], config: TrainConfig, shrinkable: bool, notes: list[str],
    batch_multiple: int = 1,
) -> tuple[np.ndarray, Optional[np.ndarray], TrainConfig]:
    """(streams (B, L), validation ids or None, config): validation split off, the rest cut into streams.

    A batch size the user did not give (``shrinkable``) shrinks to fit a small corpus, to a multiple of
    ``batch_multiple`` (the processes that share the batch), and the returned config says so.
    """
    if val_ids is None and config.val_fraction > 0:
        ids, val_ids = split_validation(ids, config.val_fraction)
    if val_ids is not None and len(val_ids) < 2:
        notes.append("the validation text is shorter than 2 tokens; validation is off")
        val_ids = None
    if shrinkable and not streams_fit(len(ids), config.batch_size, config.seq_length):
        fitting = len(ids) // (config.seq_length + 1)
        fitting -= fitting % batch_multiple
        if fitting >= 1:
            notes.append(
                f"the corpus is too short for {config.batch_size} streams of --seq-length {config.seq_length}; "
                f"using --batch-size {fitting}"
            )
            config = dataclasses.replace(config, batch_size=fitting)
    return split_streams(ids, config.batch_size, config.seq_length), val_ids, config
