"""jieba in worker processes: exact cut points, words in order, workers that end with the cutting."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

import pytest

from charrnn.data import parallel_tokenize
from charrnn.data.tokenizer import tokenize
from charrnn.errors import CorpusError
from conftest import TANG300

LINUX = sys.platform.startswith("linux")


def _jieba_workers() -> list[multiprocessing.process.BaseProcess]:
    return [process for process in multiprocessing.active_children() if process.name == "charrnn-jieba"]


@pytest.mark.skipif(not LINUX, reason="forked workers")
def test_workers_cut_the_pieces_in_order_and_end_with_the_text(monkeypatch):
    monkeypatch.setattr(parallel_tokenize, "PIECE_CHARS", 2000)
    text = TANG300.read_text(encoding="utf-8")[:12000]
    chunks = (text[start : start + 700] for start in range(0, len(text), 700))
    words = [word for piece in parallel_tokenize.jieba_word_lists(chunks, 3) for word in piece]
    assert words == tokenize(text, "jieba")
    assert _jieba_workers() == []


@pytest.mark.skipif(not LINUX, reason="forked workers")
def test_a_worker_that_dies_ends_the_cutting_with_a_clear_error_and_stops_the_others(monkeypatch):
    monkeypatch.setattr(parallel_tokenize, "PIECE_CHARS", 2000)
    text = TANG300.read_text(encoding="utf-8")[:20000]
    chunks = (text[start : start + 700] for start in range(0, len(text), 700))  # pieces of about 2000
    word_lists = parallel_tokenize.jieba_word_lists(chunks, 2)
    assert next(word_lists)  # the workers run
    workers = _jieba_workers()
    assert len(workers) == 2
    os.kill(workers[1].pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    with pytest.raises(CorpusError, match=r"ended unexpectedly \(exit code -9\); run again, or pass --workers 1"):
        list(word_lists)
    assert _jieba_workers() == [] and all(worker.exitcode is not None for worker in workers)


def test_a_signal_that_comes_while_workers_are_started_is_handled_after_it():
    received = []

    def handler(number, frame):
        received.append(number)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with parallel_tokenize._signals_deferred():
            signal.raise_signal(signal.SIGTERM)  # handled before raise_signal returns, by the block's note
            assert received == []  # a fork's callbacks would have swallowed the handler's exception
        assert received == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)
