"""What a test shows when a child process it started (a kit stage, a script) failed."""

from __future__ import annotations

import signal
import subprocess

FATAL = "Fatal Python error"


def failure(proc: subprocess.CompletedProcess) -> str:
    """The exit status (a signal by name), the head of a fatal-error dump, and the tail of stderr.

    faulthandler writes the crashing thread's frames first and the list of loaded extension modules last: a tail
    alone keeps only the list, so the frames are cut from the head of the dump.
    """
    code = proc.returncode
    status = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
    err = proc.stderr or ""
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    start = err.find(FATAL)
    head = f"\n--- fatal error (head) ---\n{err[start:start + 4000]}" if start >= 0 else ""
    return f"{status}{head}\n--- stderr (tail) ---\n{err[-3000:]}"
