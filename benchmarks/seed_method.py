"""The seed's way of changing membership and settings: the benchmark's baseline.

Every member starts from a static member list. A change is made by hand (etcd: `member add` or
`member remove`; ZooKeeper has nothing to call, its list lives only in zoo.cfg) and loaded by
restarting every member, one at a time in ordinal order, with the new list, as a StatefulSet's
rolling update does. A settings change is a StatefulSet RollingUpdate done by hand
(`roll_out`): highest ordinal first, the leader wherever it falls, each member gated on the
seed's readiness probe before the next.
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any

import httpx

from quorumkeeper import versions
from quorumkeeper.model import Endpoint, Peer
from quorumkeeper.planner import Desired
from quorumkeeper.runtimes.local.launchers import EtcdLauncher, MemberLauncher, ZookeeperLauncher
from quorumkeeper.runtimes.local.state import ensure_secret
from quorumkeeper.spec import EtcdSettings, ZookeeperSettings
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.etcd.client import EtcdStore, client_url, peer_url
from quorumkeeper.stores.zookeeper import ensemble, words
from tests.acceptance.harness import LocalClusterUnderTest
from tests.local_runtime import spawner
from tests.polling import wait_until


class SeedMethod(abc.ABC):
    """A cluster run the seed's way on `subnet`; `cluster` gives the benchmark's writer and
    checks their view of it."""

    store: str

    def __init__(self, subnet: str, workdir: Path) -> None:
        self.cluster = LocalClusterUnderTest(self.store, "seed", subnet, workdir)
        self.runtime = spawner(self.cluster.paths.root / "members", self.launcher(), "seed", subnet)
        self.desired = Desired(members=9, placement=self.runtime.placement)
        self.members: list[Endpoint] = []

    @abc.abstractmethod
    def launcher(self) -> MemberLauncher:
        """Starts a member with `self.members` as its static list."""

    @abc.abstractmethod
    def register(self, endpoint: Endpoint) -> None:
        """Tell the running cluster about a new member by hand, before it starts."""

    @abc.abstractmethod
    def unregister(self, endpoint: Endpoint) -> None:
        """Tell the running cluster a member leaves, before it stops."""

    def start(self, endpoint: Endpoint, *, bootstrap: bool = False) -> None:
        peers = [Peer(member, member_id=None) for member in self.members]
        self.runtime.start(endpoint, peers, bootstrap=bootstrap)

    def voters(self) -> set[str]:
        """Addresses of the healthy voters, as the cluster's leader lists them."""
        store = self.cluster.client(timeout=0.5)
        try:
            return {m.address for m in store.members() if m.voter and m.healthy}
        except StoreError:
            return set()
        finally:
            store.close()

    def leader(self) -> Endpoint:
        store = self.cluster.client(timeout=1.0)
        try:
            leader = next(m for m in store.members() if m.role.value == "leader")
        finally:
            store.close()
        return next(e for e in self.members if e.address == leader.address)

    def wait_voter(self, endpoint: Endpoint) -> None:
        wait_until(lambda: endpoint.address in self.voters(), 90, f"{endpoint.name} votes")

    def wait_ready(self, endpoint: Endpoint) -> None:
        """What a rolling restart waits for before it restarts the next member."""
        self.wait_voter(endpoint)

    def bootstrap(self, count: int) -> None:
        self.members = [self.desired.endpoint(n) for n in range(count)]
        for endpoint in self.members:
            self.start(endpoint, bootstrap=True)
        for endpoint in self.members:
            self.wait_voter(endpoint)

    def grow(self, count: int) -> float:
        """Add members up to `count`, start them, restart everyone with the new list. Returns
        the longest time from a new member's start to it being a healthy voter."""
        joined: dict[str, float] = {}
        started: dict[str, float] = {}
        for ordinal in range(len(self.members), count):
            endpoint = self.desired.endpoint(ordinal)
            self.register(endpoint)
            self.members.append(endpoint)
            started[endpoint.address] = time.monotonic()
            self.start(endpoint)
        self._note_voters(started, joined)
        for endpoint in list(self.members):
            self._restart(endpoint)
        for endpoint in self.members:
            self.wait_voter(endpoint)
            self._note_voters(started, joined)
        wait_until(lambda: self._note_voters(started, joined), 90, "every new member votes")
        return max(joined[address] - started[address] for address in started)

    def shrink(self, count: int) -> None:
        """Remove the highest ordinals down to `count`, stop them, restart the rest."""
        while len(self.members) > count:
            endpoint = self.members.pop()
            self.unregister(endpoint)
            self.runtime.stop(endpoint)
        for endpoint in list(self.members):
            self._restart(endpoint)
        for endpoint in self.members:
            self.wait_voter(endpoint)

    def roll_out(self, fields: dict[str, Any]) -> None:
        """A StatefulSet RollingUpdate after the pod template's settings changed to `fields`
        (the store's section, e.g. `{"snapshot_count": 5000}`): every member restarted with
        them from the highest ordinal down, whichever one leads, each gated on `wait_ready`.
        Source: the Kubernetes API's StatefulSetUpdateStrategy (apps/v1): RollingUpdate
        recreates one pod at a time from the largest ordinal to the smallest and waits for each
        updated pod to be Running and Ready before the next."""
        self.change_settings(fields)
        self.runtime.launcher = self.launcher()
        for endpoint in reversed(self.members):
            self._restart(endpoint)

    @abc.abstractmethod
    def change_settings(self, fields: dict[str, Any]) -> None:
        """Take `fields` into the settings `launcher` starts members with; raises pydantic's
        ValidationError on a value the store's settings refuse."""

    def _restart(self, endpoint: Endpoint) -> None:
        self.runtime.stop(endpoint)
        self.start(endpoint)
        self.wait_ready(endpoint)

    def _note_voters(self, started: dict[str, float], joined: dict[str, float]) -> bool:
        """Record when each new member is first seen voting; true once all of them are."""
        now = time.monotonic()
        for address in self.voters() & started.keys():
            joined.setdefault(address, now)
        return joined.keys() == started.keys()

    def stop_all(self) -> None:
        for endpoint in self.runtime.endpoints():
            self.runtime.stop(endpoint, grace=5)


class EtcdSeedMethod(SeedMethod):
    """etcd with `--initial-cluster` lists, members added and removed by hand."""

    store = "etcd"
    settings = EtcdSettings()

    def __init__(self, subnet: str, workdir: Path) -> None:
        super().__init__(subnet, workdir)
        self.http = httpx.Client(timeout=5)

    def launcher(self) -> MemberLauncher:
        return EtcdLauncher(versions.ETCD_VERSION, self.settings, "seed-baseline")

    def change_settings(self, fields: dict[str, Any]) -> None:
        self.settings = EtcdSettings.model_validate({**self.settings.model_dump(), **fields})

    def register(self, endpoint: Endpoint) -> None:
        def member_add() -> bool:
            reply = self.http.post(
                f"{client_url(self.members[0].address)}/v3/cluster/member/add",
                json={"peerURLs": [peer_url(endpoint.address)]},
            )
            return reply.status_code == 200

        wait_until(member_add, 60, f"{endpoint.name} added")

    def unregister(self, endpoint: Endpoint) -> None:
        """Retried while etcd calls the cluster too fresh for a removal."""

        def member_remove() -> bool:
            store = EtcdStore(self.members)
            try:
                member = next(m for m in store.members() if m.address == endpoint.address)
                store.remove(member)
            except StoreError:
                return False
            finally:
                store.close()
            return True

        wait_until(member_remove, 60, f"{endpoint.name} removed")


class StaticZookeeperLauncher(ZookeeperLauncher):
    """ZooKeeper as the seed ran it: the whole server list in zoo.cfg, reconfig off, myid from
    the ordinal, and zoo.cfg written afresh with the current list at every start."""

    def argv(
        self, endpoint: Endpoint, data_dir: Path, peers: list[Peer], *, bootstrap: bool
    ) -> list[str]:
        servers = {
            f"server.{peer.endpoint.ordinal + 1}": (
                f"{peer.endpoint.address}:{ensemble.QUORUM_PORT}:{ensemble.ELECTION_PORT}"
            )
            for peer in peers
        }
        config = {
            **self.server_config(
                data_dir, endpoint.ordinal + 1, dynamic_file=None, address=endpoint.address
            ),
            "clientPortAddress": endpoint.address,
            "clientPort": ensemble.CLIENT_PORT,
            **servers,
        }
        self.write_zoo_cfg(data_dir, config)
        return self.command(data_dir)


class ZookeeperSeedMethod(SeedMethod):
    """ZooKeeper with static lists; the superuser only lets the benchmark's client read the
    same way it does against quorumkeeper's clusters."""

    store = "zookeeper"
    settings = ZookeeperSettings()

    def register(self, endpoint: Endpoint) -> None:
        """Nothing to call: the list lives only in every server's zoo.cfg."""

    def unregister(self, endpoint: Endpoint) -> None:
        """Nothing to call: the list lives only in every server's zoo.cfg."""

    def wait_ready(self, endpoint: Endpoint) -> None:
        """The seed's readiness probe, `ruok`: a server answers it while it still looks for a
        leader, so the rolling restart moves on before the restarted server has rejoined (the
        seed's probe also waited 10 s before its first check; that delay is left out here)."""

        def imok() -> bool:
            try:
                return words.four_letter_word(endpoint.address, "ruok", 0.5) == "imok"
            except OSError:
                return False

        wait_until(imok, 60, f"{endpoint.name} answers ruok")

    def launcher(self) -> MemberLauncher:
        password = ensure_secret(self.cluster.paths.root / "superuser")
        return StaticZookeeperLauncher(versions.ZOOKEEPER_VERSION, self.settings, password)

    def change_settings(self, fields: dict[str, Any]) -> None:
        self.settings = ZookeeperSettings.model_validate({**self.settings.model_dump(), **fields})


def seed_method(store: str, subnet: str, workdir: Path) -> SeedMethod:
    kind = EtcdSeedMethod if store == "etcd" else ZookeeperSeedMethod
    return kind(subnet, workdir)
