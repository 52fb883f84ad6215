"""How ``charrnn train`` starts and ends when an MPI launcher runs it in several processes.

Every process runs the whole command. The root (rank 0) speaks for the job: it alone prints, and every
process exits with its exit code, because launchers combine the codes of their processes (MPICH's
mpiexec ORs them: 2 and 1 would make 3). The others' stderr is kept back, and shown only if such a
process fails alone.

Starting: MPI_Init waits, in C, until every process of the job has called it, so a process that ended
before (a mistake on its own command line) would hold the others there forever. So a process started
by a launcher to train joins the job first thing (``launch``), before its command line is read, and the
first collective of the job (``Launch.start``) is every process's status: ready to train, or the exit
code of a process that has already failed. Every process then ends with that code, or trains.

Ending: an error raised in every process at once (``distributed.raised_together``: a bad option, a
file that cannot be read, a failed checkpoint write, a NaN loss, a stop voted by all) ends them all
normally. Any other ending of one process (a second Ctrl-C, a bug, a failed write of the log) would
leave the others waiting for it in a collective forever, so it ends the whole job at once (MPI_Abort),
as the launcher does when a process dies.
"""

from __future__ import annotations

import io
import sys
import time
import traceback
from typing import Callable, Optional, Sequence

import click
import numpy as np

from charrnn.cli.exits import Interrupted
from charrnn.errors import CharRNNError
from charrnn.mpi_environment import launched_by_mpi
from charrnn.training import distributed

# Exit codes that mean a signal ended the process (SIGINT, SIGTERM, SIGHUP); every process of the job
# gets the signal (the launcher forwards it), so only the root says so.
SIGNAL_EXIT_CODES = (130, 143, 129)


class Launch:
    """This process's place in an MPI job, and whether the job's first collective (``start``) is done."""

    def __init__(self, group: distributed.Group) -> None:
        self.group = group
        self.started = False

    def start(self, status: int) -> int:
        """The job's first collective: the largest of every process's ``status`` (0: ready to train; else
        the exit code of a process that failed before it could train), within ``START_WAIT_S``.

        A process that does not take part in time (it died before it could join, or is not running
        charrnn train) ends the job (exit 2), with a line saying so.
        """
        self.started = True
        if self.group.size == 1:
            return status
        buffer = np.array([status], dtype=np.int64)
        request = self.group.communicator.Iallreduce(self.group.mpi.IN_PLACE, buffer, op=self.group.mpi.MAX)
        deadline = time.monotonic() + distributed.START_WAIT_S
        while not request.Test():
            if time.monotonic() > deadline:
                click.echo(
                    f"Error: not every process of the MPI job started training within {distributed.START_WAIT_S:g} s; "
                    "one of them ended before it could join (see its error above), or is not running charrnn train",
                    err=True,
                )
                self.group.abort(2)
            time.sleep(0.002)
        return int(buffer[0])

    def end_before_start(self, exc: BaseException) -> None:
        """For a process whose command ended before the job's first collective: take part in it with the
        command's exit code, so that the others end too instead of waiting for this one."""
        if self.started or self.group.size == 1:
            return
        if isinstance(exc, SystemExit):
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:
            code = distributed.exit_code_of(exc)
        self.start(code or 1)


def launch(args: Optional[Sequence[str]]) -> Optional[Launch]:
    """This process's MPI job, joined now, when a launcher started it to train; None otherwise (a plain
    run, or another command: those run in each process alone and never import mpi4py)."""
    words = list(sys.argv[1:] if args is None else args)
    command = next((word for word in words if not word.startswith("-")), None)
    if command != "train" or not launched_by_mpi():
        return None
    return Launch(distributed.join())


def end_together(launch: Launch, command: Callable[[], int]) -> int:
    """Run ``command`` (which returns its exit code) in this process of the job; return the code every
    process exits with, the root's. An error raised in every process is re-raised in the root (which
    prints it); in the others it becomes the return value, silently.
    """
    group = launch.group
    failed_before = launch.start(0)
    if failed_before:
        if group.is_root:
            click.echo("Error: another process of the MPI job could not start training (see its error above)", err=True)
        return failed_before
    stderr = sys.stderr
    if not group.is_root:
        sys.stderr = io.StringIO()  # kept back: shown if this process fails alone
    error = None
    try:
        code = command()
    except (CharRNNError, click.ClickException) as exc:
        if not distributed.raised_together(exc):
            _end_alone(group, exc, stderr)
        code, error = distributed.exit_code_of(exc), exc
    except BaseException as exc:  # noqa: BLE001 - every other ending is this process's alone
        _end_alone(group, exc, stderr)
        raise  # not reached: abort ends the process
    finally:
        sys.stderr = stderr
    code = group.from_rank(code)
    if error is not None and group.is_root:
        raise error
    return code


def _end_alone(group: distributed.Group, exc: BaseException, stderr: object) -> None:
    """Say why this process ends alone, then end every process of the job (MPI_Abort)."""
    kept_back = sys.stderr.getvalue() if isinstance(sys.stderr, io.StringIO) else ""
    sys.stderr = stderr
    if isinstance(exc, Interrupted):
        code, message = exc.exit_code, f"interrupted by {exc.signal_name}"
    elif isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        message = None  # said already, by whatever decided to exit
    elif isinstance(exc, click.ClickException):
        code, message = distributed.exit_code_of(exc), exc.format_message()
    elif isinstance(exc, CharRNNError):
        code, message = distributed.exit_code_of(exc), str(exc)
    else:
        code, message = 1, None
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    by_signal = code in SIGNAL_EXIT_CODES
    if group.is_root or not by_signal:
        if kept_back and not by_signal:
            sys.stderr.write(kept_back)
        if message is not None:
            who = "" if group.is_root else f"process {group.rank} of the MPI job: "
            click.echo(f"Error: {who}{message}", err=True)
    group.abort(code or 1)
