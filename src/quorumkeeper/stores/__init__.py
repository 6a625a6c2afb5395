"""One module per coordination store behind `base.CoordinationStore`; `backend_for` picks one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from quorumkeeper import distributions
from quorumkeeper.spec import ClusterSpec, Store
from quorumkeeper.state import ensure_secret
from quorumkeeper.stores import etcd, zookeeper
from quorumkeeper.stores.base import CoordinationStore, Endpoint, JoinRules, MemberLauncher


@dataclass(frozen=True)
class Backend:
    """Everything the runtime, planner and CLI need to know about one store.

    `connect(endpoints)` opens the store on the known endpoints; `connect_string` turns member
    addresses into what a client is given; `answers(address)` tells whether the member there has
    loaded its data and answers, with or without a quorum; `ports` are those every member binds.
    """

    rules: JoinRules
    client_url: Callable[[str], str]
    connect_string: Callable[[Sequence[str]], str]
    connect: Callable[[list[Endpoint]], CoordinationStore]
    launcher: MemberLauncher
    answers: Callable[[str], bool]
    ports: tuple[int, ...]


def member_ports(store: Store) -> tuple[int, ...]:
    """The ports every member of `store` binds on its own address."""
    if store is Store.ETCD:
        return (etcd.CLIENT_PORT, etcd.PEER_PORT)
    return (zookeeper.CLIENT_PORT, zookeeper.QUORUM_PORT, zookeeper.ELECTION_PORT)


def check_installed(spec: ClusterSpec) -> None:
    """Raise `DistributionMissing`, with the command that fixes it, unless the store is there."""
    if spec.store is Store.ETCD:
        distributions.etcd_binary(spec.version)
    else:
        distributions.zookeeper_classpath(spec.version)


def backend_for(spec: ClusterSpec, cluster_root: Path) -> Backend:
    """The backend of `spec.store`; per-cluster secrets are kept under `cluster_root`."""
    if spec.store is Store.ETCD:
        token = f"{spec.name}-{ensure_secret(cluster_root / 'cluster-token')[:16]}"
        return Backend(
            rules=JoinRules(transfers_leadership=True),
            client_url=etcd.client_url,
            connect_string=lambda addresses: ",".join(map(etcd.client_url, addresses)),
            connect=etcd.EtcdStore,
            launcher=etcd.EtcdLauncher(distributions.etcd_binary(spec.version), spec.etcd, token),
            answers=etcd.answers,
            ports=member_ports(spec.store),
        )
    password = ensure_secret(cluster_root / "superuser")
    return Backend(
        rules=JoinRules(transfers_leadership=False),
        client_url=zookeeper.client_address,
        connect_string=lambda addresses: ",".join(map(zookeeper.client_address, addresses)),
        connect=lambda endpoints: zookeeper.ZookeeperStore(endpoints, password=password),
        launcher=zookeeper.ZookeeperLauncher(
            distributions.zookeeper_classpath(spec.version), spec.zookeeper, password
        ),
        answers=lambda address: zookeeper.server_state(address, 0.5) is not None,
        ports=member_ports(spec.store),
    )
