"""Real ensembles: bootstrap from one, grow by the ZooKeeper join flow, shrink by reconfig."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from kazoo.exceptions import ConnectionLoss  # type: ignore[import-untyped]

from quorumkeeper import versions
from quorumkeeper.model import Member, Peer, Role
from quorumkeeper.stores.base import NotCaughtUp, StoreError, StoreUnavailable
from quorumkeeper.stores.zookeeper.client import ZookeeperStore
from quorumkeeper.stores.zookeeper.ensemble import next_server_id
from quorumkeeper.stores.zookeeper.words import ServerState, server_state
from tests.polling import wait_until
from tests.zookeeper.conftest import Ensemble, healthy_learner

pytestmark = pytest.mark.zookeeper


def _voters(store: ZookeeperStore) -> dict[str, Role]:
    return {m.address: m.role for m in store.members() if m.voter}


def _member(store: ZookeeperStore, address: str) -> Member:
    return next(m for m in store.members() if m.address == address)


def _one_leader(store: ZookeeperStore, addresses: set[str]) -> dict[str, Role] | None:
    try:
        roles = {m.address: m.role for m in store.members() if m.healthy}
    except StoreError:
        return None
    leaders = [a for a, r in roles.items() if r is Role.LEADER]
    return roles if set(roles) == addresses and len(leaders) == 1 else None


def test_grow_to_three_then_remove_a_follower_and_the_leader(
    ensemble_factory: Callable[..., Ensemble],
) -> None:
    ensemble = ensemble_factory()
    zero, one, two = (ensemble.endpoint(n) for n in range(3))
    store = ensemble.bootstrap()
    store.write_probe("before-growth", "1")

    # add_learner reserves a server id and leaves the committed config as it was; members()
    # lists the reservation as a learner that has not started, and a second call returns it.
    version = store.committed_config().version
    planned = store.add_learner(one)
    assert (planned.id, planned.role, planned.started) == ("2", Role.LEARNER, False)
    assert store.committed_config().version == version
    assert _member(store, one.address) == planned
    assert store.add_learner(one) == planned

    # A joiner that is not running cannot be promoted.
    with pytest.raises(NotCaughtUp):
        store.promote(planned)

    assert ensemble.join(store, one).id == "2"
    assert ensemble.join(store, two).id == "3"
    grown = ensemble.store([zero, one, two])
    roles = wait_until(
        lambda: _one_leader(grown, {zero.address, one.address, two.address}), 60, "3 voters"
    )
    assert sorted(roles.values()) == [Role.FOLLOWER, Role.FOLLOWER, Role.LEADER]
    assert all(m.started and m.applied_index for m in grown.members())
    assert grown.read("before-growth") == "1"
    for n in range(20):
        grown.write_probe(f"k-{n}", str(n))

    # ZooKeeper has no leadership transfer; the store says so instead of pretending.
    leader = next(m for m in grown.members() if m.role is Role.LEADER)
    follower = next(m for m in grown.members() if m.role is Role.FOLLOWER)
    with pytest.raises(StoreError) as refused:
        grown.transfer_leadership(leader, follower)
    assert not refused.value.retryable

    # A wrong superuser password is refused for good, and changes nothing.
    intruder = ensemble.store([zero, one, two])
    intruder._password = "wrong"
    with pytest.raises(StoreError) as denied:
        intruder.remove(follower)
    assert not denied.value.retryable
    assert len(grown.committed_config().servers) == 3

    # A client that keeps its session reads the config again only after a transaction, so it
    # sees a removal made by another client at once.
    watcher = ensemble.store([zero, one, two])
    for _ in range(3):  # the first read keeps the config, the next ones reuse it
        assert follower.address in {m.address for m in watcher.members()}

    # A follower's mntr is read again only once its zxid moved, and then shows the new size.
    known = server_state(follower.address, 1.0, tls=ensemble.words_tls)
    assert known is not None and known.mode == "follower" and known.data_bytes is not None
    assert server_state(follower.address, 1.0, known, ensemble.words_tls) is known
    grown.write_probe("larger", "x" * 1000)

    def applied() -> ServerState | None:
        state = server_state(follower.address, 1.0, known, ensemble.words_tls)
        return state if state and state.zxid != known.zxid else None

    after = wait_until(applied, 10, "the follower applies the write")
    assert after.data_bytes is not None and after.data_bytes >= known.data_bytes + 1000

    # Remove a follower: it leaves the config but keeps running and serving until stopped.
    grown.remove(follower)
    assert follower.address not in _voters(grown)
    assert follower.address not in [m.address for m in watcher.members()]
    grown.remove(follower)  # idempotent: already gone
    left = server_state(follower.address, 1.0, tls=ensemble.words_tls)
    assert left is not None and left.serving
    ensemble.stop(ensemble.endpoint_at(follower.address))

    # Remove the leader through a client connected to the leader only: the leader may answer
    # before it steps down (3.9.5 does on loopback) or drop the connection first.
    only_leader = ensemble.store([ensemble.endpoint_at(leader.address)])
    only_leader.remove(leader)
    survivor = ({zero.address, one.address, two.address} - {leader.address, follower.address}).pop()
    rest = ensemble.store([ensemble.endpoint_at(survivor)])
    wait_until(lambda: _one_leader(rest, {survivor}), 60, "the survivor leads")
    assert [m.address for m in rest.members()] == [survivor]
    assert [rest.read(f"k-{n}") for n in range(20)] == [str(n) for n in range(20)]
    rest.write_probe("after-shrink", "ok")
    assert rest.read("after-shrink") == "ok"


def test_stale_from_config_is_refused_and_retryable(
    ensemble_factory: Callable[..., Ensemble], monkeypatch: pytest.MonkeyPatch
) -> None:
    ensemble = ensemble_factory()
    zero, one, two = (ensemble.endpoint(n) for n in range(3))
    store = ensemble.bootstrap()
    ensemble.join(store, one)
    stale = store.committed_config()
    ensemble.join(store, two)
    store = ensemble.store([zero, one, two])
    assert len(store.committed_config().servers) == 3

    victim = _member(store, one.address)  # listed in the stale config too
    monkeypatch.setattr(store, "committed_config", lambda **_: stale)
    with pytest.raises(StoreError, match="changed since") as refused:
        store.remove(victim)
    assert refused.value.retryable
    monkeypatch.undo()
    assert len(store.committed_config().servers) == 3


def test_connection_loss_during_reconfig_rereads_the_config(
    ensemble_factory: Callable[..., Ensemble], monkeypatch: pytest.MonkeyPatch
) -> None:
    ensemble = ensemble_factory()
    zero, one, two = (ensemble.endpoint(n) for n in range(3))
    store = ensemble.bootstrap()
    ensemble.join(store, one)
    ensemble.join(store, two)
    store = ensemble.store([zero, one, two])
    client = store._connected()
    real_reconfig = client.reconfig_async

    def lost_before_sending(*_: object) -> None:
        raise ConnectionLoss()

    monkeypatch.setattr(client, "reconfig_async", lost_before_sending)
    with pytest.raises(StoreError, match="not in the committed config") as interrupted:
        store.remove(_member(store, two.address))
    assert interrupted.value.retryable
    assert len(store.committed_config().servers) == 3

    def lost_after_applying(*args: object) -> None:
        real_reconfig(*args).get(timeout=10)
        raise ConnectionLoss()

    monkeypatch.setattr(client, "reconfig_async", lost_after_applying)
    store.remove(_member(store, two.address))  # applied: the re-read says so, no error
    assert two.address not in _voters(store)


def test_restart_with_data_keeps_or_repairs_the_rewritten_config(
    ensemble_factory: Callable[..., Ensemble],
) -> None:
    ensemble = ensemble_factory()
    zero, one = ensemble.endpoint(0), ensemble.endpoint(1)
    launcher = ensemble.launcher
    store = ensemble.bootstrap()
    ensemble.join(store, one)
    zoo_cfg = launcher.conf_dir(ensemble.runtime.data_dir(one)) / "zoo.cfg"
    data_dir = ensemble.runtime.data_dir(one)
    wait_until(lambda: launcher.lists_itself(zoo_cfg, data_dir), 30, "ZooKeeper wrote its config")
    rewritten = zoo_cfg.read_text()
    assert "zoo.cfg.dynamic.1" in rewritten  # versioned: ZooKeeper's own file, not ours
    both = ensemble.store([zero, one])
    peers = ensemble.peers(both, _member(both, one.address))

    # Restart with data: peers are ignored and ZooKeeper's zoo.cfg is kept byte for byte.
    ensemble.stop(one)
    assert launcher.has_data(ensemble.runtime.data_dir(one))
    ensemble.start(one, peers)
    assert zoo_cfg.read_text() == rewritten
    wait_until(lambda: _one_leader(both, {zero.address, one.address}), 60, "it rejoins")

    # Stopped after acking its own addition but before writing the new config: zoo.cfg points
    # at a config without it, which ZooKeeper refuses. Only the dynamic file is repaired.
    ensemble.stop(one)
    stale = zoo_cfg.with_name("zoo.cfg.dynamic.stale")
    stale.write_text(f"server.1={zero.address}:2888:3888:participant;{zero.address}:2181\n")
    zoo_cfg.write_text(rewritten.replace(str(launcher.dynamic_config_path(zoo_cfg)), str(stale)))
    assert not launcher.lists_itself(zoo_cfg, data_dir)
    ensemble.start(one, peers)
    assert launcher.lists_itself(zoo_cfg, data_dir)
    assert "tickTime=2000" in zoo_cfg.read_text()
    wait_until(lambda: _one_leader(both, {zero.address, one.address}), 60, "it rejoins again")
    assert {m.address for m in both.members() if m.voter} == {zero.address, one.address}


def test_debian_380_boots_and_reconfigs(ensemble_factory: Callable[..., Ensemble]) -> None:
    if not Path("/usr/share/java/zookeeper.jar").is_file():
        pytest.skip("Debian's zookeeper package is not installed (apt-get install zookeeper)")
    ensemble = ensemble_factory(version=versions.DEBIAN_ZOOKEEPER_VERSION)
    zero, one = ensemble.endpoint(0), ensemble.endpoint(1)
    store = ensemble.bootstrap()
    assert "slf4j-simple" in " ".join(ensemble.launcher.classpath)
    ensemble.join(store, one)
    both = ensemble.store([zero, one])
    roles = wait_until(lambda: _one_leader(both, {zero.address, one.address}), 60, "2 voters")
    assert sorted(roles.values()) == [Role.FOLLOWER, Role.LEADER]
    assert {m.version for m in both.members()} == {"3.8.0"}, "Debian's build names its release"
    both.write_probe("debian", "3.8.0")
    follower = next(m for m in both.members() if m.role is Role.FOLLOWER)
    both.remove(follower)
    remaining = {zero.address, one.address} - {follower.address}
    assert {m.address for m in both.members()} == remaining
    assert both.read("debian") == "3.8.0"
    assert "INFO" in ensemble.log(zero)


def test_a_rejoining_member_gets_a_fresh_server_id(
    ensemble_factory: Callable[..., Ensemble],
) -> None:
    ensemble = ensemble_factory()
    zero, one, two = (ensemble.endpoint(n) for n in range(3))
    store = ensemble.bootstrap()
    assert ensemble.join(store, one).id == "2"
    store.write_probe("kept", "1")
    store.remove(_member(store, one.address))
    ensemble.stop(one)
    shutil.rmtree(ensemble.runtime.data_dir(one))

    planned = store.add_learner(one)
    assert planned.id == "3", "a removed server id is not handed out again"

    # A server on the reserved address under another id follows the leader, but is not
    # promoted in the reserved identity's place.
    ensemble.start(one, [Peer(zero, "1"), Peer(one, "9")])
    impostor = wait_until(lambda: healthy_learner(store, one), 90, "server 9 syncs")
    with pytest.raises(NotCaughtUp, match="runs as server 9, not 3"):
        store.promote(impostor)
    assert {m.id for m in store.members() if m.voter} == {"1"}

    ensemble.stop(one)
    shutil.rmtree(ensemble.runtime.data_dir(one))
    ensemble.start(one, ensemble.peers(store, planned))
    store.promote(wait_until(lambda: healthy_learner(store, one), 90, "server 3 syncs"))
    assert {m.id: m.address for m in store.members() if m.voter} == {
        "1": zero.address,
        "3": one.address,
    }
    assert store.read("kept") == "1"

    # A reservation dropped before its server starts is not handed out again either.
    dropped = store.add_learner(two)
    assert dropped.id == "4"
    store.remove(dropped)
    assert two.address not in {m.address for m in store.members()}
    assert store.add_learner(two).id == "5"


def test_server_ids_count_on_and_wrap_around_the_ones_in_use() -> None:
    assert next_server_id(3, {1, 2}) == 4
    assert next_server_id(255, {1, 2}) == 3
    assert next_server_id(0, set()) == 1
    with pytest.raises(StoreError, match="all 255"):
        next_server_id(7, set(range(1, 256)))


def test_a_connection_loss_while_reading_the_membership_is_retried_then_unavailable(
    ensemble_factory: Callable[..., Ensemble], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection lost between the config read and the reservations read (a member restarting
    in a rollout) costs a retry, not the caller's pass; losses past the store timeout read as no
    quorum (`StoreUnavailable`), the one failure `members()` promises."""
    ensemble = ensemble_factory()
    zero, one = ensemble.endpoint(0), ensemble.endpoint(1)
    ensemble.join(ensemble.bootstrap(), one)
    store = ensemble.store([zero, one])
    client = store._connected()
    real_children = client.get_children_async
    losses: list[tuple[object, ...]] = []

    def lost_once(*args: object) -> object:
        if not losses:
            losses.append(args)
            raise ConnectionLoss()
        return real_children(*args)

    monkeypatch.setattr(client, "get_children_async", lost_once)
    assert {m.address for m in store.members() if m.voter} == {zero.address, one.address}
    assert len(losses) == 1

    def always_lost(*_: object) -> None:
        raise ConnectionLoss()

    monkeypatch.setattr(client, "get_children_async", always_lost)
    store._read = None  # forget the membership read above, as a store made now would have
    with pytest.raises(StoreUnavailable, match="cannot read /zookeeper/config and"):
        store.members()


def test_a_client_whose_server_stops_resumes_its_session_on_another(
    ensemble_factory: Callable[..., Ensemble],
) -> None:
    """A rollout stops the server a client is connected to: the client resumes the same
    session on another server once one serves, however many of its calls timed out meanwhile
    (a new session is a transaction through the leader, made again from the handshake), and
    its TLS connections skip the addresses where nothing listens at once."""
    ensemble = ensemble_factory()
    zero, one, two = (ensemble.endpoint(n) for n in range(3))
    ensemble.join(ensemble.bootstrap(), one)
    ensemble.join(ensemble.store([zero, one]), two)
    spare = [ensemble.endpoint(n) for n in range(3, 9)]  # nothing listens there
    client = ZookeeperStore(
        [*spare, zero, one, two], password=ensemble.password, tls=ensemble.tls, timeout=0.2
    )
    try:
        wait_until(lambda: _written(client, "before"), 60, "a first write")
        session = client._client.client_id
        connected = client._client._connection._socket.getpeername()[0]
        ensemble.stop(ensemble.endpoint_at(connected))
        wait_until(lambda: _written(client, "after"), 60, "a write on another server")
        assert client._client.client_id == session, "the client started a new session"
        assert client.read("after") == "after"
    finally:
        client.close()


def _written(store: ZookeeperStore, key: str) -> bool:
    try:
        store.write_probe(key, key)
    except StoreError:
        return False
    return True
