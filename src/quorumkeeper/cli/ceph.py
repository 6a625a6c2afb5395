"""`quorumkeeper ceph ...` and `quorumkeeper render ceph`: Ceph RBD checks, lock fencing, orphans.

Thin layer over `quorumkeeper.ceph`: it resolves flags, a manifest file or a kubeconfig into a
client target, calls the library and prints. Exit codes: 0 fine, 1 the check/fence said no,
2 bad input or Ceph unreachable.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from quorumkeeper.ceph.caps import Severity
from quorumkeeper.ceph.check import check_access
from quorumkeeper.ceph.client import CephError, CephTarget, connect
from quorumkeeper.ceph.kube import KubeReader, csi_flags, load_manifests, target_from
from quorumkeeper.ceph.locks import (
    FenceAction,
    NodeState,
    NodeView,
    Role,
    fence_image,
    identities,
    inspect_image,
    refuse_own_host,
)
from quorumkeeper.ceph.orphans import (
    Action,
    OrphanPlan,
    Outcome,
    Ownership,
    PvRef,
    delete_orphans,
    find_orphans,
    purge_trash,
)
from quorumkeeper.ceph.render import ReclaimPolicy, RenderInput, render_yaml

ceph_app = typer.Typer(
    help="Check Ceph access, fence stale RBD locks, clean up orphan images.",
    no_args_is_help=True,
)
render_app = typer.Typer(help="Render manifests for the storage a cluster runs on.")


@render_app.callback()
def _render_group() -> None:
    """Keeps `render` a command group even while `ceph` is its only subcommand."""


out = Console()
err = Console(stderr=True, soft_wrap=True)

Monitors = Annotated[
    list[str] | None,
    typer.Option("--monitors", "-m", help="mon address HOST:PORT; repeat or comma-separate"),
]
Pool = Annotated[str | None, typer.Option("--pool", "-p", help="RBD pool")]
User = Annotated[str | None, typer.Option("--user", help="Ceph client id, e.g. k8s")]
Key = Annotated[str | None, typer.Option("--key", help="the client's cephx key", envvar="CEPH_KEY")]
KeyFile = Annotated[Path | None, typer.Option("--key-file", help="file holding the cephx key")]
Manifests = Annotated[
    Path | None,
    typer.Option("--manifests", help="YAML with the StorageClass and Secret (`render ceph`)"),
]
Kubeconfig = Annotated[Path | None, typer.Option("--kubeconfig", help="read objects from here")]
StorageClass = Annotated[
    str | None, typer.Option("--storage-class", help="ceph-csi StorageClass (with --kubeconfig)")
]
Timeout = Annotated[float, typer.Option("--timeout", help="seconds per Ceph request")]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _plain(obj: Any) -> Any:
    """Dataclasses, enums and datetimes to JSON-ready values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


def _split(values: list[str] | None) -> list[str]:
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def _target(
    monitors: list[str] | None,
    pool: str | None,
    user: str | None,
    key: str | None,
    key_file: Path | None,
    manifests: Path | None,
    kubeconfig: Path | None,
    storage_class: str | None,
    timeout: float,
) -> tuple[CephTarget, str]:
    """One client target from flags, a manifest file or the cluster's own objects."""
    mons = _split(monitors)
    try:
        if manifests or (kubeconfig and storage_class):
            if manifests:
                objs = load_manifests(manifests)
            else:
                reader = KubeReader(kubeconfig or Path(), timeout=timeout)
                objs = reader.storage_objects(str(storage_class))
            target, sc_pool = target_from(objs, mons or None, timeout)
            return target, pool or sc_pool
        if key_file:
            try:
                key = key_file.read_text().strip()
            except OSError as exc:
                raise CephError(f"cannot read {key_file}: {exc}", field="key-file") from exc
        missing = [
            flag
            for flag, v in (
                ("--monitors", mons),
                ("--pool", pool),
                ("--user", user),
                ("--key", key),
            )
            if not v
        ]
        if missing:
            raise CephError(
                f"missing {', '.join(missing)}; pass them, or --manifests FILE, or "
                "--kubeconfig with --storage-class",
                field="flags",
            )
        target = CephTarget(monitors=mons, user=str(user), key=str(key), timeout=timeout)
        return target, str(pool)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _fail(f"{first['loc'][0]}: {first['msg']}") from exc
    except CephError as exc:
        raise _fail(f"{exc.field or 'ceph'}: {exc}") from exc


@ceph_app.command("check")
def check(
    monitors: Monitors = None,
    pool: Pool = None,
    user: User = None,
    key: Key = None,
    key_file: KeyFile = None,
    manifests: Manifests = None,
    kubeconfig: Kubeconfig = None,
    storage_class: StorageClass = None,
    admin_user: Annotated[
        str | None, typer.Option("--admin-user", help="read the user's caps exactly as this")
    ] = None,
    admin_key: Annotated[str | None, typer.Option("--admin-key", envvar="CEPH_ADMIN_KEY")] = None,
    timeout: Timeout = 10.0,
    as_json: AsJson = False,
) -> None:
    """Can this client do what ceph-csi and lock recovery need? Prints the fix if not."""
    target, pool_name = _target(
        monitors, pool, user, key, key_file, manifests, kubeconfig, storage_class, timeout
    )
    admin = None
    if admin_user or admin_key:
        if not (admin_user and admin_key):
            raise _fail("admin: pass both --admin-user and --admin-key, or neither")
        try:
            admin = CephTarget(
                monitors=target.monitors, user=admin_user, key=admin_key, timeout=timeout
            )
        except ValidationError as exc:
            raise _fail(f"admin-{exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc
    report = check_access(target, pool_name, admin)
    if as_json:
        out.print_json(
            data={
                "verdict": report.verdict.value,
                "findings": _plain(report.findings),
                "fixes": report.fixes,
            }
        )
    else:
        colour = {Severity.OK: "green", Severity.WARN: "yellow", Severity.FAIL: "red"}
        for f in report.findings:
            out.print(
                f"[{colour[f.severity]}]{f.severity.value:4}[/] {f.subject}: {f.message}",
                highlight=False,
                soft_wrap=True,
            )
        for fix in report.fixes:
            out.print(f"fix: {fix}", highlight=False, soft_wrap=True)
        out.print(f"verdict: {report.verdict.value}")
    if not report.ok:
        raise typer.Exit(1)


def _node_view(
    kubeconfig: Path | None, nodes: list[str] | None, node_down: list[str] | None, timeout: float
) -> NodeView:
    down = frozenset(_split(node_down))
    if kubeconfig:
        try:
            view = NodeView(KubeReader(kubeconfig, timeout=timeout).nodes(), down)
        except CephError as exc:
            raise _fail(f"{exc.field or 'kubeconfig'}: {exc}") from exc
    else:
        states = []
        for entry in _split(nodes):
            name, sep, ips = entry.partition("=")
            if not sep or not name or not ips:
                raise _fail(f"node: {entry!r} is not NAME=IP[/IP...]; e.g. --node w1=10.0.0.5")
            states.append(NodeState(name=name, addresses=tuple(ips.split("/")), ready=True))
        view = NodeView(tuple(states), down, known=bool(states))
    known = {n.name for n in view.nodes}
    for name in down - known:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            raise _fail(
                f"node-down: {name!r} is neither a known node ({', '.join(sorted(known)) or 'none'}"
                ") nor an IP address; name it with --node NAME=IP or pass its IP"
            ) from None
    return view


@ceph_app.command("locks")
def locks(
    monitors: Monitors = None,
    pool: Pool = None,
    user: User = None,
    key: Key = None,
    key_file: KeyFile = None,
    manifests: Manifests = None,
    kubeconfig: Kubeconfig = None,
    storage_class: StorageClass = None,
    image: Annotated[
        list[str] | None, typer.Option("--image", help="image name; default: every image")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="with --kubeconfig: the cluster's PVCs")
    ] = None,
    selector: Annotated[str, typer.Option("--selector", help="label selector for PVCs")] = "",
    node: Annotated[
        list[str] | None,
        typer.Option("--node", help="without --kubeconfig: NAME=IP of a Ready node; repeat"),
    ] = None,
    node_down: Annotated[
        list[str] | None, typer.Option("--node-down", help="node confirmed down; repeat")
    ] = None,
    fence: Annotated[
        bool, typer.Option("--fence", help="blocklist and unlock stale locks")
    ] = False,
    expire: Annotated[int, typer.Option("--blocklist-expire", help="seconds")] = 3600,
    timeout: Timeout = 10.0,
    as_json: AsJson = False,
) -> None:
    """Lock holders and watchers per image, live or stale; --fence breaks stale locks safely."""
    target, pool_name = _target(
        monitors, pool, user, key, key_file, manifests, kubeconfig, storage_class, timeout
    )
    view = _node_view(kubeconfig, node, node_down, timeout)
    refused = False
    rows: list[Any] = []
    try:
        with connect(target) as client:
            ids = identities(client)
            refuse_own_host(view, ids)
            names = _split(image)
            if not names and kubeconfig and namespace:
                vols = KubeReader(kubeconfig, timeout=timeout).claimed_volumes(namespace, selector)
                names = [v.image for v in vols if v.image and v.pool in (None, pool_name)]
            if not names:
                names = client.list_images(pool_name)
            for name in names:
                if fence:
                    result = fence_image(client, pool_name, name, view, expire, ids)
                    refused |= result.action == FenceAction.REFUSED
                    rows.append(result)
                else:
                    rows.append(inspect_image(client, pool_name, name, view, ids))
    except CephError as exc:
        raise _fail(f"{exc.field or 'ceph'}: {exc}") from exc
    if as_json:
        out.print_json(data=_plain(rows))
    elif fence:
        for r in rows:
            out.print(f"{r.pool}/{r.image}: {r.action.value}", highlight=False)
            for reason in r.reasons:
                out.print(f"  {reason}", highlight=False, soft_wrap=True)
    else:
        table = Table("image", "kind", "who", "address", "node", "state", "why")
        for r in rows:
            if not r.locks and not r.watcher_states:
                table.add_row(r.image, "-", "-", "-", "-", "unlocked", "")
            for lk in r.locks:
                table.add_row(
                    r.image,
                    "holder",
                    _who(lk.locker.client, lk.role, lk.daemon),
                    lk.locker.address,
                    f"{lk.node or '?'} ({lk.node_status.value})",
                    lk.liveness.value,
                    "; ".join(lk.reasons),
                )
            for w in r.watcher_states:
                table.add_row(
                    r.image,
                    "watcher" + (" (holder)" if w.holds_lock else ""),
                    _who(w.watcher.client, w.role, w.daemon),
                    w.watcher.address,
                    f"{w.node or '?'} ({w.node_status.value})",
                    w.liveness.value,
                    "",
                )
        out.print(table)
        if ids.unread:
            out.print(
                "note: Ceph daemons are recognised from the maps this user can read; not read: "
                + "; ".join(ids.unread),
                highlight=False,
                soft_wrap=True,
            )
    if refused:
        raise typer.Exit(1)


def _who(client: str, role: Role, daemon: str | None) -> str:
    if role == Role.DAEMON:
        return f"{daemon} (ceph daemon, never fenced)"
    if role == Role.OWN_SESSION:
        return f"{client} (this tool, never fenced)"
    return client


_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration_s(flag: str, text: str) -> int:
    """'3d', '12h', '90m', '3600s' or bare seconds -> seconds; a clear error otherwise."""
    m = _DURATION.fullmatch(text.strip())
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)] if m else 0
    if seconds <= 0 or seconds > 365 * 86400:
        raise _fail(
            f"{flag}: {text!r} is not a duration between 1 s and 365 d; write it like 3d, 12h, "
            "90m or 3600 (seconds)"
        )
    return seconds


def _ownership(
    instance_id: str | None,
    cluster_name: str | None,
    images: list[str],
    manifests: Path | None,
    kubeconfig: Path | None,
    storage_class: str | None,
    timeout: float,
) -> Ownership:
    """This cluster's ceph-csi identity: flags first, else the ceph-csi containers' flags in
    the manifests or in the StorageClass's namespace; never a guess."""
    found: dict[str, str] = {}
    if not instance_id:
        try:
            if manifests:
                found = csi_flags(load_manifests(manifests))
            elif kubeconfig and storage_class:
                reader = KubeReader(kubeconfig, timeout=timeout)
                namespaces = {
                    o["metadata"]["namespace"]
                    for o in reader.storage_objects(storage_class)
                    if o.get("kind") in ("Secret", "ConfigMap")
                }
                found = csi_flags(
                    [d for ns in sorted(namespaces) for d in reader.csi_deployments(ns)]
                )
        except CephError as exc:
            raise _fail(f"{exc.field or 'instance-id'}: {exc}") from exc
    instance_id = instance_id or found.get("instanceid")
    if not instance_id:
        raise _fail(
            "instance-id: which ceph-csi instance's images are this cluster's is unknown: pass "
            "--instance-id (ceph-csi's --instanceid; 'default' unless its Deployment sets one), "
            "or --manifests / --kubeconfig --storage-class where the ceph-csi Deployment is"
        )
    return Ownership(instance_id, cluster_name or found.get("clustername"), frozenset(images))


def _pv_refs(
    kubeconfig: Path | None,
    volume_handle: list[str] | None,
    handles_file: Path | None,
    no_pvs: bool,
    timeout: float,
) -> list[PvRef]:
    refs = [PvRef(pv=h, handle=h) for h in _split(volume_handle)]
    if handles_file:
        try:
            lines = handles_file.read_text().splitlines()
        except OSError as exc:
            raise CephError(f"cannot read {handles_file}: {exc}", field="handles-file") from exc
        refs += [PvRef(pv=h.strip(), handle=h.strip()) for h in lines if h.strip()]
    if kubeconfig:
        refs += [
            PvRef(pv=v.pv, handle=v.handle, image=v.image)
            for v in KubeReader(kubeconfig, timeout=timeout).all_volumes()
        ]
    elif not refs and not no_pvs:
        raise CephError(
            "no PVs given: pass --kubeconfig, --volume-handle/--handles-file, or --no-pvs "
            "if truly no PV exists (otherwise every image would look orphaned)",
            field="volume-handle",
        )
    return refs


def _print_plan(plan: OrphanPlan) -> None:
    table = Table("image", "size", "age", "owner", "action", "why", title=f"pool {plan.pool}")
    for v in plan.images:
        table.add_row(
            v.image,
            f"{(v.size or 0) / 2**20:.0f} MiB",
            f"{(v.age_s or 0) / 86400:.1f} d",
            v.owner,
            "to trash" if v.action == Action.TRASH else "keep",
            "; ".join(v.reasons),
        )
    for v in plan.trash:
        table.add_row(
            v.image,
            "-",
            "-",
            v.owner,
            "purge" if v.action == Action.PURGE else "keep (trash)",
            "; ".join(v.reasons),
        )
    out.print(table, soft_wrap=True)


@ceph_app.command("orphans")
def orphans(
    monitors: Monitors = None,
    pool: Pool = None,
    user: User = None,
    key: Key = None,
    key_file: KeyFile = None,
    manifests: Manifests = None,
    kubeconfig: Kubeconfig = None,
    storage_class: StorageClass = None,
    instance_id: Annotated[
        str | None,
        typer.Option("--instance-id", help="ceph-csi's --instanceid for this cluster"),
    ] = None,
    cluster_name: Annotated[
        str | None,
        typer.Option("--cluster-name", help="ceph-csi's --clustername for this cluster"),
    ] = None,
    image: Annotated[
        list[str] | None,
        typer.Option("--image", help="an image you vouch is this cluster's; repeat"),
    ] = None,
    volume_handle: Annotated[
        list[str] | None,
        typer.Option("--volume-handle", help="without --kubeconfig: every PV's handle; repeat"),
    ] = None,
    handles_file: Annotated[
        Path | None, typer.Option("--handles-file", help="PV volume handles, one a line")
    ] = None,
    no_pvs: Annotated[
        bool,
        typer.Option("--no-pvs", help="no PV exists at all (honoured only if the journal exists)"),
    ] = False,
    delete: Annotated[
        bool, typer.Option("--delete", help="move the orphans to the RBD trash")
    ] = False,
    deferment: Annotated[
        str, typer.Option("--deferment", help="how long trashed images stay restorable")
    ] = "3d",
    purge_trash_: Annotated[
        bool,
        typer.Option("--purge-trash", help="remove our trash entries whose deferment is over"),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before changing")] = False,
    timeout: Timeout = 10.0,
    as_json: AsJson = False,
) -> None:
    """Images ceph-csi made for this cluster that no PV references; every image is listed with
    the reason it is kept. Without --delete or --purge-trash this changes nothing."""
    if delete and purge_trash_:
        raise _fail("delete: --delete and --purge-trash are separate steps; pass one of them")
    deferment_s = _duration_s("deferment", deferment)
    target, pool_name = _target(
        monitors, pool, user, key, key_file, manifests, kubeconfig, storage_class, timeout
    )
    ownership = _ownership(
        instance_id, cluster_name, _split(image), manifests, kubeconfig, storage_class, timeout
    )
    outcomes: list[Outcome] = []
    log = err if as_json else out

    def report(o: Outcome) -> None:
        log.print(
            f"{'ok' if o.done else 'NOT DONE'} {o.image}: {o.message}",
            highlight=False,
            soft_wrap=True,
        )

    try:
        refs = _pv_refs(kubeconfig, volume_handle, handles_file, no_pvs, timeout)
        with connect(target) as client:
            plan = find_orphans(
                client,
                pool_name,
                refs,
                ownership,
                empty_pv_list_confirmed=no_pvs,
                deferment_s=deferment_s,
            )
            if not as_json:
                _print_plan(plan)
            chosen = plan.to_trash if delete else plan.to_purge if purge_trash_ else ()
            if chosen:
                names = ", ".join(v.image for v in chosen)
                what = (
                    f"Move {names} to the trash of {pool_name} for {deferment}"
                    if delete
                    else f"Remove {names} from the trash of {pool_name} for good"
                )
                if not yes and not typer.confirm(f"{what}?", err=True):
                    raise _fail("nothing changed (not confirmed)", code=1)
                act = delete_orphans if delete else purge_trash
                outcomes = act(client, plan, report)
    except CephError as exc:
        raise _fail(f"{exc.field or 'ceph'}: {exc}") from exc
    failed = [o for o in outcomes if not o.done]
    if as_json:
        out.print_json(data={"plan": _plain(plan), "outcomes": _plain(outcomes)})
    elif delete or purge_trash_:
        verb = "moved to the trash" if delete else "purged"
        log.print(f"{len(outcomes) - len(failed)} of {len(outcomes)} {verb}", highlight=False)
    else:
        names = ", ".join(v.image for v in plan.to_trash) or "nothing"
        out.print(
            f"dry run, nothing changed: --delete would move {names} to the trash for {deferment}",
            highlight=False,
            soft_wrap=True,
        )
    if failed:
        raise typer.Exit(1)


@render_app.command("ceph")
def render_ceph(
    monitors: Monitors = None,
    pool: Annotated[str, typer.Option("--pool", "-p", help="RBD pool")] = "",
    cluster_id: Annotated[str, typer.Option("--cluster-id", help="Ceph fsid")] = "",
    user: Annotated[str, typer.Option("--user", help="Ceph client id for ceph-csi")] = "",
    key: Key = None,
    reclaim_policy: Annotated[
        ReclaimPolicy, typer.Option("--reclaim-policy", case_sensitive=False)
    ] = ReclaimPolicy.DELETE,
    namespace: Annotated[str, typer.Option("--namespace")] = "ceph-csi-rbd",
    name: Annotated[str, typer.Option("--name", help="StorageClass name")] = "ceph-rbd",
    secret_name: Annotated[str, typer.Option("--secret-name")] = "csi-rbd-secret",
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """StorageClass, Secret and csi config for rbd.csi.ceph.com, plus the user's auth command."""
    try:
        spec = RenderInput(
            monitors=_split(monitors),
            pool=pool,
            cluster_id=cluster_id,
            user=user,
            key=key,
            reclaim_policy=reclaim_policy,
            namespace=namespace,
            storage_class=name,
            secret_name=secret_name,
        )
    except ValidationError as exc:
        msgs = [f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors()]
        raise _fail("; ".join(msgs)) from exc
    text = render_yaml(spec)
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


__all__ = ["ceph_app", "render_app"]
