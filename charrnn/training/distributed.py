"""Data-parallel training on several processes with MPI: one model, the batch's streams split among ranks.

Under ``mpiexec -n N charrnn train ...`` every process (rank) holds the whole model and B/N of the B
streams of the global batch. Each step every rank computes the gradient of the mean loss over its own
streams, one all-reduce sums the ranks' gradients in one flat buffer, and every rank divides the sum by
N: the gradient of the mean loss over all B streams, as one process would compute it. Every rank then
applies the same clipping and optimizer update to the same numbers, so the parameters stay identical
everywhere without ever being sent (a checksum compares them every ``CHECK_EVERY_STEPS`` steps).

Rank 0 (the root) alone prints, logs, samples, holds the checkpoint folder's lock and writes; the
others follow the same schedule silently, joining the collective parts of it: validation (each rank
scores a share of the text) and saving (the root gathers the streams' hidden states).

No rank may leave the others waiting in a collective that it will never join. Whatever can fail on
some ranks and not on others (reading a file, writing a checkpoint) runs inside ``together``, after
which the ranks compare their outcomes, so all of them go on or all of them raise; a stop (a signal,
--max-seconds) is voted in the step's all-reduce, so all of them stop after the same step. Anything
else that ends one rank alone ends the whole job (``Group.abort``), as the launcher does when a process
dies.

mpi4py is imported here only, and only when an MPI launcher started the process
(mpi_environment.launched_by_mpi); a plain ``charrnn train`` gets ``SOLO``, a group of one whose
collectives do nothing and cost nothing. Only MPI's own collectives are used: no pickled objects
cross between ranks (the upper-case, buffer-based calls of mpi4py).
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

from charrnn.errors import CharRNNError, ConfigError, TrainingError
from charrnn.install import extra_hint
from charrnn.model import network
from charrnn.model.ops import SparseRows
from charrnn.mpi_environment import RANK_VARIABLES, SWITCH_VARIABLE, launched_by_mpi

# Steps between comparisons of the ranks' parameters. Comparing costs one pass over the parameters
# (a checksum) and a gather of 32 bytes per rank: at every 100th step, well under 1 % of training.
CHECK_EVERY_STEPS = 100
# How long the processes of a job wait for each other to start training (cli/ranks.py). Only a
# process that is not running charrnn train, or died before it could join, makes the others wait this long.
START_WAIT_S = 60.0
# The stop vote of a rank whose --max-seconds has run out; a signal votes 128 + its number.
OUT_OF_TIME = 1


class PeerFailed(CharRNNError):
    """Another process of the job failed; this one stops with it (and its exit code)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Group:
    """The processes training one model together: this one's rank among ``size``, and their communicator.

    ``communicator`` is None for the group of one (``SOLO``), where every collective is a no-op.
    """

    rank: int = 0
    size: int = 1
    communicator: Any = None
    mpi: Any = None  # the mpi4py.MPI module, kept here rather than imported at the top of this module

    @property
    def is_root(self) -> bool:
        """True for the process that prints and writes (rank 0)."""
        return self.rank == 0

    def sum_in_place(self, buffer: np.ndarray) -> None:
        """Replace ``buffer`` (contiguous) by its element-wise sum over all ranks."""
        if self.size > 1:
            self.communicator.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)

    def largest(self, value: int) -> int:
        """The largest of every rank's ``value`` (an int64)."""
        if self.size == 1:
            return value
        buffer = np.array([value], dtype=np.int64)
        self.communicator.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.MAX)
        return int(buffer[0])

    def sums(self, values: list[float]) -> list[float]:
        """Every rank's ``values`` summed element by element (in float64)."""
        if self.size == 1:
            return list(values)
        buffer = np.array(values, dtype=np.float64)
        self.communicator.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)
        return buffer.tolist()

    def _broadcast(self, value: Any, dtype: type, rank: int) -> Any:
        """``rank``'s ``value`` as one element of ``dtype``, on every rank."""
        buffer = np.array([value], dtype=dtype)
        self.communicator.Bcast(buffer, root=rank)
        return buffer[0]

    def from_rank(self, value: int, rank: int = 0) -> int:
        """``rank``'s ``value`` (an int64), on every rank."""
        return value if self.size == 1 else int(self._broadcast(value, np.int64, rank))

    def float_from_rank(self, value: float, rank: int = 0) -> float:
        """``rank``'s ``value`` (a float64), on every rank."""
        return value if self.size == 1 else float(self._broadcast(value, np.float64, rank))

    def text_from_rank(self, text: str, rank: int = 0) -> str:
        """``rank``'s ``text``, on every rank (as UTF-8 bytes; a file name's undecodable bytes survive)."""
        if self.size == 1:
            return text
        data = text.encode("utf-8", "surrogateescape") if self.rank == rank else b""
        length = self.from_rank(len(data), rank)
        buffer = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == rank else np.empty(length, np.uint8)
        self.communicator.Bcast(buffer, root=rank)
        return buffer.tobytes().decode("utf-8", "surrogateescape")

    def ranks_differing(self, digest: bytes) -> list[int]:
        """The ranks whose ``digest`` (32 bytes, e.g. a sha256) differs from the root's; [] when all agree."""
        if self.size == 1:
            return []
        mine = np.frombuffer(digest.ljust(32, b"\0")[:32], dtype=np.uint8).copy()
        every = np.empty((self.size, 32), dtype=np.uint8)
        self.communicator.Allgather(mine, every)
        return [rank for rank in range(self.size) if not np.array_equal(every[rank], every[0])]

    def gather_rows(self, local: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """On the root: each array of ``local`` (b, ...) stacked in rank order to (N·b, ...); {} elsewhere."""
        if self.size == 1:
            return dict(local)
        gathered = {}
        for name in sorted(local):  # the same order on every rank: the gathers pair up
            part = np.ascontiguousarray(local[name])
            whole = np.empty((self.size * part.shape[0], *part.shape[1:]), dtype=part.dtype) if self.is_root else None
            self.communicator.Gather(part, whole, root=0)
            if self.is_root:
                gathered[name] = whole
        return gathered

    def barrier(self) -> None:
        """Wait until every rank has reached this point."""
        if self.size > 1:
            self.communicator.Barrier()

    def abort(self, exit_code: int) -> None:
        """End every process of the job at once (MPI_Abort), this one with ``exit_code``: for an ending
        the others cannot know of, which would otherwise leave them waiting in a collective forever."""
        sys.stderr.flush()
        self.communicator.Abort(exit_code)

    def settle(self, error: Optional[BaseException]) -> None:
        """Compare every rank's outcome of the same piece of work (``error`` None: it succeeded).

        Returns on every rank when all succeeded. Otherwise the lowest failing rank's message and
        exit code go to every rank; a rank that failed returns (to raise its own error), and the
        others raise PeerFailed with that message and code. Either way the error is marked as raised
        on every rank (``raised_together``).
        """
        if self.size == 1:
            return
        failed = error is not None
        first = self.size - self.largest(self.size - self.rank if failed else 0)
        if first == self.size:
            return
        code = self.from_rank(exit_code_of(error) if failed else 0, first)
        message = self.text_from_rank(str(error) if failed else "", first)
        if failed:
            _mark_together(error)
            return
        peer = PeerFailed(f"process {first} of {self.size} in the MPI job failed: {message}", code)
        _mark_together(peer)
        raise peer


SOLO = Group()


def exit_code_of(error: BaseException) -> int:
    """The exit code an error ends the command with: its own (CharRNNError, click's errors), else 1."""
    code = getattr(error, "exit_code", 1)
    return code if isinstance(code, int) and code > 0 else 1


_TOGETHER = "_charrnn_raised_on_every_process"


def _mark_together(error: BaseException) -> None:
    setattr(error, _TOGETHER, True)


def raised_together(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised while handling, was raised on every process at once
    (by ``Group.settle``, or from a result every process shares), so that all of them are ending."""
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        if getattr(current, _TOGETHER, False):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def raise_together(error: BaseException) -> BaseException:
    """``error``, marked as raised on every process: for an error decided from values all of them share
    (the reduced loss, a collective's result). Use as ``raise raise_together(TrainingError(...))``."""
    _mark_together(error)
    return error


@contextlib.contextmanager
def together(group: Group) -> Iterator[None]:
    """Run the block on every process, then compare outcomes: if it raised on any, it raises on all.

    The block may do different work on different ranks (the root writes, the others do nothing) but
    must make no collective call. Only ``Exception`` is caught: a signal's interrupt ends the job.
    """
    if group.size == 1:
        yield
        return
    try:
        yield
    except Exception as error:
        group.settle(error)
        raise
    group.settle(None)


def join() -> Group:
    """This process's group: ``SOLO`` unless an MPI launcher started it, else every process it started.

    Raises ConfigError when a launcher started the process but mpi4py cannot be imported.
    """
    if not launched_by_mpi():
        return SOLO
    # Importing mpi4py.MPI calls MPI_Init, which waits in C code until every process of the job has
    # called it; a Python signal handler (charrnn/__main__.py's start-up one included) cannot run there.
    # So the default actions apply meanwhile: a Ctrl-C, SIGTERM or hang-up that the launcher forwards
    # ends a process left waiting by one that never came, with 128 + the signal's number as ever.
    defaults = {s: signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ConfigError(
            f"an MPI launcher started this process (it set one of {', '.join(RANK_VARIABLES)}), but mpi4py "
            f"cannot be imported ({exc}); install it with {extra_hint('mpi')}, or set {SWITCH_VARIABLE}=0 to "
            "train in each process alone"
        ) from None
    finally:
        for number, handler in defaults.items():
            signal.signal(number, handler)
    communicator = MPI.COMM_WORLD
    return Group(communicator.Get_rank(), communicator.Get_size(), communicator, MPI)


def streams_of_rank(batch_size: int, group: Group) -> slice:
    """The global streams (rows of the (B, L) stream matrix) that ``group``'s rank trains on.

    Raises ConfigError when B does not split evenly, naming the batch sizes that do.
    """
    if batch_size % group.size:
        below = batch_size - batch_size % group.size
        sizes = f"{below} or {below + group.size}" if below else f"{group.size}"
        raise ConfigError(
            f"--batch-size {batch_size} does not split evenly across {group.size} processes; use a multiple of "
            f"{group.size}, such as {sizes}"
        )
    share = batch_size // group.size
    return slice(group.rank * share, (group.rank + 1) * share)


class GradientExchange:
    """Every parameter's gradient in one flat buffer, averaged across the ranks by one all-reduce per step.

    The buffer holds the P gradient values, then the step's loss, then one slot per rank for its vote
    to stop (0: go on; OUT_OF_TIME; 128 + a signal's number): 4·(P + 1 + N) bytes for float32 models,
    all in one all-reduce. A rank writes only its own vote slot, so after the sum every rank reads every
    vote and all agree on the same decision (the largest code), kept in ``stop_code``.

    Call it as the training step's ``combine`` (loop.Trainee): ``exchange(grads, loss) -> (grads, loss)``.
    """

    def __init__(self, params: network.Params, group: Group, vote: Callable[[], int] = lambda: 0,
                 sparse_embedding: bool = True) -> None:
        """``vote()`` is this rank's stop code, read at every exchange. With ``sparse_embedding`` an
        embedding gradient that arrives as SparseRows leaves as SparseRows of the rows any rank touched
        (for Adagrad, which updates only those: exactly the dense update, at the cost of the rows)."""
        self.group = group
        self.vote = vote
        self.sparse_embedding = sparse_embedding
        self.names = list(params)
        sizes = [params[name].size for name in self.names]
        dtype = params[self.names[0]].dtype
        total = int(sum(sizes))
        self.buffer = np.empty(total + 1 + group.size, dtype=dtype)
        self.views: dict[str, np.ndarray] = {}
        offset = 0
        for name, size in zip(self.names, sizes):
            self.views[name] = self.buffer[offset : offset + size].reshape(params[name].shape)
            offset += size
        self.gradient_values = total
        self.stop_code = 0  # the stop agreed so far: the largest vote of any rank at any exchange
        self.seconds = 0.0  # spent in the all-reduce (waiting for the slowest rank included)
        self.exchanges = 0

    @property
    def bytes_per_step(self) -> int:
        """What one all-reduce carries from each rank."""
        return self.buffer.nbytes

    def agree(self) -> int:
        """Vote outside a step (before the first, after the last): every rank's ``stop_code`` becomes the
        largest of its own and every rank's current vote. One small collective."""
        self.stop_code = self.group.largest(max(self.stop_code, self.vote()))
        return self.stop_code

    def __call__(self, grads: Mapping[str, Any], loss_nats: float) -> tuple[dict[str, Any], float]:
        """(the mean gradient over all ranks, the mean loss); the stop votes are agreed on the way.

        The result's arrays are views of the buffer, valid until the next exchange.
        """
        grads, loss_nats, _ = self.exchange(grads, loss_nats, self.vote())
        return grads, loss_nats

    def exchange(self, grads: Mapping[str, Any], loss_nats: float, stop_code: int) -> tuple[dict[str, Any], float, int]:
        """(the mean gradient over all ranks, the mean loss, the largest stop code any rank voted so far).

        ``grads`` may hold SparseRows (an embedding's touched rows); they travel densely.
        """
        sparse = []
        for name in self.names:
            grad, view = grads[name], self.views[name]
            if isinstance(grad, SparseRows):
                view.fill(0)
                view[grad.rows] = grad.values
                sparse.append(name)
            else:
                view[...] = grad
        tail = self.buffer[self.gradient_values :]
        tail.fill(0)
        tail[0] = loss_nats
        tail[1 + self.group.rank] = stop_code
        started = time.perf_counter()
        self.group.sum_in_place(self.buffer)
        self.seconds += time.perf_counter() - started
        self.exchanges += 1
        self.buffer[: self.gradient_values] *= self.buffer.dtype.type(1.0 / self.group.size)
        self.stop_code = max(self.stop_code, int(round(float(tail[1:].max()))))
        mean: dict[str, Any] = dict(self.views)
        if self.sparse_embedding:
            for name in sparse:
                # Rows no rank touched are exactly zero; the rows left are the union of every rank's.
                rows = np.flatnonzero(self.views[name].any(axis=1))
                mean[name] = SparseRows(rows, self.views[name][rows])
        return mean, float(tail[0]) / self.group.size, self.stop_code


def parameters_digest(params: Mapping[str, np.ndarray]) -> bytes:
    """sha256 of every parameter's bytes, in name order: equal exactly when the models are equal."""
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(params[name]).data)
    return digest.digest()


def require_same_parameters(params: Mapping[str, np.ndarray], group: Group, step: int) -> None:
    """Raise TrainingError on every rank when some rank's parameters differ from the root's."""
    differing = group.ranks_differing(parameters_digest(params))
    if differing:
        raise raise_together(TrainingError(
            f"the processes no longer hold the same model at step {step} (rank {differing[0]} differs from rank "
            "0): their arithmetic disagrees (different numpy, BLAS or processors?); stopped without saving, the last "
            "checkpoint is kept"
        ))


def require_same_run(description: bytes, group: Group) -> None:
    """Raise ConfigError on every rank when some rank was started with other options or other data.

    ``description`` is what must agree (the settings and the corpus fingerprint), hashed here.
    """
    differing = group.ranks_differing(hashlib.sha256(description).digest())
    if differing:
        raise raise_together(ConfigError(
            f"process {differing[0]} of the MPI job was started with other options or other corpus bytes than "
            "process 0; start every process with the same command on the same files"
        ))
