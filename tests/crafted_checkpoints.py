"""A catalogue of crafted and damaged variants of a real checkpoint, for the fault suite and benchmarks.

``iter_crafted_checkpoints(path)`` yields ``(name, data)`` pairs: the bytes of a file that every command
reading checkpoints must either load as a consistent checkpoint or refuse with one ``Error:`` line and
exit 2, never with a traceback or a hang. From a real checkpoint (ideally tiny: there are 1,512 variants
of a one-layer vanilla RNN without an embedding trained with Adagrad, 1,553 with one, more for models
with more entries; they are made one
at a time, in about two seconds in all) it makes:

- ``meta:<field>=<kind>``: every field of the metadata (every key, nested ones included, and the first
  item of every list) replaced by a value of each kind in ``FIELD_VALUES`` (wrong types, NaN, ±inf,
  1e999, huge, negative, empty, a number of 5,000 digits) or deleted (``missing``);
- ``meta:set:<description>``: values of the right type that contradict the rest of the file (a
  vocabulary one token short of the model, a position past the end of the streams, an even PCG64
  increment, a billion layers, ...);
- ``meta:<description>``: metadata that is not a JSON object, not JSON, not UTF-8, nested 100,000
  deep, empty, or not an array of bytes;
- ``entry:<name>:<damage>``: each array entry missing, reshaped, retyped, big-endian, with a broken .npy
  header or bytes after its data, stored column-major (valid), and an unexpected extra entry;
- ``values:<name>:<value>``: each float array with one element NaN, ±inf or 3e38 (finite, but beyond
  any trained model, and big enough to overflow the sums of a forward pass), and each optimizer slot
  that is a sum of squares (or Adam's step) with one element negative;
- ``pickle:<entry>``: an object array whose unpickling would create the file ``marker`` (default
  ``pickle_marker(path)``); the caller checks that it never appears;
- ``bomb:<entry>``: an entry deflated from 1 GiB of zeros to about 1 MB (meta, a parameter, an extra
  entry), and entries whose directory sizes lie;
- ``zip:<damage>``: byte flips across the file, truncations, duplicate and foreign entry names,
  encrypted and bzip2 entries, overlapping entries, 20,000 tiny entries, garbage after the end;
- ``file:<kind>``: files that are no zip at all (empty, text, a bare .npy, zip magic then noise).

Importable as ``crafted_checkpoints`` by the tests (pytest puts tests/ on ``sys.path``) and by a script
that puts the repository's ``tests`` folder on ``sys.path`` first. Needs only numpy and the standard
library; it never imports charrnn, so it describes files rather than the code that reads them.
"""

from __future__ import annotations

import bz2
import functools
import io
import json
import math
import os
import struct
import zipfile
import zlib
from typing import Any, Callable, Iterator, NamedTuple, Optional

import numpy as np

PICKLE_MARKER_NAME = "PICKLE-PAYLOAD-RAN"
BOMB_BYTES = 2**30  # what each bomb entry inflates to
_ZIP_STORED, _ZIP_DEFLATED, _ZIP_BZIP2 = 0, 8, 12


class _Raw(str):
    """A JSON token written as is (NaN, Infinity, 1e999, a 5,000-digit number)."""

    def __repr__(self) -> str:
        return f"<JSON {self[:20]}{'...' if len(self) > 20 else ''}>"


class _Delete:
    """Stands for deleting the field."""

    def __repr__(self) -> str:
        return "<delete>"


_DELETE = _Delete()
# Replacement values for every metadata field: (kind, value). _Raw values are spliced into the JSON text
# unparsed, because json.dumps cannot write 1e999 or an integer Python itself refuses to read back.
FIELD_VALUES: tuple[tuple[str, Any], ...] = (
    ("missing", _DELETE),
    ("null", None),
    ("true", True),
    ("string", "abc"),
    ("empty-string", ""),
    ("fraction", 32.5),
    ("zero", 0),
    ("negative", -5),
    ("huge-int", 10**30),
    ("huge-float", 1e30),
    ("nan", _Raw("NaN")),
    ("inf", _Raw("Infinity")),
    ("-inf", _Raw("-Infinity")),
    ("1e999", _Raw("1e999")),
    ("digits", _Raw("9" * 5000)),
    ("list", []),
    ("object", {}),
)


def pickle_marker(path: str) -> str:
    """Where the pickle payloads of ``path``'s catalogue try to create a file, unless told otherwise."""
    return os.path.join(os.path.dirname(os.path.abspath(path)), PICKLE_MARKER_NAME)


class _Entry(NamedTuple):
    """One zip member as written: its name, its bytes as stored, and what its directory says."""

    name: str
    payload: bytes
    method: int = _ZIP_STORED
    crc: Optional[int] = None  # None: the CRC-32 of payload (stored entries)
    file_size: Optional[int] = None  # None: len(payload)
    flags: int = 0


def _zip(entries: list[_Entry], offsets: Optional[list[int]] = None) -> bytes:
    """A zip archive of ``entries``, written by hand so that any field can lie.

    ``offsets``, if given, replace where the central directory says each entry starts.
    """
    out = io.BytesIO()
    starts = []
    for entry in entries:
        starts.append(out.tell())
        name = entry.name.encode("utf-8")
        crc = zlib.crc32(entry.payload) if entry.crc is None else entry.crc
        size = len(entry.payload) if entry.file_size is None else entry.file_size
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, entry.flags, entry.method, 0, 0x21,
                              crc, len(entry.payload), size, len(name), 0))
        out.write(name + entry.payload)
    directory = out.tell()
    for entry, start in zip(entries, offsets or starts):
        name = entry.name.encode("utf-8")
        crc = zlib.crc32(entry.payload) if entry.crc is None else entry.crc
        size = len(entry.payload) if entry.file_size is None else entry.file_size
        out.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, entry.flags, entry.method, 0, 0x21,
                              crc, len(entry.payload), size, len(name), 0, 0, 0, 0, 0, start))
        out.write(name)
    end = out.tell()
    count = min(len(entries), 0xFFFF)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, end - directory, directory, 0))
    return out.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _npy_header(text: str) -> bytes:
    """A version 1.0 .npy header holding ``text`` (normally the repr of a dict), padded as numpy pads it."""
    header = text.encode("latin1")
    padding = 64 - (10 + len(header) + 1) % 64
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header) + padding + 1) + header + b" " * padding + b"\n"


def _header_for(shape: tuple[int, ...], dtype: str) -> bytes:
    return _npy_header(repr({"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}))


@functools.lru_cache(maxsize=4)
def _deflated_zeros(prefix: bytes, size: int) -> tuple[bytes, int]:
    """(raw deflate stream, CRC-32) of ``prefix`` followed by zeros up to ``size`` bytes, built in a second.

    One MiB of zeros is compressed once and full-flushed, so its compressed bytes refer to nothing
    before them and can be repeated; deflating the whole gigabyte would take several seconds.
    """
    chunk_size = 2**20
    count, rest = divmod(size - len(prefix), chunk_size)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(chunk_size)
    chunk = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(bytes(rest)) + compressor.flush()
    crc = zlib.crc32(prefix)
    for _ in range(count):
        crc = zlib.crc32(zeros, crc)
    return head + chunk * count + tail, zlib.crc32(bytes(rest), crc)


class Source(NamedTuple):
    """A real checkpoint taken apart."""

    data: bytes
    entries: dict[str, bytes]  # zip member name -> its bytes (a whole .npy file)
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]  # entry name without .npy -> array


def read_checkpoint(path: str) -> Source:
    """The checkpoint at ``path``: its bytes, its entries, its metadata and its arrays."""
    with open(path, "rb") as f:
        data = f.read()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    arrays = {name[: -len(".npy")]: np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
              for name, raw in entries.items()}
    meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    return Source(data, entries, meta, arrays)


def _archive(entries: dict[str, bytes]) -> bytes:
    return _zip([_Entry(name, raw) for name, raw in entries.items()])


def with_meta(source: Source, text: bytes) -> bytes:
    """``source`` as an archive again, with ``text`` as the bytes of its metadata entry."""
    entries = dict(source.entries)
    entries["meta.npy"] = _npy(np.frombuffer(text, dtype=np.uint8))
    return _archive(entries)


def meta_json(meta: Any) -> bytes:
    """``meta`` as JSON bytes the way charrnn writes it, with the raw tokens of FIELD_VALUES spliced in."""
    raws: list[str] = []

    def mark(value: Any) -> Any:
        if isinstance(value, _Raw):
            raws.append(value)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(meta), ensure_ascii=False, sort_keys=True)
    for index, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw{index}\x00"), raw)
    return text.encode("utf-8", "backslashreplace")  # a lone surrogate: its JSON escape


def field_paths(meta: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key of ``meta`` as a path of keys and list indices, nested ones included; for a list, the
    list itself and its first item (each item of a vocabulary would add nothing but time)."""
    if isinstance(meta, dict):
        for key in sorted(meta):
            yield prefix + (key,)
            yield from field_paths(meta[key], prefix + (key,))
    elif isinstance(meta, list) and meta:
        yield prefix + (0,)
        yield from field_paths(meta[0], prefix + (0,))


def path_name(path: tuple) -> str:
    """``('tokenizer', 'vocab', 0)`` as ``tokenizer.vocab[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + part
    return text


def replaced(meta: Any, path: tuple, value: Any) -> Any:
    """A deep copy of ``meta`` with the field at ``path`` set to ``value`` (deleted if it is _DELETE)."""
    copy = json.loads(json.dumps(meta))
    holder = copy
    for part in path[:-1]:
        holder = holder[part]
    if value is _DELETE:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return copy


def _contradictions(meta: dict[str, Any]) -> Iterator[tuple[str, Callable[[dict[str, Any]], None]]]:
    """Values of the right type that disagree with the rest of the file."""
    model, train, progress, vocab = meta["model"], meta["train"], meta["progress"], meta["tokenizer"]["vocab"]
    tokens = meta.get("corpus", {}).get("num_tokens", 0)
    yield "vocab_size+1", lambda m: m["model"].update(vocab_size=model["vocab_size"] + 1)
    yield "vocab-one-short", lambda m: m["tokenizer"].update(vocab=vocab[:-1])
    yield "hidden_size+1", lambda m: m["model"].update(hidden_size=model["hidden_size"] + 1)
    yield "num_layers=2", lambda m: m["model"].update(num_layers=2)
    yield "num_layers=10**9", lambda m: m["model"].update(num_layers=10**9)
    yield "cell=lstm", lambda m: m["model"].update(cell="lstm")
    yield "cell=gru", lambda m: m["model"].update(cell="gru")
    yield "dtype=float64", lambda m: m["model"].update(dtype="float64")
    yield "dtype=object", lambda m: m["model"].update(dtype="object")
    yield "activation=relu-lstm", lambda m: m["model"].update(activation="relu", cell="lstm")
    yield "dropout=1", lambda m: m["model"].update(dropout=1)
    yield "batch_size+1", lambda m: m["train"].update(batch_size=train["batch_size"] + 1)
    yield "optimizer=adam", lambda m: m["train"].update(optimizer="adam")
    yield "optimizer=sgd", lambda m: m["train"].update(optimizer="sgd")
    yield "no-stopping-rule", lambda m: m["train"].update(max_steps=None, max_epochs=None)
    yield "max_epochs=1e300", lambda m: m["train"].update(max_epochs=1e300)
    yield "lr_decay=0", lambda m: m["train"].update(lr_decay=0)
    yield "val_step-after-step", lambda m: m["progress"].update(val_step=progress["step"] + 1)
    yield "best_val_step-after-step", lambda m: m["progress"].update(best_val_step=progress["step"] + 1)
    yield "position-past-streams", lambda m: m["progress"].update(position=tokens)
    yield "position=2**62", lambda m: m["progress"].update(position=2**62)
    yield "step=2**64", lambda m: m["progress"].update(step=2**64)
    yield "loss_ema_steps=2**70", lambda m: m["progress"].update(loss_ema_steps=2**70)
    yield "num_tokens=0-with-position", lambda m: m["corpus"].update(num_tokens=0)
    yield "vocab-unsorted", lambda m: m["tokenizer"].update(vocab=vocab[::-1])
    yield "vocab-duplicate", lambda m: m["tokenizer"].update(vocab=[vocab[0]] + vocab[:-1])
    yield "vocab-empty-token", lambda m: m["tokenizer"].update(vocab=[""] + vocab[1:])
    yield "vocab-lone-surrogate", lambda m: m["tokenizer"].update(vocab=vocab[:-1] + ["\udcff"])
    yield "vocab-two-char-token", lambda m: m["tokenizer"].update(vocab=vocab[:-1] + ["\uffef\ufff0"])
    yield "unknown-not-in-vocab", lambda m: m["tokenizer"].update(unknown="<zz>")
    yield "kind=bpe", lambda m: m["tokenizer"].update(kind="bpe")
    yield "ids_dtype=object", lambda m: m["corpus"].update(ids_dtype="O")
    yield "ids_dtype=float", lambda m: m["corpus"].update(ids_dtype="<f8")
    yield "max_vocab=0", lambda m: m["corpus"].update(max_vocab=0)
    yield "bit_generator=MT19937", lambda m: m["rng_state"].update(bit_generator="MT19937")
    yield "inc-even", lambda m: m["rng_state"]["state"].update(inc=m["rng_state"]["state"]["inc"] - 1)
    yield "inc=2**128", lambda m: m["rng_state"]["state"].update(inc=2**128 + 1)
    yield "has_uint32=2", lambda m: m["rng_state"].update(has_uint32=2)
    yield "uinteger=2**32", lambda m: m["rng_state"].update(uinteger=2**32)
    yield "format=other", lambda m: m.update(format="other")
    yield "format_version=5", lambda m: m.update(format_version=5)
    yield "format_version=true", lambda m: m.update(format_version=True)
    yield "format_version=1-of-format-4", lambda m: m.update(format_version=1)
    yield "format_version=2-of-format-4", lambda m: m.update(format_version=2)
    # Format 3 knew no right-to-left stack: a bidirectional model's file claiming it has entries too many.
    yield "format_version=3-of-format-4", lambda m: m.update(format_version=3)
    yield "bidirectional-flipped", lambda m: m["model"].update(bidirectional=not model.get("bidirectional", False))
    yield "look_ahead=10**12", lambda m: m["train"].update(look_ahead=10**12)
    yield "look_ahead=2**63", lambda m: m["train"].update(look_ahead=2**63)
    yield "embed_size+3", lambda m: m["model"].update(embed_size=model.get("embed_size", 0) + 3)
    yield "embed_size=0", lambda m: m["model"].update(embed_size=0)
    yield "embed_size=10**12", lambda m: m["model"].update(embed_size=10**12)


def _meta_variants(source: Source) -> Iterator[tuple[str, bytes]]:
    for path in field_paths(source.meta):
        for kind, value in FIELD_VALUES:
            yield f"meta:{path_name(path)}={kind}", with_meta(source, meta_json(replaced(source.meta, path, value)))
    for name, change in _contradictions(source.meta):
        meta = json.loads(json.dumps(source.meta))
        change(meta)
        yield f"meta:set:{name}", with_meta(source, meta_json(meta))
    for name, text in [
        ("not-an-object", b"[]"), ("a-string", b'"charrnn-checkpoint"'), ("not-json", b"{\"format\": "),
        ("not-utf8", b'{"format": "\xff"}'), ("nested-100000-deep", b"[" * 100_000 + b"]" * 100_000),
        ("empty", b""),
    ]:
        yield f"meta:{name}", with_meta(source, text)
    entries = dict(source.entries)
    entries["meta.npy"] = _npy(np.frombuffer(meta_json(source.meta), dtype=np.uint8).astype(np.float32))
    yield "meta:float32-entry", _archive(entries)
    text = meta_json(source.meta)
    entries["meta.npy"] = _npy(np.frombuffer(text + b" " * (-len(text) % 2), dtype=np.uint8).reshape(2, -1))
    yield "meta:2d-entry", _archive(entries)


def _entry_variants(source: Source) -> Iterator[tuple[str, bytes]]:
    for member in source.entries:
        if member == "meta.npy":
            continue
        name, array = member[: -len(".npy")], source.arrays[member[: -len(".npy")]]
        entries = dict(source.entries)
        del entries[member]
        yield f"entry:{name}:missing", _archive(entries)
        damaged = {
            "shape+1": np.zeros((array.shape[0] + 1,) + array.shape[1:] if array.ndim else (1,), array.dtype),
            "float64": array.astype(np.float64),
            "int32": array.astype(np.int32),
            "big-endian": array.astype(array.dtype.newbyteorder(">")),
        }
        if array.ndim > 1:
            damaged["flattened"] = array.reshape(-1)
        for damage, value in damaged.items():
            yield f"entry:{name}:{damage}", _archive({**source.entries, member: _npy(value)})
        raw = source.entries[member]
        data = raw[raw.index(b"\n") + 1:]  # what follows the header
        headers = {
            "bad-magic": b"\x93NUMPX" + raw[6:],
            "npy-version-3": raw[:6] + b"\x03\x00" + struct.pack("<I", len(raw) - 10) + raw[10:],
            "header-length-65535": raw[:8] + b"\xff\xff" + raw[10:],
            "header-not-a-dict": _npy_header("[1, 2, 3]") + data,
            "header-expression": _npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (10**10,)}") + data,
            "negative-shape": _header_for((-1,) + array.shape[1:], array.dtype.str) + data,
            "header-only": raw[: len(raw) - len(data)],
            "trailing-bytes": raw + bytes(16),
            "fortran-order": _npy(np.asfortranarray(array)),  # valid: the same values, column-major
        }
        for damage, value in headers.items():
            yield f"entry:{name}:{damage}", _archive({**source.entries, member: value})
    yield "entry:extra", _archive({**source.entries, "param.extra.npy": _npy(np.zeros(3, np.float32))})
    yield "entry:no-meta", _archive({k: v for k, v in source.entries.items() if k != "meta.npy"})


# Values no checkpoint may hold: not finite, or finite but far beyond any trained model (3e38 is close
# to float32's largest, so a forward pass summing such weights overflows).
BAD_VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "3e38": 3e38}
SQUARE_SLOTS = ("optim.sum_sq.", "optim.mean_sq.", "optim.v.")


def with_arrays(source: Source, arrays: dict[str, np.ndarray]) -> bytes:
    """``source`` as an archive again, with the entries named in ``arrays`` (without .npy) replaced."""
    return _archive({**source.entries, **{f"{name}.npy": _npy(value) for name, value in arrays.items()}})


def _value_variants(source: Source) -> Iterator[tuple[str, bytes]]:
    for name, array in source.arrays.items():
        if name == "meta" or not array.size:
            continue
        if array.dtype.kind == "f":
            for label, value in BAD_VALUES.items():
                changed = array.copy()
                changed.reshape(-1)[changed.size // 2] = value
                yield f"values:{name}:{label}", with_arrays(source, {name: changed})
        if name.startswith(SQUARE_SLOTS) or name == "optim.step":
            changed = array.copy()
            changed.reshape(-1)[0] = -1
            yield f"values:{name}:negative", with_arrays(source, {name: changed})


def _pickle_variants(source: Source, marker: str) -> Iterator[tuple[str, bytes]]:
    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (marker, "w"))

    payload = _npy(np.array([Payload()], dtype=object))
    for member in ("meta.npy", "param.b_h.npy", "state.h.0.npy", "param.payload.npy"):
        yield f"pickle:{member[: -len('.npy')]}", _archive({**source.entries, member: payload})


def _bomb_variants(source: Source) -> Iterator[tuple[str, bytes]]:
    hidden = source.meta["model"]["hidden_size"]
    targets = {  # each a valid .npy file of 1 GiB, give or take its header
        "meta.npy": ((BOMB_BYTES,), "u1"),
        "param.W_hy.npy": ((hidden, BOMB_BYTES // 4 // hidden), "f4"),
        "bomb.npy": ((BOMB_BYTES,), "u1"),
    }
    for member, (shape, dtype) in targets.items():
        header = _header_for(shape, dtype)
        size = len(header) + math.prod(shape) * np.dtype(dtype).itemsize
        stream, crc = _deflated_zeros(header, size)
        entries = [_Entry(name, raw) for name, raw in source.entries.items() if name != member]
        entries.append(_Entry(member, stream, _ZIP_DEFLATED, crc, size))
        yield f"bomb:{member[: -len('.npy')]}", _zip(entries)
    # Stored entries whose directory claims far more than the file holds.
    for member in ("meta.npy", "param.W_hy.npy"):
        entries = [_Entry(name, raw, file_size=BOMB_BYTES if name == member else None)
                   for name, raw in source.entries.items()]
        yield f"bomb:{member[: -len('.npy')]}:size-lie", _zip(entries)


def _zip_variants(source: Source) -> Iterator[tuple[str, bytes]]:
    data = source.data
    for index in range(64):  # byte flips spread evenly over the whole file
        offset = index * len(data) // 64 + 3
        yield f"zip:flip@{offset}", data[:offset] + bytes([data[offset] ^ 0x5A]) + data[offset + 1:]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    for info in infos:  # a bit in the middle of every entry's data
        offset = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
        yield f"zip:flip-in:{info.filename}", data[:offset] + bytes([data[offset] ^ 0x04]) + data[offset + 1:]
    for cut in [0, 1, 3, 4, 30, len(data) - 22, len(data) - 1] + [len(data) * k // 20 for k in range(1, 20)]:
        yield f"zip:truncated@{cut}", data[:cut]
    entries = [_Entry(name, raw) for name, raw in source.entries.items()]
    yield "zip:duplicate-entry", _zip(entries + [entries[-1]])
    yield "zip:foreign-entry", _zip(entries + [_Entry("README.txt", b"hello")])
    yield "zip:encrypted", _zip(entries[:-1] + [entries[-1]._replace(flags=1)])
    last = entries[-1]
    bzip2 = _Entry(last.name, bz2.compress(last.payload), _ZIP_BZIP2, zlib.crc32(last.payload), len(last.payload))
    yield "zip:bzip2", _zip(entries[:-1] + [bzip2])
    yield "zip:overlapping", _zip(entries, [0] * len(entries))
    yield "zip:20000-entries", _zip(entries + [_Entry(f"x{i}.npy", b"") for i in range(20_000)])
    yield "zip:appended-garbage", data + os.urandom(64)
    yield "file:empty", b""
    yield "file:text", "床前明月光\n".encode() * 100
    yield "file:zip-magic-only", b"PK\x03\x04"
    yield "file:zip-magic-then-noise", b"PK\x03\x04" + bytes(range(256)) * 16
    yield "file:npy-not-npz", _npy(np.zeros(4, np.float32))


def iter_crafted_checkpoints(path: str, marker: Optional[str] = None) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, data)`` for every crafted or damaged variant of the real checkpoint at ``path``.

    The pickle payloads try to create the file ``marker`` (default ``pickle_marker(path)``) when
    unpickled. Names are unique and stable; see the module docstring for the families.
    """
    source = read_checkpoint(path)
    marker = marker or pickle_marker(path)
    yield from _meta_variants(source)
    yield from _entry_variants(source)
    yield from _value_variants(source)
    yield from _pickle_variants(source, marker)
    yield from _bomb_variants(source)
    yield from _zip_variants(source)
