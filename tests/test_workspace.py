"""The workspace: reused buffers, and row blocks that cover every row exactly once on any thread count,
on worker threads that flush subnormal floats."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from charrnn.model import fpu
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
            runners.add((threading.current_thread() is threading.main_thread(), fpu.flushing_in_this_thread()))

    Workspace(threads).run_blocks(mark, rows, width)
    assert (seen == 1).all()
    if rows * width >= 1 << 18 and fpu.available():
        # Big jobs run only on worker threads, and they flush subnormals.
        assert runners == {(False, True)}
    if rows * width < 1 << 18:
        assert runners == {(True, fpu.flushing_in_this_thread())}  # small jobs stay on the caller's thread


def test_an_error_in_a_worker_reaches_the_caller():
    def fail(start: int, stop: int) -> None:
        if start > 0:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        Workspace(threads=2).run_blocks(fail, 1_000_000, 1)


def test_serial_blocks_follow_the_block_size():
    calls = []
    run_serially(lambda a, b: calls.append((a, b)), 5, 1 << 17)  # two rows of 2**17 a block
    assert calls == [(0, 2), (2, 4), (4, 5)]


@pytest.mark.skipif(not fpu.available(), reason="flushing subnormals needs x86-64 and executable memory")
def test_flushing_block_restores_the_callers_setting():
    tiny = np.float32(1e-20)
    assert tiny * tiny > 0  # subnormal kept
    with fpu.flushing():
        assert fpu.flushing_in_this_thread()
        assert tiny * tiny == 0  # flushed
        with fpu.flushing():
            pass
        assert fpu.flushing_in_this_thread()  # an inner block restores the outer setting
    assert not fpu.flushing_in_this_thread() and tiny * tiny > 0


@pytest.mark.skipif(not fpu.available(), reason="flushing subnormals needs x86-64 and executable memory")
def test_worker_threads_flush_subnormals_and_the_caller_is_untouched():
    assert not fpu.flushing_in_this_thread()
    tiny = np.full(1 << 18, 1e-20, dtype=np.float32)  # squared: 1e-40, a subnormal float32
    squares = np.empty_like(tiny)

    def square(start: int, stop: int) -> None:
        np.multiply(tiny[start:stop], tiny[start:stop], out=squares[start:stop])

    Workspace(threads=2).run_blocks(square, len(tiny))
    assert not squares.any()  # flushed to zero on the workers
    assert np.multiply(tiny[:1], tiny[:1])[0] > 0  # while this thread still computes the subnormal
    assert not fpu.flushing_in_this_thread()
