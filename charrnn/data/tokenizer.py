"""Turning text into token ids and back: character and jieba word tokenizers over a sorted vocabulary.

The vocabulary is always sorted (never ``list(set(text))``, whose order changes between Python
processes because string hashing is randomized) and is stored in every checkpoint, so the ids used
when sampling are the ids used in training.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from charrnn.config import TOKENIZERS
from charrnn.errors import CheckpointError, ConfigError, CorpusError, VocabularyError

_MAX_LISTED_UNKNOWN = 10
# Text is tokenized by jieba in pieces of about this many characters, cut where jieba stays exact.
JIEBA_PIECE_CHARS = 1 << 20
# The characters jieba segments as runs (its re_han_default); every other character is a token alone.
_JIEBA_BLOCK = re.compile("[\u4E00-\u9FD5a-zA-Z0-9+#&\\._%\\-]")
# Stands for every token cut from the vocabulary by --max-vocab. It can't collide with a real token:
# character tokens are single characters, and jieba cuts "<" and ">" off as tokens of their own.
UNKNOWN_TOKEN = "<unk>"


def load_jieba() -> Any:
    """Import jieba on first use, with its start-up log lines silenced (here and in worker processes).

    jieba is slow to import and prints "Building prefix dict..." on stderr; a character-level run
    should pay for neither.
    """
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def tokenize(text: str, kind: str) -> list[str]:
    """Split ``text`` into tokens: single characters, or words from jieba's precise mode.

    Both kinds keep every character (spaces and newlines included), so ``"".join(tokens) == text``.
    """
    if kind == "char":
        return list(text)
    if kind == "jieba":
        return load_jieba().lcut(text, cut_all=False, HMM=True)
    raise ConfigError(f"--tokenizer must be one of {', '.join(TOKENIZERS)}; got {kind!r}")


def codepoints(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as a uint32 array (no Python-level loop over characters)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _describe_unknown(tokens: Iterable[str]) -> str:
    unique = sorted(set(tokens))
    shown = ", ".join(repr(t) for t in unique[:_MAX_LISTED_UNKNOWN])
    more = len(unique) - _MAX_LISTED_UNKNOWN
    return shown + (f" and {more} more" if more > 0 else "")


def safe_cut(text: str) -> int:
    """A position in ``text`` where jieba's output does not depend on whether the text is split there.

    jieba segments only runs of _JIEBA_BLOCK characters and emits every other character on its own,
    so a split after a line end, or else after any character outside such a run, changes nothing.
    """
    cut = text.rfind("\n") + 1
    if cut:
        return cut
    for position in range(len(text) - 1, 0, -1):
        if not _JIEBA_BLOCK.match(text[position - 1]):
            return position
    return len(text)  # one enormous run of Han characters: nothing exact is possible


def exact_pieces(chunks: Iterable[str], kind: str, piece_chars: Optional[int] = None) -> Iterator[str]:
    """Text arriving in ``chunks``, regrouped into pieces that tokenize apart exactly as together.

    Characters need no regrouping. For jieba, pieces of at least ``piece_chars`` characters are cut at
    ``safe_cut`` (default: JIEBA_PIECE_CHARS), so memory stays bounded by a piece while the tokens
    equal those of the whole text.
    """
    if kind == "char":
        yield from chunks
        return
    piece_chars = JIEBA_PIECE_CHARS if piece_chars is None else piece_chars
    buffer = ""
    for chunk in chunks:
        buffer += chunk
        if len(buffer) >= piece_chars:
            cut = safe_cut(buffer)
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer:
        yield buffer


@dataclass(frozen=True)
class Tokenizer:
    """A tokenizer kind (``char`` or ``jieba``) with its sorted vocabulary.

    Ids are positions in ``vocab``; ``vocab`` is strictly increasing, which every constructor checks.
    ``unknown``, when set, is the vocabulary entry that stands for tokens outside it (see --max-vocab).
    """

    kind: str
    vocab: tuple[str, ...]
    unknown: Optional[str] = None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _longest: int = field(init=False, repr=False, compare=False)
    _char_points: np.ndarray = field(init=False, repr=False, compare=False)
    _char_ids: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in TOKENIZERS:
            raise ConfigError(f"--tokenizer must be one of {', '.join(TOKENIZERS)}; got {self.kind!r}")
        if not self.vocab:
            raise VocabularyError("the vocabulary is empty")
        if any(a >= b for a, b in zip(self.vocab, self.vocab[1:])):
            raise VocabularyError("the vocabulary is not sorted and unique")
        if self.unknown is not None and self.unknown not in self.vocab:
            raise VocabularyError(f"the unknown-token marker {self.unknown!r} is not in the vocabulary")
        if self.kind == "char" and any(len(t) != 1 for t in self.vocab if t != self.unknown):
            raise VocabularyError("a character vocabulary holds a token that is not one character")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.vocab)})
        object.__setattr__(self, "_longest", max(len(t) for t in self.vocab))
        singles = [(ord(t), i) for i, t in enumerate(self.vocab) if len(t) == 1]
        object.__setattr__(self, "_char_points", np.array([p for p, _ in singles], dtype=np.uint32))
        object.__setattr__(self, "_char_ids", np.array([i for _, i in singles], dtype=np.int32))

    @classmethod
    def fit(cls, text: str, kind: str, max_vocab: Optional[int] = None) -> tuple["Tokenizer", np.ndarray]:
        """Build the vocabulary of ``text`` and return it with the text's ids (int32, shape (N,)).

        For text in memory; the token cache builds the vocabulary of a corpus of any size the same way
        (VocabularyBuilder), chunk by chunk.
        """
        builder = VocabularyBuilder(counting=max_vocab is not None)
        ids = builder.add_text(text) if kind == "char" else builder.add_tokens(tokenize(text, kind))
        tokenizer, mapping = builder.build(kind, max_vocab)
        return tokenizer, mapping[ids].astype(np.int32)

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens."""
        return len(self.vocab)

    @property
    def unknown_id(self) -> Optional[int]:
        """Id of the unknown-token marker, or None when the vocabulary has none."""
        return None if self.unknown is None else self._index[self.unknown]

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text`` (int32, shape (N,)).

        For word tokenizers a word missing from the vocabulary is split into the longest known pieces
        (so the seed "明月" still works for a model that only knows "明" and "月"). What is still
        unknown becomes the unknown-token marker if the vocabulary has one; otherwise VocabularyError
        names it.
        """
        ids, unknown = self.encode_known(text)
        if unknown and self.unknown is None:
            raise VocabularyError(f"tokens not in the model's vocabulary: {_describe_unknown(unknown)}")
        return ids

    def encode_known(self, text: str) -> tuple[np.ndarray, list[str]]:
        """Ids of ``text`` and the list of its tokens that are outside the vocabulary.

        The unknown tokens become the unknown-token marker's id if there is one; otherwise they are
        left out of the ids (which are then the text with them removed).
        """
        unknown_id = self.unknown_id
        if self.kind == "char":
            points = codepoints(text)
            positions = np.searchsorted(self._char_points, points)
            found = np.zeros(points.shape, dtype=bool)
            in_range = positions < len(self._char_points)
            found[in_range] = self._char_points[positions[in_range]] == points[in_range]
            unknown = [chr(c) for c in points[~found].tolist()]
            ids = self._char_ids[np.minimum(positions, max(len(self._char_points) - 1, 0))]
            if unknown_id is None:
                return ids[found], unknown
            ids[~found] = unknown_id
            return ids, unknown
        index = self._index
        known: list[int] = []
        unknown = []
        for word in tokenize(text, self.kind):
            pieces = (word,) if word in index else self._known_pieces(word)
            for piece in pieces:
                if piece in index:
                    known.append(index[piece])
                else:
                    unknown.append(piece)
                    if unknown_id is not None:
                        known.append(unknown_id)
        return np.array(known, dtype=np.int32), unknown

    def encode_chunks(self, chunks: Iterable[str]) -> Iterator[tuple[np.ndarray, int]]:
        """``encode_known`` of text arriving in chunks, a piece at a time: (ids, how many tokens of the
        piece are outside the vocabulary). The ids, joined, are those of the whole text."""
        for piece in exact_pieces(chunks, self.kind):
            ids, unknown = self.encode_known(piece)
            yield ids, len(unknown)

    def _known_pieces(self, word: str) -> list[str]:
        longest = self._longest
        pieces, start = [], 0
        while start < len(word):
            for end in range(min(len(word), start + longest), start, -1):
                if word[start:end] in self._index:
                    pieces.append(word[start:end])
                    start = end
                    break
            else:
                return [word]  # no split: left whole, and reported as unknown
        return pieces

    def token_lengths(self) -> np.ndarray:
        """Characters in each token (V,), for converting bits per token into bits per character.

        The unknown-token marker counts as one character (exact for character models).
        """
        return np.array([1 if t == self.unknown else len(t) for t in self.vocab], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a sequence of ids."""
        vocab = self.vocab
        return "".join(vocab[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for the checkpoint's JSON."""
        return {"kind": self.kind, "vocab": list(self.vocab), "unknown": self.unknown}

    @classmethod
    def from_dict(cls, data: Any) -> "Tokenizer":
        """Inverse of ``to_dict``; raises CheckpointError for malformed data.

        Tokens must be non-empty strings of real characters: no text charrnn decodes holds an empty
        token or a lone surrogate (which could not even be printed).
        """
        try:
            if not isinstance(data, dict):
                raise TypeError("it is not a JSON object")
            kind, vocab = data["kind"], data["vocab"]
            if not isinstance(kind, str):
                raise TypeError("kind is not a string")
            if not isinstance(vocab, list) or not all(isinstance(t, str) and t for t in vocab):
                raise TypeError("vocab is not a list of non-empty strings")
            "".join(vocab).encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate
            unknown = data.get("unknown")
            if unknown is not None and not isinstance(unknown, str):
                raise TypeError("unknown is not a string")
            return cls(kind, tuple(vocab), unknown)
        except KeyError as exc:
            raise CheckpointError(f"the checkpoint's tokenizer is malformed (missing {exc})") from None
        except UnicodeEncodeError:
            raise CheckpointError("the checkpoint's tokenizer is malformed (a token holds a lone surrogate)") from None
        except (TypeError, VocabularyError, ConfigError) as exc:
            raise CheckpointError(f"the checkpoint's tokenizer is malformed ({exc})") from None


class VocabularyBuilder:
    """The one way charrnn builds a vocabulary: tokens numbered in order of first appearance as text
    streams through (provisional ids), then sorted into the final vocabulary by ``build``.

    Counts (kept only if ``counting``) choose the most frequent tokens for --max-vocab; counting is a
    third of the work of tokenizing characters, so it is skipped otherwise.
    """

    def __init__(self, counting: bool) -> None:
        self.counting = counting
        self.tokens: list[str] = []
        self.index: dict[str, int] = {}
        self.counts = np.zeros(0, dtype=np.int64)
        # Code point -> provisional id (−1: not seen): one gather turns a chunk of text into ids.
        self.by_codepoint = np.full(0x110000, -1, dtype=np.int32)

    def _count(self, ids: np.ndarray) -> None:
        if not self.counting:
            return
        counts = np.bincount(ids, minlength=len(self.tokens))
        counts[: len(self.counts)] += self.counts
        self.counts = counts

    def add_text(self, text: str) -> np.ndarray:
        """Provisional ids (int32) of the characters of ``text``."""
        points = codepoints(text)
        ids = self.by_codepoint[points]
        missing = ids < 0
        if missing.any():
            for point in np.unique(points[missing]).tolist():
                self.by_codepoint[point] = len(self.tokens)
                self.index[chr(point)] = len(self.tokens)
                self.tokens.append(chr(point))
            ids = self.by_codepoint[points]
        self._count(ids)
        return ids

    def add_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Provisional ids (int32) of a sequence of word tokens."""
        index = self.index
        for token in tokens:
            if token not in index:
                index[token] = len(self.tokens)
                self.tokens.append(token)
        ids = np.fromiter((index[t] for t in tokens), dtype=np.int32, count=len(tokens))
        self._count(ids)
        return ids

    def build(self, kind: str, max_vocab: Optional[int] = None) -> tuple["Tokenizer", np.ndarray]:
        """The sorted Tokenizer, and the provisional-id -> final-id map (int64).

        With ``max_vocab`` and more tokens than that, the most frequent are kept (equal counts in token
        order, so the cut is deterministic) and the rest map to the unknown-token marker.
        """
        tokens = self.tokens
        seen = list(range(len(tokens)))  # every provisional token occurred
        unknown = None
        if max_vocab is not None and len(seen) > max_vocab:
            seen.sort(key=lambda i: (-int(self.counts[i]), tokens[i]))
            seen = seen[:max_vocab]
            unknown = UNKNOWN_TOKEN
        kept = sorted(tokens[i] for i in seen)
        if unknown is not None:
            if unknown in kept:
                raise CorpusError(f"the corpus holds the token {UNKNOWN_TOKEN!r}, which --max-vocab needs for itself")
            kept = sorted(kept + [unknown])
        tokenizer = Tokenizer(kind, tuple(kept), unknown)
        final = {token: i for i, token in enumerate(kept)}
        fallback = final.get(unknown, -1) if unknown else -1
        return tokenizer, np.array([final.get(token, fallback) for token in tokens], dtype=np.int64)
