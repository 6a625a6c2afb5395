"""Real ZooKeeper JVMs through the local runtime, on 127.<test network>.110.x-140.x only.

Each test gets its own /24 from that range, so tests never share ports; every JVM a test starts
is stopped by PID at teardown, after a SIGCONT in case the test left it stopped. Ensembles run
as `up` makes them, with TLS and enforced authentication, unless a test asks for plain text.
"""

from __future__ import annotations

import itertools
import os
import signal
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quorumkeeper import versions
from quorumkeeper.certificates import TlsFiles
from quorumkeeper.model import Endpoint, Member, Peer, Role
from quorumkeeper.runtimes.local import distributions
from quorumkeeper.runtimes.local.authority import KEEPER, LocalAuthority
from quorumkeeper.runtimes.local.launchers import ZookeeperLauncher
from quorumkeeper.runtimes.local.state import ensure_secret
from quorumkeeper.spec import ZookeeperSettings
from quorumkeeper.stores.zookeeper.client import ZookeeperStore
from tests.local_runtime import spawner
from tests.polling import loopback_subnet, wait_until

SUBNETS = range(110, 141)
_subnets = itertools.cycle(SUBNETS)


class Ensemble:
    """One test cluster: endpoints `<subnet>.N`, a superuser password, started members; with
    `secure`, TLS from its own CA under `<root>/tls` and enforced authentication."""

    def __init__(
        self,
        root: Path,
        subnet: str,
        settings: ZookeeperSettings,
        version: str,
        name: str = "zk",
        *,
        secure: bool = True,
    ) -> None:
        self.subnet = subnet
        self.name = name
        self.password = ensure_secret(root / "superuser")
        self.authority = LocalAuthority(root / "tls", name) if secure else None
        self.tls: TlsFiles | None = self.authority.client(KEEPER) if self.authority else None
        """The keeper's client certificate; None for a plain-text ensemble."""
        self.words_tls: ssl.SSLContext | None = self.tls.client_context() if self.tls else None
        """What the four-letter words are asked with (`words.four_letter_word`)."""
        # Kept as its own type: the runtime knows it only as a MemberLauncher, and the tests
        # read ZooKeeper's files through it.
        self.launcher = ZookeeperLauncher(
            version, settings, self.password, self.authority, auth=secure
        )
        self.runtime = spawner(root / "members", self.launcher, name, subnet)
        self.started: set[Endpoint] = set()
        self._stores: list[ZookeeperStore] = []

    def endpoint(self, ordinal: int) -> Endpoint:
        return self.runtime.placement.endpoint(ordinal)

    def start(self, endpoint: Endpoint, peers: list[Peer], *, bootstrap: bool = False) -> int:
        argv = self.runtime.launcher.argv(
            endpoint, self.runtime.data_dir(endpoint), peers, bootstrap=bootstrap
        )
        self.started.add(endpoint)
        return self.runtime.spawn(endpoint, argv)

    def pid(self, endpoint: Endpoint) -> int:
        pid = self.runtime.pid(endpoint)
        assert pid is not None, f"{endpoint.name} is not running"
        return pid

    def store(self, members: list[Endpoint]) -> ZookeeperStore:
        store = ZookeeperStore(members, password=self.password, tls=self.tls)
        self._stores.append(store)
        return store

    def log(self, endpoint: Endpoint) -> str:
        return self.runtime.log_path(endpoint).read_text(errors="replace")

    def bootstrap(self) -> ZookeeperStore:
        """Start member 0 alone and wait until it leads."""
        first = self.endpoint(0)
        self.start(first, [Peer(first, member_id=None)], bootstrap=True)
        store = self.store([first])
        wait_until(
            lambda: healthy_roles(store) == {first.address: Role.LEADER}, 60, f"{first.name} leads"
        )
        return store

    def peers(self, store: ZookeeperStore, member: Member) -> list[Peer]:
        """What the planner's StartMember hands the launcher: the committed voters plus the
        member itself, each with its server id."""
        voters = [m for m in store.members() if m.voter and m.address != member.address]
        return [Peer(self.endpoint_at(m.address), m.id) for m in [*voters, member]]

    def join(self, store: ZookeeperStore, joiner: Endpoint) -> Member:
        """The join the planner makes: reserve an id, start with the committed members plus
        itself, wait until it is synced, promote. Returns the promoted member."""
        planned = store.add_learner(joiner)
        self.start(joiner, self.peers(store, planned))
        learner = wait_until(
            lambda: healthy_learner(store, joiner), 90, f"{joiner.name} is a synced learner"
        )
        store.promote(learner)
        return learner

    def endpoint_at(self, address: str) -> Endpoint:
        return self.endpoint(int(address.rsplit(".", 1)[1]) - 1)

    def stop(self, endpoint: Endpoint) -> None:
        pid = self.runtime.pid(endpoint)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        self.runtime.stop(endpoint, grace=5)

    def destroy(self) -> None:
        for store in self._stores:
            store.close()
        for endpoint in self.started:
            self.stop(endpoint)


def healthy_roles(store: ZookeeperStore) -> dict[str, Role]:
    try:
        return {m.address: m.role for m in store.members() if m.healthy}
    except Exception:  # a starting server may refuse sessions; the caller polls
        return {}


def healthy_learner(store: ZookeeperStore, joiner: Endpoint) -> Member | None:
    try:
        members = store.members()
    except Exception:
        return None
    return next(
        (
            m
            for m in members
            if m.address == joiner.address and m.role is Role.LEARNER and m.healthy
        ),
        None,
    )


TEST_SETTINGS = ZookeeperSettings(heap="128M")


@pytest.fixture
def ensemble_factory(tmp_path: Path) -> Iterator[Callable[..., Ensemble]]:
    made: list[Ensemble] = []

    def make(
        settings: ZookeeperSettings = TEST_SETTINGS,
        version: str = versions.ZOOKEEPER_VERSION,
        *,
        secure: bool = True,
    ) -> Ensemble:
        root = tmp_path / f"cluster-{len(made)}"
        subnet = loopback_subnet(next(_subnets))
        ensemble = Ensemble(root, subnet, settings, version, secure=secure)
        made.append(ensemble)
        return ensemble

    yield make
    for ensemble in made:
        ensemble.destroy()


@pytest.fixture(scope="session", autouse=True)
def zookeeper_fetched() -> None:
    """The pinned release in the cache (a no-op when present; ~40 s cold)."""
    distributions.fetch_zookeeper()
