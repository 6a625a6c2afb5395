"""A local cluster: the shared reconciler composed with the local runtime, the spec file as its
desired state and status.json as its status."""

from __future__ import annotations

from quorumkeeper.reconciler import Reconciler
from quorumkeeper.runtimes.local.authority import KEEPER, LocalAuthority
from quorumkeeper.runtimes.local.launchers import EtcdLauncher, MemberLauncher, ZookeeperLauncher
from quorumkeeper.runtimes.local.placement import LoopbackPlacement
from quorumkeeper.runtimes.local.processes import LocalRuntime
from quorumkeeper.runtimes.local.state import (
    ClusterPaths,
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


class StatusFile:
    """status.json (and the connect string) as the status sink; see `StatusWriter`."""

    def __init__(self, paths: ClusterPaths) -> None:
        self.writer = StatusWriter(paths)

    def record(self, status: ClusterStatus) -> None:
        error = self.writer.record(status.model_dump(mode="json"))
        if error is not None:
            raise error


def secret(paths: ClusterPaths, store: Store) -> str:
    """The cluster's own secret, made at its first use: etcd's cluster token (prefixed by the
    cluster's name), ZooKeeper's superuser password."""
    if store is Store.ETCD:
        return f"{paths.name}-{ensure_secret(paths.root / 'cluster-token')[:16]}"
    return ensure_secret(paths.root / "superuser")


def launcher_for(
    spec: ClusterSpec, cluster_secret: str, authority: LocalAuthority | None
) -> MemberLauncher:
    """The local launcher of `spec.store`; `authority` issues the members' certificates, None
    for a plain-text cluster."""
    if spec.store is Store.ETCD:
        return EtcdLauncher(spec.version, spec.etcd, cluster_secret, authority)
    return ZookeeperLauncher(
        spec.version, spec.zookeeper, cluster_secret, authority, auth=spec.auth
    )


def authority_for(paths: ClusterPaths, spec: ClusterSpec) -> LocalAuthority | None:
    """The cluster's certificate authority when `spec.tls` is on."""
    return LocalAuthority(paths.tls_dir, spec.name) if spec.tls else None


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
            launcher_for(spec, cluster_secret, authority),
            LoopbackPlacement(spec.name, spec.local.subnet),
            answers=backend.answers,
            ports=backend.ports,
            keep_removed_data=spec.local.keep_removed_data,
        )
        self.reconciler = Reconciler(
            source, backend, self.runtime, StatusFile(paths), hold_store=hold_store
        )

    @property
    def spec(self) -> ClusterSpec:
        return self.reconciler.spec

    def renew_certificates(self) -> list[str]:
        """Keep the members' certificates current: reissue those within `RENEW_BEFORE` of
        their end (members with a folder, and the keeper's), take a certificate authority
        changed on disk (`rotate-ca`), and move a CA rotation on once every member runs with
        its phase. Any of these changes the launcher's fingerprint (the authority's
        `generation`): members then restart onto it in order, and the keeper's store client
        connects again with the files now on disk. Returns what changed, for the log: the
        certificate files reissued and the rotation phase entered."""
        authority = self.authority
        if authority is None:
            return []
        endpoints = self.runtime.endpoints()
        changed = authority.renew(endpoints)
        current = self.runtime.launcher.fingerprint() == self.reconciler.config
        if not changed and current and authority.rotation() is not None and self._rolled_out():
            changed = [f"CA rotation: {authority.advance_rotation(endpoints)}"]
        if changed or self.runtime.launcher.fingerprint() != self.reconciler.config:
            self.reconciler.reconfigure()
            self.reconciler.close()
        return changed

    def _rolled_out(self) -> bool:
        """Whether the last pass saw every wanted member running the current configuration."""
        last = self.reconciler.last_status
        return (
            last is not None
            and last.phase == "Ready"
            and last.rollout is None
            and len(last.members) == last.desired_members
            and all(member.config == "updated" for member in last.members)
        )
