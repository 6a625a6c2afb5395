"""One module per coordination store behind `base.CoordinationStore`; `backend_for` picks one."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quorumkeeper import distributions
from quorumkeeper.spec import ClusterSpec, Store
from quorumkeeper.stores import etcd
from quorumkeeper.stores.base import CoordinationStore, Endpoint, JoinRules, MemberLauncher


@dataclass(frozen=True)
class Backend:
    """Everything the runtime, planner and CLI need to know about one store."""

    rules: JoinRules
    client_url: Callable[[str], str]
    connect: Callable[[list[Endpoint]], CoordinationStore]
    launcher: MemberLauncher


def member_ports(store: Store) -> tuple[int, ...]:
    """The ports every member of `store` binds on its own address."""
    if store is Store.ETCD:
        return (etcd.CLIENT_PORT, etcd.PEER_PORT)
    raise NotImplementedError(f"store {store} has no backend yet")


def _secret(path: Path, make: Callable[[], str]) -> str:
    """A per-cluster secret, created once and readable by its owner only."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(make())
    return path.read_text().strip()


def backend_for(spec: ClusterSpec, cluster_root: Path) -> Backend:
    """The backend of `spec.store`; per-cluster secrets are kept under `cluster_root`."""
    if spec.store is Store.ETCD:
        token = _secret(
            cluster_root / "cluster-token", lambda: f"{spec.name}-{secrets.token_hex(8)}"
        )
        return Backend(
            rules=JoinRules(add_before_start=True, transfers_leadership=True),
            client_url=etcd.client_url,
            connect=etcd.EtcdStore,
            launcher=etcd.EtcdLauncher(distributions.etcd_binary(spec.version), spec.etcd, token),
        )
    raise NotImplementedError(f"store {spec.store} has no backend yet")
