"""How a charrnn process ends, decided once for every command: signals, stdout failures, exit codes.

- SIGINT and SIGTERM raise ``Interrupted`` wherever the program is, so ``finally`` blocks run on the
  way out (temporary files are removed, nothing half-written is published) and the process exits
  130 or 143 (128 + the signal's number, as shells report a death by signal) with one line on stderr.
  Without this, click turns Ctrl-C into "Aborted!" and exit 1, and SIGTERM kills the process on the
  spot, past every cleanup. ``charrnn train`` installs its own handlers while it trains (first
  signal: finish the step and save; second: abort).
- A reader that closes stdout early (``charrnn sample | head``) ends the command normally: no message,
  exit 0. The reader took what it wanted; exit 141 (a death by SIGPIPE, what `yes | head` reports)
  would make every `set -o pipefail` script that cuts a sample short fail.
- Any other failure to write stdout (a full disk, /dev/full) is one ``Error:`` line and exit 1.
- A mistake on the command line (an unknown option, a value missing or of the wrong type) is one
  ``Error:`` line and exit 2, as is every other bad input: click would print its usage lines above
  some such mistakes and not others (``--steps`` given no value).

In both stdout cases stdout is pointed at /dev/null first, so the interpreter's last flush at exit
cannot fail again and print "Exception ignored ... BrokenPipeError".
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from typing import Any, Iterator, NoReturn, Optional, Union

import click

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, like KeyboardInterrupt: no ``except Exception``
    may swallow it on its way out."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number

    @property
    def exit_code(self) -> int:
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signal_number

    @property
    def signal_name(self) -> str:
        """SIGINT or SIGTERM."""
        return signal.Signals(self.signal_number).name


class OutputError(Exception):
    """Writing the product to stdout failed; ``closed`` when the reader has gone away (EPIPE)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.strerror or str(cause))
        self.closed = cause.errno == errno.EPIPE


def write_stdout(text: Union[str, bytes], nl: bool = True) -> None:
    """Write ``text`` (or bytes, written as they are) to stdout and flush it; OutputError if that fails."""
    try:
        click.echo(text, nl=nl)  # flushes
    except OSError as exc:
        raise OutputError(exc) from None


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError as exc:
        raise OutputError(exc) from None


def _discard(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null, so that what it still buffers goes nowhere."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (e.g. click's test runner): nothing is flushed to it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _say(line: str) -> None:
    """One line on stderr, unless stderr itself is gone."""
    with contextlib.suppress(OSError):
        click.echo(line, err=True)


def _interrupt_behind(exc: BaseException) -> Optional[Interrupted]:
    """The Interrupted that ``exc`` was raised while handling, if any (following its context and cause)."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def exit_interrupted(exc: Interrupted) -> NoReturn:
    """Say which signal ended the command, on stderr, and exit 130 or 143."""
    prefix = "\n" if sys.stderr.isatty() else ""  # past the terminal's echo of ^C
    _say(f"{prefix}Error: interrupted by {exc.signal_name}")
    sys.exit(exc.exit_code)


@contextlib.contextmanager
def signals_raise_interrupted() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM (unless ignored) raise Interrupted; handlers restored after.

    A child process forked inside the block (a jieba worker) inherits the handler: there the signal
    takes its default action, so the child dies as it would have, instead of raising into its pool.
    """
    owner = os.getpid()

    def handle(signal_number: int, frame: Any) -> None:
        if os.getpid() != owner:
            signal.signal(signal_number, signal.SIG_DFL)
            os.kill(os.getpid(), signal_number)
            return
        raise Interrupted(signal_number)

    # A signal ignored from the start stays ignored, as Python itself leaves it: a shell starts
    # background jobs with SIGINT ignored so that Ctrl-C at the terminal spares them.
    previous = {s: signal.signal(s, handle) for s in HANDLED_SIGNALS if signal.getsignal(s) != signal.SIG_IGN}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class CommandLineError(click.UsageError):
    """A click usage error, shown as one ``Error:`` line (exit 2) like every other error."""

    def show(self, file: Any = None) -> None:
        """Print ``Error: message`` on stderr; no usage lines."""
        click.echo(f"Error: {self.format_message()}", file=file, err=file is None)


@contextlib.contextmanager
def one_line_usage_errors() -> Iterator[None]:
    """Re-raise click's usage errors as CommandLineError."""
    try:
        yield
    except CommandLineError:
        raise
    except click.UsageError as exc:
        raise CommandLineError(exc.format_message(), exc.ctx) from None


class CharRNNGroup(click.Group):
    """The ``charrnn`` group: click's standalone handling plus this module's endings (see above).

    With ``standalone_mode=False`` (charrnn embedded in another program) it is plain click: exceptions
    reach the caller and no signal handler is installed.
    """

    def main(self, args: Any = None, prog_name: Optional[str] = None, complete_var: Optional[str] = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the command line; see the class docstring."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            with signals_raise_interrupted():
                return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        except Interrupted as exc:
            exit_interrupted(exc)
        except Exception as exc:
            # A signal that lands inside a lock's bookkeeping (a thread pool's wait in the compiled
            # backend) can surface as the error of the clean-up it disturbed ("cannot release
            # un-acquired lock"); the signal is still what ended the command.
            cause = _interrupt_behind(exc)
            if cause is None:
                raise
            exit_interrupted(cause)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse charrnn's own options (a mistake there is one line too)."""
        with one_line_usage_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand and flush stdout, ending as described above if stdout fails."""
        try:
            with one_line_usage_errors():
                result = super().invoke(ctx)
            _flush_stdout()
            return result
        except OutputError as exc:
            _discard(sys.stdout)
            if exc.closed:
                sys.exit(0)
            _say(f"Error: cannot write to standard output: {exc}")
            sys.exit(1)
        except OSError as exc:
            # Not stdout (that is OutputError): an error no command turned into a message of its own.
            if exc.errno == errno.EPIPE:  # a reader has gone (stderr's, or stdout's unseen): say nothing
                _discard(sys.stdout)
                _discard(sys.stderr)
            where = f" ({exc.filename})" if exc.filename else ""
            _say(f"Error: {exc.strerror or exc}{where}")
            sys.exit(1)
