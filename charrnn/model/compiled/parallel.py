"""Products and recurrences run over two halves of the batch at once, each half on a core of its own."""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
from typing import Callable, Optional

import numpy as np

from charrnn.mpi_environment import threads_of_process

# --- running a recurrence over two halves of the batch at once -------------------------------------------


def openblas_libraries() -> list[str]:
    """Paths of the OpenBLAS libraries loaded in this process, from /proc/self/maps ([] where unreadable)."""
    try:
        with open("/proc/self/maps") as maps:
            return sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return []


def _openblas_threads() -> Optional[tuple[Callable[[], int], Callable[[int], None]]]:
    """(get, set) of the thread count of the OpenBLAS numpy calls, or None where it cannot be found."""
    for path in openblas_libraries():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        # numpy's wheels bundle scipy-openblas with 64-bit-integer symbols; other builds use plain names.
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    set_.argtypes = [ctypes.c_int]
                    return get, set_
    return None


class BatchHalves:
    """Runs a recurrence over the two halves of its batch at once, each on a thread of its own.

    The steps of a recurrence run one after another, but its B streams are independent. Splitting each
    step's small GEMM over two BLAS threads meets at a barrier twice per step, and on a busy machine
    waits there for a thread that is not running: a training step became ten to a hundred times
    slower. Two threads that each take half the streams never wait for each other until the end, and
    the elementwise passes are split too. BLAS runs single-threaded meanwhile (each half has a core).
    Without two cores, or where numpy's OpenBLAS cannot be told its thread count, the loop runs whole.
    """

    MIN_BATCH = 8  # smaller batches are not worth a thread

    def __init__(self) -> None:
        cores = threads_of_process() or (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
        self._blas = _openblas_threads() if cores > 1 else None
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def run(self, loop: Callable[[int, int], None], batch: int) -> None:
        """``loop(first, stop)`` over streams 0..B−1: in two halves at once, or whole."""
        if self._blas is None or batch < self.MIN_BATCH:
            loop(0, batch)
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="charrnn-recurrence")
        get_threads, set_threads = self._blas
        threads = get_threads()
        set_threads(1)
        try:
            half = batch // 2
            other = self._pool.submit(loop, half, batch)
            loop(0, half)
            other.result()  # re-raises an error from the other half
        finally:
            set_threads(threads)


HALVES = BatchHalves()


# Products smaller than this (multiply-adds) run whole: a thread's hand-over costs more than it saves.
SPLIT_MIN_MULTIPLY_ADDS = 1 << 22


def matmul(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """np.matmul of two matrices; a large one computed as two halves of ``a``'s rows at once.

    As with the recurrences (``BatchHalves``): two single-threaded BLAS calls that meet once, rather
    than one two-threaded call whose threads meet at every block of the product.
    """
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    if a.shape[0] * a.shape[1] * b.shape[1] < SPLIT_MIN_MULTIPLY_ADDS:
        return np.matmul(a, b, out=out)
    HALVES.run(lambda first, stop: np.matmul(a[first:stop], b, out=out[first:stop]), a.shape[0])
    return out


def rows_apart_from_4k(matrix: np.ndarray, steps: int) -> np.ndarray:
    """``matrix``, or, where its rows lie a multiple of 4 KiB apart and it is used for several steps, a copy
    with 16 spare columns per row.

    Rows at such distances compete for the same cache sets (4K aliasing): OpenBLAS multiplied (32, 256)
    by an LSTM's (256, 1024) W_hh at 64 GFLOP/s, and by the padded copy at 84.
    """
    if steps < 2 or matrix.strides[0] % 4096:
        return matrix
    padded = np.empty((matrix.shape[0], matrix.shape[1] + 16), dtype=matrix.dtype)[:, : matrix.shape[1]]
    padded[...] = matrix
    return padded
