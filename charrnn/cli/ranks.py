"""How ``charrnn train`` ends when an MPI launcher runs it in several processes: together, with one exit code.

Every process runs the whole command. The root (rank 0) speaks for the job: it alone prints, and every
process exits with its exit code, because launchers combine the codes of their processes (MPICH's
mpiexec ORs them: 2 and 1 would make 3). The others' stderr is kept back, and shown only if such a
process fails alone.

An error raised in every process at once (``distributed.raised_together``: a bad option, a file that
cannot be read, a failed checkpoint write, a NaN loss, a stop voted by all) ends them all normally. Any
other ending of one process (a second Ctrl-C, a bug, a failed write of the log) would leave the others
waiting for it in a collective forever, so it ends the whole job at once (MPI_Abort), as the launcher
does when a process dies.
"""

from __future__ import annotations

import io
import sys
import traceback
from typing import Callable

import click

from charrnn.cli.exits import Interrupted
from charrnn.errors import CharRNNError
from charrnn.training import distributed

# Exit codes that mean a signal ended the process; every process of the job gets the signal (the
# launcher forwards it), so only the root says so.
SIGNAL_EXIT_CODES = (130, 143)


def end_together(group: distributed.Group, command: Callable[[], int]) -> int:
    """Run ``command`` (which returns its exit code) in this process of ``group``; return the code every
    process of the job exits with, the root's. An error raised in every process is re-raised in the root
    (which prints it); in the others it becomes the return value, silently.
    """
    if not group.wait_for_everyone(distributed.START_WAIT_S):
        click.echo(f"Error: not every process of the MPI job started training within {distributed.START_WAIT_S:g} s; "
                   "one of them ended before it could join (see its error above: a mistake on its command line?), "
                   "or is not running charrnn train", err=True)
        group.abort(2)
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
    elif isinstance(exc, (CharRNNError, click.ClickException)):
        code, message = distributed.exit_code_of(exc), exc.format_message() if isinstance(
            exc, click.ClickException) else str(exc)
    else:
        code, message = 1, None
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    by_signal = code in SIGNAL_EXIT_CODES
    if group.is_root or not by_signal:
        who = "" if group.is_root else f"process {group.rank} of the MPI job: "
        if kept_back and not by_signal:
            sys.stderr.write(kept_back)
        if message is not None:
            click.echo(f"Error: {who}{message}", err=True)
    group.abort(code or 1)
