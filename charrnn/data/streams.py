"""Token ids as training data: the held-out validation part, and B contiguous streams of the rest.

A training step reads the next T tokens of every stream, carrying each stream's hidden state into the
next step (truncated backpropagation through time, training/loop.py); cutting the text into B long
streams rather than B random pieces is what lets the state carry meaning from one step to the next.
"""

from __future__ import annotations

import numpy as np

from charrnn.errors import CorpusError


def split_validation(ids: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(training ids, validation ids): the validation part is the last round(N · fraction) tokens."""
    val_count = int(round(len(ids) * fraction))
    return ids[: len(ids) - val_count], ids[len(ids) - val_count :]


def streams_fit(num_tokens: int, batch_size: int, seq_length: int) -> bool:
    """True if ``num_tokens`` cut into ``batch_size`` streams gives each at least one chunk."""
    return num_tokens // batch_size >= seq_length + 1


def split_streams(ids: np.ndarray, batch_size: int, seq_length: int) -> np.ndarray:
    """Cut ``ids`` (shape (N,)) into ``batch_size`` contiguous streams: a (B, N // B) view.

    The last N mod B tokens are dropped. Each stream must hold at least ``seq_length + 1`` tokens
    (inputs plus the following target) or CorpusError says which option to lower.
    """
    stream_length = len(ids) // batch_size
    if not streams_fit(len(ids), batch_size, seq_length):
        raise CorpusError(
            f"the corpus has {len(ids)} tokens: cut into --batch-size {batch_size} streams that is "
            f"{stream_length} tokens each, fewer than --seq-length + 1 = {seq_length + 1}; "
            "use a smaller --batch-size or --seq-length, or a longer corpus"
        )
    return ids[: batch_size * stream_length].reshape(batch_size, stream_length)
