"""Scratch memory and worker threads that a training loop reuses from step to step.

The three big matrix products of a step already use every core (numpy's BLAS is threaded); the
elementwise work around them (softmax, optimizer updates) does not, and on two cores it is a third of
a step. ``Workspace.run_blocks`` splits such work into row blocks that fit in cache and runs them on
all cores: numpy releases the GIL inside its loops, so threads really run in parallel. Buffers are
allocated once, because a fresh multi-megabyte array costs page faults on every step.

A Workspace holds no model state: results written into its buffers are valid until the next step
asks for the same buffer.
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Callable, Optional

import numpy as np

from charrnn.mpi_environment import threads_of_process

BlockFunction = Callable[[int, int], None]  # (first row, row after the last)

# Rows per block are chosen so a block holds about this many elements: small enough to stay in a
# core's cache across the several passes an elementwise kernel makes, large enough that numpy's
# per-call overhead does not dominate.
_BLOCK_ELEMENTS = 1 << 18
# Below this many elements in all, threads cost more than they save.
_PARALLEL_MIN_ELEMENTS = 1 << 18


def block_rows(row_width: int) -> int:
    """Rows per block for rows of ``row_width`` elements."""
    return max(1, _BLOCK_ELEMENTS // max(1, row_width))


def run_serially(function: BlockFunction, rows: int, row_width: int = 1) -> None:
    """Call ``function`` over consecutive row blocks covering ``rows`` rows, one after another."""
    step = block_rows(row_width)
    for start in range(0, rows, step):
        function(start, min(rows, start + step))


class Workspace:
    """Reusable buffers plus ``threads`` threads (default: one per core, or under an MPI launcher this
    process's share of them) for row-block kernels."""

    def __init__(self, threads: Optional[int] = None) -> None:
        self.threads = threads or threads_of_process() or os.cpu_count() or 1
        self._buffers: dict[str, np.ndarray] = {}
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``, the same memory each time it is asked for."""
        current = self._buffers.get(name)
        if current is None or current.shape != tuple(shape) or current.dtype != np.dtype(dtype):
            current = np.empty(shape, dtype=dtype)
            self._buffers[name] = current
        return current

    def run_blocks(self, function: BlockFunction, rows: int, row_width: int = 1) -> None:
        """Call ``function(start, stop)`` over row blocks covering ``rows`` rows, on all threads.

        The caller's thread and ``threads`` − 1 workers each take a contiguous share of the blocks, so
        every row is handled exactly once and blocks never overlap; every thread computes alike, so the
        result is the same for any number of threads. Small jobs run on the caller's thread alone.
        """
        if self.threads == 1 or rows * row_width < _PARALLEL_MIN_ELEMENTS:
            run_serially(function, rows, row_width)
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads - 1, thread_name_prefix="charrnn")
        bounds = np.linspace(0, rows, self.threads + 1).astype(int)

        def share(index: int) -> None:
            first, last = bounds[index], bounds[index + 1]
            run_serially(lambda a, b: function(first + a, first + b), last - first, row_width)

        futures = [self._pool.submit(share, index) for index in range(1, self.threads)]
        try:
            share(0)
        finally:
            concurrent.futures.wait(futures)  # no worker may still write once the caller goes on
        for future in futures:
            future.result()  # re-raises any error from a worker
