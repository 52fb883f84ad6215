"""Products and recurrences run over two halves of the batch at once, each half on a core of its own."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any, Callable, Optional

import numpy as np

try:  # in the fast extra; without it the recurrences simply run whole
    import threadpoolctl
except ImportError:
    threadpoolctl = None

from charrnn.mpi_environment import threads_of_process

# --- running a recurrence over two halves of the batch at once -------------------------------------------


def openblas_controller() -> Optional[Any]:
    """A threadpoolctl controller of the OpenBLAS that numpy calls, or None (no threadpoolctl, or another BLAS).

    Made once: creating one scans the process's loaded libraries.
    """
    if threadpoolctl is None:
        return None
    controller = threadpoolctl.ThreadpoolController().select(internal_api="openblas")
    return controller if controller.lib_controllers else None


class BatchHalves:
    """Runs a recurrence over the two halves of its batch at once, each on a thread of its own.

    The steps of a recurrence run one after another, but its B streams are independent. Splitting each
    step's small GEMM over two BLAS threads meets at a barrier twice per step, and on a busy machine
    waits there for a thread that is not running: a training step became ten to a hundred times
    slower. Two threads that each take half the streams never wait for each other until the end, and
    the elementwise passes are split too. BLAS runs single-threaded meanwhile (each half has a core),
    through threadpoolctl's limit on numpy's OpenBLAS. Without two cores, or where that OpenBLAS cannot
    be told its thread count, the loop runs whole.
    """

    MIN_BATCH = 8  # smaller batches are not worth a thread

    def __init__(self) -> None:
        # Under an MPI launcher, the cores of this process's share (mpi_environment.py), not the machine's.
        self._cores = threads_of_process() or (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
        self._blas: Optional[Any] = None
        self._blas_looked_up = False
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def _blas_controller(self) -> Optional[Any]:
        if not self._blas_looked_up:  # on first use, not at import: the scan takes milliseconds
            self._blas = openblas_controller() if self._cores > 1 else None
            self._blas_looked_up = True
        return self._blas

    def run(self, loop: Callable[[int, int], None], batch: int) -> None:
        """``loop(first, stop)`` over streams 0..B−1: in two halves at once, or whole."""
        blas = self._blas_controller() if batch >= self.MIN_BATCH else None
        if blas is None:
            loop(0, batch)
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="charrnn-recurrence")
        with blas.limit(limits=1):  # OpenBLAS's thread count is the process's: the other half's too
            half = batch // 2
            other = self._pool.submit(loop, half, batch)
            try:
                loop(0, half)
            finally:
                concurrent.futures.wait([other])  # the limit holds until both halves are done
            other.result()  # re-raises an error from the other half


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
