"""Token ids as training data: the held-out validation part, and B contiguous streams of the rest.

A training step reads the next T tokens of every stream, carrying each stream's hidden state into the
next step (truncated backpropagation through time, training/loop.py); cutting the text into B long
streams rather than B random pieces is what lets the state carry meaning from one step to the next.
"""

from __future__ import annotations

from typing import Optional

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


# --- validation text spread across the corpus ---------------------------------------------------------

# The spread split aims at this many held-out blocks, so that validation samples the whole corpus...
TARGET_HELD_OUT_BLOCKS = 100
# ...with blocks of at least this many tokens (a few lines: each block is scored as running text), and
# of at most this many, so that a huge corpus is sampled in thousands of places rather than a hundred.
MIN_BLOCK_TOKENS = 100
MAX_BLOCK_TOKENS = 10_000
# A block ends after the first line end found within this many tokens of its nominal end; a line longer
# than that is cut where the block ends.
LINE_END_SEARCH_TOKENS = 2_000


def spread_block_tokens(num_tokens: int, fraction: float) -> int:
    """The nominal block length of the spread split of ``num_tokens`` holding out ``fraction``.

    About TARGET_HELD_OUT_BLOCKS held-out blocks, each MIN_BLOCK_TOKENS to MAX_BLOCK_TOKENS long; a small
    corpus gets shorter blocks so that at least four are held out.
    """
    held_out = num_tokens * fraction
    lower = min(MIN_BLOCK_TOKENS, held_out / 4)
    return max(1, int(round(min(MAX_BLOCK_TOKENS, max(lower, held_out / TARGET_HELD_OUT_BLOCKS)))))


def spread_split(
    ids: np.ndarray, fraction: float, block_tokens: int, line_end_id: Optional[int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(training segments, held-out segments), each an (S, 2) array of [start, stop) offsets into ``ids``.

    The corpus is cut into blocks of about ``block_tokens``, each ending just after a line end
    (``line_end_id``; None: where the nominal length ends), and block i is held out when
    ⌊(i + 1)·f + u⌋ > ⌊i·f + u⌋, u ∈ [0, 1) drawn from ``seed``: a fraction f of the blocks, evenly spread
    (every 20th for 5%), from a seeded phase. Adjacent training blocks are merged into one segment. The
    result depends only on the arguments, so a resumed run cuts the same split.
    """
    count = len(ids)
    boundaries = [0]
    for nominal in range(block_tokens, count, block_tokens):
        if nominal <= boundaries[-1]:
            continue
        cut = nominal
        if line_end_id is not None:
            window = np.asarray(ids[nominal : nominal + min(block_tokens, LINE_END_SEARCH_TOKENS)])
            found = np.flatnonzero(window == line_end_id)
            if len(found):
                cut = nominal + int(found[0]) + 1
        if cut < count:
            boundaries.append(cut)
    boundaries.append(count)
    blocks = np.array([boundaries[:-1], boundaries[1:]], dtype=np.int64).T  # (n, 2)
    phase = np.random.default_rng(seed).random()
    index = np.arange(len(blocks))
    held = np.floor((index + 1) * fraction + phase) > np.floor(index * fraction + phase)
    return _merged(blocks[~held]), blocks[held]


def _merged(blocks: np.ndarray) -> np.ndarray:
    """Consecutive [start, stop) blocks with touching ends joined into one."""
    if len(blocks) == 0:
        return blocks.reshape(0, 2)
    new_run = np.concatenate([[True], blocks[1:, 0] != blocks[:-1, 1]])
    starts = blocks[new_run, 0]
    stops = blocks[np.concatenate([new_run[1:], [True]]), 1]
    return np.stack([starts, stops], axis=1)


def gather_segments(ids: np.ndarray, segments: np.ndarray, limit: Optional[int] = None) -> np.ndarray:
    """The tokens of ``segments`` (S, 2), joined in order; with ``limit``, at most ``limit`` tokens taken
    from segments spread evenly over all of them (every s-th segment), not just the first ones."""
    lengths = segments[:, 1] - segments[:, 0]
    if limit is not None and lengths.sum() > limit:
        stride = -(-int(lengths.sum()) // limit)
        segments = segments[::stride]
    parts, total = [], 0
    for start, stop in segments.tolist():
        if limit is not None and total >= limit:
            break
        stop = stop if limit is None else min(stop, start + limit - total)
        parts.append(np.asarray(ids[start:stop]))
        total += stop - start
    return np.concatenate(parts) if parts else np.asarray(ids[:0])


class SegmentStreams:
    """B contiguous streams over the joined training segments of a corpus, read like a (B, L) array.

    The spread split leaves the training text in pieces between the held-out blocks. Rather than
    copying them together (a 1 GB corpus is memory-mapped), the streams keep the segments' offsets and
    gather each chunk's tokens: ``streams[:, a:b]`` is the (B, b − a) array that the (B, L) streams of
    the joined text would give (``streams[r:s, a:b]`` their rows r to s, for a process that trains
    some of them), ``shape`` and ``size`` are theirs. A stream runs from the end of one training
    segment straight into the next, over the held-out block between them, as it runs from one corpus
    file into the next: the carried state never saw the held-out text, so nothing of it leaks into
    training, and since blocks end at line ends the join falls between lines.
    """

    def __init__(self, ids: np.ndarray, segments: np.ndarray, batch_size: int, seq_length: int) -> None:
        lengths = segments[:, 1] - segments[:, 0]
        self.ids = ids
        self.segment_starts = segments[:, 0].astype(np.int64)
        self.joined_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # in the joined text
        total = int(self.joined_starts[-1])
        if not streams_fit(total, batch_size, seq_length):
            split_streams(np.empty(total, dtype=np.uint8), batch_size, seq_length)  # raises its CorpusError
        self.shape = (batch_size, total // batch_size)
        self.size = self.shape[0] * self.shape[1]
        self.dtype = ids.dtype

    def corpus_offsets(self, joined: np.ndarray) -> np.ndarray:
        """Offsets into the corpus of positions in the joined training text."""
        segment = np.searchsorted(self.joined_starts, joined, side="right") - 1
        return self.segment_starts[segment] + (joined - self.joined_starts[segment])

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, columns = key
        if not isinstance(rows, slice) or rows.step not in (None, 1) or not isinstance(columns, slice) or \
                columns.step not in (None, 1):
            raise TypeError("SegmentStreams supports streams[r:s, a:b] only")
        start, stop, _ = columns.indices(self.shape[1])
        streams = np.arange(self.shape[0])[rows]  # a process of a run on several trains some of them
        joined = streams[:, None] * self.shape[1] + np.arange(start, max(start, stop))[None, :]
        return np.asarray(self.ids[self.corpus_offsets(joined)])
