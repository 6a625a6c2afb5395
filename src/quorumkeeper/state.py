"""The state folder: where each local cluster keeps its spec, status, keeper and members."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quorumkeeper.spec import ClusterSpec, dump_spec, load_spec

STATE_DIR_ENV = "QUORUMKEEPER_STATE_DIR"


def default_state_dir() -> Path:
    configured = os.environ.get(STATE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".local" / "share" / "quorumkeeper"


def write_atomically(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.chmod(mode)
    os.replace(temporary, path)


def ensure_secret(path: Path) -> str:
    """A per-cluster secret, generated on first call into a 0600 file and read back after.

    Created with O_EXCL under its final mode, so it is never readable by others, and reading an
    existing file makes cluster creation safe to re-run after a crash.
    """
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(24) + "\n")
    os.replace(partial, path)
    return path.read_text().strip()


@dataclass(frozen=True)
class ClusterPaths:
    """The files of cluster `name` under the state folder."""

    state_dir: Path
    name: str

    @property
    def root(self) -> Path:
        return self.state_dir / self.name

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def keeper_lock(self) -> Path:
        return self.root / "keeper.lock"

    @property
    def keeper_log(self) -> Path:
        return self.root / "keeper.log"

    @property
    def connect_string_file(self) -> Path:
        return self.root / "connect-string"

    def save_connect_string(self, connect_string: str) -> None:
        """Keep the file clients read their server list from current, touching it only on a
        change so that file watchers see membership changes and nothing else."""
        try:
            if self.connect_string_file.read_text().strip() == connect_string:
                return
        except FileNotFoundError:
            pass
        write_atomically(self.connect_string_file, connect_string + "\n")

    def exists(self) -> bool:
        return self.spec_file.is_file()

    def members_root(self, spec: ClusterSpec) -> Path:
        return spec.data_dir / spec.name if spec.data_dir else self.root / "members"

    def load_spec(self) -> ClusterSpec:
        return load_spec(self.spec_file)

    def save_spec(self, spec: ClusterSpec) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomically(self.spec_file, dump_spec(spec))

    def load_status(self) -> dict[str, Any] | None:
        try:
            loaded: dict[str, Any] = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None
        return loaded

    def save_status(self, status: dict[str, Any]) -> None:
        write_atomically(self.status_file, json.dumps(status, indent=2))

    def keeper_pid(self) -> int | None:
        """The PID of the keeper holding this cluster's lock, or None when no keeper runs."""
        try:
            with open(self.keeper_lock, "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    lock.seek(0)
                    return int(lock.read().strip() or 0) or None
                fcntl.flock(lock, fcntl.LOCK_UN)
                return None
        except FileNotFoundError:
            return None


def cluster_names(state_dir: Path) -> list[str]:
    if not state_dir.is_dir():
        return []
    return sorted(p.name for p in state_dir.iterdir() if (p / "spec.yaml").is_file())
