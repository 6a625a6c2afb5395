"""`quorumkeeper user add`, `connect` and `rotate-ca`: least-privilege users of etcd and
ZooKeeper, how a client connects to a secured cluster, and a new certificate authority for a
cluster of either store.

A user is limited to one prefix (`CoordinationStore.grant_prefix`): on etcd a role of its own name
with read and write on a key prefix; on ZooKeeper a digest user with every right on one znode,
below which it creates, reads, writes and deletes. It gets a generated password
(`<state>/<name>/tls/<user>.password`, 0600) and a client certificate with its name as common
name (`tls/client-<user>.crt`), which etcd takes as the user over gRPC, so `etcdctl` works with
the certificate alone; a ZooKeeper session authenticates with the password
(`addauth digest user:password`) before anything else. The administrator (etcd's root user,
ZooKeeper's superuser) stays the keeper's.

Exit codes: 0 done, 1 the store failed (running again is safe: every step is idempotent), 2
refused (bad input; `user add` and `connect --user` on a cluster without TLS or authentication),
nothing changed.
"""

from __future__ import annotations

import http.client
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from quorumkeeper.certificates import ROTATION_PHASES, ROTATION_ROUNDS
from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.local.authority import KEEPER
from quorumkeeper.runtimes.local.clients import java_client, password_file, users
from quorumkeeper.runtimes.local.cluster import LocalCluster
from quorumkeeper.runtimes.local.state import (
    ClusterPaths,
    cluster_names,
    default_state_dir,
    ensure_secret,
)
from quorumkeeper.spec import Store
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.users import check_user
from quorumkeeper.stores.zookeeper.client import kazoo_tls

user_app = typer.Typer(
    help="Least-privilege users: an etcd key prefix or a ZooKeeper znode each.",
    no_args_is_help=True,
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

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


def _check_user(user: str) -> None:
    try:
        check_user(user)
    except ValueError as error:
        raise _refuse(str(error)) from None


def _administrator(store: Store) -> str:
    return "its root user is" if store is Store.ETCD else "its superuser is"


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="cluster name")],
    user: Annotated[str, typer.Argument(help="user name, e.g. orders-app (etcd: its role's too)")],
    prefix: Annotated[
        str,
        typer.Option(help="etcd: the key prefix (orders/); ZooKeeper: the znode (/orders)"),
    ],
    state_dir: StateDir = None,
) -> None:
    """Create (or bring up to date) USER with rights on --prefix only (etcd: read and write on
    the keys under it; ZooKeeper: every right on the znode, below which it creates, reads,
    writes and deletes), a generated password and a client certificate; then print how to
    connect."""
    _check_user(user)
    cluster = _cluster(state_dir, name)
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
    store = cluster.reconciler.backend.connect(_endpoints(cluster))
    try:
        try:
            store.check_grant(user, prefix)
        except ValueError as error:
            raise _refuse(str(error)) from None
        password = ensure_secret(password_file(cluster.paths, user))
        cluster.authority.client(user)
        store.secure()  # the keeper's, idempotent: done here too, since the user relies on it
        store.grant_prefix(user, password, prefix)
    except (StoreError, OSError, http.client.HTTPException) as error:
        err.print(f"[bold red]error:[/] {error}; running the command again is safe")
        raise typer.Exit(1) from None
    finally:
        store.close()
    rights = (
        "read and write on keys starting with"
        if spec.store is Store.ETCD
        else "create, read, write and delete on and below znode"
    )
    err.print(
        f"user {user}: {rights} {prefix!r}, nothing else; password in "
        f"{password_file(cluster.paths, user)}",
        highlight=False,
    )
    _print_connect(cluster, user, env=False)


def connect(
    name: Annotated[str, typer.Argument(help="cluster name")],
    user: Annotated[str | None, typer.Option(help="a user made by `quorumkeeper user add`")] = None,
    env: Annotated[
        bool,
        typer.Option("--env", help="print export lines (ETCDCTL_*, ZooKeeper's) instead of flags"),
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Print how to connect to the cluster. etcd: etcdctl's flags (`etcdctl $(quorumkeeper
    connect NAME --user USER) get --prefix KEY`). ZooKeeper: zkCli.sh's arguments (`zkCli.sh
    $(quorumkeeper connect NAME --user USER)`), then on stderr the `addauth` to type first and a
    kazoo snippet. With --env, export lines. Without --user on a cluster that asks clients to
    authenticate, the cluster's users."""
    cluster = _cluster(state_dir, name)
    spec = cluster.spec
    known = users(cluster.paths)
    if user is not None:
        _check_user(user)
        if user not in known:
            raise _refuse(
                f"user: no user {user!r} in cluster {name} (its users: "
                f"{', '.join(known) or 'none yet'}); fix: `quorumkeeper user add {name} "
                f"{user} --prefix PREFIX`"
            )
    elif spec.auth and not spec.tls:
        raise _refuse(
            f"user: cluster {name} runs with tls: false and auth: true: "
            f"{_administrator(spec.store)} the keeper's alone and users need TLS, so no client "
            f"can get in; fix: create a cluster with the defaults (TLS and auth on), or with "
            f"`--no-tls --no-auth` for one any client may use"
        )
    elif spec.auth and known:
        raise _refuse(
            f"user: cluster {name} asks clients to authenticate; its users: "
            f"{', '.join(known)}; fix: `quorumkeeper connect {name} --user {known[0]}`"
        )
    elif spec.auth:
        raise _refuse(
            f"user: cluster {name} asks clients to authenticate, {_administrator(spec.store)} "
            f"the keeper's alone and it has no users yet; fix: `quorumkeeper user add {name} "
            f"USER --prefix PREFIX`, then `quorumkeeper connect {name} --user USER`"
        )
    _print_connect(cluster, user, env=env)


def _print_connect(cluster: LocalCluster, user: str | None, *, env: bool) -> None:
    if cluster.spec.store is Store.ETCD:
        _print_etcdctl(cluster, user, env=env)
    else:
        _print_zookeeper(cluster, user, env=env)


def _endpoints(cluster: LocalCluster) -> list[Endpoint]:
    """The members the spec asks for, where they are or will be."""
    return [cluster.reconciler.desired.endpoint(n) for n in range(cluster.spec.members)]


def _connect_string(cluster: LocalCluster) -> str:
    return cluster.reconciler.backend.connect_string(_endpoints(cluster))


def _print_etcdctl(cluster: LocalCluster, user: str | None, *, env: bool) -> None:
    settings = {"endpoints": _connect_string(cluster)}
    if cluster.authority is not None:
        files = cluster.authority.client(user or KEEPER)
        settings |= {"cacert": str(files.trust), "cert": str(files.certificate)}
        settings["key"] = str(files.key)
    if env:
        for key, value in settings.items():
            out.print(f"export ETCDCTL_{key.upper()}={shlex.quote(value)}", highlight=False)
        return
    out.print(" ".join(f"--{key}={shlex.quote(value)}" for key, value in settings.items()))


def _print_zookeeper(cluster: LocalCluster, user: str | None, *, env: bool) -> None:
    """zkCli.sh's arguments on stdout (`-client-configuration` names the Java client's TLS
    settings, written for the user, `clients.java_client`), and on stderr the `addauth` a
    session must send first and a kazoo snippet; with `env`, export lines: the servers,
    zkCli.sh's `CLIENT_JVMFLAGS` (the same settings as system properties), the certificate
    files and the password's file."""
    servers = _connect_string(cluster)
    authority = cluster.authority
    client = None if authority is None else java_client(authority, user or KEEPER)
    login = None if user is None else (user, password_file(cluster.paths, user))
    if env:
        settings = {"ZOOKEEPER_SERVERS": servers}
        if client is not None:
            flags = " ".join(f"-D{key}={value}" for key, value in client.settings().items())
            settings |= {
                "CLIENT_JVMFLAGS": flags,
                "ZOOKEEPER_CA": str(client.tls.trust),
                "ZOOKEEPER_CERT": str(client.tls.certificate),
                "ZOOKEEPER_KEY": str(client.tls.key),
            }
        if login is not None:
            settings |= {"ZOOKEEPER_USER": login[0], "ZOOKEEPER_PASSWORD_FILE": str(login[1])}
        for key, value in settings.items():
            out.print(f"export {key}={shlex.quote(value)}", highlight=False)
        return
    arguments = [] if client is None else ["-client-configuration", str(client.properties)]
    out.print(shlex.join([*arguments, "-server", servers]), highlight=False)
    kazoo = [f"hosts={servers!r}"]
    if client is not None:
        kazoo += [f"{key}={value!r}" for key, value in kazoo_tls(client.tls).items()]
    if login is not None:
        name, password = login
        err.print(
            f"in zkCli.sh, first: addauth digest {name}:PASSWORD (PASSWORD: the content of "
            f"{password}); create znodes with the ACL auth::cdrwa to keep them yours",
            highlight=False,
            markup=False,
        )
        kazoo.append(
            f"auth_data=[('digest', {name + ':'!r} + Path({str(password)!r}).read_text().strip())]"
        )
    mine = "\n# keep what you create yours: client.create(path, value, acl=CREATOR_ALL_ACL)"
    err.print(
        "kazoo (Python):\nfrom pathlib import Path\nfrom kazoo.client import KazooClient\n"
        "from kazoo.security import CREATOR_ALL_ACL\n"
        f"client = KazooClient({', '.join(kazoo)})\nclient.start()" + (mine if login else ""),
        highlight=False,
        markup=False,
    )


def rotate_ca(
    name: Annotated[str, typer.Argument(help="cluster name")],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="return once the rotation is over")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 600.0,
    state_dir: StateDir = None,
) -> None:
    """Replace the cluster's certificate authority, without downtime from three members up.
    The keeper restarts the members one at a time (the leader last) three times: trusting the
    old and the new CA, then serving certificates of the new one (the keeper's and the users'
    reissued too), then trusting the new one alone. Users' certificate files are rewritten in
    place; copies made elsewhere must be made again."""
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
    if cluster.spec.members < 3:
        err.print(
            f"[yellow]warning:[/] {name} has {cluster.spec.members} member(s): each of the three "
            "rounds of restarts leaves it without a quorum for a moment",
            highlight=False,
        )
    if not wait:
        return
    deadline = time.monotonic() + timeout
    shown: str | None = None
    while (phase := authority.rotation()) is not None:
        if phase != shown:
            step = ROTATION_PHASES.index(phase) + 1
            err.print(
                f"round {step} of {len(ROTATION_PHASES)}: {ROTATION_ROUNDS[phase]}",
                highlight=False,
            )
            shown = phase
        if time.monotonic() > deadline:
            err.print(
                f"[bold red]error:[/] the rotation is still in {phase} after {timeout:.0f}s; "
                f"the keeper goes on (see `quorumkeeper status {name}`)"
            )
            raise typer.Exit(1)
        time.sleep(1.0)  # the keeper advances a phase at most every 10 s
    err.print(f"CA rotation of {name} done: members trust the new CA only", highlight=False)
