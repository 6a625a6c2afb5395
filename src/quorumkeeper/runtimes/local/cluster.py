"""A local cluster: the shared reconciler composed with the local runtime, the spec file as its
desired state and status.json as its status."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from quorumkeeper.certificates import new_token_key
from quorumkeeper.reconciler import Reconciler, Snapshot
from quorumkeeper.runtimes.local.authority import KEEPER, LocalAuthority
from quorumkeeper.runtimes.local.clients import refresh_keystores
from quorumkeeper.runtimes.local.launchers import EtcdLauncher, MemberLauncher, ZookeeperLauncher
from quorumkeeper.runtimes.local.placement import LoopbackPlacement
from quorumkeeper.runtimes.local.processes import LocalRuntime
from quorumkeeper.runtimes.local.state import (
    ClusterPaths,
    FileIdentity,
    StatusWriter,
    ensure_secret,
    file_identity,
)
from quorumkeeper.spec import ClusterSpec, Store
from quorumkeeper.status import ClusterStatus
from quorumkeeper.stores import backend_for


class SpecFile:
    """The spec file as the desired-state source. It is parsed again only when it changed
    (commands replace it by a rename, so its inode changes), which spares the keeper a YAML
    parse every pass. A changed spec reaches the reconciler, which hands it to the runtime
    (`Runtime.configure`): members restarted from then on get its settings."""

    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        self._identity = file_identity(paths.spec_file)
        self._spec = paths.load_spec()

    def current(self) -> ClusterSpec:
        identity = file_identity(self.paths.spec_file)
        if identity != self._identity or identity is None:
            self._spec = self.paths.load_spec()
            self._identity = identity
        return self._spec


ROTATION_PHASE_SECONDS = 2.0
"""The least time a CA rotation stays in a phase: ZooKeeper members take a replaced trust
bundle or keystore through a file watcher, without a restart that would mark the phase rolled
out, so its next phase waits for that watcher too."""

OBSERVATION_TRIES = 3


def expiring_certificates(authority: LocalAuthority | None) -> list[dict[str, str]]:
    """Status's `certificates_expiring`: each certificate of the cluster within `RENEW_BEFORE`
    of its end (`file`, `not_after` in ISO 8601), soonest first; none without TLS."""
    if authority is None:
        return []
    return [
        {"file": file, "not_after": end.isoformat()}
        for file, end in authority.expiring(datetime.now(UTC))
    ]


class StatusFile:
    """status.json (and the connect string) as the status sink; see `StatusWriter`. Beside
    the reconciler's status it holds what the local keeper adds: `certificates_expiring` and
    `ca_rotation`, as its last certificate check found them (`LocalCluster.renew_certificates`)."""

    def __init__(self, paths: ClusterPaths) -> None:
        self.writer = StatusWriter(paths)
        self.certificates_expiring: list[dict[str, str]] = []
        self.ca_rotation: str | None = None

    def record(self, status: ClusterStatus) -> None:
        document = status.model_dump(mode="json")
        document["certificates_expiring"] = self.certificates_expiring
        document["ca_rotation"] = self.ca_rotation
        error = self.writer.record(document)
        if error is not None:
            raise error


def secret(paths: ClusterPaths, store: Store) -> str:
    """The cluster's own secret, made at its first use: etcd's cluster token (prefixed by the
    cluster's name), ZooKeeper's superuser password."""
    if store is Store.ETCD:
        return f"{paths.name}-{ensure_secret(paths.root / 'cluster-token')[:16]}"
    return ensure_secret(paths.root / "superuser")


def launcher_for(
    spec: ClusterSpec,
    cluster_secret: str,
    authority: LocalAuthority | None,
    token_key: Path | None = None,
) -> MemberLauncher:
    """The local launcher of `spec.store`; `authority` issues the members' certificates, None
    for a plain-text cluster; `token_key` signs etcd's authentication tokens (`token_key`)."""
    if spec.store is Store.ETCD:
        return EtcdLauncher(spec.version, spec.etcd, cluster_secret, authority, token_key)
    return ZookeeperLauncher(
        spec.version, spec.zookeeper, cluster_secret, authority, auth=spec.auth
    )


def authority_for(paths: ClusterPaths, spec: ClusterSpec) -> LocalAuthority | None:
    """The cluster's certificate authority when `spec.tls` is on."""
    return LocalAuthority(paths.tls_dir, spec.name) if spec.tls else None


def token_key(paths: ClusterPaths, spec: ClusterSpec) -> Path | None:
    """The file of the key etcd's members sign authentication tokens with, made at its first
    use (`tls/token-signing.key`, 0600): every member gets the same, so a token is good on all
    of them (`stores.etcd.config.token_flags`). None for ZooKeeper or with `auth: false`."""
    if spec.store is not Store.ETCD or not spec.auth:
        return None
    path = paths.tls_dir / "token-signing.key"
    paths.tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ensure_secret(path, new_token_key)
    return path


def root_password(paths: ClusterPaths, spec: ClusterSpec) -> str | None:
    """etcd's root password, made at its first use into `root-password` (0600), which only
    the keeper and the commands read; None for ZooKeeper or with `auth: false`."""
    if spec.store is Store.ETCD and spec.auth:
        return ensure_secret(paths.root / "root-password")
    return None


class LocalCluster:
    """One local cluster: its paths, its runtime and the reconciler that drives it."""

    def __init__(self, paths: ClusterPaths, *, hold_store: bool = False) -> None:
        """`hold_store`: keep the store client from one pass to the next (the keeper)."""
        self.paths = paths
        source = SpecFile(paths)
        spec = source.current()
        cluster_secret = secret(paths, spec.store)
        self.authority = authority = authority_for(paths, spec)
        keeper_tls = authority.client(KEEPER) if authority else None
        backend = backend_for(
            spec, cluster_secret, keeper_tls, root_password=root_password(paths, spec)
        )
        self.runtime = LocalRuntime(
            paths.members_root(spec),
            launcher_for(spec, cluster_secret, authority, token_key(paths, spec)),
            LoopbackPlacement(spec.name, spec.local.subnet),
            answers=backend.answers,
            ports=backend.ports,
            keep_removed_data=spec.local.keep_removed_data,
        )
        self.status_file = StatusFile(paths)
        self.reconciler = Reconciler(
            source, backend, self.runtime, self.status_file, hold_store=hold_store
        )

    @property
    def spec(self) -> ClusterSpec:
        return self.reconciler.spec

    def marks(self) -> tuple[FileIdentity | None, tuple[int | None, ...]]:
        """What changes without the store's knowing: the spec file (a command replaced it) and
        each member's process (one ended). Cheap: one stat(2) and the members' pid files."""
        pids = self.runtime.pids(self.runtime.endpoints())
        return file_identity(self.paths.spec_file), tuple(pids.values())

    @contextmanager
    def holding_store(self) -> Iterator[None]:
        """Observe through one store client kept open inside the block, as the keeper does (a
        command polling until the cluster matches its spec): a client made for each
        observation costs ZooKeeper a session opened and closed, two transactions, and a TLS
        handshake with every member it asks."""
        self.reconciler.hold_store = True
        try:
            yield
        finally:
            self.reconciler.hold_store = False
            self.reconciler.close()

    def observe(self) -> Snapshot:
        """The store's answers and the members' processes as of one moment, for a reader other
        than the keeper. The keeper may restart a member while the store is being asked (a
        rollout): the old process's answers would be paired with the new process, and a
        restart under way read as done (seen: `apply` returning while the restarted ZooKeeper
        leader was still starting). So when a member's process changed while it was observed,
        it is observed again, up to `OBSERVATION_TRIES` times."""
        for _ in range(OBSERVATION_TRIES):
            before = self.runtime.pids(self.runtime.endpoints())
            snapshot = self.reconciler.observe()
            after = {slot.endpoint: slot.pid for slot in snapshot.observation.slots}
            if all(after.get(endpoint, pid) == pid for endpoint, pid in before.items()):
                break
        return snapshot

    def renew_certificates(self) -> list[str]:
        """Keep the certificates current: reissue those within `RENEW_BEFORE` of their end
        (members with a folder, the keeper's and the users'), take a certificate authority
        changed on disk (`rotate-ca`, or a rotation `renew` began for a CA near its end), and
        move a CA rotation on once every member runs with its phase. After any of these the
        keeper's store client connects again with the files now on disk, and users' ZooKeeper
        keystores are written again from their certificates. Members whose launcher
        `reloads_certificates` (ZooKeeper) get their files where they run (at every check:
        only what differs is written) and take them without a restart; for the others the
        change is in the launcher's fingerprint (the authority's `generation`), and they
        restart onto it in order. What is still within `RENEW_BEFORE` of its end afterwards
        (the CA, or a certificate ending with it) goes into status.json from the next pass on.
        Returns what changed, for the log: the certificate files reissued and the rotation
        phase entered."""
        authority = self.authority
        if authority is None:
            return []
        endpoints = self.runtime.endpoints()
        changed = authority.renew(endpoints)
        self.status_file.certificates_expiring = expiring_certificates(authority)
        current = self.runtime.launcher.fingerprint() == self.reconciler.config
        last = self.reconciler.last_status
        rolled_out = last is not None and last.rolled_out()
        settled = authority.phase_age() >= ROTATION_PHASE_SECONDS
        if not changed and current and authority.rotation() is not None and rolled_out and settled:
            changed = [f"CA rotation: {authority.advance_rotation(endpoints)}"]
        self.status_file.ca_rotation = authority.rotation()
        if changed:
            refresh_keystores(authority)
        # At every check, not only after a change: a keeper killed between a reissue and these
        # writes finds nothing changed when it starts again.
        self.runtime.write_certificates()
        if changed or self.runtime.launcher.fingerprint() != self.reconciler.config:
            self.reconciler.reconfigure()
            self.reconciler.close()
        return changed
