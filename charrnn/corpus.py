"""Reading corpus files (with encoding detection) and cutting token ids into parallel streams."""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from charrnn.errors import ConfigError, CorpusError

AUTO = "auto"

# Byte-order marks, longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# GB18030 is a superset of GBK and GB2312, the usual encodings of Chinese text that is not UTF-8.
_FALLBACKS = ("utf-8", "gb18030")


@dataclass(frozen=True)
class CorpusText:
    """The decoded text of one or more files, with the encoding each was read in."""

    text: str
    paths: tuple[str, ...]
    encodings: tuple[str, ...]


def _read_bytes(path: str) -> bytes:
    if os.path.isdir(path):
        raise CorpusError(f"{path} is a directory, not a text file; give the files inside it")
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror})") from None


def _normalize_newlines(text: str) -> str:
    # Windows and old Mac line endings would otherwise become tokens of their own.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def detect_and_decode(data: bytes, path: str, encoding: str = AUTO) -> tuple[str, str]:
    """Decode ``data`` read from ``path``; return the text and the encoding used.

    ``auto`` honours a byte-order mark (UTF-8, UTF-16, UTF-32), else tries strict UTF-8, then
    GB18030. Text holding NUL characters is refused as binary.
    """
    if encoding != AUTO:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ConfigError(f"--encoding {encoding!r} is not a codec Python knows") from None
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise CorpusError(
                f"{path} is not valid {encoding} (byte {exc.start}); try --encoding auto or another codec"
            ) from None
        return _check_text(text, path), encoding
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return _check_text(data.decode(name), path), name
            except UnicodeDecodeError:
                raise CorpusError(
                    f"{path} starts with a {name} byte-order mark but is not valid {name}; "
                    "pass the right --encoding"
                ) from None
    if b"\x00" in data:
        raise CorpusError(
            f"{path} looks like a binary file (it holds NUL bytes); if it is UTF-16 or UTF-32 "
            "without a byte-order mark, pass --encoding utf-16-le (or the codec it uses)"
        )
    for name in _FALLBACKS:
        try:
            return _check_text(data.decode(name), path), name
        except UnicodeDecodeError:
            continue
    raise CorpusError(
        f"{path} is neither UTF-8 nor GB18030/GBK text; pass its codec with --encoding (e.g. big5)"
    )


def _check_text(text: str, path: str) -> str:
    if "\x00" in text:
        raise CorpusError(f"{path} looks like a binary file (it holds NUL characters)")
    return _normalize_newlines(text)


def read_corpus(paths: Sequence[str], encoding: str = AUTO) -> CorpusText:
    """Read and decode ``paths`` in order and concatenate their text.

    Raises CorpusError for a missing, unreadable, binary, undecodable or empty file.
    """
    if not paths:
        raise CorpusError("no corpus file given")
    texts, encodings = [], []
    for path in paths:
        text, used = detect_and_decode(_read_bytes(path), path, encoding)
        if not text:
            raise CorpusError(f"{path} is empty")
        texts.append(text)
        encodings.append(used)
    return CorpusText("".join(texts), tuple(str(p) for p in paths), tuple(encodings))


def split_streams(ids: np.ndarray, batch_size: int, seq_length: int) -> np.ndarray:
    """Cut ``ids`` (shape (N,)) into ``batch_size`` contiguous streams: a (B, N // B) view.

    The last N mod B tokens are dropped. Each stream must hold at least ``seq_length + 1`` tokens
    (inputs plus the following target) or CorpusError says which option to lower.
    """
    stream_length = len(ids) // batch_size
    if stream_length < seq_length + 1:
        raise CorpusError(
            f"the corpus has {len(ids)} tokens: cut into --batch-size {batch_size} streams that is "
            f"{stream_length} tokens each, fewer than --seq-length + 1 = {seq_length + 1}; "
            "use a smaller --batch-size or --seq-length, or a longer corpus"
        )
    return ids[: batch_size * stream_length].reshape(batch_size, stream_length)
