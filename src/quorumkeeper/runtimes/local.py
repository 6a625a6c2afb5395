"""Members as processes on this machine: the embedded default runtime.

Each member binds its own loopback address with the store's standard ports and keeps its data,
log and pid file in its own folder. Members run in their own session so they outlive the keeper:
a keeper crash never takes a healthy member down with it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

from quorumkeeper.planner import Slot
from quorumkeeper.state import write_atomically
from quorumkeeper.stores.base import Endpoint, MemberLauncher

STOP_GRACE_SECONDS = 10.0


class LocalRuntime:
    """The member folders of one cluster under `members_root`."""

    def __init__(self, members_root: Path, launcher: MemberLauncher) -> None:
        self.members_root = members_root
        self.launcher = launcher

    def member_dir(self, endpoint: Endpoint) -> Path:
        return self.members_root / endpoint.name

    def data_dir(self, endpoint: Endpoint) -> Path:
        return self.member_dir(endpoint) / "data"

    def log_path(self, endpoint: Endpoint) -> Path:
        return self.member_dir(endpoint) / "member.log"

    def _pid_path(self, endpoint: Endpoint) -> Path:
        return self.member_dir(endpoint) / "pid"

    def pid(self, endpoint: Endpoint) -> int | None:
        """The member's live process, checked against its command line so a reused PID or a
        zombie waiting to be reaped never counts as running."""
        try:
            pid = int(self._pid_path(endpoint).read_text())
            process = psutil.Process(pid)
            alive = process.status() != psutil.STATUS_ZOMBIE
            ours = self.launcher.process_marker(self.data_dir(endpoint)) in process.cmdline()
        except (OSError, ValueError, psutil.Error):
            return None
        return pid if alive and ours else None

    def member_names(self) -> list[str]:
        """Every member folder present, whether or not its member still belongs."""
        if not self.members_root.is_dir():
            return []
        return sorted(p.name for p in self.members_root.iterdir() if not p.name.startswith("."))

    def slots(self, endpoints: list[Endpoint]) -> list[Slot]:
        return [
            Slot(
                endpoint=endpoint,
                running=self.pid(endpoint) is not None,
                has_data=self.launcher.has_data(self.data_dir(endpoint)),
            )
            for endpoint in endpoints
        ]

    def start(self, endpoint: Endpoint, argv: list[str]) -> int:
        """Start the member's process detached from the caller; returns its PID."""
        folder = self.member_dir(endpoint)
        self.data_dir(endpoint).mkdir(parents=True, exist_ok=True)
        with open(self.log_path(endpoint), "ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,
            )
        write_atomically(self._pid_path(endpoint), str(process.pid))
        return process.pid

    def stop(self, endpoint: Endpoint, *, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM (etcd hands leadership over on it), then SIGKILL after `grace` seconds."""
        pid = self.pid(endpoint)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        if not wait_for_exit(pid, grace):
            os.kill(pid, signal.SIGKILL)
            wait_for_exit(pid, grace)
        self._pid_path(endpoint).unlink(missing_ok=True)

    def discard_data(self, endpoint: Endpoint, *, keep: bool) -> Path | None:
        """Delete a former member's data, or with `keep` move it aside where no start finds it.
        Its log stays for the record."""
        self._pid_path(endpoint).unlink(missing_ok=True)
        data = self.data_dir(endpoint)
        if keep:
            archive = self.members_root / ".removed" / f"{endpoint.name}-{int(time.time())}"
            archive.parent.mkdir(parents=True, exist_ok=True)
            os.replace(data, archive)
            return archive
        shutil.rmtree(data, ignore_errors=True)
        return None


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Poll until `pid` is gone or a zombie; PID 1 may reap orphans late, so zombies count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
