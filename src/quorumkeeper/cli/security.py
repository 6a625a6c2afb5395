"""`quorumkeeper user add`, `connect` and `rotate-ca`: least-privilege etcd users, how a client
connects to a secured etcd cluster, and a new certificate authority for a cluster of either store.

A user gets a role of its own name with read and write on one key prefix and nothing else, a
generated password (`<state>/<name>/tls/<user>.password`, 0600) and a client certificate with
its name as common name (`tls/client-<user>.crt`), which etcd takes as the user over gRPC, so
`etcdctl` works with the certificate alone. The root user's password stays the keeper's.

Exit codes: 0 done, 1 the store failed (running again is safe: every step is idempotent), 2
refused (bad input; `user add` and `connect` on a cluster without etcd, TLS or authentication),
nothing changed.
"""

from __future__ import annotations

import http.client
import re
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from quorumkeeper.certificates import TlsFiles
from quorumkeeper.runtimes.local.authority import KEEPER
from quorumkeeper.runtimes.local.cluster import LocalCluster
from quorumkeeper.runtimes.local.state import (
    ClusterPaths,
    cluster_names,
    default_state_dir,
    ensure_secret,
)
from quorumkeeper.spec import Store
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.etcd.client import ROOT, EtcdStore, client_url

user_app = typer.Typer(help="Least-privilege etcd users for a key prefix.", no_args_is_help=True)

out = Console(soft_wrap=True)
err = Console(stderr=True)

USER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
RESERVED_USERS = (ROOT, KEEPER)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="where clusters live [env QUORUMKEEPER_STATE_DIR; ~/.local/share/quorumkeeper]",
        show_default=False,
    ),
]


@user_app.callback()
def _user_group() -> None:
    """Keeps `user` a command group while it has one subcommand."""


def _refuse(message: str) -> typer.Exit:
    err.print(f"[bold red]refused:[/] {message}", highlight=False)
    return typer.Exit(2)


def _cluster(state_dir: Path | None, name: str) -> LocalCluster:
    paths = ClusterPaths(state_dir or default_state_dir(), name)
    if not paths.exists():
        known = ", ".join(cluster_names(paths.state_dir)) or "none"
        raise _refuse(
            f"name: no cluster {name!r} in {paths.state_dir} (clusters there: {known}); "
            "fix: check the name with `quorumkeeper list`"
        )
    return LocalCluster(paths)


def _etcd_cluster(state_dir: Path | None, name: str, what: str) -> LocalCluster:
    cluster = _cluster(state_dir, name)
    if cluster.spec.store is not Store.ETCD:
        raise _refuse(
            f"cluster {name} runs {cluster.spec.store}: {what} is etcd's for now; "
            "fix: name an etcd cluster"
        )
    return cluster


def _password_file(paths: ClusterPaths, user: str) -> Path:
    return paths.tls_dir / f"{user}.password"


def _check_user(user: str) -> None:
    if not USER_NAME.match(user) or user in RESERVED_USERS:
        raise _refuse(
            f"user: {user!r}; rule: a lowercase letter, then up to 62 lowercase letters, digits "
            f"or '-', not {' or '.join(RESERVED_USERS)} (the keeper's own); fix: e.g. `orders-app`"
        )


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="etcd cluster name")],
    user: Annotated[str, typer.Argument(help="user (and role) name, e.g. orders-app")],
    prefix: Annotated[str, typer.Option(help="the key prefix the user reads and writes")],
    state_dir: StateDir = None,
) -> None:
    """Create (or bring up to date) USER with read and write on the keys under --prefix only,
    a generated password and a client certificate; then print how to connect."""
    _check_user(user)
    if not prefix:
        raise _refuse(
            "prefix: ''; rule: a user is limited to a non-empty key prefix (an empty one is "
            "every key); fix: --prefix orders/"
        )
    cluster = _etcd_cluster(state_dir, name, "user add")
    spec = cluster.spec
    if not (spec.tls and spec.auth):
        off = " and ".join(
            f"{field}: false" for field in ("tls", "auth") if not getattr(spec, field)
        )
        raise _refuse(
            f"cluster {name} runs with {off}: a user's password and certificate protect "
            "nothing there; fix: create a cluster with the defaults (TLS and auth on), or "
            "with `--no-tls --no-auth` for one any client may use"
        )
    assert cluster.authority is not None  # tls is on
    password = ensure_secret(_password_file(cluster.paths, user))
    cluster.authority.client(user)
    endpoints = [cluster.reconciler.desired.endpoint(n) for n in range(spec.members)]
    store = cluster.reconciler.backend.connect(endpoints)
    assert isinstance(store, EtcdStore)  # the spec says etcd
    try:
        store.grant_prefix(user, password, prefix)
    except (StoreError, OSError, http.client.HTTPException) as error:
        err.print(f"[bold red]error:[/] {error}; running the command again is safe")
        raise typer.Exit(1) from None
    finally:
        store.close()
    err.print(
        f"user {user}: read and write on keys starting with {prefix!r}, nothing else; "
        f"password in {_password_file(cluster.paths, user)}",
        highlight=False,
    )
    _print_connect(cluster, user, env=False)


def connect(
    name: Annotated[str, typer.Argument(help="etcd cluster name")],
    user: Annotated[str | None, typer.Option(help="a user made by `quorumkeeper user add`")] = None,
    env: Annotated[
        bool, typer.Option("--env", help="print ETCDCTL_* environment lines instead of flags")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Print how to connect etcdctl to the cluster: flags (`etcdctl $(quorumkeeper connect
    NAME --user USER) get --prefix KEY`) or, with --env, export lines."""
    cluster = _etcd_cluster(state_dir, name, "connect")
    spec = cluster.spec
    if user is not None:
        _check_user(user)
        if not _password_file(cluster.paths, user).is_file():
            raise _refuse(
                f"user: no user {user!r} in cluster {name}; fix: `quorumkeeper user add {name} "
                f"{user} --prefix PREFIX`"
            )
    elif spec.auth and not spec.tls:
        raise _refuse(
            f"user: cluster {name} runs with tls: false and auth: true: its root user is the "
            f"keeper's alone and users need TLS, so no client can get in; fix: create a cluster "
            f"with the defaults (TLS and auth on), or with `--no-tls --no-auth` for one any "
            f"client may use"
        )
    elif spec.auth:
        raise _refuse(
            f"user: cluster {name} asks clients to authenticate and its root user is the "
            f"keeper's alone; fix: `quorumkeeper user add {name} USER --prefix PREFIX`, then "
            f"`quorumkeeper connect {name} --user USER`"
        )
    _print_connect(cluster, user, env=env)


def _print_connect(cluster: LocalCluster, user: str | None, *, env: bool) -> None:
    spec = cluster.spec
    endpoints = [cluster.reconciler.desired.endpoint(n) for n in range(spec.members)]
    urls = ",".join(client_url(e.client_host, tls=spec.tls) for e in endpoints)
    settings = {"endpoints": urls}
    if cluster.authority is not None:
        files: TlsFiles = cluster.authority.client(user or KEEPER)
        settings |= {"cacert": str(files.trust), "cert": str(files.certificate)}
        settings["key"] = str(files.key)
    if env:
        for key, value in settings.items():
            out.print(f"export ETCDCTL_{key.upper()}={shlex.quote(value)}", highlight=False)
        return
    out.print(" ".join(f"--{key}={shlex.quote(value)}" for key, value in settings.items()))


def rotate_ca(
    name: Annotated[str, typer.Argument(help="cluster name")],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="return once the rotation is over")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 600.0,
    state_dir: StateDir = None,
) -> None:
    """Replace the cluster's certificate authority without downtime. The keeper restarts the
    members one at a time (the leader last) three times: trusting the old and the new CA,
    then serving certificates of the new one (the keeper's and the users' reissued too), then
    trusting the new one alone. Users' certificate files are rewritten in place."""
    cluster = _cluster(state_dir, name)
    authority = cluster.authority
    if authority is None:
        raise _refuse(
            f"cluster {name} runs with tls: false: it has no certificate authority to rotate"
        )
    if not authority.start_rotation():
        raise _refuse(
            f"a CA rotation of {name} is under way (phase {authority.rotation()}); fix: wait "
            f"until `quorumkeeper status {name}` no longer shows it"
        )
    err.print(f"CA rotation of {name} started: the keeper rolls it out", highlight=False)
    if not wait:
        return
    deadline = time.monotonic() + timeout
    ended: float | None = None  # when the last phase was seen over; its restarts follow
    while ended is None or not _rolled_out(cluster.paths, ended):
        if ended is None and authority.rotation() is None:
            ended = time.time()
        if time.monotonic() > deadline:
            phase = authority.rotation() or "the last round of restarts"
            err.print(
                f"[bold red]error:[/] the rotation is still in {phase} after {timeout:.0f}s; "
                f"the keeper goes on (see `quorumkeeper status {name}`)"
            )
            raise typer.Exit(1)
        time.sleep(1.0)  # the keeper advances a phase at most every 10 s
    err.print(f"CA rotation of {name} done: members trust the new CA only", highlight=False)


def _rolled_out(paths: ClusterPaths, since: float) -> bool:
    """Whether a status the keeper wrote after `since` (seconds since the epoch) shows the
    cluster Ready with every member on the current configuration: the keeper takes a phase's
    new configuration before its next pass, so any status after the phase ended reflects it."""
    status = paths.load_status() or {}
    members = status.get("members") or []
    return (
        float(status.get("updated_at", 0.0)) > since
        and status.get("phase") == "Ready"
        and status.get("rollout") is None
        and all(member.get("config") == "updated" for member in members)
    )
