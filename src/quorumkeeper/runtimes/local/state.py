"""The state folder: where each local cluster keeps its spec, status, keeper and members.

Every file here is written atomically and durably (`write_atomically`), every change of the
spec is a compare-and-swap on its generation under the cluster's lock (`command_lock`), and a
folder is only ever deleted by `purge` when quorumkeeper created it and only the parts it knows.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from quorumkeeper.errors import Refused
from quorumkeeper.spec import ClusterSpec, dump_spec, parse_spec

STATE_DIR_ENV = "QUORUMKEEPER_STATE_DIR"

LOCK_WAIT_SECONDS = 30.0
"""How long a command waits for another command of the same cluster to finish its spec change;
the lock is only held for a read-check-write, so this is only reached when a holder hangs."""

STATUS_HEARTBEAT_SECONDS = 2.0
"""The keeper rewrites an unchanged status.json this often, so its `updated_at` stays fresh."""

STATUS_STALE_AFTER_SECONDS = 10.0
"""A status.json older than this (five heartbeats) was not refreshed: the keeper is stopped,
hung, or can't write it, and its content is history, not the cluster's state."""

OWNER_MARKER = ".quorumkeeper-owner"
"""The file in each folder quorumkeeper created (or adopted while empty) naming its cluster."""

_CHANGE_KEY = "change"
"""The key of spec.yaml that holds the change bookkeeping, beside the spec's own fields."""


def default_state_dir() -> Path:
    configured = os.environ.get(STATE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".local" / "share" / "quorumkeeper"


FileIdentity = tuple[int, int, int]
"""A file's inode, modification time in nanoseconds and size."""


def file_identity(path: Path) -> FileIdentity | None:
    """What tells one version of a file from the next (`write_atomically` renames a new inode
    into place), from one stat(2); None when it can't be read. Lets a reader keep what it
    parsed until the file changes."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def fsync_folder(folder: Path) -> None:
    """Make a rename or unlink in `folder` durable (rename(2) alone survives no power loss)."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never half of one, and after a crash or power
    loss the new one if this returned: a temporary file unique to this call is written, fsynced,
    renamed over `path`, and the folder fsynced. Raises OSError (e.g. ENOSPC) with `path`
    unchanged and no temporary file left behind."""
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_folder(path.parent)


def ensure_secret(path: Path, make: Callable[[], str] | None = None) -> str:
    """A per-cluster secret, generated on first call into a 0600 file and read back after;
    `make` gives its text (default: 24 random bytes, URL-safe base64).

    Created with O_EXCL under its final mode, so it is never readable by others, and put in
    place by a hard link, which fails when the file exists: of two processes making it at once
    (the keeper and a command), both read the one that landed first. Reading an existing file
    makes cluster creation safe to re-run after a crash.
    """
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write((make or (lambda: secrets.token_urlsafe(24)))().strip() + "\n")
    try:
        with suppress(FileExistsError):
            os.link(partial, path)
    finally:
        partial.unlink()
    return path.read_text().strip()


class LockBusy(Refused):
    """Another command held the lock for longer than the wait; `holder` is its PID if known."""

    def __init__(self, path: Path, holder: int | None) -> None:
        super().__init__(f"{path} is held by {f'pid {holder}' if holder else 'another command'}")
        self.path = path
        self.holder = holder


class FileLock:
    """An exclusive flock(2) on `path`, created on demand, with the holder's PID inside.

    A lock file may be deleted by its holder (`purge`): after locking, the descriptor is checked
    to still be the file at `path`, and a waiter that locked a deleted file tries again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._descriptor: int | None = None

    def acquire(self, wait: float = LOCK_WAIT_SECONDS) -> FileLock:
        """Raises LockBusy after `wait` seconds, FileNotFoundError if the folder is gone."""
        deadline = time.monotonic() + wait
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                if time.monotonic() > deadline:
                    raise LockBusy(self.path, _pid_in(self.path)) from None
                time.sleep(0.05)
                continue
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(descriptor).st_ino:
                os.close(descriptor)
                continue
            with suppress(OSError):  # only informative, and a full disk must not stop a command
                os.ftruncate(descriptor, 0)
                os.pwrite(descriptor, str(os.getpid()).encode(), 0)
            self._descriptor = descriptor
            return self

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class SpecChange:
    """Bookkeeping of the last accepted spec change, stored beside the spec in spec.yaml.

    `generation` counts accepted changes (1 = created); `previous_members` is the member count
    the change replaced (None for the first); `by` names the command and its PID; `at` is a
    Unix time in seconds.
    """

    generation: int
    previous_members: int | None
    by: str
    at: float

    def describe(self) -> str:
        moment = time.strftime("%H:%M:%S", time.localtime(self.at))
        return f"generation {self.generation}, by `{self.by}` at {moment}"


@dataclass(frozen=True)
class StoredSpec:
    spec: ClusterSpec
    change: SpecChange


class SpecConflict(Refused):
    """The spec changed between reading it and writing it; `current` is what is stored now."""

    def __init__(self, current: StoredSpec | None) -> None:
        super().__init__(
            f"the spec changed meanwhile: {current.change.describe() if current else 'removed'}"
        )
        self.current = current


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
    def command_lock_file(self) -> Path:
        return self.root / "spec.lock"

    @property
    def keeper_log(self) -> Path:
        return self.root / "keeper.log"

    @property
    def connect_string_file(self) -> Path:
        return self.root / "connect-string"

    @property
    def tls_dir(self) -> Path:
        """The cluster's CA and certificates (`runtimes.local.authority`)."""
        return self.root / "tls"

    OWN_FILES = (
        "spec.yaml",
        "status.json",
        "keeper.lock",
        "spec.lock",
        "keeper.log",
        "connect-string",
        "superuser",
        "cluster-token",
        "root-password",
        OWNER_MARKER,
    )
    """Every file quorumkeeper writes directly into a cluster's state folder."""

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

    def command_lock(self, wait: float = LOCK_WAIT_SECONDS) -> FileLock:
        """The per-cluster lock every command holds while it reads, checks and writes the spec
        (up, scale, start, down). Raises LockBusy, or FileNotFoundError without the folder."""
        return FileLock(self.command_lock_file).acquire(wait)

    def load_stored(self) -> StoredSpec:
        """The spec and its change bookkeeping; a spec written before generations counts as
        generation 1. Raises OSError, or SpecError for a spec that no longer validates."""
        data = yaml.safe_load(self.spec_file.read_text())
        raw = data.pop(_CHANGE_KEY, None) if isinstance(data, dict) else None
        spec = parse_spec(data, stored=True)
        if isinstance(raw, dict):
            change = SpecChange(
                generation=int(raw["generation"]),
                previous_members=raw.get("previous_members"),
                by=str(raw.get("by", "")),
                at=float(raw.get("at", 0.0)),
            )
        else:
            change = SpecChange(1, None, "an earlier version", self.spec_file.stat().st_mtime)
        return StoredSpec(spec, change)

    def load_spec(self) -> ClusterSpec:
        return self.load_stored().spec

    def save_spec(
        self, spec: ClusterSpec, *, expected_generation: int | None, by: str
    ) -> StoredSpec:
        """Compare-and-swap: store `spec` as the next generation if the stored generation is
        still `expected_generation` (None: no spec yet), else raise SpecConflict. Call it under
        `command_lock`, which makes the check and the write one step for every command."""
        try:
            current: StoredSpec | None = self.load_stored()
        except FileNotFoundError:
            current = None
        if (current.change.generation if current else None) != expected_generation:
            raise SpecConflict(current)
        change = SpecChange(
            generation=(expected_generation or 0) + 1,
            previous_members=current.spec.members if current else None,
            by=by,
            at=time.time(),
        )
        bookkeeping = {
            _CHANGE_KEY: {
                "generation": change.generation,
                "previous_members": change.previous_members,
                "by": change.by,
                "at": change.at,
            }
        }
        write_atomically(self.spec_file, dump_spec(spec) + yaml.safe_dump(bookkeeping))
        return StoredSpec(spec, change)

    def load_status(self) -> dict[str, Any] | None:
        try:
            loaded: dict[str, Any] = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None
        return loaded

    def keeper_pid(self) -> int | None:
        """The PID of the keeper holding this cluster's lock, or None when no keeper runs.
        Only reads: asking about a purged cluster must not bring a file of it back."""
        try:
            with open(self.keeper_lock) as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    lock.seek(0)
                    return int(lock.read().strip() or 0) or None
                fcntl.flock(lock, fcntl.LOCK_UN)
                return None
        except FileNotFoundError:
            return None


class StatusWriter:
    """Writes a keeper's status.json (and the connect string while a quorum answers) for
    readers, remembering the document it last wrote: the keeper is the file's only writer, so
    an unchanged status costs no read of it (a tenth of an idle pass)."""

    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        self._written: dict[str, Any] = {}
        """The last document written with the connect string, whose `updated_at` is when."""

    def record(self, status: dict[str, Any]) -> OSError | None:
        """Write `status` unless it equals the last one written apart from `updated_at` and
        that is younger than STATUS_HEARTBEAT_SECONDS (fsyncs stay off a disk the members may
        share), and return the OSError instead of raising it: a full or failing state disk
        must not stop the keeper from healing the cluster. The connect string is part of the
        status, so it is checked when the status is written, on a change or a heartbeat."""
        previous = self._written
        unchanged = {**previous, "updated_at": None} == {**status, "updated_at": None}
        age = status.get("updated_at", 0.0) - previous.get("updated_at", 0.0)
        if unchanged and age < STATUS_HEARTBEAT_SECONDS:
            return None
        try:
            write_atomically(self.paths.status_file, json.dumps(status, indent=2))
            if status.get("quorum"):
                self.paths.save_connect_string(status["connect_string"])
        except OSError as error:
            return error
        self._written = status
        return None


def status_age(status: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds since the keeper last wrote `status`, None if it never said."""
    updated = status.get("updated_at")
    if not isinstance(updated, int | float):
        return None
    return (now if now is not None else time.time()) - updated


def cluster_names(state_dir: Path) -> list[str]:
    if not state_dir.is_dir():
        return []
    return sorted(p.name for p in state_dir.iterdir() if (p / "spec.yaml").is_file())


# Folders that were not ours ------------------------------------------------------------------


def _owner(folder: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads((folder / OWNER_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def foreign_entries(folder: Path) -> list[str]:
    """What `folder` holds besides quorumkeeper's marker: the files a new cluster must not
    take over (and purge must never delete). Empty when the folder is missing or empty."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.name != OWNER_MARKER)
    except FileNotFoundError:
        return []


def claim_folder(folder: Path, paths: ClusterPaths) -> None:
    """Create `folder` (or adopt it while empty) for the cluster of `paths` and mark it, so
    that `purge` knows it may remove it once everything of ours is gone from it."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / OWNER_MARKER).exists():
        return
    marker = {"cluster": paths.name, "state_dir": str(paths.state_dir), "created": created}
    write_atomically(folder / OWNER_MARKER, json.dumps(marker) + "\n")


def _remove_marked_folder(folder: Path) -> None:
    """Remove our marker, then `folder` itself if we created it and nothing else is left."""
    owner = _owner(folder)
    if owner is None:
        return
    (folder / OWNER_MARKER).unlink()
    if owner.get("created", True) and not foreign_entries(folder):
        folder.rmdir()


_OWN_NAMES = "|".join(map(re.escape, ClusterPaths.OWN_FILES))
_TEMPORARY = re.compile(
    rf"^\.({_OWN_NAMES})\.[a-z0-9_]{{8}}\.tmp$|^\.(superuser|cluster-token|root-password)\.\d+$"
)
"""Temporaries of `write_atomically` and `ensure_secret` that a crash left behind."""
_PURGED = frozenset(ClusterPaths.OWN_FILES) - {OWNER_MARKER}
_TLS_FILE = re.compile(
    r"^\.?([a-z0-9-]+\.(crt|key|pem|lock|password|properties)|renewed|rotation)"
    r"(\.[a-z0-9_]{8}\.tmp|\.\d+)?$"
)
"""What `runtimes.local.authority` and `runtimes.local.clients` write into the TLS folder, and
their temporaries."""


def purge_cluster(paths: ClusterPaths, spec: ClusterSpec) -> list[Path]:
    """Delete what quorumkeeper created for this cluster and nothing else: the member folders
    `<name>-<ordinal>`, its archives in `.removed`, its own state files and temporaries, then
    each folder it created if that left it empty. Returns the entries it left (not ours)."""
    members_root = paths.members_root(spec)
    member = re.compile(rf"^{re.escape(spec.name)}-\d+$")
    archive = re.compile(rf"^{re.escape(spec.name)}-\d+-\d+$")
    for child in _children(members_root):
        if member.match(child.name) and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
    removed = members_root / ".removed"
    for child in _children(removed):
        if archive.match(child.name) and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
    with suppress(OSError):
        removed.rmdir()
    _remove_marked_folder(members_root)
    for child in _children(paths.tls_dir):
        if _TLS_FILE.match(child.name) and child.is_file():
            child.unlink()
    with suppress(OSError):
        paths.tls_dir.rmdir()
    for child in _children(paths.root):
        ours = child.name in _PURGED or _TEMPORARY.match(child.name)
        if ours and child.is_file():
            child.unlink()
    _remove_marked_folder(paths.root)
    left = [members_root / n for n in foreign_entries(members_root)]
    return left + [
        paths.root / n for n in foreign_entries(paths.root) if paths.root / n != members_root
    ]


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


# A full disk ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskState:
    """Whether the file system holding `path` can take a write; `free_bytes` from statvfs(2)
    (what an unprivileged writer may use)."""

    path: Path
    free_bytes: int
    full: bool
    error: str | None


def probe_disk(folder: Path, probe_bytes: int = 4096) -> DiskState:
    """Write, fsync and remove a small file in `folder`: statvfs alone misses reserved blocks
    and quota, a write that fails with ENOSPC or EDQUOT does not."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".probe-") as probe:
            probe.write(b"\0" * probe_bytes)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskState(folder, free, True, error.strerror)
        return DiskState(folder, free, False, error.strerror)
    return DiskState(folder, free, free == 0, None)
