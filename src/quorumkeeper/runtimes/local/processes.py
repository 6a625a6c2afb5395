"""Members as processes on this machine: the embedded default runtime.

Each member binds its own loopback address with the store's standard ports and keeps its data,
log, pid file and start history in its own folder. Members run in their own session so they
outlive the keeper: a keeper crash never takes a healthy member down with it. A member's process
is known by what it is, the data-dir marker in its command line; the pid file is only a
shortcut, so a process whose pid file was lost (a keeper killed between start and write, a
deleted file) is found and adopted, never started twice.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil

from quorumkeeper.model import DataPosition, Endpoint, Peer, Placement, Slot
from quorumkeeper.runtimes.local.launchers import MemberLauncher
from quorumkeeper.runtimes.local.state import FileIdentity, file_identity, write_atomically
from quorumkeeper.spec import ClusterSpec

STOP_GRACE_SECONDS = 10.0

STAYS_UP_SECONDS = 10.0
"""A start counts as good once its process has run this long; failed starts in a row reset."""

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
"""Restart backoff after failed starts in a row: 1, 2, 4 ... seconds, capped at one minute."""

START_MARKER = "--- quorumkeeper starts "
"""Written to a member's log before each start, so the output of the last start can be told
from what came before."""

_LOG_TAIL_BYTES = 256 * 1024
_CAUSE_WINDOW = 50
"""Lines at the end of a member's output searched for the root cause of its exit."""
_ERROR_WORDS = ("error", "fatal", "panic", "exception", "refused", "denied", "in use")


@dataclass
class StartHistory:
    """What the runtime remembers of one member's starts (`<member>/starts.json`), so backoff
    and counts survive a keeper restart. Times are wall-clock seconds."""

    starts: int = 0
    failed_in_row: int = 0
    last_start: float = 0.0
    judged: bool = True
    """Whether the last start has been judged good (it stayed up) or failed (it exited)."""
    config: str | None = None
    """The configuration fingerprint of the last start (`MemberLauncher.fingerprint`)."""

    def held_back(self, now: float) -> float:
        """Seconds the next start must still wait."""
        if self.failed_in_row == 0:
            return 0.0
        delay = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2.0 ** (self.failed_in_row - 1))
        return max(0.0, self.last_start + delay - now)


class _Watched:
    """A member's process as once verified by its marker, with the pid file that named it,
    watched through a pidfd: it refers to that process and never to a later one with its PID,
    and polls readable once the process has terminated, zombie included (pidfd_open(2),
    NOTES). The pidfd is closed with this object."""

    def __init__(self, pid: int, pidfd: int, pid_file: FileIdentity | None) -> None:
        self.pid = pid
        self.pid_file = pid_file
        self._pidfd: int | None = pidfd

    def terminated(self) -> bool:
        return self._pidfd is None or _exited(self._pidfd, 0)

    def command_line(self) -> list[str]:
        """The process's command line (`command_line`); empty once this object is closed."""
        return [] if self._pidfd is None else command_line(self.pid, self._pidfd)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    __del__ = close


BOOT_GRACE_SECONDS = 30.0
"""How long a started member that does not answer yet holds back the next start of a cold
start; after that it is presumed hung and blocks no one."""

STATUS_LINE_CHARACTERS = 300
"""The longest line of a member's output that status shows."""


class LocalRuntime:
    """The member folders of one cluster under `members_root`: the local `Runtime`.

    `answers(endpoint)` tells whether a member's server has loaded its data and answers, quorum
    or not; `ports` are those every member binds; `keep_removed_data` archives a removed
    member's data instead of deleting it.
    """

    def __init__(
        self,
        members_root: Path,
        launcher: MemberLauncher,
        placement: Placement,
        *,
        answers: Callable[[Endpoint], bool],
        ports: tuple[int, ...],
        keep_removed_data: bool = False,
    ) -> None:
        self.members_root = members_root
        self.launcher = launcher
        self.placement = placement
        self.answers = answers
        self.ports = ports
        self.keep_removed_data = keep_removed_data
        self._positions: dict[Endpoint, DataPosition | None] = {}
        """Each member's data position as last read while it was stopped, or while it ran
        without a quorum (nothing is written then, and a keeper started anew knows no other)."""
        self._watched: dict[Endpoint, _Watched] = {}
        """Each member process verified by its marker."""
        self._histories: dict[Endpoint, tuple[FileIdentity, StartHistory]] = {}
        """Each member's start history as last read, with the identity of its file."""

    def configure(self, spec: ClusterSpec, reported: Set[str] = frozenset()) -> str:
        """The launcher takes `spec`'s version and settings, this runtime its removed-data
        policy; returns the launcher's fingerprint. The version was checked by `apply` against
        what the members run before it stored the spec, so `reported` is not needed here."""
        self.launcher.configure(spec)
        self.keep_removed_data = spec.local.keep_removed_data
        return self.launcher.fingerprint()

    def limit_disruptions(self, voters_now: int, voters_after: int) -> None:
        """Nothing but this keeper stops a local member."""

    def write_certificates(self) -> None:
        """Hand every running member the certificates now on disk, where its launcher
        `reloads_certificates` (a stopped member gets them when it starts)."""
        for endpoint, pid in self.pids(self.endpoints()).items():
            if pid is not None:
                self.launcher.write_certificates(endpoint, self.data_dir(endpoint))

    def endpoints(self) -> list[Endpoint]:
        """The members whose folders are present, whether or not they still belong."""
        return [e for e in map(self.placement.named, self.member_names()) if e is not None]

    def observe(
        self, endpoints: Sequence[Endpoint], answered: Set[Endpoint], *, quorum: bool, judge: bool
    ) -> tuple[Slot, ...]:
        pids = self.pids(endpoints)
        return tuple(
            self._slot(
                endpoint,
                pids[endpoint],
                self._history(endpoint, pids[endpoint] is not None, endpoint in answered, judge),
                cold=not quorum,
            )
            for endpoint in endpoints
        )

    def _history(
        self, endpoint: Endpoint, running: bool, answered: bool, judge: bool
    ) -> StartHistory:
        """Judge the last start: good once the member answered as healthy or stayed up
        `STAYS_UP_SECONDS`, failed once it exited before either. A member killed after it
        served is not a failed start, so its next start's error is judged on its own."""
        history = self.history(endpoint)
        if not judge or history.judged:
            return history
        if running and answered:
            history.failed_in_row = 0
        elif not running:
            history.failed_in_row += 1
        elif time.time() - history.last_start >= STAYS_UP_SECONDS:
            history.failed_in_row = 0
        else:
            return history
        history.judged = True
        self.save_history(endpoint, history)
        return history

    def _slot(
        self, endpoint: Endpoint, pid: int | None, history: StartHistory, *, cold: bool
    ) -> Slot:
        """What the planner needs of one member's process and data. `cold`: no quorum answers,
        so a member started moments ago that does not answer yet holds back the next start."""
        launcher = self.launcher
        data_dir = self.data_dir(endpoint)
        has_data = launcher.has_data(data_dir)
        if not has_data:
            position = None
        elif pid is None or (cold and endpoint not in self._positions):
            position = self._positions[endpoint] = launcher.data_position(data_dir)
        else:
            position = self._positions.get(endpoint)
        if pid is not None:
            since_start = time.time() - history.last_start
            booting = cold and since_start < BOOT_GRACE_SECONDS
            return Slot(
                endpoint,
                running=True,
                has_data=has_data,
                position=position,
                booting=booting and not self.answers(endpoint),
                starts=history.starts,
                pid=pid,
                config=history.config,
            )
        output = self.last_start_output(endpoint) if history.failed_in_row else ""
        unusable = launcher.unusable_data(output) if output else None
        held = held_ports(endpoint.address, self.ports)
        return Slot(
            endpoint,
            running=False,
            has_data=has_data,
            position=position,
            starts=history.starts,
            failed_starts=history.failed_in_row,
            held_back=history.held_back(time.time()),
            last_error=last_error_line(output),
            unusable_data=readable_line(unusable) if unusable else None,
            blocked_by="; ".join(map(str, held)) or None,
            config=history.config,
        )

    def member_dir(self, endpoint: Endpoint) -> Path:
        return self.members_root / endpoint.name

    def data_dir(self, endpoint: Endpoint) -> Path:
        return self.member_dir(endpoint) / "data"

    def log_path(self, endpoint: Endpoint) -> Path:
        return self.member_dir(endpoint) / "member.log"

    def _pid_path(self, endpoint: Endpoint) -> Path:
        return self.member_dir(endpoint) / "pid"

    def _history_path(self, endpoint: Endpoint) -> Path:
        return self.member_dir(endpoint) / "starts.json"

    def _recorded_pid(self, endpoint: Endpoint) -> int | None:
        """The pid file's process, if it is alive and carries this member's marker: a reused
        PID or a zombie waiting to be reaped never counts.

        A process once verified is watched through a pidfd (`_Watched`): while the pid file is
        the same file, asking again costs a stat and a poll instead of reading the pid file and
        /proc three times (a fifth of an idle keeper's pass)."""
        identity = file_identity(self._pid_path(endpoint))
        known = self._watched.get(endpoint)
        if known is not None:
            if known.pid_file == identity and not known.terminated():
                return known.pid
            self._forget_process(endpoint)
        try:
            pid = int(self._pid_path(endpoint).read_text())
            watched = _Watched(pid, os.pidfd_open(pid), identity)  # the process checked next
        except (OSError, ValueError):
            return None
        try:  # a zombie's command line is empty
            marker = self.launcher.process_marker(self.data_dir(endpoint))
            ours = marker in watched.command_line()
        except psutil.Error:
            ours = False
        if ours and not watched.terminated():
            self._watched[endpoint] = watched
            return pid
        watched.close()
        return None

    def _forget_process(self, endpoint: Endpoint) -> None:
        known = self._watched.pop(endpoint, None)
        if known is not None:
            known.close()

    def _remove_pid_file(self, endpoint: Endpoint) -> None:
        self._forget_process(endpoint)
        self._pid_path(endpoint).unlink(missing_ok=True)

    def processes(self, endpoints: Iterable[Endpoint]) -> dict[Endpoint, int]:
        """The live processes of `endpoints`, found by the data-dir marker in their command
        lines, whatever their pid files say."""
        markers = {self.launcher.process_marker(self.data_dir(e)): e for e in endpoints}
        found = {}
        for process in psutil.process_iter(["pid", "cmdline", "status"]):
            info = process.info
            if info["status"] == psutil.STATUS_ZOMBIE:
                continue
            for argument in info["cmdline"] or ():
                if argument in markers:
                    found[markers[argument]] = int(info["pid"])
        return found

    def pids(self, endpoints: Iterable[Endpoint]) -> dict[Endpoint, int | None]:
        """Each member's live process: the pid file's when it is right, else the one found by
        its marker, which is then adopted (its pid file rewritten)."""
        endpoints = list(endpoints)
        pids = {endpoint: self._recorded_pid(endpoint) for endpoint in endpoints}
        unknown = [endpoint for endpoint, pid in pids.items() if pid is None]
        if unknown:
            for endpoint, pid in self.processes(unknown).items():
                pids[endpoint] = pid
                self._adopt(endpoint, pid)
        return pids

    def pid(self, endpoint: Endpoint) -> int | None:
        return self.pids([endpoint])[endpoint]

    def _adopt(self, endpoint: Endpoint, pid: int) -> None:
        if not self.member_dir(endpoint).is_dir():
            return
        with contextlib.suppress(OSError):  # a full disk: the marker finds it again next time
            write_atomically(self._pid_path(endpoint), str(pid))

    def member_names(self) -> list[str]:
        """Every member folder present, whether or not its member still belongs."""
        if not self.members_root.is_dir():
            return []
        return sorted(p.name for p in self.members_root.iterdir() if not p.name.startswith("."))

    def history(self, endpoint: Endpoint) -> StartHistory:
        """A copy of the member's start history, read again only when its file changed (the
        keeper asks for every member's every pass)."""
        identity = file_identity(self._history_path(endpoint))
        cached = self._histories.get(endpoint)
        if identity is None:
            self._histories.pop(endpoint, None)
            return StartHistory()
        if cached is None or cached[0] != identity:
            try:
                history = StartHistory(**json.loads(self._history_path(endpoint).read_text()))
            except (OSError, ValueError, TypeError):
                return StartHistory()
            cached = self._histories[endpoint] = (identity, history)
        return replace(cached[1])

    def save_history(self, endpoint: Endpoint, history: StartHistory) -> None:
        """Best effort: on a full disk the history is lost, the member is not."""
        with contextlib.suppress(OSError):
            write_atomically(self._history_path(endpoint), json.dumps(asdict(history)))

    def start(self, endpoint: Endpoint, peers: list[Peer], *, bootstrap: bool) -> None:
        """Start the member with the launcher's configuration; a member with data last started
        with another one has its files brought to it first (`MemberLauncher.refresh`), while a
        restart with the same configuration leaves its files as they are."""
        data_dir, config = self.data_dir(endpoint), self.launcher.fingerprint()
        if self.launcher.has_data(data_dir) and self.history(endpoint).config != config:
            self.launcher.refresh(data_dir)
        argv = self.launcher.argv(endpoint, data_dir, peers, bootstrap=bootstrap)
        self.spawn(endpoint, argv, config=config)

    def spawn(self, endpoint: Endpoint, argv: list[str], *, config: str | None = None) -> int:
        """Start the member's process `argv` detached from the caller; returns its PID.
        `config` is the fingerprint of the configuration `argv` carries, recorded with the start.

        A process of this member that already runs (its pid file lost) is adopted instead of
        started twice.
        """
        running = self.pid(endpoint)
        if running is not None:
            return running
        folder = self.member_dir(endpoint)
        self.data_dir(endpoint).mkdir(parents=True, exist_ok=True)
        history = self.history(endpoint)
        history.starts += 1
        history.last_start = time.time()
        history.judged = False
        history.config = config
        self.save_history(endpoint, history)
        with open(self.log_path(endpoint), "ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(
                f"{START_MARKER}{endpoint.name} at {stamp} (start {history.starts})\n".encode()
            )
            log.flush()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,
            )
        self._adopt(endpoint, process.pid)
        return process.pid

    def last_start_output(self, endpoint: Endpoint) -> str:
        """What the member printed since its last start (at most the log's last 256 KiB)."""
        try:
            with open(self.log_path(endpoint), "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return text[text.rfind(START_MARKER) :] if START_MARKER in text else text

    def stop(self, endpoint: Endpoint, *, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM (etcd hands leadership over on it), then SIGKILL after `grace` seconds."""
        pid = self.pid(endpoint)
        if pid is None:
            return
        marker = self.launcher.process_marker(self.data_dir(endpoint))
        end_process(pid, lambda argv: marker in argv, grace)
        self._remove_pid_file(endpoint)
        history = self.history(endpoint)
        if not history.judged:  # stopped on purpose: not a failed start
            history.judged = True
            self.save_history(endpoint, history)

    def restart(self, endpoint: Endpoint, peers: list[Peer]) -> None:
        """`stop`, then `start` with the configuration `configure` last gave: nothing on this
        machine limits how many members may be down at once, the planner does."""
        self.stop(endpoint)
        self.start(endpoint, peers, bootstrap=False)

    def set_aside(self, endpoint: Endpoint, why: str) -> str:
        """Move a member's data where no start finds it, with a note saying why; returns where.
        The data is never deleted: a person decides what happens to it."""
        self._remove_pid_file(endpoint)
        archive = self._set_aside_folder(endpoint)
        os.replace(self.data_dir(endpoint), archive)
        (archive.parent / f"{archive.name}.why").write_text(why + "\n")
        self._history_path(endpoint).unlink(missing_ok=True)
        return str(archive)

    def refill(self, endpoint: Endpoint, why: str) -> str:
        """Move a member's database aside (`MemberLauncher.database_folders`), with a note
        saying why, keeping its identity and configuration; returns where. The next start loads
        an empty database. Never deletes it: a person decides what happens to it."""
        self._remove_pid_file(endpoint)
        archive = self._set_aside_folder(endpoint)
        data_dir = self.data_dir(endpoint)
        for folder in self.launcher.database_folders(data_dir):
            if folder.exists():
                moved = archive / folder.relative_to(data_dir)
                moved.parent.mkdir(parents=True, exist_ok=True)
                os.replace(folder, moved)
        (archive.parent / f"{archive.name}.why").write_text(why + "\n")
        self._positions.pop(endpoint, None)
        return str(archive)

    def _set_aside_folder(self, endpoint: Endpoint) -> Path:
        """Where `set_aside` and `refill` move a member's data now (`.set-aside/<member>-<time>`,
        not made yet; its parent is)."""
        archive = self.members_root / ".set-aside" / f"{endpoint.name}-{int(time.time())}"
        archive.parent.mkdir(parents=True, exist_ok=True)
        return archive

    def discard(self, endpoint: Endpoint) -> None:
        """Delete a former member's data, or with `keep_removed_data` move it aside where no
        start finds it. Its log stays for the record."""
        self._remove_pid_file(endpoint)
        self._history_path(endpoint).unlink(missing_ok=True)
        data = self.data_dir(endpoint)
        if self.keep_removed_data:
            archive = self.members_root / ".removed" / f"{endpoint.name}-{int(time.time())}"
            archive.parent.mkdir(parents=True, exist_ok=True)
            os.replace(data, archive)
            return
        shutil.rmtree(data, ignore_errors=True)


def last_error_line(output: str) -> str | None:
    """The line of a member's output that best says why it stopped, shortened for status: the
    root cause of the last Java exception (`Caused by:`), else the last line that reads as an
    error (stack frames skipped), else the last line. etcd's JSON lines read as `msg: error`."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith((START_MARKER, "at ", "..."))]
    ending = lines[-_CAUSE_WINDOW:]
    causes = [line for line in ending if line.startswith("Caused by:")]
    if causes:
        return causes[-1][:STATUS_LINE_CHARACTERS]
    for line in reversed(lines):
        if any(word in line.lower() for word in _ERROR_WORDS):
            return readable_line(line)
    return readable_line(lines[-1]) if lines else None


def readable_line(line: str) -> str:
    """A log line as a person reads it, at most `STATUS_LINE_CHARACTERS` long: etcd's JSON
    lines become `msg: error`."""
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if isinstance(entry, dict) and "msg" in entry:
        line = ": ".join(str(entry[key]) for key in ("msg", "error") if key in entry)
    return line[:STATUS_LINE_CHARACTERS]


@dataclass(frozen=True)
class HeldPort:
    """An address and port a member needs that another process listens on; `pid` and
    `program` are None when the kernel does not tell (another user's process without root)."""

    address: str
    port: int
    pid: int | None
    program: str | None

    def __str__(self) -> str:
        if self.pid is None:
            return f"{self.address}:{self.port} is held by a process this user can't see"
        return f"{self.address}:{self.port} is held by pid {self.pid} ({self.program})"


def held_ports(address: str, ports: Iterable[int]) -> list[HeldPort]:
    """The ports of `address` that some process listens on (TIME_WAIT sockets don't count),
    with that process as psutil finds it."""
    held = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT
            try:
                probe.bind((address, port))
                continue
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
        pid = _listener(address, port)
        held.append(HeldPort(address, port, pid, _program(pid)))
    return held


def _listener(address: str, port: int) -> int | None:
    """The PID of the process listening on `address:port` (or on the wildcard address)."""
    for connection in psutil.net_connections(kind="inet"):
        local = connection.laddr
        if connection.status != psutil.CONN_LISTEN or not local or local.port != port:
            continue
        if local.ip in (address, "0.0.0.0", "::"):
            return connection.pid
    return None


def _program(pid: int | None) -> str | None:
    if pid is None:
        return None
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return None


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds until every thread of process `pid` has exited; True once
    it has (reaped or a zombie: PID 1 may reap orphans late), False on timeout.

    Watched through a pidfd, which polls readable only once the whole thread group is gone
    (pidfd_open(2)). A JVM's main thread can end before its other threads, and /proc then shows
    the process as a zombie while those threads still hold its listening sockets: a member
    restarted at that moment would find its own ports in use."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return _exited(pidfd, timeout)
    finally:
        os.close(pidfd)


def _exited(pidfd: int, timeout: float) -> bool:
    """Whether the process of `pidfd` terminated (zombie included), waiting up to `timeout`
    seconds for it."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


EXEC_SECONDS = 0.5
"""How long an empty command line is read again: a process in the middle of its exec shows
none for a moment, even after `subprocess.Popen` returned (measured: 27 of 300 `sleep`
children read at once)."""


def command_line(pid: int, pidfd: int) -> list[str]:
    """The command line of process `pid`, whose pidfd is `pidfd`: empty only for one still in
    its exec after `EXEC_SECONDS`, or that terminated while it was read again (the pidfd
    tells). Raises `psutil.Error` for a process gone or a zombie."""
    deadline = time.monotonic() + EXEC_SECONDS
    argv = psutil.Process(pid).cmdline()
    while not argv and not _exited(pidfd, 0.01) and time.monotonic() < deadline:
        argv = psutil.Process(pid).cmdline()
    return argv


def end_process(pid: int, ours: Callable[[list[str]], bool], grace: float) -> bool:
    """SIGTERM, then SIGKILL once `grace` seconds passed, to process `pid` if `ours` recognises
    its command line; True once it has exited (or was gone), False when it is not ours or
    outlived the SIGKILL by `grace`.

    Both signals go through one pidfd opened before the check, so they reach that process or
    none: the kernel may hand its PID to another process as soon as it ends, within seconds on
    a busy machine where pid_max is 32768 (seen: another program's process killed by a PID
    read minutes earlier)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        try:
            if not ours(command_line(pid, pidfd)):
                return False
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:  # a zombie's command line, or one we may not read: not ours
            return _exited(pidfd, 0)
        for signal_number in (signal.SIGTERM, signal.SIGKILL):
            signal.pidfd_send_signal(pidfd, signal_number)
            if _exited(pidfd, grace):
                return True
        return False
    except ProcessLookupError:
        return True
    finally:
        os.close(pidfd)
