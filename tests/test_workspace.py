"""The workspace: reused buffers, and row blocks that cover every row exactly once on any thread count."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from charrnn.workspace import Workspace, block_rows, run_serially


def test_buffers_are_reused_until_shape_or_dtype_change():
    workspace = Workspace(threads=1)
    first = workspace.buffer("a", (3, 4), np.float32)
    assert workspace.buffer("a", (3, 4), np.float32) is first
    assert workspace.buffer("a", (3, 5), np.float32) is not first
    assert workspace.buffer("a", (3, 5), np.float64).dtype == np.float64


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows, width", [(1, 10), (7, 1), (1000, 700), (100_000, 3)])
def test_blocks_cover_every_row_once(threads, rows, width):
    seen = np.zeros(rows, dtype=np.int64)
    lock = threading.Lock()
    names = set()

    def mark(start: int, stop: int) -> None:
        assert 0 <= start < stop <= rows and stop - start <= block_rows(width)
        with lock:
            seen[start:stop] += 1
            names.add(threading.current_thread().name)

    Workspace(threads).run_blocks(mark, rows, width)
    assert (seen == 1).all()
    if threads > 1 and rows * width >= 1 << 18:
        assert len(names) >= 2  # the work really was shared with the pool


def test_an_error_in_a_worker_reaches_the_caller():
    def fail(start: int, stop: int) -> None:
        if start > 0:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        Workspace(threads=2).run_blocks(fail, 1_000_000, 1)
    calls = []
    run_serially(lambda a, b: calls.append((a, b)), 5, 1 << 15)
    assert calls == [(0, 2), (2, 4), (4, 5)]
