"""Entry point of the ``charrnn`` command (its console script) and of ``python -m charrnn``.

Signals are handled from the first line of charrnn that runs. Importing click, the commands and numpy
takes a tenth of a second or more, and a Ctrl-C in it would print a KeyboardInterrupt traceback (a
SIGTERM or a hang-up would end the process silently). So before anything is imported, SIGINT, SIGTERM
and SIGHUP end the process with the one line and the exit code (128 + the signal's number) that the
command line gives them later, and SIGQUIT with that line and a death by SIGQUIT (cli/exits.py):
nothing has been written yet, so there is nothing to clean up. A signal that was ignored when the
process started (a shell's background job) stays ignored. The Python interpreter's own start, before
this module runs, is beyond reach: a signal there is Python's to handle.
"""

import os

# The C module under ``signal``: importing ``signal`` itself builds its enums, milliseconds in which a
# Ctrl-C would still be a traceback, while this one is built into the interpreter.
import _signal

STARTUP_SIGNALS = {_signal.SIGINT: "SIGINT", _signal.SIGTERM: "SIGTERM", _signal.SIGHUP: "SIGHUP",
                   _signal.SIGQUIT: "SIGQUIT"}


def _end_at_startup(signal_number, frame):  # no annotations: typing would be one more import to wait for
    """Signal handler while the imports run: one line on stderr, and exit as the command line would
    (SIGQUIT: die by it, for its core dump)."""
    try:
        # To the descriptor itself: sys.stderr may be gone already when the signal comes as the process ends.
        os.write(2, f"Error: interrupted by {STARTUP_SIGNALS[signal_number]}\n".encode())
    except OSError:
        pass  # no stderr to say it on
    if signal_number == _signal.SIGQUIT:
        _signal.signal(_signal.SIGQUIT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGQUIT)
    os._exit(128 + signal_number)


def handle_startup_signals():
    """Install _end_at_startup for every STARTUP_SIGNAL that was not ignored when the process started."""
    for number in STARTUP_SIGNALS:
        if _signal.getsignal(number) != _signal.SIG_IGN:
            _signal.signal(number, _end_at_startup)


# At once, as this module is imported by the console script (or run by python -m): the earliest moment
# charrnn's code runs. Nothing but the entry point imports this module.
handle_startup_signals()


def main(*args, **kwargs):
    """Console entry point: the command line (charrnn.cli.main), imported once signals are handled."""
    from charrnn.cli import main as command_line  # click, the commands: the slow part

    return command_line(*args, **kwargs)


if __name__ == "__main__":
    main(prog_name="charrnn")
