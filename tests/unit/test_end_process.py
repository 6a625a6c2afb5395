"""`end_process` on real processes: it signals only a process its check recognises, escalates
to SIGKILL, and never reaches a process that took the PID over after the first one ended."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from quorumkeeper.runtimes.local.processes import end_process

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
