"""Reading an ``.npz`` archive from a file nobody vouches for, without inflating what it only claims.

``open_archive`` checks the zip directory (entry names, compression, sizes) and reads every entry's
``.npy`` header, refusing pickled objects, all before any array's data is inflated; ``require`` then
holds an entry to the shape and dtype the caller expects, size included, and ``read`` inflates it.
So a small file that claims a gigabyte costs a few kilobytes before it is refused. Everything a
damaged or crafted file makes zipfile or numpy raise becomes one CheckpointError naming the file.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
import zlib
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import numpy as np

from charrnn.errors import CharRNNError, CheckpointError

# charrnn stores its entries uncompressed. Deflated ones (np.savez_compressed) are accepted, but trained
# weights are nearly random bits and barely shrink, so an archive that would inflate to more than this
# many times its compressed size (plus a MiB of slack for small files of zeroed states) is a zip bomb.
MAX_COMPRESSION_RATIO = 64
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what numpy writes
_SUFFIX = ".npy"


class Header(NamedTuple):
    """What an entry's .npy header says."""

    shape: tuple[int, ...]
    dtype: np.dtype
    size: int  # bytes of the header itself; the array's data follows


@contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn whatever reading a damaged or crafted file raises into one CheckpointError naming it."""
    try:
        yield
    except CharRNNError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except PermissionError:
        # The file may be perfectly good: say what stops it from being read, not that it is damaged.
        raise CheckpointError(f"cannot read {path}: permission denied") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); use an earlier checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - whatever a crafted archive makes zipfile or numpy raise, say so plainly
        raise CheckpointError(f"{path} is corrupt ({type(exc).__name__}: {exc})") from None


class NpzArchive:
    """An open archive whose directory and headers have been checked; entries are named without ``.npy``."""

    def __init__(self, path: str, archive: zipfile.ZipFile, file_size: int) -> None:
        self.path, self._archive = path, archive
        self.entries: dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            name = info.filename[: -len(_SUFFIX)]
            if not info.filename.endswith(_SUFFIX) or name in self.entries:
                raise CheckpointError(f"{path} is not a charrnn checkpoint (unexpected entry {info.filename!r})")
            if info.compress_type not in _METHODS or info.flag_bits & 0x1:
                raise CheckpointError(f"{path}: entry {info.filename} is encrypted or compressed with a method "
                                      "numpy never writes; refusing it")
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                raise CheckpointError(f"{path} is corrupt (the sizes of entry {info.filename} disagree)")
            self.entries[name] = info
        compressed = sum(info.compress_size for info in self.entries.values())
        inflated = sum(info.file_size for info in self.entries.values())
        if compressed > file_size:  # entries that overlap, or sizes that lie
            raise CheckpointError(f"{path} is corrupt (its entries claim {compressed:,} bytes "
                                  f"of a {file_size:,}-byte file)")
        if inflated > MAX_COMPRESSION_RATIO * compressed + 2**20:
            raise CheckpointError(
                f"{path} would inflate to {inflated:,} bytes from {compressed:,}, far more than any checkpoint "
                "compresses; refusing it (a zip bomb?)"
            )
        self.headers = {name: self._header(info) for name, info in self.entries.items()}
        if any(header.dtype.hasobject for header in self.headers.values()):
            raise CheckpointError(f"{path} holds pickled Python objects; refusing to load it (unpickling can run code)")

    def _header(self, info: zipfile.ZipInfo) -> Header:
        # numpy reads at most 10,000 bytes of header, so this inflates a few kilobytes at most.
        with _reading(self.path), self._archive.open(info) as entry:
            version = np.lib.format.read_magic(entry)
            if version not in ((1, 0), (2, 0)):
                raise CheckpointError(f"{self.path}: entry {info.filename} is in .npy format {version}, which "
                                      "numpy writes only for arrays charrnn never stores")
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(entry)
            return Header(shape, dtype, entry.tell())

    def require(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
        """Raise CheckpointError unless entry ``name`` holds exactly a ``shape`` array of ``dtype``."""
        header = self.headers[name]
        if header.shape != shape or header.dtype != np.dtype(dtype):
            raise CheckpointError(
                f"{self.path}: entry {name} has shape {header.shape} and dtype {header.dtype}, "
                f"but the model needs {shape} {dtype}"
            )
        needed = header.size + math.prod(shape) * np.dtype(dtype).itemsize
        if self.entries[name].file_size != needed:
            raise CheckpointError(f"{self.path} is corrupt (entry {name} holds {self.entries[name].file_size:,} "
                                  f"bytes; its {shape} {dtype} array takes {needed:,})")

    def read(self, name: str) -> np.ndarray:
        """The array in entry ``name``, C-contiguous, writeable and in native byte order; call ``require``
        first, which bounds what this inflates.

        A valid .npy may be stored column-major (``fortran_order``, as a conversion script may write it):
        numpy then returns a transposed view, and code that updates arrays in place through a
        C-contiguous buffer would update a copy, leaving the array itself unchanged.
        """
        # Reading to the entry's end makes zipfile check its CRC-32, so a flipped bit is caught here.
        with _reading(self.path), self._archive.open(self.entries[name]) as entry:
            array = np.lib.format.read_array(entry, allow_pickle=False)
        if not (array.flags.c_contiguous and array.flags.writeable and array.dtype.isnative):
            array = np.array(array, dtype=array.dtype.newbyteorder("="), order="C")
        return array


@contextmanager
def open_archive(path: str) -> Iterator[NpzArchive]:
    """The ``.npz`` file at ``path``, checked as NpzArchive describes; raises CheckpointError.

    Only the reading is guarded, so that a bug in what the caller does with the archive is not
    reported as a corrupt file.
    """
    with _reading(path):
        # Not blocking: opening a named pipe for reading would wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise CheckpointError(f"{path} is a directory, not a checkpoint file")
            if not stat.S_ISREG(mode):
                raise CheckpointError(f"{path} is not a regular file (a named pipe or a device?), so not a checkpoint")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        f = os.fdopen(fd, "rb")
    with f:
        with _reading(path):
            magic = f.read(4)
            if magic != b"PK\x03\x04":
                what = "empty" if not magic else "not an .npz archive"
                raise CheckpointError(f"{path} is not a charrnn checkpoint ({what}; truncated or the wrong file?)")
            archive = zipfile.ZipFile(f)
        yield NpzArchive(path, archive, os.fstat(f.fileno()).st_size)
