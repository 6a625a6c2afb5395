"""Commands for local clusters: up, scale, status, logs, down, list, install."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import time
from collections import deque
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from quorumkeeper import distributions, keeper
from quorumkeeper.cli.ceph import ceph_app, render_app
from quorumkeeper.cli.maintenance import maintenance_app
from quorumkeeper.planner import Done, Phase, Wait, plan, scale_down_blocker
from quorumkeeper.preflight import (
    Refused,
    check_binary,
    check_name_free,
    check_state_dir,
    choose_subnet,
)
from quorumkeeper.reconciler import LocalCluster
from quorumkeeper.runtimes.local import wait_for_exit
from quorumkeeper.spec import ClusterSpec, SpecError, Store, parse_spec
from quorumkeeper.state import ClusterPaths, cluster_names, default_state_dir
from quorumkeeper.stores.base import Role

app = typer.Typer(
    help="Run etcd and ZooKeeper clusters that scale and heal themselves.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(ceph_app, name="ceph")
app.add_typer(render_app, name="render")
app.add_typer(maintenance_app, name="maintenance")

out = Console()
err = Console(stderr=True)

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


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _paths(state_dir: Path | None, name: str) -> ClusterPaths:
    return ClusterPaths(state_dir or default_state_dir(), name)


def _existing(state_dir: Path | None, name: str) -> LocalCluster:
    paths = _paths(state_dir, name)
    if not paths.exists():
        known = ", ".join(cluster_names(paths.state_dir)) or "none"
        raise _fail(
            f"name: no cluster {name!r} in {paths.state_dir} (clusters there: {known}); "
            f"fix: check the name, or create it with `quorumkeeper up {name}`"
        )
    return LocalCluster(paths)


def _ensure_keeper(paths: ClusterPaths) -> None:
    if paths.keeper_pid() is None:
        keeper.spawn(paths)


def _live_status(cluster: LocalCluster) -> dict[str, Any]:
    snapshot = cluster.observe()
    return cluster.report(snapshot, plan(cluster.desired, snapshot.observation))


def _matches_spec(status: dict[str, Any]) -> bool:
    members = status["members"]
    return (
        status["step"]["kind"] == Done.__name__
        and len(members) == status["desired_members"]
        and all(m["healthy"] and m["role"] != Role.LEARNER for m in members)
    )


def _wait_for_spec(cluster: LocalCluster, timeout: float) -> dict[str, Any]:
    """Poll the live cluster until it matches its spec, showing the step in progress."""
    deadline = time.monotonic() + timeout
    with err.status("waiting for the cluster") as progress:
        while True:
            status = _live_status(cluster)
            if _matches_spec(status):
                return status
            if time.monotonic() > deadline:
                raise _fail(
                    f"timed out after {timeout:.0f}s in phase {status['phase']}: "
                    f"{'; '.join(_blockers(status, timeout))}; the keeper goes on (see "
                    f"`quorumkeeper status {cluster.spec.name}`)",
                    code=1,
                )
            healthy = sum(1 for m in status["members"] if m["healthy"])
            progress.update(
                f"{status['phase']}: {healthy}/{status['desired_members']} healthy - "
                f"{status['step']['reason']}"
            )
            time.sleep(0.2)


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


def _validated(data: dict[str, Any], *, base_dir: Path | None = None) -> ClusterSpec:
    try:
        return parse_spec(data, base_dir=base_dir)
    except SpecError as error:
        raise _fail(str(error)) from None


def _spec_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
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
    state_dir: StateDirOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 120.0,
) -> None:
    """Create a cluster: it starts as one member and grows to --members by live scale-up."""
    data = _spec_file(spec_file) if spec_file else {}
    flags = {"name": name, "store": store, "members": members, "version": version}
    data.update({key: value for key, value in flags.items() if value is not None})
    if subnet:
        data["local"] = {**data.get("local", {}), "subnet": subnet}
    spec = _validated(data, base_dir=Path.cwd())  # a relative data_dir is taken from here
    paths = _paths(state_dir, name)
    try:  # every check that only reads comes first: a refused `up` creates nothing
        check_name_free(paths)
        check_binary(spec)
        spec = choose_subnet(spec, paths.state_dir, explicit=subnet is not None)
        check_state_dir(paths.state_dir)
    except Refused as error:
        raise _fail(str(error)) from None
    for warning in spec.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    paths.save_spec(spec)
    keeper.spawn(paths)
    err.print(
        f"cluster {name}: {spec.members} x {spec.store} {spec.version} on {spec.local.subnet}.x"
    )
    if wait:
        _print_status(_wait_for_spec(LocalCluster(paths), timeout))


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
    spec = _validated({**cluster.spec.model_dump(mode="json"), "members": members})
    snapshot = cluster.observe()
    membership = snapshot.observation.membership
    if membership is None:
        raise _fail(f"refused: cluster {name} has no quorum now, so it can't change membership")
    step = plan(cluster.desired, snapshot.observation)
    settled = isinstance(step, Done) or (isinstance(step, Wait) and step.phase is Phase.DEGRADED)
    if cluster.spec.members != len(membership) or not settled:
        raise _fail(
            f"refused: a change is in flight ({step.phase}: {step.reason}); fix: wait until "
            f"`quorumkeeper status {name}` shows Ready, then scale again"
        )
    if members < len(membership):
        blocker = scale_down_blocker(
            dataclasses.replace(cluster.desired, members=members), membership
        )
        if blocker:
            raise _fail(f"refused: {blocker}; fix: heal the cluster first, or scale down less")
    if spec.even_count_warning:
        err.print(f"[yellow]warning:[/] {spec.even_count_warning}", highlight=False)
    cluster.paths.save_spec(spec)
    _ensure_keeper(cluster.paths)
    err.print(f"cluster {name}: {len(membership)} -> {members} members")
    if wait:
        cluster.reload()
        _print_status(_wait_for_spec(cluster, timeout))


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
    _ensure_keeper(cluster.paths)
    if wait:
        _print_status(_wait_for_spec(cluster, timeout))


def _print_status(status: dict[str, Any], output: OutputFormat = OutputFormat.TABLE) -> None:
    if output is OutputFormat.JSON:
        out.print_json(json.dumps(status))
        return
    table = Table(title=f"{status['name']}: {status['store']} {status['version']}")
    for column in ("member", "role", "healthy", "client url", "index", "db", "pid", "starts"):
        table.add_column(column, no_wrap=True)
    for member in status["members"]:
        healthy = "[green]yes[/]" if member["healthy"] else "[red]no[/]"
        size = member["data_bytes"]
        table.add_row(
            member["name"],
            member["role"] + (" (stale leader)" if member["stale_leader"] else ""),
            healthy,
            member["client_url"],
            str(member["applied_index"] or "-"),
            f"{size / 2**10:.0f}K" if size is not None else "-",
            str(member["pid"] or "-"),
            str(member["starts"]),
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
        endpoint = cluster.endpoint_of(member)
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
    """Stop the keeper, then the members: followers first, the leader last."""
    cluster = _existing(state_dir, name)
    keeper_pid = cluster.paths.keeper_pid()
    if keeper_pid:
        os.kill(keeper_pid, signal.SIGTERM)
        if not wait_for_exit(keeper_pid, 10):
            os.kill(keeper_pid, signal.SIGKILL)
    status = _live_status(cluster)
    leaders = [m["name"] for m in status["members"] if m["role"] == Role.LEADER]
    runtime = cluster.runtime
    for member in sorted(runtime.member_names(), key=lambda n: n in leaders):
        endpoint = cluster.endpoint_of(member)
        if endpoint:
            runtime.stop(endpoint)
    if purge:
        shutil.rmtree(runtime.members_root, ignore_errors=True)
        shutil.rmtree(cluster.paths.root, ignore_errors=True)
    err.print(f"cluster {name} stopped{' and purged' if purge else ''}")


@app.command(name="list")
def list_clusters(state_dir: StateDirOption = None) -> None:
    """List the clusters in the state dir with their last recorded phase."""
    root = state_dir or default_state_dir()
    table = Table()
    for column in ("name", "store", "members", "phase", "keeper"):
        table.add_column(column)
    for name in cluster_names(root):
        paths = ClusterPaths(root, name)
        spec = paths.load_spec()
        recorded = paths.load_status() or {}
        keeper_pid = paths.keeper_pid()
        table.add_row(
            name,
            f"{spec.store} {spec.version}",
            str(spec.members),
            recorded.get("phase", "-"),
            f"pid {keeper_pid}" if keeper_pid else "stopped",
        )
    out.print(table)


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
            version = version or distributions.ETCD_VERSION
            path = distributions.build_etcd(version, log=log)
        else:
            version = version or distributions.ZOOKEEPER_VERSION
            try:
                path = distributions.fetch_zookeeper(version, log=log)
            except distributions.UnsupportedZookeeperVersion as error:
                raise _fail(f"version: {error}") from None
    err.print(f"{component} {version}: {path}")
