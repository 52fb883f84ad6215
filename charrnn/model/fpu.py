"""Flushing subnormal floats to zero while charrnn's loops run.

A float32 below 1.2e-38 is "subnormal", and x86 processors handle arithmetic that reads or produces
one in microcode, up to a hundred times slower than normal arithmetic. Training produces them: the
squared gradient of an output column whose token is very improbable (Adagrad's g²) underflows into
that range, and then one elementwise pass over the output layer takes milliseconds instead of a
tenth of one. The processor can instead treat them as zero (the FTZ and DAZ bits of the MXCSR
register), which changes no result by more than 1.2e-38.

numpy offers no way to set those bits, so this module carries the two instructions that do, as ten
bytes of x86-64 code called through ctypes. MXCSR belongs to a thread: charrnn's worker threads (see
workspace.py) set it for good. The caller's own thread flushes only inside ``flushing()`` blocks
around charrnn's loops, and gets its previous setting back at the end of each. Where the code cannot
run (another architecture, Windows' calling convention, or a system that forbids executable memory),
``flush_subnormals_in_this_thread`` returns False and nothing changes but speed.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import platform
import sys
from typing import Callable, Iterator, Optional

# MXCSR bits: flush results to zero (FTZ, bit 15) and treat inputs as zero (DAZ, bit 6).
_FTZ_DAZ = 0x8040
# set(uint32 value): mov [rsp-4], edi; ldmxcsr [rsp-4]; ret        (System V ABI: value in edi)
_SET_MXCSR = bytes([0x89, 0x7C, 0x24, 0xFC, 0x0F, 0xAE, 0x54, 0x24, 0xFC, 0xC3])
# get() -> uint32: stmxcsr [rsp-4]; mov eax, [rsp-4]; ret        (both use the red zone below rsp)
_GET_MXCSR = bytes([0x0F, 0xAE, 0x5C, 0x24, 0xFC, 0x8B, 0x44, 0x24, 0xFC, 0xC3])
_GET_OFFSET = 16


class _MxcsrAccess:
    """The two routines, in a page of executable memory kept alive as long as this object."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(_SET_MXCSR.ljust(_GET_OFFSET, b"\x90") + _GET_MXCSR)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self.set: Callable[[int], None] = ctypes.CFUNCTYPE(None, ctypes.c_uint32)(address)
        self.get: Callable[[], int] = ctypes.CFUNCTYPE(ctypes.c_uint32)(address + _GET_OFFSET)


def _load() -> Optional[_MxcsrAccess]:
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform == "win32":
        return None
    try:
        return _MxcsrAccess()
    except (OSError, ValueError, AttributeError, TypeError):
        return None  # e.g. executable memory refused (SELinux execmem): run without flushing


_ACCESS = _load()


def available() -> bool:
    """Whether this process can flush subnormals (x86-64, System V, executable memory allowed)."""
    return _ACCESS is not None


def flush_subnormals_in_this_thread() -> bool:
    """Make the calling thread flush subnormal floats to zero; return whether it could."""
    if _ACCESS is None:
        return False
    _ACCESS.set(_ACCESS.get() | _FTZ_DAZ)
    return True


def flushing_in_this_thread() -> bool:
    """Whether the calling thread currently flushes subnormals."""
    return _ACCESS is not None and (_ACCESS.get() & _FTZ_DAZ) == _FTZ_DAZ


@contextlib.contextmanager
def flushing() -> Iterator[None]:
    """Flush subnormals in the calling thread inside the block, and restore its setting after it.

    For charrnn's own heavy loops (a training step, an evaluation) run on the caller's thread: the
    caller gets its thread back exactly as it was.
    """
    if _ACCESS is None:
        yield
        return
    saved = _ACCESS.get()
    _ACCESS.set(saved | _FTZ_DAZ)
    try:
        yield
    finally:
        _ACCESS.set(saved)
