"""Turning etcd's authentication on, against one real member with client and peer TLS and
signed tokens: it resumes wherever a killed keeper left it, a client without the root password
is refused, and a token outlives the member's restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from quorumkeeper import versions
from quorumkeeper.certificates import new_token_key
from quorumkeeper.model import Endpoint, Peer
from quorumkeeper.runtimes.local.authority import KEEPER, LocalAuthority
from quorumkeeper.runtimes.local.launchers import EtcdLauncher
from quorumkeeper.runtimes.local.processes import LocalRuntime
from quorumkeeper.runtimes.local.state import ensure_secret
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.etcd.client import CLIENT_PORT, ROOT, EtcdStore, answers
from tests.acceptance.harness import holding_port
from tests.local_runtime import spawner
from tests.polling import loopback_subnet, wait_until

PASSWORD = "root-password-for-the-test"


@dataclass
class SecuredMember:
    """One etcd member with client and peer TLS and signed tokens, started by hand."""

    endpoint: Endpoint
    authority: LocalAuthority
    runtime: LocalRuntime

    def start(self, *, bootstrap: bool) -> None:
        launcher, member = self.runtime.launcher, self.endpoint
        data = self.runtime.data_dir(member)
        self.runtime.spawn(
            member, launcher.argv(member, data, [Peer(member, None)], bootstrap=bootstrap)
        )
        context = self.authority.client(KEEPER).client_context()
        wait_until(lambda: answers(member.address, context=context), 30, "the member serves TLS")


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredMember]:
    authority = LocalAuthority(tmp_path / "tls", "auth")
    key = tmp_path / "tls" / "token-signing.key"
    ensure_secret(key, new_token_key)
    launcher = EtcdLauncher(
        versions.ETCD_VERSION, EtcdSettings(), "qk-auth-test", authority, token_key=key
    )
    runtime: LocalRuntime = spawner(tmp_path / "members", launcher, "auth", loopback_subnet(156))
    member = SecuredMember(runtime.placement.endpoint(0), authority, runtime)
    member.start(bootstrap=True)
    yield member
    runtime.stop(member.endpoint, grace=5)


@pytest.fixture
def secured_member(secured: SecuredMember) -> tuple[Endpoint, LocalAuthority]:
    return secured.endpoint, secured.authority


def test_authentication_is_turned_on_from_wherever_a_keeper_stopped(
    secured_member: tuple[Endpoint, LocalAuthority],
) -> None:
    member, authority = secured_member
    keeper = authority.client(KEEPER)
    store = EtcdStore([member], tls=keeper, root_password=PASSWORD, timeout=5)
    anonymous = EtcdStore([member], tls=keeper, timeout=5)
    try:
        wait_until(lambda: store.members(), 30, "a quorum answers")
        # A keeper killed after adding root, before granting its role and enabling auth.
        store._post("/v3/auth/user/add", {"name": ROOT, "password": PASSWORD})
        anonymous.write_probe("before", "open")  # still open

        store.secure()
        store.secure()  # again: nothing left to do, nothing refused

        assert store._post("/v3/auth/status", {}).get("enabled") is True
        with pytest.raises(StoreError):
            anonymous.write_probe("after", "refused")
        store.write_probe("after", "root")
        assert store.read("after") == "root"
        assert [m.address for m in store.members()] == [member.address]
    finally:
        store.close()
        anonymous.close()


def test_a_signed_token_outlives_a_restart_and_a_client_stays_on_the_member_that_serves(
    secured: SecuredMember,
) -> None:
    """A rollout restarts every member: a token that survives it spares a failing-over client
    a new authentication inside its write gap, and a client that stays on the member serving
    it never waits on one that accepts connections before it serves (a restarting etcd)."""
    member, keeper = secured.endpoint, secured.authority.client(KEEPER)
    elsewhere = secured.runtime.placement.endpoint(1)  # no member there yet
    store = EtcdStore([elsewhere, member], tls=keeper, root_password=PASSWORD, timeout=2)
    try:
        wait_until(lambda: store.members(), 30, "a quorum answers")
        store.secure()
        store.write_probe("before", "restart")
        issued = dict(store._http.tokens.by_address) if store._http.tokens else {}
        assert issued.get(member.address), "the write went with a token"

        secured.runtime.stop(member, grace=5)
        secured.start(bootstrap=False)
        wait_until(lambda: _writes(store), 30, "the restarted member serves writes")
        tokens = store._http.tokens
        assert tokens is not None and tokens.by_address[member.address] == issued[member.address]

        # Something now accepts connections where the client tried first and never answers.
        with holding_port(elsewhere.address, CLIENT_PORT):
            started = time.monotonic()
            store.write_probe("beside", "a silent listener")
            assert time.monotonic() - started < 1.0, "the client waited on the silent listener"
        assert store.read("beside") == "a silent listener"
    finally:
        store.close()


def _writes(store: EtcdStore) -> bool:
    try:
        store.write_probe("after", "restart")
    except StoreError:
        return False
    return True
