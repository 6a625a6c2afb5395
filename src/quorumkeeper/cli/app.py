"""Commands for local clusters: up, scale, status, logs, down, list, install."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich import filesize
from rich.console import Console
from rich.table import Table

from quorumkeeper import upgrades, versions
from quorumkeeper.certificates import RENEW_BEFORE
from quorumkeeper.cli import kubernetes
from quorumkeeper.cli.ceph import ceph_app, render_app
from quorumkeeper.cli.maintenance import maintenance_app
from quorumkeeper.cli.security import connect, rotate_ca, user_app
from quorumkeeper.errors import ExitCode, Refused
from quorumkeeper.model import Role
from quorumkeeper.planner import Done, Phase, Wait, plan, scale_down_blocker
from quorumkeeper.runtimes.local import distributions, keeper
from quorumkeeper.runtimes.local.cluster import LocalCluster, expiring_certificates
from quorumkeeper.runtimes.local.preflight import (
    check_binary,
    check_folder_is_ours,
    check_name_free,
    check_state_dir,
    choose_subnet,
    taken_addresses,
)
from quorumkeeper.runtimes.local.processes import end_process
from quorumkeeper.runtimes.local.state import (
    STATUS_STALE_AFTER_SECONDS,
    ClusterPaths,
    FileLock,
    LockBusy,
    SpecConflict,
    StoredSpec,
    claim_folder,
    cluster_names,
    default_state_dir,
    probe_disk,
    purge_cluster,
    status_age,
)
from quorumkeeper.spec import ClusterSpec, SpecError, Store, parse_spec, yaml_value
from quorumkeeper.status import AUTH_PENDING, Condition, carry_transitions

app = typer.Typer(
    help="Run etcd and ZooKeeper clusters that scale and heal themselves.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(ceph_app, name="ceph")
app.add_typer(render_app, name="render")
kubernetes.register(app, render_app)
app.add_typer(maintenance_app, name="maintenance")
app.add_typer(user_app, name="user")
app.command()(connect)
app.command(name="rotate-ca")(rotate_ca)

out = Console(width=None if sys.stdout.isatty() else 200)
"""Piped or logged output is not cut to 80 columns: status rows stay whole."""
err = Console(stderr=True, soft_wrap=True)
"""Messages are not broken at 80 columns: the terminal wraps them, a log keeps them whole."""

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="where clusters live [env QUORUMKEEPER_STATE_DIR; ~/.local/share/quorumkeeper]",
        show_default=False,
    ),
]
WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="return only once the cluster matches its spec")
]


def _positive_seconds(seconds: float) -> float:
    """Refused before anything happens: a wait that can't be positive is no wait at all."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise typer.BadParameter(
            f"{seconds}; rule: seconds to wait, more than 0; fix: --timeout 120 "
            "(or --no-wait to return at once)"
        )
    return seconds


TimeoutOption = Annotated[
    float,
    typer.Option("--timeout", help="seconds to wait before failing", callback=_positive_seconds),
]


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


def _fail(message: str, code: int = ExitCode.REFUSED) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _by(*words: str) -> str:
    """Who made a spec change, as stored beside it: the command and its PID."""
    return f"{' '.join(words)} (pid {os.getpid()})"


def _locked(lock: FileLock, what: str) -> FileLock:
    """`lock`, acquired; a holder that does not let go within the wait refuses the command."""
    try:
        return lock.acquire()
    except LockBusy as busy:
        holder = f"pid {busy.holder}" if busy.holder else "another command"
        raise _fail(
            f"busy: {holder} holds {busy.path} and is still changing {what}; fix: wait for it "
            f"to finish, then run this command again"
        ) from None
    except FileNotFoundError:
        raise _fail(f"name: {what} was removed meanwhile; fix: `quorumkeeper list`") from None


def _paths(state_dir: Path | None, name: str) -> ClusterPaths:
    return ClusterPaths(state_dir or default_state_dir(), name)


def _existing(state_dir: Path | None, name: str) -> LocalCluster:
    paths = _paths(state_dir, name)
    if not paths.exists():
        names = cluster_names(paths.state_dir)
        close = difflib.get_close_matches(name, names, n=1)
        meant = f"`{close[0]}`, " if close else "the name, "
        raise _fail(
            f"name: no cluster {name!r} in {paths.state_dir} (clusters there: "
            f"{', '.join(names) or 'none'}); fix: use {meant}or create it with "
            f"`quorumkeeper up {name} --store etcd|zookeeper`"
        )
    return LocalCluster(paths)


def _ensure_keeper(paths: ClusterPaths) -> None:
    if paths.keeper_pid() is None:
        keeper.spawn(paths)


_BLOCKED_BY_FULL_DISK = {
    "state": "status.json, connect-string and spec changes can't be written: scale and up are "
    "refused, and `list` shows the last recorded status as stale",
    "member data": "members can't write their data: the store stops taking writes and a member "
    "that restarts may fail",
}


def _disks(cluster: LocalCluster) -> list[dict[str, Any]]:
    """Each file system the cluster writes to, probed with a real write: which one is full and
    what that blocks. Member data sharing the state folder's disk is one entry."""
    folders: dict[int, tuple[Path, list[str]]] = {}
    for folder, kind in (
        (cluster.paths.root, "state"),
        (cluster.runtime.members_root, "member data"),
    ):
        try:
            device = os.stat(folder).st_dev
        except FileNotFoundError:
            continue
        folders.setdefault(device, (folder, []))[1].append(kind)
    disks = []
    for folder, holds in folders.values():
        disk = probe_disk(folder)
        blocked = [_BLOCKED_BY_FULL_DISK[h] for h in holds] if disk.full else []
        disks.append(
            {
                "path": str(folder),
                "holds": holds,
                "free_bytes": disk.free_bytes,
                "full": disk.full,
                "error": disk.error,
                "blocked": blocked,
            }
        )
    return disks


def _live_status(cluster: LocalCluster) -> dict[str, Any]:
    """What the store and the runtime say right now, plus what status.json last recorded
    (`recorded`: its age and whether it is stale) and the state of the disks in use (`disks`).
    A full disk makes a Ready cluster Degraded: a change could not be stored or applied."""
    snapshot = cluster.observe()
    step = plan(cluster.reconciler.desired, snapshot.observation)
    report = cluster.reconciler.report(snapshot, step)
    recorded = cluster.paths.load_status() or {}
    try:  # each condition's transition time as the keeper recorded it
        before = [Condition.model_validate(c) for c in recorded.get("conditions", [])]
    except ValidationError:  # a status.json another version wrote: transitions start now
        before = []
    report.conditions = carry_transitions(report.conditions, before, report.updated_at)
    status = report.model_dump(mode="json")
    age = status_age(recorded)
    status["recorded"] = {
        "updated_at": recorded.get("updated_at"),
        "age_seconds": age,
        "stale": _stale(age, cluster.paths.keeper_pid()),
    }
    if not status["recorded"]["stale"]:
        status["error"] = recorded.get("error")  # the keeper's refusal: only it acts
    status["disks"] = _disks(cluster)
    status["problems"] = [
        f"disk full at {disk['path']} ({disk['free_bytes']} bytes free, holds "
        f"{' and '.join(disk['holds'])}): {'; '.join(disk['blocked'])}"
        for disk in status["disks"]
        if disk["full"]
    ]
    if status["problems"] and status["phase"] == Phase.READY:
        status["phase"] = Phase.DEGRADED.value
    _security(cluster, status, recorded)
    status["keeper_pid"] = cluster.paths.keeper_pid()
    if status["keeper_pid"] is None:
        status["problems"].append(
            f"the keeper is stopped: nothing is restarted or changed until "
            f"`quorumkeeper start {cluster.spec.name}`; its next step would be: "
            f"{status['step']['reason']}"
        )
        if not any(member["pid"] for member in status["members"]):
            status["phase"] = "Stopped"
    return status


def _security(cluster: LocalCluster, status: dict[str, Any], recorded: dict[str, Any]) -> None:
    """The keeper's Secured condition (only it turns authentication on, so a one-off
    observation can't tell), and a warning per certificate within `RENEW_BEFORE` of its end
    (`certificates_expiring`: file, not_after), which the keeper renews within seconds."""
    kept = [c for c in recorded.get("conditions", []) if c.get("type") == "Secured"]
    if kept:
        others = [c for c in status["conditions"] if c["type"] != "Secured"]
        status["conditions"] = [*others, *kept]
    expiring = expiring_certificates(cluster.authority)
    status["certificates_expiring"] = expiring
    status["ca_rotation"] = cluster.authority.rotation() if cluster.authority else None
    status["warnings"] = [
        f"certificate {entry['file']} ends {_minute(entry['not_after'])} UTC (within "
        f"{RENEW_BEFORE.days} days): {_renewal(cluster.spec.name, entry['file'])}"
        for entry in expiring
    ]


def _minute(iso: str) -> str:
    return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M}"


def _renewal(name: str, file: str) -> str:
    """How a certificate is renewed: the CA's by a rotation (the keeper begins one a year
    before its end), a client's in place, a member's with restarts."""
    if file.startswith("ca"):
        return f"`quorumkeeper rotate-ca {name}` replaces the CA"
    if file.startswith("client-"):
        return "the keeper reissues it in place"
    return "the keeper reissues it and restarts the members onto it one at a time"


def _stale(age: float | None, keeper_pid: int | None) -> bool:
    """A recorded status no keeper refreshes any more says nothing about the cluster now."""
    return keeper_pid is None or age is None or age > STATUS_STALE_AFTER_SECONDS


def _matches_spec(status: dict[str, Any]) -> bool:
    """Done, every member a healthy voter, and authentication on where the spec asks for it:
    a user handed the cluster must never find it open."""
    members = status["members"]
    return (
        status["step"]["kind"] == Done.__name__
        and len(members) == status["desired_members"]
        and all(m["healthy"] and m["role"] != Role.LEARNER for m in members)
        and not any(c["reason"] == AUTH_PENDING for c in status["conditions"])
    )


def _wait_for_spec(
    cluster: LocalCluster, timeout: float, generation: int | None = None
) -> dict[str, Any]:
    """Poll the live cluster until it matches its spec, showing the step in progress. With
    `generation`, stop (exit 3) as soon as another command stores a newer target."""
    deadline = time.monotonic() + timeout
    with err.status("waiting for the cluster") as progress, cluster.holding_store():
        while True:
            if generation is not None:
                _check_not_replaced(cluster, generation)
            status = _live_status(cluster)
            if _matches_spec(status):
                return status
            if time.monotonic() > deadline:
                why = [*_blockers(status, timeout), *_refusal(status), *status["problems"]]
                raise _fail(
                    f"timed out after {timeout:.0f}s in phase {status['phase']}: "
                    f"{'; '.join(why)}; the "
                    f"keeper goes on (see `quorumkeeper status {cluster.spec.name}`)",
                    code=ExitCode.NOT_DONE,
                )
            healthy = sum(1 for m in status["members"] if m["healthy"])
            progress.update(
                f"{status['phase']}: {healthy}/{status['desired_members']} healthy"
                f"{_rollout_progress(status)} - "
                f"{'; '.join([status['step']['reason'], *_refusal(status)])}"
            )
            time.sleep(0.2)


def _rollout_progress(status: dict[str, Any]) -> str:
    rollout = status.get("rollout")
    if not rollout:
        return ""
    updated = len(rollout["updated"])
    return f", {updated}/{updated + len(rollout['stale'])} updated"


def _refusal(status: dict[str, Any]) -> list[str]:
    return [f"the keeper's last refusal: {status['error']}"] if status.get("error") else []


def _blockers(status: dict[str, Any], waited: float) -> list[str]:
    """What keeps a cluster from its spec, in words: the step it waits on, and each member
    that is down with why."""
    step = status["step"]
    if step["kind"] == "Promote":
        learner = next(
            (m["name"] for m in status["members"] if m["role"] == "learner"), "a learner"
        )
        blockers = [f"{learner} has not caught up with the leader after {waited:.0f}s"]
    else:
        blockers = [step["reason"]]
    for member in status["members"]:
        notes = _member_notes(member)
        if notes and member["name"] not in step["reason"]:
            blockers.append(f"{member['name']}: {', '.join(notes)}")
    return blockers


def _check_not_replaced(cluster: LocalCluster, generation: int) -> None:
    stored = cluster.paths.load_stored()
    if stored.change.generation != generation:
        raise _fail(
            f"replaced: while this command waited, {stored.change.describe()} set the target "
            f"to {stored.spec.members} members; the keeper now works toward that (see "
            f"`quorumkeeper status {cluster.spec.name}`)",
            code=ExitCode.NOT_DONE,
        )
    cluster.reconciler.reload()


FixWording = Mapping[str, Callable[[object], str]]
"""How a command words the fix of a spec field that its command line gave (`Problem.advice_by`)."""


def _validated(
    data: dict[str, Any], *, base_dir: Path | None = None, given: FixWording | None = None
) -> ClusterSpec:
    """`data` as a spec; refused with every problem, the fix of each field the command line
    gave (`given`) worded as that command line, not as spec syntax."""
    try:
        return parse_spec(data, base_dir=base_dir)
    except SpecError as error:
        raise _fail(error.describe(given or {})) from None


_UP_OPTIONS: dict[str, Callable[[object], str]] = {
    "name": lambda value: f"`quorumkeeper up {value}`",
    "store": lambda value: f"--store {value}",
    "members": lambda value: f"--members {value}",
    "version": lambda value: f"--version {value}",
    "tls": lambda on: "--tls" if on else "--no-tls",
    "auth": lambda on: "--auth" if on else "--no-auth",
    "local.subnet": lambda value: f"--subnet {value}",
}
"""How `up` words the fix of a field its command line gave."""


def _spec_file(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as text:  # a stream, so errors name the file
            loaded = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise _fail(f"--spec-file: can't read {path}: {error}") from None
    if not isinstance(loaded, dict):
        raise _fail(f"--spec-file: {path} must hold a mapping of spec fields, e.g. members: 3")
    return loaded


@app.command()
def up(
    name: Annotated[str, typer.Argument(help="cluster name (DNS-1123 label)")],
    store: Annotated[str | None, typer.Option(help="etcd or zookeeper [default: etcd]")] = None,
    members: Annotated[
        int | None, typer.Option(help="number of members, 1 to 9 [default: 3]")
    ] = None,
    spec_file: Annotated[
        Path | None,
        typer.Option(
            "--spec-file",
            help="YAML with any spec fields (store settings such as zookeeper.tick_time_ms); "
            "the other options override it",
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="store version [default: the pinned release]")
    ] = None,
    subnet: Annotated[
        str | None, typer.Option(help="loopback /24 for the members, e.g. 127.0.5")
    ] = None,
    tls: Annotated[
        bool | None,
        typer.Option("--tls/--no-tls", help="TLS for clients and members [default: on]"),
    ] = None,
    auth: Annotated[
        bool | None,
        typer.Option("--auth/--no-auth", help="clients authenticate [default: on]"),
    ] = None,
    state_dir: StateDirOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 120.0,
) -> None:
    """Create a cluster: it starts as one member and grows to --members by live scale-up."""
    data = _spec_file(spec_file) if spec_file else {}
    flags = {
        "name": name,
        "store": store,
        "members": members,
        "version": version,
        "tls": tls,
        "auth": auth,
    }
    flags = {key: value for key, value in flags.items() if value is not None}
    data.update(flags)
    if subnet:
        data["local"] = {**data.get("local", {}), "subnet": subnet}
        flags["local.subnet"] = subnet
    given = {field: _UP_OPTIONS[field] for field in flags}
    spec = _validated(data, base_dir=Path.cwd(), given=given)  # a relative data_dir: from here
    paths = _paths(state_dir, name)
    try:  # every check that only reads comes first: a refused `up` creates nothing
        check_binary(spec)
        check_state_dir(paths.state_dir)
    except Refused as error:
        raise _fail(str(error)) from None
    # One `up` at a time per state folder: the name and the subnet are checked and taken as
    # one step, so two racing `up`s can't both take either.
    with _locked(FileLock(paths.state_dir / ".up.lock"), f"the clusters in {paths.state_dir}"):
        chosen = subnet is not None or "subnet" in (data.get("local") or {})
        stored = _create(paths, spec, explicit_subnet=chosen)
        keeper.spawn(paths)
    spec = stored.spec
    err.print(
        f"cluster {name}: {spec.members} x {spec.store} {spec.version} on "
        f"{spec.local.subnet}.x ({stored.change.describe()})",
        highlight=False,
    )
    if wait:
        _print_status(_wait_for_spec(LocalCluster(paths), timeout, stored.change.generation))


def _create(paths: ClusterPaths, spec: ClusterSpec, *, explicit_subnet: bool) -> StoredSpec:
    """Check the name, subnet and folders of a new cluster, then claim its folders and store
    generation 1 of its spec. Call under the state folder's `up` lock."""
    try:
        check_name_free(paths)
        spec = choose_subnet(spec, paths.state_dir, explicit=explicit_subnet)
        check_folder_is_ours(
            paths.root,
            "name",
            spec.name,
            f"choose another name or --state-dir, or move those files out of {paths.root}",
        )
        members_root = paths.members_root(spec)
        if spec.data_dir is not None:
            check_folder_is_ours(
                members_root,
                "data_dir",
                spec.data_dir,
                f"point data_dir at a folder without a {spec.name!r} entry, or move "
                f"{members_root} away",
            )
    except Refused as error:
        raise _fail(str(error)) from None
    for warning in spec.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    claim_folder(paths.root, paths)
    claim_folder(members_root, paths)
    with _locked(FileLock(paths.command_lock_file), f"cluster {spec.name}"):
        try:
            return paths.save_spec(spec, expected_generation=None, by=_by("up", spec.name))
        except SpecConflict:
            raise _fail(f"name: cluster {spec.name!r} was created meanwhile") from None


@app.command()
def scale(
    name: Annotated[str, typer.Argument(help="cluster name")],
    members: Annotated[int, typer.Argument(help="new number of members, 1 to 9")],
    state_dir: StateDirOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 120.0,
) -> None:
    """Grow or shrink a cluster one member at a time, without restarting the others."""
    cluster = _existing(state_dir, name)
    with _locked(FileLock(cluster.paths.command_lock_file), f"cluster {name}"):
        stored = _change_size(cluster, members)
        _ensure_keeper(cluster.paths)
    if wait:
        cluster.reconciler.reload()
        _print_status(_wait_for_spec(cluster, timeout, stored.change.generation))


def _change_size(cluster: LocalCluster, members: int) -> StoredSpec:
    """The read-check-write of `scale`, under the cluster's command lock.

    A change in flight may be replaced only by its own target (nothing to store: the command
    waits for it) or by the size it started from (undoing it is always safe, and is the way out
    of a change that can't progress); any other target is refused naming the change in flight.
    """
    name = cluster.spec.name
    stored = cluster.paths.load_stored()
    cluster.reconciler.reload()
    stop = f", or `quorumkeeper down {name}` to stop every member keeping its data"
    spec = _validated(
        {**stored.spec.model_dump(mode="json"), "members": members},
        given={
            "members": lambda value: (
                f"`quorumkeeper scale {name} {value}`" + (stop if members < 1 else "")
            )
        },
    )
    snapshot = cluster.reconciler.observe()
    membership = snapshot.observation.membership
    if membership is None:
        raise _fail(f"refused: cluster {name} has no quorum now, so it can't change membership")
    step = plan(cluster.reconciler.desired, snapshot.observation)
    settled = isinstance(step, Done) or (isinstance(step, Wait) and step.phase is Phase.DEGRADED)
    target, previous = stored.spec.members, stored.change.previous_members
    in_flight = target != len(membership) or not settled
    if members == target:
        err.print(
            f"cluster {name}: {'already on its way to' if in_flight else 'already has'} "
            f"{target} members ({stored.change.describe()})",
            highlight=False,
        )
        return stored
    if in_flight and members != previous:
        back = f", or go back with `quorumkeeper scale {name} {previous}`" if previous else ""
        raise _fail(
            f"refused: a change is in flight: {stored.change.describe()} set {target} members"
            f"{f' (from {previous})' if previous else ''}, now {step.phase}: {step.reason}; "
            f"fix: wait for it with `quorumkeeper scale {name} {target}`{back}"
        )
    if members < len(membership):
        blocker = scale_down_blocker(
            dataclasses.replace(cluster.reconciler.desired, members=members), membership
        )
        if blocker:
            raise _fail(blocker)
    joining = [
        n for n in range(members) if spec.local.address(n) not in {m.address for m in membership}
    ]
    ours = {cluster.runtime.pid(endpoint) for endpoint in snapshot.endpoints}
    held = taken_addresses(spec, joining, ours={pid for pid in ours if pid})
    if held:
        raise _fail(
            f"members: {members} needs ports another program holds: "
            f"{'; '.join(map(str, held))}; fix: stop that process, "
            f"or scale to at most {len(membership)}"
        )
    if spec.even_count_warning:
        err.print(f"[yellow]warning:[/] {spec.even_count_warning}", highlight=False)
    changed = _store(cluster, spec, stored, "scale", str(members))
    verb = "replaces the change in flight" if in_flight else "stored"
    err.print(
        f"cluster {name}: {len(membership)} -> {members} members, {verb} "
        f"({changed.change.describe()})",
        highlight=False,
    )
    return changed


def _store(
    cluster: LocalCluster, spec: ClusterSpec, stored: StoredSpec, command: str, *words: str
) -> StoredSpec:
    """Store `spec` as the generation after `stored`'s (compare-and-swap), under the cluster's
    command lock, made by `command`; a conflict or a failed write refuses the command."""
    name = cluster.spec.name
    try:
        return cluster.paths.save_spec(
            spec, expected_generation=stored.change.generation, by=_by(command, name, *words)
        )
    except SpecConflict as conflict:  # only without the lock's protection, e.g. a lost NFS lock
        now = conflict.current
        landed = f"{now.change.describe()} set {now.spec.members} members" if now else "a purge"
        raise _fail(f"refused: another change landed first: {landed}") from None
    except OSError as error:
        raise _fail(
            f"refused: can't write {cluster.paths.spec_file}: {error.strerror}; fix: free space "
            f"on that disk (see `quorumkeeper status {name}`), then {command} again"
        ) from None


IMMUTABLE_FIELDS = {
    "name": "it names the cluster's folders and its members",
    "store": "the members' data is in this store's format",
    "local.subnet": "the members' addresses are their identities in the membership",
    "data_dir": "the members' data lives there",
    "zookeeper.data_dir": "the members' snapshots live there",
    "zookeeper.data_log_dir": "the members' transaction logs live there",
    "tls": "members know each other by their peer URLs, https or http, in the membership",
    "auth": "the keeper turns authentication on when a cluster is created, not later",
}
"""Spec fields a running cluster keeps for its life, with why."""


def _field(values: Any, path: str) -> Any:
    """The value at a dotted `path` of a dumped spec, None where a section is absent."""
    for key in path.split("."):
        values = values.get(key) if isinstance(values, dict) else None
    return values


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it as a JSON merge patch (RFC 7386): nested sections
    merge key by key, so a file that names one setting of a section changes that setting only,
    and a setting given as null goes back to its default."""
    merged = dict(base)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_kept(
    old: dict[str, Any], new: dict[str, Any], spec_file: Path, paths: Iterable[str]
) -> None:
    """Refuse a change, from the dumped spec `old` to `new`, of a field a running cluster
    keeps (`IMMUTABLE_FIELDS`) among `paths`."""
    for path in paths:
        why = IMMUTABLE_FIELDS[path]
        if _field(old, path) != _field(new, path):
            raise _fail(
                f"{path}: can't change from {yaml_value(_field(old, path))} to "
                f"{yaml_value(_field(new, path))} on a "
                f"running cluster: {why}; fix: remove {path} from {spec_file}, or create a new "
                f"cluster with `quorumkeeper up NEW_NAME --spec-file {spec_file}`"
            )


def _check_changeable(before: ClusterSpec, after: ClusterSpec, spec_file: Path) -> None:
    """Refuse a change of a field a running cluster keeps, or of its member count (which
    `scale` changes, with its own checks)."""
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    _check_kept(old, new, spec_file, IMMUTABLE_FIELDS)
    if before.members != after.members:
        raise _fail(
            f"members: {after.members} differs from the cluster's {before.members}; rule: apply "
            f"changes settings and version, scale changes the member count; fix: remove members "
            f"from {spec_file}, then `quorumkeeper scale {before.name} {after.members}`"
        )
    other = Store.ZOOKEEPER if before.store is Store.ETCD else Store.ETCD
    if old[other.value] != new[other.value]:
        raise _fail(
            f"{other.value}: settings of {other.value} change nothing on the {before.store.value} "
            f"cluster {before.name}; rule: a cluster takes its own store's settings only; fix: "
            f"remove {other.value} from {spec_file}"
        )


def _check_upgrade(cluster: LocalCluster, before: ClusterSpec, after: ClusterSpec) -> None:
    """Refuse a version off the checked path (`upgrades`) from what the members really run:
    each answering member's own release, and the stored spec's for those that do not answer."""
    if after.version == before.version:
        return
    membership = cluster.reconciler.observe().observation.membership or ()
    running = {before.version, *(member.version for member in membership if member.version)}
    try:
        upgrades.check_upgrade(before.store, running, after.version)
    except upgrades.UpgradeRefused as error:
        raise _fail(str(error)) from None


@app.command()
def apply(
    name: Annotated[str, typer.Argument(help="cluster name")],
    spec_file: Annotated[
        Path,
        typer.Option(
            "--spec-file",
            help="YAML with the spec fields to change (as `up --spec-file` takes them), "
            "e.g. etcd: {snapshot_count: 5000}; a field set to null goes back to its default",
        ),
    ],
    state_dir: StateDirOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
) -> None:
    """Change a running cluster's version or store settings: its members restart with them one
    at a time, followers first, each healthy and caught up before the next, the leader last."""
    cluster = _existing(state_dir, name)
    changes = _spec_file(spec_file)
    with _locked(FileLock(cluster.paths.command_lock_file), f"cluster {name}"):
        stored = cluster.paths.load_stored()
        current = stored.spec.model_dump(mode="json")
        wanted = _merged(current, changes)
        # Another store or name first: every other check would judge the wrong cluster.
        _check_kept(current, wanted, spec_file, ("name", "store"))
        spec = _validated(wanted, base_dir=Path.cwd())
        _check_changeable(stored.spec, spec, spec_file)
        _check_upgrade(cluster, stored.spec, spec)
        if spec == stored.spec:
            err.print(
                f"cluster {name}: {spec_file} changes nothing ({stored.change.describe()})",
                highlight=False,
            )
            changed = stored
        else:
            try:
                check_binary(spec)
            except Refused as error:
                raise _fail(str(error)) from None
            for warning in spec.warnings:
                err.print(f"[yellow]warning:[/] {warning}", highlight=False)
            changed = _store(cluster, spec, stored, "apply", "--spec-file", str(spec_file))
            err.print(
                f"cluster {name}: {spec_file} stored ({changed.change.describe()}); members "
                "restart with it one at a time",
                highlight=False,
            )
        _ensure_keeper(cluster.paths)
    if wait:
        cluster.reconciler.reload()
        _print_status(_wait_for_spec(cluster, timeout, changed.change.generation))


@app.command()
def start(
    name: Annotated[str, typer.Argument(help="cluster name")],
    state_dir: StateDirOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 120.0,
) -> None:
    """Start the keeper of an existing cluster again, e.g. after `down`; members resume from
    their data."""
    cluster = _existing(state_dir, name)
    check_binary(cluster.spec)
    with _locked(FileLock(cluster.paths.command_lock_file), f"cluster {name}"):
        _ensure_keeper(cluster.paths)
    if wait:
        _print_status(_wait_for_spec(cluster, timeout))


def _position(store: str, applied: int | None) -> str:
    """A member's applied position as its store writes it: ZooKeeper's zxid in hex (epoch in
    the high 32 bits, as its logs and `srvr` show it), etcd's raft index in decimal."""
    if applied is None:
        return "-"
    return f"0x{applied:x}" if store == Store.ZOOKEEPER else str(applied)


def _print_status(status: dict[str, Any], output: OutputFormat = OutputFormat.TABLE) -> None:
    if output is OutputFormat.JSON:
        out.print_json(json.dumps(status))
        return
    table = Table(title=f"{status['name']}: {status['store']} {status['version']}")
    columns = (
        "member",
        "role",
        "healthy",
        "client url",
        "version",
        "index",
        "db",
        "pid",
        "starts",
        "config",
    )
    for column in columns:
        table.add_column(column, no_wrap=True)
    for member in status["members"]:
        healthy = "[green]yes[/]" if member["healthy"] else "[red]no[/]"
        size = member["data_bytes"]
        table.add_row(
            member["name"],
            member["role"] + (" (stale leader)" if member["stale_leader"] else ""),
            healthy,
            member["client_url"],
            member["version"] or "-",
            _position(status["store"], member["applied_index"]),
            filesize.decimal(size) if size is not None else "-",
            str(member["pid"] or "-"),
            str(member["starts"]),
            member["config"] or "-",
        )
    out.print(table)
    for member in status["members"]:
        notes = _member_notes(member)
        if notes:
            out.print(f"{member['name']}: {'; '.join(notes)}", highlight=False)
    out.print(f"connect string: {status['connect_string']}", highlight=False)
    for alarm in status["alarms"]:
        out.print(f"[bold red]alarm:[/] {alarm['alarm']} on {alarm['member']}", highlight=False)
    out.print(
        f"phase [bold]{status['phase']}[/], {len(status['members'])} of "
        f"{status['desired_members']} members: {status['step']['reason']}",
        highlight=False,
    )
    rollout = status.get("rollout")
    if rollout:
        updated, stale = len(rollout["updated"]), len(rollout["stale"])
        waits = f", waits: {rollout['waiting']}" if rollout["waiting"] else ", restarting now"
        out.print(
            f"rollout: {updated} of {updated + stale} members updated; next "
            f"{rollout['next'] or '-'}{waits}",
            highlight=False,
        )
    if status.get("error"):
        out.print(f"[bold red]keeper's last refusal:[/] {status['error']}", highlight=False)
    for problem in status.get("problems", []):
        out.print(f"[bold red]{problem}[/]", highlight=False)
    for warning in status.get("warnings", []):
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if status.get("ca_rotation"):
        out.print(f"CA rotation under way: phase {status['ca_rotation']}", highlight=False)
    secured = next((c for c in status["conditions"] if c["type"] == "Secured"), None)
    if secured:
        said = "[green]secured:[/]" if secured["status"] == "True" else "[yellow]open:[/]"
        out.print(
            f"{said} {secured['message']} (Secured {secured['status']}, {secured['reason']})",
            highlight=False,
        )


def _member_notes(member: dict[str, Any]) -> list[str]:
    """What keeps a member from running, and how far its data reaches when that matters."""
    notes = []
    if member["blocked_by"]:
        notes.append(member["blocked_by"])
    if member["failed_starts"]:
        retry = member["restart_in_seconds"]
        notes.append(
            f"{member['failed_starts']} failed start(s) in a row"
            + (f", next start in {retry:.0f}s" if retry else "")
            + (f"; last error: {member['last_error']}" if member["last_error"] else "")
        )
    if member["data_damage"]:
        notes.append(f"data reaches {member['data_position']}, damaged: {member['data_damage']}")
    elif member["data_position"] and member["role"] == "unknown":
        notes.append(f"data reaches {member['data_position']}")
    return notes


@app.command()
def status(
    name: Annotated[str, typer.Argument(help="cluster name")],
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.TABLE,
    state_dir: StateDirOption = None,
) -> None:
    """Show members, roles and health as the store reports them right now."""
    cluster = _existing(state_dir, name)
    _print_status(_live_status(cluster), output)


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="cluster name")],
    member: Annotated[str, typer.Argument(help="member name, or 'keeper' for the keeper's log")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="last N lines")] = 50,
    state_dir: StateDirOption = None,
) -> None:
    """Print the end of a member's log (or the keeper's)."""
    cluster = _existing(state_dir, name)
    if member == "keeper":
        path = cluster.paths.keeper_log
    else:
        endpoint = cluster.runtime.placement.named(member)
        if endpoint is None or not cluster.runtime.log_path(endpoint).is_file():
            present = ", ".join(cluster.runtime.member_names()) or "none"
            raise _fail(f"member: no log for {member!r} (members: {present}, or 'keeper')")
        path = cluster.runtime.log_path(endpoint)
    with open(path, errors="replace") as log:
        for line in deque(log, maxlen=lines):
            out.out(line, end="", highlight=False)


@app.command()
def down(
    name: Annotated[str, typer.Argument(help="cluster name")],
    purge: Annotated[bool, typer.Option(help="also delete the spec and all member data")] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Stop the keeper, then the members: followers first, the leader last. `--purge` then
    deletes what quorumkeeper created for the cluster and nothing else."""
    cluster = _existing(state_dir, name)
    lock = _locked(FileLock(cluster.paths.command_lock_file), f"cluster {name}")
    keeper_pid = cluster.paths.keeper_pid()
    if keeper_pid:
        end_process(keeper_pid, keeper.runs_for(cluster.paths), 10)
    status = _live_status(cluster)
    leaders = [m["name"] for m in status["members"] if m["role"] == Role.LEADER]
    runtime = cluster.runtime
    for member in sorted(runtime.member_names(), key=lambda n: n in leaders):
        endpoint = cluster.runtime.placement.named(member)
        if endpoint:
            runtime.stop(endpoint)
    if purge:
        kept = purge_cluster(cluster.paths, cluster.spec)
        if kept:
            err.print(
                f"kept what quorumkeeper did not create: {', '.join(map(str, kept))}",
                highlight=False,
            )
    lock.release()
    err.print(f"cluster {name} stopped{' and purged' if purge else ''}")


@app.command(name="list")
def list_clusters(
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.TABLE,
    state_dir: StateDirOption = None,
) -> None:
    """List the clusters in the state dir with their last recorded phase. A status the keeper
    has not refreshed lately (stopped, hung, or its disk full) is shown as stale, not as the
    cluster's phase."""
    root = state_dir or default_state_dir()
    rows = [_listed(ClusterPaths(root, name)) for name in cluster_names(root)]
    if output is OutputFormat.JSON:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        err.print(
            f"no clusters in {root}; make one with `quorumkeeper up NAME --store etcd|zookeeper`",
            highlight=False,
        )
        return
    table = Table()
    for column in ("name", "store", "members", "phase", "keeper"):
        table.add_column(column)
    for row in rows:
        phase = row["phase"] or f"stale: {row['recorded_phase'] or '-'}"
        if row["stale"] and row["status_age_seconds"] is not None:
            phase += f" {row['status_age_seconds']:.0f}s ago"
        if row["state_disk_full"]:
            phase += " (state disk full)"
        table.add_row(
            row["name"],
            row["store"],
            str(row["members"]),
            phase,
            f"pid {row['keeper_pid']}" if row["keeper_pid"] else "stopped",
        )
    out.print(table)


def _listed(paths: ClusterPaths) -> dict[str, Any]:
    """One row of `list`: `phase` is None unless the recorded status is fresh."""
    keeper_pid = paths.keeper_pid()
    recorded = paths.load_status() or {}
    age = status_age(recorded)
    stale = _stale(age, keeper_pid)
    row: dict[str, Any] = {
        "name": paths.name,
        "store": "-",
        "members": None,
        "generation": None,
        "phase": None if stale else recorded.get("phase"),
        "recorded_phase": recorded.get("phase"),
        "stale": stale,
        "status_age_seconds": age,
        "keeper_pid": keeper_pid,
        "state_disk_full": None,
    }
    with suppress(OSError):  # a cluster purged meanwhile
        row["state_disk_full"] = probe_disk(paths.root).full
    try:
        stored = paths.load_stored()
    except (OSError, ValueError) as error:
        row["store"] = f"unreadable spec: {error}"
        return row
    row["store"] = f"{stored.spec.store} {stored.spec.version}"
    row["members"] = stored.spec.members
    row["generation"] = stored.change.generation
    if keeper_pid is None and not _members_running(paths):
        row["phase"] = "Stopped"  # as `status` says: `down`, or everything killed
    return row


def _members_running(paths: ClusterPaths) -> bool:
    """Whether any member process of the cluster runs (its pid file's, or one found by its
    marker)."""
    runtime = LocalCluster(paths).runtime
    return any(runtime.pids(runtime.endpoints()).values())


@app.command()
def install(
    component: Annotated[Store, typer.Argument(help="which store to install")],
    version: Annotated[
        str | None, typer.Option(help="version [default: the pinned release]")
    ] = None,
) -> None:
    """Build etcd from its Go modules, or fetch ZooKeeper from Maven Central, into the cache."""
    log = distributions.cache_dir() / f"install-{component}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with err.status(f"installing {component} (log: {log})"):
        if component is Store.ETCD:
            version = version or versions.ETCD_VERSION
            path = distributions.build_etcd(version, log=log)
        else:
            version = version or versions.ZOOKEEPER_VERSION
            try:
                path = distributions.fetch_zookeeper(version, log=log)
            except versions.UnsupportedZookeeperVersion as error:
                raise _fail(f"version: {error}") from None
    err.print(f"{component} {version}: {path}")
