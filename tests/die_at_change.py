"""Run the charrnn command line and die, as under kill -9, at its N-th change to the file system.

    python tests/die_at_change.py N before|after train corpus.txt ...

The changes counted are the creation of a temporary file (``tempfile.mkstemp``), a rename
(``os.replace``, ``os.rename``) and a removal (``os.unlink``, ``os.remove``): every step of an atomic
write, of the removal of a previous run's files and of pruning. At the N-th, the process ends with
``os._exit(137)`` just before or just after it, running no ``finally`` block and no exit handler, as a
SIGKILL would. With N = 0 it never dies and prints ``changes: <kind> <kind> ...`` on stderr at its end
(``mkstemp``, ``replace``, ``unlink``, ...), so a test can first list the points, then die at each in
turn (test_crash_safety, test_fault_catalogue).
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile

KILLED = 137  # the exit status a shell reports for SIGKILL


def _install(die_at: int, when: str) -> None:
    count = [0]
    kinds: list[str] = []

    def counted(real):
        def change(*args, **kwargs):
            count[0] += 1
            kinds.append(real.__name__)
            if count[0] == die_at and when == "before":
                os._exit(KILLED)
            result = real(*args, **kwargs)
            if count[0] == die_at and when == "after":
                os._exit(KILLED)
            return result
        return change

    for module, name in ((os, "replace"), (os, "rename"), (os, "unlink"), (os, "remove"), (tempfile, "mkstemp")):
        setattr(module, name, counted(getattr(module, name)))
    if die_at == 0:
        atexit.register(lambda: print(f"changes: {' '.join(kinds)}", file=sys.stderr))


if __name__ == "__main__":
    _install(int(sys.argv[1]), sys.argv[2])
    from charrnn.cli import main

    main(args=sys.argv[3:], prog_name="charrnn")
