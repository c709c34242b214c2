"""Launcher that ties a child server's life to its parent's: ``python _child.py EXE ARGS...``.

On Linux it asks the kernel to send SIGTERM when the parent dies
(``prctl(PR_SET_PDEATHSIG)``, which survives ``execve`` for a non-setuid program), so
the server is never left behind, even when the parent is SIGKILLed.  Everywhere it
starts a new session, so a Ctrl-C aimed at the parent's terminal does not stop the
server before the parent has drained its work, then it replaces itself with ``EXE``.

It imports nothing but the standard library (and not the ``pyrowire`` package), so it
can be run by path with ``python -I -S`` and start in milliseconds.  When the environment
variable ``PYROWIRE_PARENT_PID`` is set and the parent is already gone by the time the
death signal is armed, it exits without starting the server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
PARENT_PID_VARIABLE = "PYROWIRE_PARENT_PID"
EXIT_USAGE = 64
EXIT_ORPHANED = 75
EXIT_EXEC_FAILED = 127


def _arm_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        print(f"pyrowire._child: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}", file=sys.stderr)


def _orphaned() -> bool:
    expected = os.environ.get(PARENT_PID_VARIABLE, "")
    return expected.isdigit() and os.getppid() != int(expected)


def main(argv: Sequence[str]) -> int:
    """Arm the death signal, leave the parent's session, and exec ``argv[0]`` with ``argv``."""
    if not argv:
        print("usage: python -m pyrowire._child EXECUTABLE [ARGS...]", file=sys.stderr)
        return EXIT_USAGE
    _arm_parent_death_signal()
    if _orphaned():
        return EXIT_ORPHANED
    os.environ.pop(PARENT_PID_VARIABLE, None)
    with contextlib.suppress(OSError):  # already a session leader
        os.setsid()
    try:
        os.execv(argv[0], list(argv))
    except OSError as e:
        print(f"pyrowire._child: cannot run {argv[0]}: {e.strerror}", file=sys.stderr)
        return EXIT_EXEC_FAILED
    return 0  # not reached: execv does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
