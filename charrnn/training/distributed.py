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

mpi4py is imported here only, and only when an MPI launcher started the process
(mpi_environment.launched_by_mpi); a plain ``charrnn train`` gets ``SOLO``, a group of one whose
collectives do nothing and cost nothing. Only MPI's own collectives are used: no pickled objects
cross between ranks (the upper-case, buffer-based calls of mpi4py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from charrnn.errors import ConfigError, TrainingError
from charrnn.install import extra_hint
from charrnn.model import network
from charrnn.model.ops import SparseRows
from charrnn.mpi_environment import RANK_VARIABLES, SWITCH_VARIABLE, launched_by_mpi

# Steps between comparisons of the ranks' parameters. Comparing costs one pass over the parameters
# (a checksum) and a gather of 32 bytes per rank: at every 100th step, well under 1 % of training.
CHECK_EVERY_STEPS = 100


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


SOLO = Group()


def join() -> Group:
    """This process's group: ``SOLO`` unless an MPI launcher started it, else every process it started.

    Raises ConfigError when a launcher started the process but mpi4py cannot be imported.
    """
    if not launched_by_mpi():
        return SOLO
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ConfigError(
            f"an MPI launcher started this process (it set one of {', '.join(RANK_VARIABLES)}), but mpi4py "
            f"cannot be imported ({exc}); install it with {extra_hint('mpi')}, or set {SWITCH_VARIABLE}=0 to "
            "train in each process alone"
        ) from None
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
    """Every parameter's gradient in one flat buffer, summed across the ranks by one all-reduce per step.

    The buffer holds the P gradient values, then the step's loss, then one slot per rank for its vote
    to stop (0: go on; otherwise a stop code, see ``exchange``): 4·(P + 1 + N) bytes for float32 models,
    all in one all-reduce. A rank writes only its own vote slot, so after the sum every rank reads every
    vote and all agree on the same decision.
    """

    def __init__(self, params: network.Params, group: Group) -> None:
        self.group = group
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

    @property
    def bytes_per_step(self) -> int:
        """What one all-reduce carries from each rank."""
        return self.buffer.nbytes

    def exchange(self, grads: Mapping[str, Any], loss_nats: float, stop_code: int) -> tuple[dict[str, np.ndarray], float, int]:
        """(the mean gradient over all ranks, the mean loss, the largest stop code any rank voted).

        ``grads`` may hold SparseRows (an embedding's touched rows); they are laid out densely, so the
        result holds dense arrays only: views of the buffer, valid until the next exchange.
        """
        for name in self.names:
            grad, view = grads[name], self.views[name]
            if isinstance(grad, SparseRows):
                view.fill(0)
                view[grad.rows] = grad.values
            else:
                view[...] = grad
        tail = self.buffer[self.gradient_values :]
        tail.fill(0)
        tail[0] = loss_nats
        tail[1 + self.group.rank] = stop_code
        self.group.sum_in_place(self.buffer)
        scale = self.buffer.dtype.type(1.0 / self.group.size)
        self.buffer[: self.gradient_values] *= scale
        return dict(self.views), float(tail[0]) / self.group.size, int(round(float(tail[1:].max())))


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
        raise TrainingError(
            f"the processes no longer hold the same model at step {step} (rank {differing[0]} differs from rank "
            "0): their arithmetic disagrees (different numpy, BLAS or processors?); stopped without saving, the last "
            "checkpoint is kept"
        )


def require_same_run(description: bytes, group: Group) -> None:
    """Raise ConfigError on every rank when some rank was started with other options or other data.

    ``description`` is what must agree (the settings and the corpus fingerprint), hashed here.
    """
    differing = group.ranks_differing(hashlib.sha256(description).digest())
    if differing:
        raise ConfigError(
            f"process {differing[0]} of the MPI job was started with other options or other corpus bytes than "
            "process 0; start every process with the same command on the same files"
        )
