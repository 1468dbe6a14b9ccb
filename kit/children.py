"""Servers the kit runs as child processes (`kit serve` for notebooks and tests, TRL's rollout server for a
launch): started in a process group of their own that ends with their parent, waited for until their health
URL answers, and stopped as a whole group, so that no engine process outlives them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def die_with_parent() -> None:
    """In a child, before it runs: ask Linux to end it when its parent ends, however the parent ends."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the group is still stopped on a normal exit


def stop_group(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM a child's whole process group (vLLM's API server, engine and workers), SIGKILL it after
    `grace_s`: stopping the API server alone leaves its engine processes running."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, health_url: str, timeout_s: float, output) -> None:
    """Until `health_url` answers 200: a server child that exits first raises with the tail of its
    `output()`, one that is not up within `timeout_s` raises TimeoutError."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}: {output()}")
        try:
            urllib.request.urlopen(health_url, timeout=2)
            return
        except OSError:  # not listening yet, or its engine still loading (502 from the proxy)
            time.sleep(0.5)
    raise TimeoutError(f"the server did not answer {health_url} within {timeout_s:.0f} s")


class ChildServer:
    """`with ChildServer(cmd, health_url) as server:` the command runs until the block ends. Its output goes
    to `log` (a file) where given, else to a temporary file removed when the block ends; a failure to start
    quotes its tail. (Never a pipe: a pipe nobody reads fills, and the server blocks on its next log line.)"""

    def __init__(self, cmd: list[str], health_url: str, timeout_s: float, env: dict | None = None,
                 log: Path | None = None, grace_s: float = 30):
        self.cmd, self.health_url, self.timeout_s, self.env, self.log, self.grace_s = cmd, health_url, timeout_s, env, log, grace_s
        self.proc: subprocess.Popen | None = None
        self._own_log = log is None

    def __enter__(self):
        if self._own_log:
            fd, name = tempfile.mkstemp(prefix="kit-server-", suffix=".log")
            os.close(fd)
            self.log = Path(name)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=die_with_parent)
        try:
            wait_healthy(self.proc, self.health_url, self.timeout_s, self.output)
        except BaseException:
            self.__exit__()
            raise
        return self

    def output(self, chars: int = 3000) -> str:
        """The tail of what the server has written so far."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __exit__(self, *exc):
        if self.proc is not None:
            stop_group(self.proc, grace_s=self.grace_s)
        if self._own_log and self.log is not None:
            self.log.unlink(missing_ok=True)
