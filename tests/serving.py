"""Helpers for tests that run ``accounts-grpc`` as real processes: the command, an
environment free of the caller's ``ACCOUNTS_*`` settings, and a process whose stderr is
read as it comes, to wait for its log lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

CLI = [sys.executable, "-m", "accounts_grpc.cli"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("ACCOUNTS_") and k != "PROMETHEUS_MULTIPROC_DIR"}


def cli(*args: str) -> str:
    """An ``accounts-grpc`` command that must succeed; its stdout."""
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, env=clean_env(),
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


@dataclass
class LoggedProcess:
    """A process and what it has written to stderr so far (``read_stderr`` on a thread)."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list, kw_only=True)
    eof: bool = field(default=False, kw_only=True)  #: stderr is closed: it has exited
    _changed: threading.Condition = field(default_factory=threading.Condition, kw_only=True)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.eof = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30, start: int = 0) -> re.Match[str]:
        """The first log line from index ``start`` on that matches ``pattern``; fails
        at the timeout, or at once when the process has exited without it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if m := re.search(pattern, line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    raise AssertionError(f"no {pattern!r} in the log (exit code "
                                         f"{self.proc.poll()}):\n{self.log}")
                self._changed.wait(min(left, 0.2))
