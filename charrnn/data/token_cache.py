"""Tokenize once, memory-map forever: a cache of token ids for a corpus.

``prepare`` reads the corpus files in chunks (never the whole text as one string), tokenizes them,
and writes the ids as a ``.npy`` array of the smallest unsigned type that holds the vocabulary, beside
a JSON file with the vocabulary. Training memory-maps the array, so a corpus of gigabytes costs pages,
not RAM. The cache key covers the bytes of every file, the tokenizer, the encoding option and
``max_vocab``, so an edited corpus is never served stale. The key is computed before tokenizing (to
look the entry up), and tokenizing hashes the bytes it reads again: an entry is published only if the
two agree, so its tokens always come from the bytes its key names, even if a file changes meanwhile.

Tokenizing happens in one pass: tokens get provisional ids in order of first appearance (written to
a temporary file), and a second, cheap pass maps them to the ids of the sorted final vocabulary. A
large file is cut into jieba words by several processes at once (parallel_tokenize.py).

Standard input (``-``), pipes and FIFOs can be read only once, so they are first copied into the
cache folder while being hashed. Every temporary file is removed however ``prepare`` ends, and those
left by a process that was killed are removed by the next ``prepare`` in the same folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from contextlib import suppress
from dataclasses import dataclass
from typing import IO, Any, Callable, Optional, Sequence

import numpy as np

from charrnn import files
from charrnn.config import DEFAULT_CACHE_DIR, DEFAULT_SPOOL_LIMIT_MB
from charrnn.data import parallel_tokenize
from charrnn.data.corpus import (
    AUTO, STANDARD_INPUT, TextReader, check_standard_input_once, detect_encoding, display_name, open_corpus_file,
    read_block,
)
from charrnn.errors import CorpusError, DiskSpaceError
from charrnn.data.tokenizer import Tokenizer, VocabularyBuilder

CACHE_FORMAT = 1
_REMAP_CHUNK_TOKENS = 8 << 20
_COPY_BLOCK_BYTES = 1 << 20
# While standard input is copied into the cache folder, its disk's free space is checked every this many
# bytes, and the copy stops before less than DISK_RESERVE_BYTES (or a twentieth of the disk, if smaller)
# would be left: an endless stream must not fill the disk that others use too.
_DISK_CHECK_BYTES = 64 << 20
DISK_RESERVE_BYTES = 1 << 30

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass(frozen=True)
class PreparedCorpus:
    """Token ids of a corpus (memory-mapped from the cache) with their vocabulary."""

    ids: np.ndarray  # (N,) uint8, uint16 or uint32, read-only memory map
    tokenizer: Tokenizer
    paths: tuple[str, ...]
    encodings: tuple[str, ...]
    file_tokens: tuple[int, ...]  # tokens from each file
    ids_sha256: str  # of the ids as stored: identifies the data for resuming
    cache_path: str
    from_cache: bool  # found already prepared
    size_bytes: int = 0  # of the corpus files, as read


@dataclass(frozen=True)
class _Source:
    """A corpus file as given, the file to tokenize it from, and the sha256 of its bytes."""

    path: str  # as given: named in messages and recorded
    readable: str  # the file itself, or a copy of standard input, a pipe or a FIFO in the cache folder
    sha256: str
    size_bytes: int


class _Temporaries:
    """The temporary files of one ``prepare`` in the cache folder, removed when it ends, however it ends.

    A file renamed into place is no longer there to remove. Their names carry the process number
    (``files.make_temporary``), so the files of a process killed outright are removed by the next
    ``prepare`` (``files.remove_orphaned_temporaries``).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.paths: list[str] = []

    def create(self, what: str) -> tuple[int, str]:
        """A new temporary file ``.<what>.<pid>@<host>.<random>.tmp``: (open fd, path)."""
        _make_cache_dir(self.directory)
        try:
            fd, path = files.make_temporary(self.directory, what)
        except OSError as exc:
            raise CorpusError(
                f"cannot write to the cache folder {self.directory}: {exc.strerror or exc}; pass --cache-dir"
            ) from None
        self.paths.append(path)
        return fd, path

    def __enter__(self) -> "_Temporaries":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for path in self.paths:
            with suppress(OSError):
                os.unlink(path)


def _make_cache_dir(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create the cache folder {directory}: {exc.strerror}; pass --cache-dir") from None


def _copy(
    source: IO[bytes], out: Optional[IO[bytes]], check_head: Callable[[bytes], Any] = bool, name: str = "the corpus",
    check_size: Callable[[int], None] = lambda size: None,
) -> tuple[str, int]:
    """Read ``source`` to its end (writing it to ``out`` if given): (sha256, bytes).

    ``check_head`` sees the first block before anything is written, and may raise to refuse the input;
    ``check_size(n)`` sees the size the copy is about to reach before each block is written, and may
    raise to stop it. A failure to read is a CorpusError naming ``name``.
    """
    digest, size = hashlib.sha256(), 0
    while block := read_block(source, _COPY_BLOCK_BYTES, name):
        if not size:
            check_head(block)
        digest.update(block)
        size += len(block)
        if out is not None:
            check_size(size)
            out.write(block)
    return digest.hexdigest(), size


class _SpoolBudget:
    """``check_size`` of a copy of standard input into ``directory``: refuses it beyond ``limit_mb``
    (0: no limit) with CorpusError, and before the disk would be all but full with DiskSpaceError."""

    def __init__(self, name: str, directory: str, limit_mb: int) -> None:
        self.name, self.directory, self.limit_mb = name, directory, limit_mb
        self.checked_at = -_DISK_CHECK_BYTES  # check the disk before the first block

    def __call__(self, size: int) -> None:
        if self.limit_mb and size > self.limit_mb * 1_000_000:
            raise CorpusError(
                f"{self.name} is longer than --spool-limit-mb {self.limit_mb:,} (MB), the most that is copied into "
                f"the cache folder {self.directory} to be tokenized; raise --spool-limit-mb, or give the text as a file"
            )
        if size - self.checked_at >= _DISK_CHECK_BYTES:
            self.checked_at = size
            usage = shutil.disk_usage(self.directory)
            reserve = min(DISK_RESERVE_BYTES, usage.total // 20)
            if usage.free - _DISK_CHECK_BYTES < reserve:
                raise DiskSpaceError(
                    f"copying {self.name} into the cache folder {self.directory} stopped at {size / 1e6:,.0f} MB: "
                    f"its disk has {usage.free / 1e6:,.0f} MB free, and the copy must leave {reserve / 1e6:,.0f} MB; "
                    "free some space, or pass --cache-dir on a larger disk"
                )


def _source(path: str, encoding: str, temporaries: _Temporaries, spool_limit_mb: int) -> _Source:
    """Hash a corpus file; standard input, a pipe or a FIFO is copied to a temporary file on the way.

    Such input can be read only once, and tokenizing reads it again once the cache key is known. The
    copy stops at ``spool_limit_mb`` megabytes (0: none) and before the disk fills (_SpoolBudget).
    """
    with open_corpus_file(path) as stream:
        name = display_name(path)
        if path != STANDARD_INPUT and os.path.isfile(path):
            return _Source(path, path, *_copy(stream, None, name=name))
        fd, copy = temporaries.create("spool")
        with os.fdopen(fd, "wb") as out:
            # Refuse binary data (a device such as /dev/zero never ends) before copying any of it.
            sha256, size = _copy(stream, out, lambda head: encoding == AUTO and detect_encoding(name, head), name,
                                 _SpoolBudget(name, temporaries.directory, spool_limit_mb))
    return _Source(path, copy, sha256, size)


def cache_key(file_sha256s: Sequence[str], kind: str, encoding: str, max_vocab: Optional[int]) -> str:
    """Hex key naming the cache entry of files with these contents (sha256, in order) and settings."""
    described = {
        "cache_format": CACHE_FORMAT,
        "files": list(file_sha256s),
        "tokenizer": kind,
        "encoding": encoding,
        "max_vocab": max_vocab,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def smallest_id_dtype(vocab_size: int) -> np.dtype:
    """uint8, uint16 or uint32: the smallest type that holds ids below ``vocab_size``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise CorpusError(f"a vocabulary of {vocab_size} tokens is too large")


def _write_ids(
    provisional_path: str, mapping: np.ndarray, dtype: np.dtype, count: int, temporaries: _Temporaries
) -> tuple[str, str]:
    """Map the provisional ids to final ones into a temporary ``.npy``; returns its path and the ids' sha256."""
    digest = hashlib.sha256()
    fd, tmp_path = temporaries.create("ids")
    files.plain_permissions(fd)  # it becomes the cache entry, which other users may share
    with os.fdopen(fd, "wb") as out, open(provisional_path, "rb") as source:
        header = {"descr": dtype.str, "fortran_order": False, "shape": (count,)}
        np.lib.format.write_array_header_1_0(out, header)
        mapping = mapping.astype(dtype)
        while True:
            chunk = np.fromfile(source, dtype=np.uint32, count=_REMAP_CHUNK_TOKENS)
            if not len(chunk):
                break
            final = mapping[chunk]
            digest.update(final.data)
            out.write(final.data)
            del chunk, final  # before the next read, so two chunks are never alive at once
        out.flush()
        os.fsync(out.fileno())
    return tmp_path, digest.hexdigest()


def _build(
    sources: Sequence[_Source], kind: str, encoding: str, max_vocab: Optional[int], temporaries: _Temporaries,
    workers: int, on_progress: Progress,
) -> dict[str, Any]:
    """Tokenize ``sources`` into temporary files; returns the metadata and, as ``ids_tmp``, the ids file.

    Raises CorpusError if a file's bytes are not those its sha256 was taken from (it changed).
    """
    provisional = VocabularyBuilder(counting=max_vocab is not None)
    total_bytes = sum(source.size_bytes for source in sources)
    done = [0]

    def advance(count: int) -> None:
        done[0] += count
        on_progress(done[0], total_bytes)

    encodings, file_tokens = [], []
    fd, provisional_path = temporaries.create("provisional")
    with os.fdopen(fd, "wb") as out:
        for source in sources:
            name = display_name(source.path)
            reader = TextReader(name, encoding, source=source.readable)
            digest = hashlib.sha256()
            chunks = reader.chunks(advance, digest)
            count = 0
            if kind == "char":
                for text in chunks:
                    ids = provisional.add_text(text)
                    out.write(ids.view(np.uint32).data)  # ids are non-negative int32
                    count += len(ids)
            else:
                parallel = workers if source.size_bytes >= parallel_tokenize.PARALLEL_MIN_BYTES else 1
                # closing(): an exception here must stop the worker processes at once, not whenever
                # the generator happens to be collected.
                with contextlib.closing(parallel_tokenize.jieba_word_lists(chunks, parallel)) as word_lists:
                    for words in word_lists:
                        ids = provisional.add_tokens(words)
                        out.write(ids.view(np.uint32).data)
                        count += len(ids)
            if digest.hexdigest() != source.sha256:
                raise CorpusError(f"{name} changed while being read; run again")
            if count == 0:
                raise CorpusError(f"{name} is empty")
            encodings.append(reader.encoding)
            file_tokens.append(count)
    tokenizer, mapping = provisional.build(kind, max_vocab)
    dtype = smallest_id_dtype(tokenizer.vocab_size)
    ids_tmp, ids_sha256 = _write_ids(provisional_path, mapping, dtype, sum(file_tokens), temporaries)
    return {
        "ids_tmp": ids_tmp,
        "tokenizer": tokenizer.to_dict(),
        "encodings": encodings,
        "file_tokens": file_tokens,
        "ids_sha256": ids_sha256,
        "dtype": dtype.str,
    }


def _load(key: str, directory: str, paths: Sequence[str], size_bytes: int) -> Optional[PreparedCorpus]:
    meta_path, ids_path = os.path.join(directory, f"{key}.json"), os.path.join(directory, f"{key}.npy")
    try:
        for path in (meta_path, ids_path):
            if files.non_regular_kind(os.lstat(path).st_mode):
                return None  # never read through a link, nor from a pipe; writing the entry refuses it
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("cache_format") != CACHE_FORMAT:
            return None
        ids = np.load(ids_path, mmap_mode="r", allow_pickle=False)
        tokenizer = Tokenizer.from_dict(meta["tokenizer"])
        if ids.shape != (sum(meta["file_tokens"]),) or ids.dtype != np.dtype(meta["dtype"]):
            return None
    except Exception:  # noqa: BLE001 - absent, partial or malformed: the entry is simply built again
        return None
    return PreparedCorpus(
        ids, tokenizer, tuple(paths), tuple(meta["encodings"]), tuple(meta["file_tokens"]),
        meta["ids_sha256"], ids_path, True, size_bytes,
    )


def prepare(
    paths: Sequence[str],
    kind: str = "char",
    encoding: str = AUTO,
    max_vocab: Optional[int] = None,
    cache_dir: str = DEFAULT_CACHE_DIR,
    workers: Optional[int] = None,
    on_progress: Progress = lambda done, total: None,
    spool_limit_mb: int = DEFAULT_SPOOL_LIMIT_MB,
) -> PreparedCorpus:
    """The token ids of ``paths`` from the cache, tokenizing them first if they are not there.

    A path ``-`` is standard input, copied into the cache folder first (at most ``spool_limit_mb``
    megabytes; 0: no limit). ``workers`` processes cut jieba text in parallel (default: one per core);
    the ids equal those of one process. Raises CorpusError for bad files, as ``corpus.TextReader``
    does, for a file that changed while it was being read, and for input beyond the spool limit;
    DiskSpaceError before a copy of standard input would fill the disk.
    """
    if not paths:
        raise CorpusError("no corpus file given")
    if max_vocab is not None and max_vocab < 1:
        raise CorpusError(f"--max-vocab must be positive, got {max_vocab}")
    check_standard_input_once(paths)
    TextReader(paths[0], encoding)  # fails early, with the usual message, on an unknown codec name
    files.remove_orphaned_temporaries(cache_dir)
    with _Temporaries(cache_dir) as temporaries:
        sources = [_source(path, encoding, temporaries, spool_limit_mb) for path in paths]
        size_bytes = sum(source.size_bytes for source in sources)
        key = cache_key([source.sha256 for source in sources], kind, encoding, max_vocab)
        found = _load(key, cache_dir, paths, size_bytes)
        if found is not None:
            return found
        built = _build(
            sources, kind, encoding, max_vocab, temporaries, workers or os.cpu_count() or 1, on_progress
        )
        meta = {"cache_format": CACHE_FORMAT, "paths": list(paths)}
        meta.update((name, value) for name, value in built.items() if name != "ids_tmp")
        files.replace_file(built["ids_tmp"], os.path.join(cache_dir, f"{key}.npy"))
        # The JSON goes last: its presence says the entry is complete.
        files.atomic_write(os.path.join(cache_dir, f"{key}.json"), files.json_bytes(meta))
    loaded = _load(key, cache_dir, paths, size_bytes)
    if loaded is None:
        # Never leave an entry behind that every later run would find, fail to read and build again.
        for suffix in (".json", ".npy"):
            with suppress(OSError):
                os.unlink(os.path.join(cache_dir, key + suffix))
        raise CorpusError(f"the cache entry just written to {cache_dir} cannot be read back; it was removed")
    return dataclasses.replace(loaded, from_cache=False)
