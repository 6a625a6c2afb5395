"""Turning etcd's authentication on, against one real member with client and peer TLS: it
resumes wherever a killed keeper left it, and a client without the root password is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumkeeper import versions
from quorumkeeper.model import Endpoint, Peer
from quorumkeeper.runtimes.local.authority import KEEPER, LocalAuthority
from quorumkeeper.runtimes.local.launchers import EtcdLauncher
from quorumkeeper.runtimes.local.processes import LocalRuntime
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.etcd.client import ROOT, EtcdStore, answers
from tests.local_runtime import spawner
from tests.polling import loopback_subnet, wait_until

PASSWORD = "root-password-for-the-test"


@pytest.fixture
def secured_member(tmp_path: Path) -> Iterator[tuple[Endpoint, LocalAuthority]]:
    authority = LocalAuthority(tmp_path / "tls", "auth")
    launcher = EtcdLauncher(versions.ETCD_VERSION, EtcdSettings(), "qk-auth-test", authority)
    runtime: LocalRuntime = spawner(tmp_path / "members", launcher, "auth", loopback_subnet(156))
    member = runtime.placement.endpoint(0)
    data = runtime.data_dir(member)
    runtime.spawn(member, launcher.argv(member, data, [Peer(member, None)], bootstrap=True))
    context = authority.client(KEEPER).client_context()
    wait_until(lambda: answers(member.address, context=context), 30, "the member serves TLS")
    yield member, authority
    runtime.stop(member, grace=5)


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
