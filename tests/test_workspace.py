"""The workspace: reused buffers, and row blocks that cover every row exactly once on any thread count,
shared between the caller's thread and its workers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from charrnn.model.workspace import Workspace, block_rows, run_serially


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
    runners = set()

    def mark(start: int, stop: int) -> None:
        assert 0 <= start < stop <= rows and stop - start <= block_rows(width)
        with lock:
            seen[start:stop] += 1
            runners.add(threading.current_thread() is threading.main_thread())

    Workspace(threads).run_blocks(mark, rows, width)
    assert (seen == 1).all()
    if rows * width >= 1 << 18 and threads > 1:
        assert runners == {True, False}  # big jobs: the caller's thread takes a share beside the workers
    else:
        assert runners == {True}  # small jobs, and all of a one-thread workspace's, stay on the caller's thread


def test_an_error_in_a_worker_reaches_the_caller():
    def fail(start: int, stop: int) -> None:
        if start > 0:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        Workspace(threads=2).run_blocks(fail, 1_000_000, 1)


def test_an_error_on_the_callers_thread_waits_for_the_workers_first():
    rows = 1 << 20
    written = np.zeros(rows, dtype=np.int64)
    second_half_started = threading.Event()

    def fill(start: int, stop: int) -> None:
        if start < rows // 2:  # the caller's share
            assert second_half_started.wait(timeout=60)
            raise ValueError("boom")
        second_half_started.set()
        written[start:stop] = 1

    with pytest.raises(ValueError, match="boom"):
        Workspace(threads=2).run_blocks(fill, rows, 1)
    assert written[rows // 2 :].all()  # the worker's whole share was done before the error came out


def test_serial_blocks_follow_the_block_size():
    calls = []
    run_serially(lambda a, b: calls.append((a, b)), 5, 1 << 17)  # two rows of 2**17 a block
    assert calls == [(0, 2), (2, 4), (4, 5)]
