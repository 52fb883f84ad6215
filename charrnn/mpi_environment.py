"""Whether this process was started by an MPI launcher, read from the environment alone.

mpiexec (MPICH's Hydra, Open MPI's, Intel MPI's) and Slurm's ``srun`` tell each process its rank in
environment variables before it starts. Reading them costs nothing, so a plain ``charrnn train`` never
imports mpi4py: only a process that a launcher started joins a group (training/distributed.py). This
module imports nothing heavy, because the command line consults it before numpy is loaded, to give
each process its share of the cores (``thread_settings``).
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

# Set for every process an MPI launcher starts: MPICH and Intel MPI (PMI), PMIx launchers (Open MPI 5,
# srun --mpi=pmix), Open MPI's own mpirun, MVAPICH.
RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
# How many processes of the job share this node, by launcher.
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")
# Set to 0 to train alone even under a launcher (each process then trains its own model: not useful,
# but it is what a job script that starts charrnn under srun by mistake would otherwise get silently).
SWITCH_VARIABLE = "CHARRNN_MPI"
# The thread pools a process may start: BLAS (OpenBLAS, MKL, others through OpenMP) and numba's.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def launched_by_mpi(environ: Mapping[str, str] = os.environ) -> bool:
    """True when an MPI launcher started this process (and CHARRNN_MPI is not 0)."""
    if environ.get(SWITCH_VARIABLE, "").strip() == "0":
        return False
    return any(name in environ for name in RANK_VARIABLES)


def _slurm_tasks_on_this_node(environ: Mapping[str, str]) -> Optional[int]:
    """Tasks of this Slurm step on this node: SLURM_STEP_TASKS_PER_NODE is like ``2(x3),1`` (per node, in
    node order) and SLURM_NODEID says which node this is."""
    spec, node = environ.get("SLURM_STEP_TASKS_PER_NODE"), environ.get("SLURM_NODEID")
    if not spec or node is None or not node.isdigit():
        return None
    counts: list[int] = []
    for part in spec.split(","):
        count, _, repeat = part.partition("(x")
        if not count.isdigit() or (repeat and not repeat.rstrip(")").isdigit()):
            return None
        counts.extend([int(count)] * (int(repeat.rstrip(")")) if repeat else 1))
    index = int(node)
    return counts[index] if index < len(counts) else None


def ranks_on_this_node(environ: Mapping[str, str] = os.environ) -> Optional[int]:
    """How many processes of the job run on this node, if the launcher says (None when it does not)."""
    for name in LOCAL_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return _slurm_tasks_on_this_node(environ)


def _affinity_and_machine_cores() -> tuple[int, int]:
    """(cores this process may run on, cores of the machine)."""
    machine = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0))), machine
    return machine, machine


def threads_per_rank(environ: Mapping[str, str] = os.environ, cores: Optional[tuple[int, int]] = None) -> int:
    """The threads each process should use: the node's cores divided among the job's processes on it.

    ``cores`` is (cores this process may run on, cores of the machine), read from the system when not
    given. A launcher that binds each process to cores of its own has narrowed the first below the
    second, and then those cores are the process's share; otherwise the processes on the node share
    its cores evenly.
    """
    usable, machine = _affinity_and_machine_cores() if cores is None else cores
    if usable < machine:
        return usable
    local = ranks_on_this_node(environ) or 1
    return max(1, usable // local)


def thread_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The thread-count variables to set for a process started by an MPI launcher ({} otherwise).

    Only those the user has not set: a job script's own OPENBLAS_NUM_THREADS always wins. Applied before
    numpy is imported, since BLAS reads them once, when it loads.
    """
    if not launched_by_mpi(environ):
        return {}
    threads = str(threads_per_rank(environ))
    return {name: threads for name in THREAD_VARIABLES if name not in environ}


def threads_of_process(environ: Mapping[str, str] = os.environ) -> Optional[int]:
    """The threads charrnn's own pools (elementwise work, the two halves of a batch) may use in a process an
    MPI launcher started: the BLAS thread count it runs with (``thread_settings``'s, or the user's own), so
    that the ranks on a node share its cores instead of each taking all of them. None in a process started
    otherwise, whose pools size themselves from the machine as they always have.
    """
    if not launched_by_mpi(environ):
        return None
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return threads_per_rank(environ)
