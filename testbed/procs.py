"""Process helpers: spawn children that die with their parent, stop them by PID, poll conditions."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# setpriv makes the kernel SIGKILL the child when the spawning thread dies, so a crashed or
# killed parent never leaks control-plane or pod processes.
PDEATHSIG = ["setpriv", "--pdeathsig", "KILL", "--"]


class Timeout(Exception):
    """A polled condition did not hold before its deadline."""


class Fatal(Exception):
    """Raised by a polled condition when waiting longer cannot help, e.g. a process died."""


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Poll ``condition`` until it returns a truthy value; exceptions count as 'not yet'."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Fatal:
            raise
        except Exception as exc:  # the condition is allowed to fail while the thing starts
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` tied to the calling thread's life, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*PDEATHSIG, *map(str, argv)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """SIGTERM the process by PID, SIGKILL it after ``grace`` seconds; returns its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode
