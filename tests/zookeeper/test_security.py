"""ZooKeeper secure by default, on real servers: TLS only on the client port, TLS between
servers, every session authenticated, the keeper's znodes its own; and the opt-out."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kazoo.client import KazooClient  # type: ignore[import-untyped]
from kazoo.exceptions import (  # type: ignore[import-untyped]
    NoAuthError,
    SessionClosedRequireSaslError,
)
from kazoo.handlers.threading import KazooTimeoutError  # type: ignore[import-untyped]
from kazoo.security import CREATOR_ALL_ACL  # type: ignore[import-untyped]

from quorumkeeper import versions
from quorumkeeper.certificates import TlsFiles
from quorumkeeper.model import Endpoint, Role
from quorumkeeper.runtimes.local.authority import LocalAuthority
from quorumkeeper.stores.zookeeper.client import PROBE_ROOT, kazoo_tls
from quorumkeeper.stores.zookeeper.ensemble import CLIENT_PORT, client_address
from quorumkeeper.stores.zookeeper.words import four_letter_word, server_state
from tests.acceptance.harness import (
    LocalClusterUnderTest,
    PidWatch,
    Writer,
    served_certificate,
    spec_file,
)
from tests.polling import loopback_subnet, wait_until
from tests.zookeeper.conftest import Ensemble, healthy_roles

pytestmark = pytest.mark.zookeeper


@contextmanager
def kazoo(
    endpoint: Endpoint, tls: TlsFiles | None, auth: str | None = None, timeout: float = 5.0
) -> Iterator[KazooClient]:
    """A started kazoo client of one server; `auth` is "user:password" for digest."""
    client = KazooClient(
        hosts=client_address(endpoint.address),
        auth_data=[("digest", auth)] if auth else None,
        connection_retry={"max_tries": 0},
        **kazoo_tls(tls),
    )
    try:
        client.start(timeout=timeout)
        yield client
    finally:
        client.stop()
        client.close()


def _refuses_session(endpoint: Endpoint, tls: TlsFiles | None) -> bool:
    try:
        with kazoo(endpoint, tls, timeout=3.0):
            return False
    except KazooTimeoutError:
        return True


def _plain_word(address: str) -> bytes:
    """What a plain-text `srvr` on the client port gets back before the server gives up on it."""
    with socket.create_connection((address, CLIENT_PORT), timeout=3.0) as connection:
        connection.sendall(b"srvr")
        try:
            return connection.recv(4096)
        except TimeoutError:
            return b""


def test_only_tls_clients_of_the_clusters_ca_that_authenticate_get_anywhere(
    ensemble_factory: Callable[..., Ensemble], tmp_path: Path
) -> None:
    ensemble = ensemble_factory()
    zero, one = ensemble.endpoint(0), ensemble.endpoint(1)
    store = ensemble.bootstrap()
    ensemble.join(store, one)
    store.write_probe("secret", "keeper's")
    assert ensemble.tls is not None and ensemble.authority is not None

    # No plain client port, so no plain-text client gets a session or a four-letter word.
    zoo_cfg = (ensemble.runtime.data_dir(zero) / "conf" / "zoo.cfg").read_text()
    assert "clientPort=" not in zoo_cfg and f"secureClientPort={CLIENT_PORT}" in zoo_cfg
    assert ";" not in store.committed_config().servers[0].spec, "no plain client address"
    assert _refuses_session(zero, None)
    assert _plain_word(zero.address) == b""

    # A certificate of another cluster's CA is refused, whatever the client trusts.
    foreign = LocalAuthority(tmp_path / "other-ca", "other").client("keeper")
    foreign_trusting_ours = TlsFiles(ensemble.tls.trust, foreign.certificate, foreign.key)
    assert _refuses_session(zero, foreign_trusting_ours)
    with pytest.raises(OSError):
        four_letter_word(zero.address, "srvr", 3.0, foreign_trusting_ours.client_context())
    # ... and a server of another CA is not trusted by the keeper's client.
    with pytest.raises(OSError):
        four_letter_word(zero.address, "srvr", 3.0, foreign.client_context())

    # With the cluster's certificate but no authentication, a session can do nothing: the
    # server answers its first request with SESSIONCLOSEDREQUIRESASLAUTH and closes the session.
    with kazoo(zero, ensemble.tls) as anonymous, pytest.raises(SessionClosedRequireSaslError):
        anonymous.create("/anonymous", b"x")
    with kazoo(zero, ensemble.tls) as anonymous, pytest.raises(SessionClosedRequireSaslError):
        anonymous.get(f"{PROBE_ROOT}/secret")

    # A user, with a certificate of its own, gets its prefix and nothing of the keeper's. What
    # it creates with the creator's ACL ("auth") is its digest's and its certificate's
    # (ZooKeeper also authenticates a TLS client as `x509:<subject>`).
    # ZooKeeper's root znode is open to every session until the keeper closes it (`secure`).
    with kazoo(one, ensemble.authority.client("early"), "early:p") as early:
        early.create("/early", b"x")
    store.secure()
    store.secure()  # idempotent
    store.grant_prefix("app", "app-password", "/apps/app")
    app_tls = ensemble.authority.client("app")
    with kazoo(one, app_tls, "app:app-password") as user:
        user.create("/apps/app/config", b"v1", acl=CREATOR_ALL_ACL)
        assert user.get("/apps/app/config")[0] == b"v1"
        with pytest.raises(NoAuthError):
            user.create("/top", b"x")
        with pytest.raises(NoAuthError):
            user.get_children("/")
        with pytest.raises(NoAuthError):
            user.get(f"{PROBE_ROOT}/secret")
        with pytest.raises(NoAuthError):
            user.get_children(PROBE_ROOT)
        with pytest.raises(NoAuthError):
            user.create("/apps/other", b"x")
    # Digest authentication takes any password (it only names an identity), which then matches
    # no ACL.
    with kazoo(one, ensemble.authority.client("guess"), "app:wrong") as guessing:
        with pytest.raises(NoAuthError):
            guessing.get("/apps/app/config")
        with pytest.raises(NoAuthError):
            guessing.get_children("/apps/app")
    assert store.read("secret") == "keeper's"
    with kazoo(zero, ensemble.tls, f"super:{ensemble.password}") as superuser:
        assert superuser.exists("/anonymous") is None
    with pytest.raises(ValueError, match="prefix: '/quorumkeeper/x'"):
        store.grant_prefix("app", "p", "/quorumkeeper/x")


def test_the_previous_version_runs_secure_too(ensemble_factory: Callable[..., Ensemble]) -> None:
    ensemble = ensemble_factory(version=versions.ZOOKEEPER_PREVIOUS_VERSION)
    zero, one, two = (ensemble.endpoint(n) for n in range(3))
    store = ensemble.bootstrap()
    ensemble.join(store, one)
    ensemble.join(store, two)
    assert {m.version for m in store.members()} == {versions.ZOOKEEPER_PREVIOUS_VERSION}
    assert sorted(m.role for m in store.members()) == sorted(
        [Role.LEADER, Role.FOLLOWER, Role.FOLLOWER]
    )
    store.write_probe("previous", "3.8")
    assert ensemble.store([two]).read("previous") == "3.8"
    assert _refuses_session(zero, None)
    with kazoo(zero, ensemble.tls) as anonymous, pytest.raises(SessionClosedRequireSaslError):
        anonymous.get(f"{PROBE_ROOT}/previous")


@pytest.mark.parametrize(
    "version", [versions.ZOOKEEPER_VERSION, versions.ZOOKEEPER_PREVIOUS_VERSION]
)
def test_running_servers_take_a_ca_rotation_from_their_files(
    ensemble_factory: Callable[..., Ensemble], version: str
) -> None:
    """Each phase's files, written where the servers run as the keeper writes them, reach both
    series without a restart (`config.tls_settings`; 3.8's client port keeps its SSL context
    until its watcher resets it): every server then serves a certificate of the new CA to a new
    client, and a server started anew, which trusts the new CA alone, rejoins the two that never
    restarted, so they took the new trust bundle and keystore between servers too."""
    ensemble = ensemble_factory(version=version)
    members = [ensemble.endpoint(n) for n in range(3)]
    store = ensemble.bootstrap()
    for joiner in members[1:]:
        ensemble.join(store, joiner)
    before = {endpoint: ensemble.pid(endpoint) for endpoint in members}
    authority = ensemble.authority
    assert authority is not None and ensemble.tls is not None
    old_ca = authority.authority().certificate
    authority.start_rotation()
    while authority.advance_rotation(members) != "done":
        ensemble.runtime.write_certificates()
    new_ca = x509.load_pem_x509_certificate(authority.authority().certificate)
    assert authority.authority().certificate != old_ca
    keeper = ensemble.tls

    def issuers() -> set[x509.Name]:
        """Empty while a server still serves the old CA's, which the keeper trusts no more."""
        try:
            return {served_certificate(e.address, CLIENT_PORT, keeper).issuer for e in members}
        except ssl.SSLCertVerificationError:
            return set()

    wait_until(lambda: issuers() == {new_ca.subject}, 30, "the servers serve the new CA's")
    restarted = members[-1]
    joined = next(m for m in store.members() if m.address == restarted.address)
    ensemble.stop(restarted)
    ensemble.start(restarted, ensemble.peers(store, joined))
    wait_until(
        lambda: healthy_roles(store).get(restarted.address) is Role.FOLLOWER,
        60,
        "the restarted rejoins",
    )
    assert {e: ensemble.pid(e) for e in members[:2]} == {e: before[e] for e in members[:2]}
    store.write_probe("rotated", "1")
    assert ensemble.store([restarted]).read("rotated") == "1"


def test_plain_text_is_an_opt_out(ensemble_factory: Callable[..., Ensemble]) -> None:
    ensemble = ensemble_factory(secure=False)
    zero, one = ensemble.endpoint(0), ensemble.endpoint(1)
    store = ensemble.bootstrap()
    ensemble.join(store, one)
    store.write_probe("open", "1")
    zoo_cfg = (ensemble.runtime.data_dir(zero) / "conf" / "zoo.cfg").read_text()
    assert "ssl" not in zoo_cfg.lower() and "secureClientPort" not in zoo_cfg
    state = server_state(one.address, 1.0)
    assert state is not None and state.serving
    with kazoo(zero, None) as anonymous:
        assert anonymous.get_children("/") != []


def _zoo_cfg(cluster: LocalClusterUnderTest, name: str) -> str:
    return (cluster.member_data(name) / "conf" / "zoo.cfg").read_text()


@pytest.mark.parametrize("secure", [True, False], ids=["tls-auth", "plain"])
def test_scale_replace_and_roll_out_with_tls_and_auth(tmp_path: Path, secure: bool) -> None:
    """The keeper's every membership step and a settings rollout on a cluster made with the
    defaults (TLS and authentication on), a writer running throughout; and the same with both
    turned off, for the cost of security side by side."""
    subnet = loopback_subnet(141 if secure else 142)
    cluster = LocalClusterUnderTest("zookeeper", "zks", subnet, tmp_path / "state")
    opt_out = tmp_path / "plain.yaml"
    opt_out.write_text("tls: false\nauth: false\n")
    try:
        cluster.up(3, *([] if secure else ["--spec-file", str(opt_out)]))
        status = cluster.wait_ready(3)
        for member in status["members"]:
            assert ("secureClientPort" in _zoo_cfg(cluster, member["name"])) == secure
        with Writer(cluster) as writer:
            cluster.scale(5)
            cluster.wait_ready(5)
            cluster.scale(3)
            status = cluster.wait_ready(3)

            victim = cluster.member(status, "follower")
            cluster.kill_keeper()
            os.kill(victim["pid"], signal.SIGKILL)
            shutil.rmtree(cluster.member_data(victim["name"]))
            cluster.spawn_keeper()
            replaced = wait_until(
                lambda: _replaced(cluster, victim), 120, f"{victim['name']} replaced"
            )
            assert ("secureClientPort" in _zoo_cfg(cluster, victim["name"])) == secure

            watch = PidWatch(cluster, cluster.pids(replaced))
            change = spec_file(cluster, {"zookeeper": {"max_client_cnxns": 100}})
            with watch.running():
                cluster.cli("apply", cluster.name, "--spec-file", str(change))
            rolled = cluster.wait_ready(3)
        assert sorted(watch.changed) == sorted(watch.before), "every member restarted"
        assert [m["config"] for m in rolled["members"]] == ["updated"] * 3
        for member in rolled["members"]:
            text = _zoo_cfg(cluster, member["name"])
            assert "maxClientCnxns=100" in text and ("sslQuorum=true" in text) == secure
        first = Endpoint("x", 0, rolled["members"][0]["address"])
        assert _refuses_session(first, None) == secure
        writer.assert_nothing_lost()
        latencies = sorted(b - a for a, b in zip(writer.issue_times, writer.ack_times, strict=True))
        print(
            f"zookeeper {'with TLS and auth' if secure else 'plain'}: "
            f"{len(writer.acknowledged)} writes acked, {writer.failed} failed, longest gap "
            f"{writer.longest_gap:.2f}s, write latency median "
            f"{latencies[len(latencies) // 2] * 1000:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms"
        )
    finally:
        cluster.destroy()


def _replaced(cluster: LocalClusterUnderTest, victim: dict[str, Any]) -> dict[str, Any] | None:
    status = cluster.status()
    member = next((m for m in status["members"] if m["name"] == victim["name"]), None)
    ready = status["phase"] == "Ready" and len(status["members"]) == 3
    healthy = all(m["healthy"] for m in status["members"])
    if member is None or member["id"] == victim["id"] or not (ready and healthy):
        return None
    return status
