"""`end_process` and `command_line` on real processes: a process is recognised by its command
line even in the moment its exec is under way, `end_process` signals only a process its check
recognises, escalates to SIGKILL, and never reaches a process that took the PID over after the
first one ended."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from quorumkeeper.runtimes.local.processes import EXEC_SECONDS, command_line, end_process

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); "
    "time.sleep(60)"
)


@contextmanager
def _child(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_process_its_check_does_not_recognise_is_left_alone() -> None:
    with _child("sleep", "60") as process:
        assert end_process(process.pid, lambda argv: "other" in argv, 0.5) is False
        assert process.poll() is None, "a process that is not ours got a signal"


def test_sigterm_first_then_sigkill_after_the_grace() -> None:
    with _child("sleep", "61") as polite:
        assert end_process(polite.pid, lambda argv: "61" in argv, 5) is True
        assert polite.wait(5) == -15  # SIGTERM was enough
    with _child(sys.executable, "-c", IGNORES_SIGTERM) as stubborn:
        assert stubborn.stdout is not None
        stubborn.stdout.readline()  # its SIGTERM handler is set
        assert end_process(stubborn.pid, lambda argv: IGNORES_SIGTERM in argv, 0.5) is True
        assert stubborn.wait(5) == -9


def test_a_process_that_ends_during_the_check_is_reported_gone() -> None:
    """The signals go through the pidfd opened before the check: a process that ended
    meanwhile (its PID free for another) gets none, and counts as exited."""
    with _child("sleep", "62") as first:
        seen: list[int] = []

        def ends_then_recognises(argv: list[str]) -> bool:
            first.kill()
            first.wait()  # reaped: its PID is free for the kernel to hand out again
            seen.append(first.pid)
            return True

        assert end_process(first.pid, ends_then_recognises, 0.5) is True
        assert seen == [first.pid] and first.returncode == -9  # the check's kill, no other


def test_a_process_read_the_moment_it_was_started_shows_its_command_line() -> None:
    """Read at once, a child's command line is empty about one time in ten (its exec under
    way): each of 100 must be read whole, and a zombie refused at once."""
    for _ in range(100):
        with _child("sleep", "63") as process:
            pidfd = os.pidfd_open(process.pid)
            try:
                assert command_line(process.pid, pidfd) == ["sleep", "63"]
                process.kill()
                os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # a zombie now
                started = time.monotonic()
                with pytest.raises(psutil.ZombieProcess):
                    command_line(process.pid, pidfd)
                assert time.monotonic() - started < EXEC_SECONDS
            finally:
                os.close(pidfd)
