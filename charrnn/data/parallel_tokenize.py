"""Cutting a large text into jieba words in worker processes, with the words back in the text's order.

jieba is pure Python, so a corpus of many megabytes is cut by several processes at once. The text is
regrouped into pieces of about PIECE_CHARS characters, each ending where jieba's output does not depend
on the cut (``safe_cut``), so the words equal those of one process. Piece i goes to worker i mod N;
each worker holds one piece at a time, and the words come back piece by piece in order.

The workers are this process's own children (``multiprocessing.Process``, forked on Linux), so whatever
ends the cutting early (an error, Ctrl-C, a SIGTERM the command line turns into an exception, or the
consumer closing the generator) kills them at once; and they end themselves when this process is
killed outright (``_die_with_parent``).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Iterator

from charrnn.data.tokenizer import exact_pieces, load_jieba, tokenize
from charrnn.errors import CorpusError

# Text goes to the workers in pieces of about this many characters, cut at line ends.
PIECE_CHARS = 1 << 20
# Below this many bytes of corpus, worker processes cost more (each loads jieba's dictionary) than they save.
PARALLEL_MIN_BYTES = 4 << 20
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def pieces(chunks: Iterator[str]) -> Iterator[str]:
    """Regroup text into pieces of at least PIECE_CHARS characters, split where jieba stays exact
    (tokenizer.exact_pieces)."""
    return exact_pieces(chunks, "jieba", PIECE_CHARS)


def _die_with_parent(parent_pid: int) -> None:
    """End this worker process when the process that started it ends, even if that one is killed -9.

    On Linux the kernel sends the signal (PR_SET_PDEATHSIG); elsewhere a thread checks every second.
    """
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):  # no prctl to be found: watch instead
            armed = False
        if armed:
            # The parent may have died before prctl took effect, and then no signal will ever come.
            if os.getppid() != parent_pid:
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="charrnn-parent-watch", daemon=True).start()


def _worker(connection: Connection, parent_pid: int) -> None:
    """A worker process: cut each piece received into words and send them back, until None arrives."""
    _die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group; the parent stops the workers itself, without their
    # tracebacks. A SIGTERM handler inherited from the parent would not fit here either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    load_jieba().initialize()
    while (piece := connection.recv()) is not None:
        connection.send(tokenize(piece, "jieba"))


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM are only noted; the handlers they would have run run at its end.

    For starting the workers: a handler that raises (as the command line's do) while a fork runs its
    callbacks has its exception swallowed by them, so the signal would be lost, and a worker started
    just then would be missing from the list of those to stop. Only the main thread runs (and may
    change) signal handlers; elsewhere the block changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    handlers = {number: handler for number, handler in handlers.items() if callable(handler)}
    noted: list[int] = []
    for number in handlers:
        signal.signal(number, lambda received, frame: noted.append(received))
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        for number in noted:
            handlers[number](number, None)


def _ended(process: multiprocessing.process.BaseProcess) -> CorpusError:
    """The error for a worker that ended while it held a piece."""
    process.join()
    return CorpusError(
        f"a process cutting jieba words ended unexpectedly (exit code {process.exitcode}); "
        "run again, or pass --workers 1"
    )


def jieba_word_lists(chunks: Iterator[str], workers: int) -> Iterator[list[str]]:
    """jieba tokens of the text, piece by piece, in order; ``workers`` > 1 processes cut at once."""
    if workers <= 1:
        for piece in pieces(chunks):
            yield tokenize(piece, "jieba")
        return
    # On Linux the workers are forked from this process (Python 3.14 would otherwise use a fork
    # server as their parent), so that they can tie their lives to it.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    processes, connections = [], []
    try:
        with _signals_deferred():
            for _ in range(workers):
                ours, theirs = context.Pipe()
                process = context.Process(target=_worker, args=(theirs, os.getpid()), name="charrnn-jieba",
                                          daemon=True)
                process.start()
                processes.append(process)
                connections.append(ours)
                theirs.close()  # the worker's end is the worker's alone, so its death reads as end of file
        texts = pieces(chunks)
        holding: deque[int] = deque()  # the workers holding a piece, in the order of their pieces

        def hand_next_piece(worker: int) -> None:
            piece = next(texts, None)
            if piece is not None:
                try:
                    connections[worker].send(piece)
                except ConnectionError:  # a broken pipe: the worker is gone
                    raise _ended(processes[worker]) from None
                holding.append(worker)

        for worker in range(workers):
            hand_next_piece(worker)
        while holding:
            worker = holding.popleft()
            try:
                words = connections[worker].recv()
            except (EOFError, ConnectionError):  # the worker's end of the pipe closed: it is gone
                raise _ended(processes[worker]) from None
            hand_next_piece(worker)  # before yielding, so the worker cuts while the words are used
            yield words
        for connection in connections:
            connection.send(None)  # no more pieces: each worker returns
        for process in processes:
            process.join()
    finally:
        for process in processes:  # still running after an error, an interrupt, or an early close: now
            if process.exitcode is None:
                process.kill()
            process.join()
        for connection in connections:
            connection.close()
