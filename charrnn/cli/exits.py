"""How a charrnn process ends, decided once for every command: signals, stdout failures, exit codes.

- SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` wherever the program is, so ``finally`` blocks run
  on the way out (temporary files are removed, nothing half-written is published) and the process
  exits 130, 143 or 129 (128 + the signal's number, as shells report a death by signal) with one
  line on stderr. Without this, click turns Ctrl-C into "Aborted!" and exit 1, and SIGTERM or a
  hang-up kills the process on the spot, past every cleanup. ``charrnn train`` installs its own
  handlers while it trains (first signal: finish the step and save; second: abort). Before any of
  this is set up, while the imports run, charrnn/__main__.py ends the process with the same line
  and exit code (nothing has been written yet).
- SIGQUIT (Ctrl-\\) means "quit now, and dump core": it unwinds the same way, removing temporary
  files but saving nothing (train included), then the process dies by SIGQUIT itself, so that a core
  is dumped where the system keeps them and the shell reports "Quit".
- A reader that closes stdout early (``charrnn sample | head``) ends the command normally: no message,
  exit 0. The reader took what it wanted; exit 141 (a death by SIGPIPE, what `yes | head` reports)
  would make every `set -o pipefail` script that cuts a sample short fail.
- Any other failure to write stdout (a full disk, /dev/full) is one ``Error:`` line and exit 1.
- A mistake on the command line (an unknown option, a value missing or of the wrong type) is one
  ``Error:`` line and exit 2, as is every other bad input: click would print its usage lines above
  some such mistakes and not others (``--steps`` given no value).
- Text goes out in the encoding of its stream, whatever it is (PYTHONIOENCODING=ascii or latin-1
  included): a character the stream cannot carry is written as a ``\\uXXXX`` escape (valid inside
  JSON strings, so a --json document stays valid and reads back the same), and the undecodable bytes
  of a file name (held as lone surrogates, ``os.fsdecode``) as those bytes, so that a script can use
  the path it reads. Control characters in what a terminal shows (file names in a listing, messages
  on stderr) are escaped too (``\\x1b``), so that a crafted file name cannot rewrite the screen.

In both stdout cases stdout is pointed at /dev/null first, so the interpreter's last flush at exit
cannot fail again and print "Exception ignored ... BrokenPipeError".
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import re
import signal
import sys
import warnings
from typing import Any, Iterator, NoReturn, Optional, Union

import click

from charrnn.errors import CharRNNNote

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Interrupted(BaseException):
    """A signal of HANDLED_SIGNALS arrived. A BaseException, like KeyboardInterrupt: no
    ``except Exception`` may swallow it on its way out."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number

    @property
    def exit_code(self) -> int:
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP."""
        return 128 + self.signal_number

    @property
    def signal_name(self) -> str:
        """SIGINT, SIGTERM, SIGHUP or SIGQUIT."""
        return signal.Signals(self.signal_number).name


class OutputError(Exception):
    """Writing the product to stdout failed; ``closed`` when the reader has gone away (EPIPE)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.strerror or str(cause))
        self.closed = cause.errno == errno.EPIPE


ESCAPE_ERRORS = "charrnn.escape"
# C0 control characters but tab and newline, DEL, and the C1 controls (U+0080 to U+009F), which some
# terminals obey as escape sequences too.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape_unencodable(error: UnicodeError) -> tuple[Union[str, bytes], int]:
    """Codec error handler ESCAPE_ERRORS: a character a stream cannot carry as ``\\uXXXX`` (two for one
    beyond the first plane, as JSON writes it), the undecodable byte of a file name as that byte."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    code = ord(error.object[error.start])
    if 0xDC80 <= code <= 0xDCFF:
        return bytes([code - 0xDC00]), error.start + 1
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}", error.start + 1
    return f"\\u{code:04x}", error.start + 1


codecs.register_error(ESCAPE_ERRORS, _escape_unencodable)


def encode_for(stream: Any, text: str) -> bytes:
    """``text`` as bytes in ``stream``'s encoding, escaping what that encoding cannot carry (see above)."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return text.encode(encoding, ESCAPE_ERRORS)
    except (UnicodeError, LookupError):  # a codec that refuses a raw byte (UTF-16 output), or none at all
        return text.encode("utf-8", "backslashreplace")


def escape_controls(text: str) -> str:
    """``text`` with its control characters (but tab and newline) written as ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _on_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def write_stdout(text: Union[str, bytes], nl: bool = True, shows_names: bool = False) -> None:
    """Write ``text`` (or bytes, written as they are) to stdout and flush it; OutputError if that fails.

    Text is encoded as the module docstring says; with ``shows_names`` (a listing, a path), its
    control characters are escaped when stdout is a terminal.
    """
    if isinstance(text, str):
        if shows_names and _on_terminal(sys.stdout):
            text = escape_controls(text)
        text = encode_for(sys.stdout, text)
    try:
        click.echo(text, nl=nl)  # flushes
    except OSError as exc:
        raise OutputError(exc) from None


def write_stderr(text: str, nl: bool = True) -> None:
    """Write ``text`` to stderr: encoded as stdout is, control characters escaped on a terminal.

    A stderr that is gone (a terminal hung up, a closed pipe) takes nothing, silently: what is said
    there only informs, and the command must still end as it would have (saving, on a hang-up).
    """
    if _on_terminal(sys.stderr):
        text = escape_controls(text)
    with contextlib.suppress(OSError):
        click.echo(encode_for(sys.stderr, text), nl=nl, err=True)


def printable(text: str, stream: Any) -> str:
    """``text`` as a str that ``stream`` can always encode (for writers that take text, such as tqdm)."""
    if _on_terminal(stream):
        text = escape_controls(text)
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except (UnicodeError, LookupError):
        return text.encode("ascii", "backslashreplace").decode("ascii")


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
    write_stderr(line)


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


def exit_interrupted(exc: Interrupted, message: Optional[str] = None) -> NoReturn:
    """Say which signal ended the command (or ``message``), on stderr, and exit 128 + its number;
    SIGQUIT ends the process by that signal itself (see the module docstring)."""
    prefix = "\n" if _on_terminal(sys.stderr) else ""  # past the terminal's echo of ^C
    _say(f"{prefix}Error: {message or f'interrupted by {exc.signal_name}'}")
    if exc.signal_number == signal.SIGQUIT:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGQUIT)
    sys.exit(exc.exit_code)


@contextlib.contextmanager
def signals_raise_interrupted() -> Iterator[None]:
    """Inside the block the HANDLED_SIGNALS (unless ignored) raise Interrupted; handlers restored after.

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
def _completion_problem(instruction: str) -> Optional[str]:
    """Why click's shell completion cannot follow ``instruction`` (SHELL_source or SHELL_complete), or None."""
    from click.shell_completion import get_completion_class

    shell, _, action = instruction.partition("_")
    if get_completion_class(shell) is None or action not in ("source", "complete"):
        return "expected bash_source, zsh_source or fish_source"
    if action == "complete":
        words, word = os.environ.get("COMP_WORDS"), os.environ.get("COMP_CWORD")
        if words is None or word is None or (shell != "fish" and not word.strip().lstrip("-").isdigit()):
            return "the shell's completion function sets it, with COMP_WORDS and COMP_CWORD, which are missing or not valid"
    return None


@contextlib.contextmanager
def notes_as_lines() -> Iterator[None]:
    """Inside the block a CharRNNNote (the library's "good to know", issued as a warning) is one
    ``note:`` line on stderr, each different one once, and none with -q; other warnings are untouched."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", CharRNNNote)
        show, shown = warnings.showwarning, set()

        def show_note(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
            if not issubclass(category, CharRNNNote):
                show(message, category, *args, **kwargs)
                return
            context = click.get_current_context(silent=True)
            quiet = context is not None and any(c.params.get("quiet") for c in (context, context.parent) if c)
            # Counted here, not by the warnings module's registry, which any change of filters (numba
            # makes some while it compiles) empties.
            if not quiet and str(message) not in shown:
                shown.add(str(message))
                _say(f"note: {message}")

        warnings.showwarning = show_note
        yield


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
            with signals_raise_interrupted(), notes_as_lines():
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
    def _main_shell_completion(self, ctx_args: Any, prog_name: str, complete_var: Optional[str] = None) -> None:
        """Shell completion as click does it, but a request it cannot serve is one line and exit 2, not a
        traceback: click reads the words to complete from COMP_WORDS and COMP_CWORD, which only the
        shell's completion function sets."""
        name = complete_var or f"_{prog_name.replace('-', '_').replace('.', '_')}_COMPLETE".upper()
        instruction = os.environ.get(name)
        problem = _completion_problem(instruction) if instruction else None
        if problem:
            _say(f"Error: {name}={instruction}: {problem}; to set completion up in bash: "
                 f'eval "$({name}=bash_source {prog_name})"')
            sys.exit(2)
        super()._main_shell_completion(ctx_args, prog_name, complete_var)

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
