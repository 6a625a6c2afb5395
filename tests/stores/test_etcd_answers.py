"""`EtcdStore` against real etcd members: each refusal provoked here arrives as the error class
`etcd_errors` decides for it, names what etcd said, and changes nothing in the membership.

One voter is started from the cached etcd binary (and a second member as a learner where a test
needs one); every process is stopped by its PID.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from quorumkeeper.errors import ExitCode
from quorumkeeper.model import Endpoint, Member, Role
from quorumkeeper.runtimes.local import distributions
from quorumkeeper.stores.base import NotCaughtUp, StoreError, StoreUnavailable
from quorumkeeper.stores.etcd.client import EtcdStore, answers, client_url, peer_url
from quorumkeeper.stores.etcd.errors import LEARNER_NOT_READY, read_answer
from tests.polling import loopback_subnet, wait_until

SUBNET = loopback_subnet(155)
VOTER = Endpoint("etcd-0", 0, f"{SUBNET}.1")
LEARNER = Endpoint("etcd-1", 1, f"{SUBNET}.2")
SILENT = Endpoint("etcd-2", 2, f"{SUBNET}.3")
"""Listed as a learner, never started: it stays behind the leader."""


class Members:
    """etcd processes of one test, stopped by PID at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, endpoint: Endpoint, initial: list[Endpoint], *, new: bool) -> None:
        cluster = ",".join(f"{e.name}={peer_url(e.address)}" for e in initial)
        data = self.root / endpoint.name
        log = (self.root / f"{endpoint.name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                [
                    str(distributions.etcd_binary()),
                    f"--name={endpoint.name}",
                    f"--data-dir={data}",
                    f"--listen-client-urls={client_url(endpoint.address)}",
                    f"--advertise-client-urls={client_url(endpoint.address)}",
                    f"--listen-peer-urls={peer_url(endpoint.address)}",
                    f"--initial-advertise-peer-urls={peer_url(endpoint.address)}",
                    f"--initial-cluster={cluster}",
                    f"--initial-cluster-state={'new' if new else 'existing'}",
                    "--initial-cluster-token=qk-etcd-answers",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()
        wait_until(lambda: answers(endpoint.address), 30, f"{endpoint.name} serves /version")

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture
def members(tmp_path: Path) -> Iterator[Members]:
    started = Members(tmp_path)
    try:
        started.start(VOTER, [VOTER], new=True)
        yield started
    finally:
        started.stop()


@pytest.fixture
def store(members: Members) -> Iterator[EtcdStore]:
    client = EtcdStore([VOTER], timeout=5)
    wait_until(lambda: _voter_leads(client), 30, "the voter leads its one-member cluster")
    yield client
    client.close()


def _voter_leads(store: EtcdStore) -> bool:
    try:
        return [m.role for m in store.members()] == [Role.LEADER]
    except StoreUnavailable:
        return False


def _membership(store: EtcdStore) -> list[tuple[str, Role]]:
    return sorted((m.id, m.role) for m in store.members())


def test_promoting_a_learner_that_is_behind_is_not_caught_up(store: EtcdStore) -> None:
    learner = store.add_learner(SILENT)
    before = _membership(store)
    with pytest.raises(NotCaughtUp) as raised:
        store.promote(learner)
    message = str(raised.value)
    assert LEARNER_NOT_READY in message
    assert f"{client_url(VOTER.address)}/v3/cluster/member/promote" in message
    assert raised.value.exit_code == ExitCode.NOT_DONE
    assert _membership(store) == before


def test_promoting_a_voter_is_refused(store: EtcdStore) -> None:
    (voter,) = store.members()
    with pytest.raises(StoreError) as raised:
        store.promote(voter)
    assert type(raised.value) is StoreError
    assert not raised.value.retryable
    assert raised.value.exit_code == ExitCode.REFUSED
    assert "etcdserver: can only promote a learner member (" in str(raised.value)
    assert "is a voter already" in str(raised.value)
    assert [m.role for m in store.members()] == [Role.LEADER]


def test_removing_a_member_id_that_does_not_exist_is_refused(store: EtcdStore) -> None:
    before = _membership(store)
    stranger = Member(
        id="12345", address=SILENT.address, role=Role.FOLLOWER, healthy=False, started=False
    )
    with pytest.raises(StoreError) as raised:
        store.remove(stranger)
    message = str(raised.value)
    assert type(raised.value) is StoreError
    assert not raised.value.retryable
    assert "HTTP 404, NOT_FOUND (5): etcdserver: member not found" in message
    assert "/v3/cluster/member/remove" in message
    assert _membership(store) == before


def test_a_second_learner_waits_and_a_listed_peer_url_is_refused(store: EtcdStore) -> None:
    store.add_learner(SILENT)
    before = _membership(store)
    with pytest.raises(StoreUnavailable) as too_many:  # retryable: every member was asked
        store.add_learner(LEARNER)
    assert f"no etcd member served /v3/cluster/member/add: {VOTER.name}: " in str(too_many.value)
    assert "etcdserver: too many learner members in cluster" in str(too_many.value)
    with pytest.raises(StoreError) as listed:
        store.add_learner(VOTER)
    assert not listed.value.retryable
    assert "etcdserver: Peer URLs already exists" in str(listed.value)
    assert _membership(store) == before


@pytest.mark.parametrize(
    ("path", "status", "shown"),
    [
        ("/v4/no-such-path", 404, "'404 page not found'"),
        ("/v3/no-such-path", 404, "NOT_FOUND (5): Not Found"),
        ("/metrics", 200, "etcd member's client URL"),
    ],
)
def test_a_wrong_path_is_refused_naming_url_status_and_body(
    store: EtcdStore, path: str, status: int, shown: str
) -> None:
    url = f"{client_url(VOTER.address)}{path}"
    response = httpx.post(url, json={})
    assert response.status_code == status
    with pytest.raises(StoreError) as raised:
        read_answer(url, response.status_code, response.content)
    assert not raised.value.retryable
    assert f"{url} answered HTTP {status}" in str(raised.value)
    assert shown in str(raised.value)


def test_a_learner_passes_calls_on_and_is_promoted_once_caught_up(
    members: Members, store: EtcdStore
) -> None:
    learner = store.add_learner(LEARNER)
    members.start(LEARNER, [VOTER, LEARNER], new=False)
    wait_until(lambda: store.member_status(LEARNER.address), 30, "the learner serves clients")
    learner_first = EtcdStore([LEARNER, VOTER], timeout=5)
    learner_only = EtcdStore([LEARNER], timeout=5)
    try:
        learner_first.write_probe("k", "v")  # the learner refuses it; the voter serves it
        assert learner_first.read("k") == "v"
        with pytest.raises(StoreUnavailable) as raised:
            learner_only.read("k")
        assert f"{LEARNER.name}: " in str(raised.value)
        assert "etcdserver: rpc not supported for learner" in str(raised.value)

        def promoted() -> bool:
            try:
                store.promote(learner)
            except NotCaughtUp:
                return False
            return True

        wait_until(promoted, 30, "the started learner is promotable")
        assert {m.role for m in store.members()} == {Role.LEADER, Role.FOLLOWER}
    finally:
        learner_first.close()
        learner_only.close()


def test_no_member_answering_is_unavailable_naming_each() -> None:
    store = EtcdStore([SILENT], timeout=1)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            store.read("k")
    finally:
        store.close()
    assert f"{SILENT.name}: ConnectionRefusedError" in str(raised.value)
    assert raised.value.exit_code == ExitCode.NOT_DONE
