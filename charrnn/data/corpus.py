"""Reading corpus files in chunks (with encoding detection) and cutting token ids into parallel streams.

Files are decoded a few megabytes at a time, so a corpus of gigabytes never exists as one string.
With ``--encoding auto`` a byte-order mark decides (UTF-8, UTF-16, UTF-32); otherwise the text is read
as UTF-8, and if it turns out not to be UTF-8 before any non-ASCII character was read, as GB18030 (a
superset of GBK and GB2312, the usual encodings of Chinese text that is not UTF-8). A file that fails
UTF-8 after valid non-ASCII UTF-8 is damaged or mixes encodings and is refused, because reading it as
GB18030 would silently turn it into nonsense.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import sys
from dataclasses import dataclass
from typing import IO, Callable, ContextManager, Iterator, Optional, Protocol, Sequence


from charrnn.errors import ConfigError, CorpusError

AUTO = "auto"
CHUNK_BYTES = 4 << 20
# The name that means standard input, and the device names of standard input: text that cannot be
# read again later (a resumed run must be given it anew).
STANDARD_INPUT = "-"
# The sample corpus installed with the package (setup.cfg, package_data).
SAMPLE_CORPUS = "tang300.txt"
_STANDARD_INPUT_DEVICES = {STANDARD_INPUT, "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"}

# Byte-order marks, longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# C0 control characters other than tab, newline, vertical tab, form feed and carriage return: text
# has almost none, binary data decoded as text has many.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f]")
# Half of a UTF-16 pair on its own is not a character: codecs such as unicode_escape or utf-7 can
# decode to one (from the text "\\ud800"), and no tokenizer, cache or checkpoint can hold it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F])
_NOT_CONTROL_BYTES = bytes(b for b in range(256) if b not in _CONTROL_BYTES)
_MAX_CONTROL_FRACTION = 0.01
_UTF8_LEAD_BYTES = bytes(range(0xC0, 0x100))
# In these encodings a control byte is always a control character (multi-byte sequences never use
# bytes below 0x20 or 0x7F), so binary data can be spotted in the raw bytes, far faster than in text.
_ASCII_COMPATIBLE = {"utf-8", "utf-8-sig", "gb18030"}


@dataclass(frozen=True)
class CorpusText:
    """The decoded text of one or more files, with the encoding each was read in."""

    text: str
    paths: tuple[str, ...]
    encodings: tuple[str, ...]


class Digest(Protocol):
    """What TextReader feeds the bytes it reads to, such as a ``hashlib`` object."""

    def update(self, data: bytes, /) -> None:
        """Take the next bytes."""


def is_standard_input(path: str) -> bool:
    """True for ``-`` and the device names of standard input (``/dev/stdin`` and the like)."""
    return path in _STANDARD_INPUT_DEVICES


def check_standard_input_once(paths: Sequence[str]) -> None:
    """CorpusError if ``paths`` name standard input more than once (as ``-``, /dev/stdin, ...): it can be
    read only once, and a second reading would find it empty."""
    named = [path for path in paths if is_standard_input(path)]
    if len(named) > 1:
        aliases = list(dict.fromkeys(named))
        also = f" ({', '.join(aliases)} are all standard input)" if len(aliases) > 1 else ""
        raise CorpusError(f"standard input (-) can be read only once; give - once{also}")


def display_name(path: str) -> str:
    """How a corpus path is named in messages: ``-`` is standard input."""
    return "standard input" if path == STANDARD_INPUT else path


def sample_corpus_path() -> str:
    """The sample corpus installed with charrnn (``charrnn/corpora/tang300.txt``, the 300 Tang poems of
    data/tang300.txt): the quick start's text, wherever charrnn is installed (``train --sample-corpus``)."""
    from importlib import resources

    return os.fspath(resources.files("charrnn").joinpath("corpora").joinpath(SAMPLE_CORPUS))


def detect_encoding(name: str, head: bytes) -> str:
    """The codec that the first bytes of a file call for under ``--encoding auto``.

    A byte-order mark names its codec; otherwise UTF-8 (TextReader falls back to GB18030 if the text
    is not). Raises CorpusError for NUL bytes without a mark: binary data, or UTF-16/32 without one.
    """
    encoding = next((codec for bom, codec in _BOMS if head.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\x00" in head:
        raise CorpusError(
            f"{name} looks like a binary file (it holds NUL bytes); if it is UTF-16 or "
            "UTF-32 without a byte-order mark, pass --encoding utf-16-le (or the codec it uses)"
        )
    return encoding


def open_corpus_file(path: str) -> ContextManager[IO[bytes]]:
    """Open ``path`` for reading bytes (``-``: standard input, left open afterwards), with CorpusError
    for a directory, a missing or unreadable file, or a closed standard input."""
    if path == STANDARD_INPUT:
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None or stream.closed:
            raise CorpusError("standard input is closed; give the text as a file")
        return contextlib.nullcontext(stream)
    if os.path.isdir(path):
        raise CorpusError(f"{path} is a directory, not a text file; give the files inside it")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror})") from None


def read_block(stream: IO[bytes], size: int, name: str) -> bytes:
    """Up to ``size`` bytes of ``stream`` (b"" at its end); CorpusError naming ``name`` if reading fails.

    A device that refuses to be read (/proc/self/mem), a failing disk or a network file system that went
    away is a problem with that input, and is said to be, rather than left to surface as an error
    without a file name, or as the cache's.
    """
    try:
        return stream.read(size)
    except OSError as exc:
        raise CorpusError(f"{name}: cannot read ({exc.strerror or exc})") from None


def _check_codec(encoding: str) -> None:
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"--encoding {encoding!r} is not a codec Python knows") from None
    # Python also registers transforms under codec names (rot13, base64, hex, zlib, bz2, uu, quopri):
    # they turn bytes into bytes or text into text, never bytes into text, and fail in odd ways on a file.
    if not getattr(info, "_is_text_encoding", True):
        raise ConfigError(
            f"--encoding {encoding!r} is a {info.name} transform, not a text encoding; pass the codec the "
            "file is written in (e.g. utf-8, gb18030, utf-16-le) or auto"
        )


class TextReader:
    """Decode one file chunk by chunk; ``encoding`` holds the codec in use once reading has begun.

    Line endings are normalised to ``\\n`` (Windows and old Mac line endings would otherwise become
    tokens of their own). Binary data (NUL bytes, many control characters) is refused.

    With ``auto`` and no byte-order mark, text is decoded as UTF-8 but non-ASCII text is held back
    until it has shown enough UTF-8 (MIN_UTF8_EVIDENCE non-ASCII characters): a GBK character can
    happen to be valid UTF-8, so a GBK file may pass as UTF-8 for a character or two before failing.
    On failure before that, the held bytes are decoded again as GB18030 (everything before them was
    ASCII, which both codecs read alike); on failure after it, the file is damaged.

    ``source``, if given, is the file actually read (such as a copy of standard input), while
    messages name ``path``. The file is read once, front to back, never seeking back, so the bytes
    given to a ``digest`` are exactly the bytes the text came from.
    """

    MIN_UTF8_EVIDENCE = 16
    # A mostly-ASCII file with a handful of non-ASCII characters is taken as UTF-8 after this much
    # text, so that holding back never costs more than a few chunks of memory.
    MAX_HELD_CHARS = 4 * CHUNK_BYTES

    def __init__(
        self, path: str, encoding: str = AUTO, chunk_bytes: int = CHUNK_BYTES, source: Optional[str] = None
    ) -> None:
        if encoding != AUTO:
            _check_codec(encoding)
        self.path = path
        self.source = path if source is None else source
        self.requested = encoding
        self.encoding: Optional[str] = None if encoding == AUTO else encoding
        self.chunk_bytes = chunk_bytes
        self.size_bytes = os.path.getsize(self.source) if os.path.isfile(self.source) else 0

    def chunks(
        self, on_bytes: Callable[[int], None] = lambda n: None, digest: Optional[Digest] = None
    ) -> Iterator[str]:
        """Yield the text in pieces; ``on_bytes(n)`` is called as each n new bytes are consumed.

        ``digest.update`` receives every byte read, once and in order: the whole file once the text
        has been read to its end.
        """
        with open_corpus_file(self.source) as f:

            def read() -> bytes:
                data = read_block(f, self.chunk_bytes, self.path)
                if digest is not None:
                    digest.update(data)
                return data

            head = read()
            if self.encoding is None:
                self.encoding = detect_encoding(self.path, head)
            yield from self._decode(read, head, on_bytes)

    def _decode(self, read: Callable[[], bytes], data: bytes, on_bytes: Callable[[int], None]) -> Iterator[str]:
        sniffing = self.requested == AUTO and self.encoding == "utf-8"
        decoder = codecs.getincrementaldecoder(self.encoding)()
        offset = reported = 0  # bytes before ``data``; bytes reported to on_bytes
        held: list[str] = []
        held_bytes: list[bytes] = []  # the bytes the held text came from, to decode again if need be
        held_start, held_chars, evidence, carry = 0, 0, 0, ""
        while True:
            final = not data
            undecoded = decoder.getstate()[0]  # the end of the previous data: an incomplete character
            pending = len(undecoded)
            self._check_bytes(data)
            try:
                text = decoder.decode(data, final=final)
            except UnicodeDecodeError as exc:
                position = offset - pending + exc.start
                # The valid UTF-8 just before the error counts as evidence too: one lead byte a character.
                prefix = data[: max(0, exc.start - pending)]
                evidence += len(prefix) - len(prefix.translate(None, _UTF8_LEAD_BYTES))
                if not sniffing or evidence >= self.MIN_UTF8_EVIDENCE:
                    self.encoding = "utf-8" if sniffing else self.encoding
                    raise self._decoding_error(position) from None
                sniffing, self.encoding = False, "gb18030"
                # Decoded again from memory rather than read again, so the text still comes from the
                # bytes already read (and hashed), even if the file has changed since.
                if held:
                    restart, replay = held_start, b"".join(held_bytes) + data
                else:
                    restart, replay = offset - pending, undecoded + data
                decoder, held, held_bytes, offset = codecs.getincrementaldecoder("gb18030")(), [], [], restart
                data = replay
                continue
            except UnicodeError as exc:
                # Not about a byte: the codec refuses the stream as a whole (utf-16 and utf-32 without a
                # byte-order mark, the "undefined" codec).
                name = codecs.lookup(self.encoding).name
                hint = f" ({name}-le or {name}-be without a byte-order mark)" if name in ("utf-16", "utf-32") else ""
                raise CorpusError(
                    f"{self.path} cannot be read as {self.encoding}: {exc}; pass the right --encoding{hint}"
                ) from None
            if sniffing and (held or not text.isascii()):
                if not held:
                    held_start = offset - pending
                    held_bytes.append(undecoded)
                held.append(text)
                held_bytes.append(data)
                held_chars += len(text)
                evidence += len(text) - len(text.encode("ascii", "ignore"))
                if evidence >= self.MIN_UTF8_EVIDENCE or held_chars >= self.MAX_HELD_CHARS or final:
                    sniffing, text, held, held_bytes = False, "".join(held), [], []
            if not held and (text or carry):
                text, carry = self._normalize(carry + text, final)
                if text:
                    self._check_text(text)
                    yield text
            if final:
                return
            offset += len(data)
            if offset > reported:
                on_bytes(offset - reported)
                reported = offset
            data = read()

    def _decoding_error(self, position: int) -> CorpusError:
        if self.requested != AUTO:
            return CorpusError(f"{self.path} is not valid {self.encoding} at byte {position}; pass the right --encoding")
        if self.encoding == "utf-8":
            return CorpusError(
                f"{self.path} is not valid UTF-8 at byte {position}, though the text before it is: the file is "
                "damaged or mixes encodings; fix it or pass the --encoding to read it with"
            )
        if self.encoding == "gb18030":
            return CorpusError(
                f"{self.path} is neither UTF-8 nor GB18030/GBK text (byte {position}); "
                "pass its codec with --encoding (e.g. big5)"
            )
        return CorpusError(
            f"{self.path} starts with a {self.encoding} byte-order mark but is not valid {self.encoding} "
            f"(byte {position}); pass the right --encoding"
        )

    @staticmethod
    def _normalize(text: str, final: bool) -> tuple[str, str]:
        """(text with \\r\\n and \\r as \\n, a trailing \\r kept back in case a \\n follows)."""
        carry = ""
        if not final and text.endswith("\r"):
            text, carry = text[:-1], "\r"
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text, carry

    def _check_bytes(self, data: bytes) -> None:
        if self.encoding in _ASCII_COMPATIBLE and data:
            controls = len(data.translate(None, _NOT_CONTROL_BYTES))
            if controls > _MAX_CONTROL_FRACTION * len(data):
                raise CorpusError(f"{self.path} looks like a binary file, not text (it holds control characters)")

    def _check_text(self, text: str) -> None:
        if self.encoding not in _ASCII_COMPATIBLE:
            if "\x00" in text or len(_CONTROL.findall(text)) > _MAX_CONTROL_FRACTION * len(text):
                raise CorpusError(f"{self.path} looks like a binary file, not text (it holds control characters)")
            surrogate = _LONE_SURROGATE.search(text)
            if surrogate:
                raise CorpusError(
                    f"{self.path} read as {self.encoding} gives a lone surrogate (U+{ord(surrogate.group()):04X}), "
                    "which is not a character; pass the --encoding the file is written in"
                )


def read_text(path: str, encoding: str = AUTO, max_chars: Optional[int] = None, purpose: str = "") -> tuple[str, str]:
    """The whole text of one file (``-``: standard input) and the encoding it was read in; CorpusError
    if it is empty, or longer than ``max_chars`` characters (found as soon as it is: standard input
    may never end), naming the ``purpose`` that takes no more (an option, such as --seed-file)."""
    name = display_name(path)
    reader = TextReader(name, encoding, source=path)
    pieces, length = [], 0
    for piece in reader.chunks():
        length += len(piece)
        if max_chars is not None and length > max_chars:
            raise CorpusError(f"{purpose + ' ' if purpose else ''}{name} is longer than {max_chars:,} characters, "
                              "the most it may hold; give a shorter text")
        pieces.append(piece)
    text = "".join(pieces)
    if not text:
        raise CorpusError(f"{name} is empty")
    return text, reader.encoding or "utf-8"


def read_corpus(paths: Sequence[str], encoding: str = AUTO) -> CorpusText:
    """Read and decode ``paths`` in order and concatenate their text (for text that fits in memory).

    A path of ``-`` is standard input, which can be read once. Raises CorpusError for a missing,
    unreadable, binary, undecodable or empty file.
    """
    if not paths:
        raise CorpusError("no corpus file given")
    check_standard_input_once(paths)
    texts, encodings = [], []
    for path in paths:
        text, used = read_text(path, encoding)
        texts.append(text)
        encodings.append(used)
    return CorpusText("".join(texts), tuple(str(p) for p in paths), tuple(encodings))
