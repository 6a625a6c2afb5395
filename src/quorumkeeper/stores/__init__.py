"""One client module per coordination store behind `base.CoordinationStore`; `backend_for` picks
one and says what else the runtimes, planner and CLI need to know of it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quorumkeeper.certificates import ReloadingContext, TlsFiles
from quorumkeeper.model import Endpoint, JoinRules
from quorumkeeper.spec import ClusterSpec, Store
from quorumkeeper.stores.base import CoordinationStore
from quorumkeeper.stores.etcd import client as etcd
from quorumkeeper.stores.zookeeper import ensemble, words
from quorumkeeper.stores.zookeeper.client import ZookeeperStore


@dataclass(frozen=True)
class Backend:
    """Everything the runtimes, planner and CLI need to know about one store.

    `connect(endpoints)` opens the store on the known endpoints; `client_url` and
    `connect_string` say what a client is given for one member and for several; `answers`
    tells whether a member has loaded its data and answers, with or without a quorum; `ports`
    are those every member binds. `tls` is the client certificate the keeper connects with
    (None: the cluster speaks plain text) and `auth` whether clients must authenticate (for
    etcd: whether the keeper holds the root password, with which the reconciler turns
    authentication on, `CoordinationStore.secure`).
    """

    rules: JoinRules
    client_url: Callable[[Endpoint], str]
    connect_string: Callable[[Sequence[Endpoint]], str]
    connect: Callable[[list[Endpoint]], CoordinationStore]
    answers: Callable[[Endpoint], bool]
    ports: tuple[int, ...]
    tls: TlsFiles | None = None
    auth: bool = False


def member_ports(store: Store) -> tuple[int, ...]:
    """The ports every member of `store` binds on its own address."""
    if store is Store.ETCD:
        return (etcd.CLIENT_PORT, etcd.PEER_PORT)
    return (ensemble.CLIENT_PORT, ensemble.QUORUM_PORT, ensemble.ELECTION_PORT)


def backend_for(
    spec: ClusterSpec,
    secret: str,
    tls: TlsFiles | None = None,
    *,
    root_password: str | None = None,
) -> Backend:
    """The backend of `spec.store`. `secret` is the cluster's own secret, kept by its runtime:
    etcd's cluster token suffix, ZooKeeper's superuser password. `tls` is the keeper's client
    certificate when `spec.tls` is on, None otherwise. `root_password` is etcd's root user's,
    which the runtime keeps when `spec.auth` is on (None: no authentication to use or turn on).
    Raises OSError or `ssl.SSLError` for TLS files that can't be read."""
    if spec.store is Store.ETCD:
        contexts = ReloadingContext(tls) if tls else None

        def etcd_url(endpoint: Endpoint) -> str:
            return etcd.client_url(endpoint.client_host, tls=tls is not None)

        return Backend(
            rules=JoinRules(transfers_leadership=True),
            client_url=etcd_url,
            connect_string=lambda endpoints: ",".join(map(etcd_url, endpoints)),
            connect=lambda endpoints: etcd.EtcdStore(
                endpoints, tls=tls, root_password=root_password
            ),
            answers=lambda endpoint: etcd.answers(
                endpoint.address, context=contexts.get() if contexts else None
            ),
            ports=member_ports(spec.store),
            tls=tls,
            auth=root_password is not None,
        )

    def zookeeper_address(endpoint: Endpoint) -> str:
        return ensemble.client_address(endpoint.client_host)

    words_tls = None if tls is None else ReloadingContext(tls)

    return Backend(
        rules=JoinRules(transfers_leadership=False, refills_emptied_voter=True),
        client_url=zookeeper_address,
        connect_string=lambda endpoints: ",".join(map(zookeeper_address, endpoints)),
        connect=lambda endpoints: ZookeeperStore(endpoints, password=secret, tls=tls),
        answers=lambda endpoint: (
            words.server_state(
                endpoint.client_host, 0.5, tls=words_tls.get() if words_tls else None
            )
            is not None
        ),
        ports=member_ports(spec.store),
        tls=tls,
        auth=spec.auth,
    )
