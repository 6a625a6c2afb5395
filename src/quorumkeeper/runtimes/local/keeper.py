"""The keeper daemon: one per local cluster, reconciling it against its spec file until stopped.

Run as `python -m quorumkeeper.runtimes.local.keeper --state-dir DIR NAME`; `quorumkeeper up`
starts it. It holds an exclusive lock, so a second keeper for the same cluster exits at once. It
imports no CLI or rendering libraries, to keep its resident memory small.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from quorumkeeper.planner import Done, Promote, Wait
from quorumkeeper.runtimes.local.cluster import LocalCluster
from quorumkeeper.runtimes.local.state import ClusterPaths
from quorumkeeper.status import ClusterStatus

IDLE_INTERVAL = 0.25
"""Seconds between passes while nothing can be done yet: how fast a crashed member is noticed."""

QUIET_INTERVAL = 1.0
"""Seconds between passes while the cluster matches its spec, unless a member's process ends
or a command replaces the spec first (both looked for every `WAKE_CHECK_INTERVAL`). Each pass
asks every ZooKeeper member `srvr` over a new TLS connection: three idle members spent 24% of a
core answering 4 passes a second, 10% answering one (3.9.5, `benchmarks/membership.py
--idle-only` on two loaded cores)."""

WAKE_CHECK_INTERVAL = 0.1
"""Seconds between two looks at the spec file and the members' processes while resting: a
stat(2) and a pidfd poll per member, well under a millisecond."""

PROMOTE_INTERVAL = 0.05
"""Seconds between promote attempts: a learner is often promotable within 0.1-0.3 s."""

RENEWAL_INTERVAL = 10.0
"""Seconds between checks for certificates to renew (reading each certificate file costs
about 0.1 ms, too much for every idle pass; a renewal is due weeks ahead)."""

CRASH_AFTER_ENV = "QUORUMKEEPER_KEEPER_CRASH_AFTER"
"""Fault injection for tests: the keeper kills itself with SIGKILL after this many actions."""

log = logging.getLogger("quorumkeeper.runtimes.local.keeper")


def _command(paths: ClusterPaths) -> list[str]:
    return [
        sys.executable,
        "-m",
        "quorumkeeper.runtimes.local.keeper",
        "--state-dir",
        str(paths.state_dir),
        paths.name,
    ]


def runs_for(paths: ClusterPaths) -> Callable[[list[str]], bool]:
    """Whether a command line is that of a keeper for `paths`, whichever interpreter runs it:
    for `processes.end_process`, so that stopping a keeper never signals another process."""
    expected = _command(paths)[1:]
    return lambda argv: argv[1:] == expected


def spawn(paths: ClusterPaths, *, env: dict[str, str] | None = None) -> int:
    """Start a detached keeper for `paths`; returns its PID."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.keeper_log, "ab") as output:
        process = subprocess.Popen(
            _command(paths),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    return process.pid


class _Repeats:
    """Logs a failure once, then only counts it: a full disk or a store that refuses the same
    request fails every pass (4 a second), and a log that repeats it buries everything else.
    The count is logged when the failure ends or changes."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failure: str | None = None
        self.count = 0
        self.since = 0.0

    def seen(self, failure: str | None, detail: str = "") -> None:
        """Record one pass: `failure` is None for a pass without it; `detail` is logged with
        its first occurrence only."""
        if failure == self.failure:
            self.count += failure is not None
            return
        if self.failure is not None:
            log.warning(
                "%s: %r failed %d times over %.0fs%s",
                self.what,
                self.failure,
                self.count,
                time.monotonic() - self.since,
                "; works again" if failure is None else "",
            )
        if failure is not None:
            log.error("%s: %s (logged once; repeats are counted)%s", self.what, failure, detail)
        self.failure, self.count, self.since = failure, int(failure is not None), time.monotonic()


def _status_write_failure(error: OSError | None, paths: ClusterPaths) -> tuple[str | None, str]:
    if error is None:
        return None, ""
    try:
        free = f"{shutil.disk_usage(paths.root).free} bytes free"
    except OSError:
        free = "free space unknown"
    return f"{error.strerror} (errno {error.errno})", f": {paths.root} ({free})"


def _log_health_changes(before: dict[str, bool], status: ClusterStatus | None) -> dict[str, bool]:
    """Log each member whose health changed since the last pass (a joiner's first unhealthy
    passes are not news); returns the health now."""
    members = status.members if status else []
    now = {member.name: member.healthy for member in members}
    for member in members:
        if member.name not in before or before[member.name] == member.healthy:
            continue
        if member.healthy:
            log.info("%s is healthy", member.name)
        else:
            why = member.blocked_by or (member.last_error if member.failed_starts else None)
            log.warning("%s is unhealthy%s", member.name, f": {why}" if why else "")
    return now


class _Stop:
    requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def run(paths: ClusterPaths) -> int:
    with open(paths.keeper_lock, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.error("another keeper already runs for %s", paths.name)
            return 1
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        return _loop(paths)


def _rest(cluster: LocalCluster, stop: _Stop) -> None:
    """Wait up to `QUIET_INTERVAL` after a pass that found the cluster as its spec asks,
    ending early once a member's process or the spec changed."""
    deadline = time.monotonic() + QUIET_INTERVAL
    try:
        marks = cluster.marks()
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(WAKE_CHECK_INTERVAL)
            if cluster.marks() != marks:
                return
    except OSError:  # a folder being purged or moved: the next pass says what happened
        time.sleep(IDLE_INTERVAL)


def _loop(paths: ClusterPaths) -> int:
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # members are reaped by the kernel
    crash_after = int(os.environ.get(CRASH_AFTER_ENV, "0"))
    cluster = LocalCluster(paths, hold_store=True)
    reconciler = cluster.reconciler
    renewals_due = 0.0
    actions = 0
    last_logged: tuple[str, str | None] = ("", None)
    health: dict[str, bool] = {}
    failed_passes = _Repeats("pass failed")
    status_writes = _Repeats("status.json not written, the cluster is still looked after")
    while not stop.requested:
        try:
            if time.monotonic() >= renewals_due:
                renewals_due = time.monotonic() + RENEWAL_INTERVAL
                if changed := cluster.renew_certificates():
                    log.info("certificates reissued: %s", ", ".join(changed))
            step = reconciler.run_once()
        except Exception as error:
            failed_passes.seen(f"{type(error).__name__}: {error}", "\n" + traceback.format_exc())
            reconciler.close()  # whatever failed, the next pass connects afresh
            time.sleep(IDLE_INTERVAL)
            continue
        failed_passes.seen(None)
        status_writes.seen(*_status_write_failure(reconciler.record_error, paths))
        if (step.reason, reconciler.last_error) != last_logged:  # a retried refusal logs once
            log.info(
                "%s: %s%s",
                type(step).__name__,
                step.reason,
                f" ({reconciler.last_error})" if reconciler.last_error else "",
            )
            last_logged = (step.reason, reconciler.last_error)
        if reconciler.set_aside:
            log.warning("the unusable data was moved aside to %s", reconciler.set_aside)
            reconciler.set_aside = None
        health = _log_health_changes(health, reconciler.last_status)
        if isinstance(step, Done) and not step.degraded:
            _rest(cluster, stop)
            continue
        if isinstance(step, Wait | Done):
            time.sleep(IDLE_INTERVAL)
            continue
        actions += 1
        if crash_after and actions >= crash_after:
            log.warning("fault injection: killing the keeper after %d actions", actions)
            os.kill(os.getpid(), signal.SIGKILL)
        if reconciler.last_error:
            time.sleep(IDLE_INTERVAL)  # a refused change: etcd's reconfig grace lasts seconds
        elif isinstance(step, Promote):
            time.sleep(PROMOTE_INTERVAL)
    reconciler.close()
    log.info("keeper stops")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quorumkeeper-keeper", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("name")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout
    )
    # The log lives on the state disk: when that is full, a line that can't be written is
    # dropped instead of printing a traceback about it (to the same full disk) every time.
    logging.raiseExceptions = False
    logging.getLogger("kazoo").setLevel(logging.ERROR)
    return run(ClusterPaths(args.state_dir, args.name))


if __name__ == "__main__":
    sys.exit(main())
