"""What a ZooKeeper server is started with when TLS and authentication are on: pure rendering,
no server (the servers themselves are in tests/zookeeper/test_security.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from quorumkeeper import versions
from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.local.authority import LocalAuthority
from quorumkeeper.runtimes.local.launchers import KEYSTORE, ZookeeperLauncher, keystore_text
from quorumkeeper.spec import ZookeeperSettings
from quorumkeeper.stores.zookeeper import config
from quorumkeeper.stores.zookeeper.client import ZookeeperStore
from quorumkeeper.stores.zookeeper.ensemble import parse_config, server_spec

SETTINGS = ZookeeperSettings()


def _tls(version: str) -> config.ServerTls:
    return config.ServerTls("/m/conf/keystore.pem", "/s/tls/trust.pem", "127.0.9.1", version)


def test_tls_serves_clients_on_the_secure_port_only_and_secures_the_quorum() -> None:
    rendered = config.server_config(SETTINGS, "/d", "/l", "/m/conf/zoo.cfg.dynamic", _tls("3.9.5"))
    assert "clientPort" not in rendered and "clientPortAddress" not in rendered
    assert rendered["secureClientPort"] == 2181
    assert rendered["secureClientPortAddress"] == "127.0.9.1"
    assert rendered["serverCnxnFactory"] == "org.apache.zookeeper.server.NettyServerCnxnFactory"
    assert rendered["ssl.clientAuth"] == "need" and rendered["sslQuorum"] == "true"
    for prefix in ("ssl.", "ssl.quorum."):
        assert rendered[f"{prefix}keyStore.location"] == "/m/conf/keystore.pem"
        assert rendered[f"{prefix}keyStore.type"] == "PEM"
        assert rendered[f"{prefix}trustStore.location"] == "/s/tls/trust.pem"
        assert rendered[f"{prefix}trustStore.type"] == "PEM"
    # 3.9 checks a connecting server's certificate against its address no more; 3.8 can only
    # turn host names off between servers as a whole.
    assert rendered["ssl.quorum.clientHostnameVerification"] == "false"
    assert "ssl.quorum.hostnameVerification" not in rendered
    # A replaced keystore or trust bundle is taken where the server runs.
    assert rendered["sslQuorumReloadCertFiles"] == "true"
    assert rendered["client.certReload"] == "true"
    previous = config.server_config(SETTINGS, "/d", "/l", None, _tls("3.8.6"))
    assert previous["ssl.quorum.hostnameVerification"] == "false"
    assert "ssl.quorum.clientHostnameVerification" not in previous


def test_plain_servers_render_as_before() -> None:
    rendered = config.server_config(SETTINGS, "/d", "/l", "/dyn")
    assert not any(key.startswith(("ssl", "secure", "serverCnxn")) for key in rendered)
    assert config.ENFORCED_AUTH[0] not in config.jvm_options(SETTINGS, "p")
    assert set(config.ENFORCED_AUTH) <= set(config.jvm_options(SETTINGS, "p", auth=True))


def test_a_tls_servers_dynamic_line_has_no_plain_client_address() -> None:
    assert server_spec(4, "127.0.9.4") == "server.4=127.0.9.4:2888:3888:participant;127.0.9.4:2181"
    assert server_spec(4, "127.0.9.4", plain_client=False) == (
        "server.4=127.0.9.4:2888:3888:participant"
    )


def test_a_membership_change_is_the_whole_committed_list_changed() -> None:
    committed = parse_config(
        "server.1=127.0.9.1:2888:3888:participant\n"
        "server.3=127.0.9.3:2888:3888:participant;127.0.9.3:2181\n"
        "version=100000004\n"
    )
    joining = server_spec(5, "127.0.9.5", plain_client=False)
    assert committed.changed(joining=joining, leaving=None) == (
        "server.1=127.0.9.1:2888:3888:participant,"
        "server.3=127.0.9.3:2888:3888:participant;127.0.9.3:2181,"
        "server.5=127.0.9.5:2888:3888:participant"
    )
    assert committed.changed(joining=None, leaving=1) == (
        "server.3=127.0.9.3:2888:3888:participant;127.0.9.3:2181"
    )


def test_turning_tls_or_auth_on_or_off_changes_the_launchers_fingerprint(tmp_path: Path) -> None:
    authority = LocalAuthority(tmp_path / "tls", "zk")
    version = versions.ZOOKEEPER_VERSION
    plain = ZookeeperLauncher(version, SETTINGS, "p")
    tls = ZookeeperLauncher(version, SETTINGS, "p", authority)
    both = ZookeeperLauncher(version, SETTINGS, "p", authority, auth=True)
    prints = {plain.fingerprint(), tls.fingerprint(), both.fingerprint()}
    assert len(prints) == 3
    assert (
        both.fingerprint()
        == ZookeeperLauncher(version, SETTINGS, "q", authority, auth=True).fingerprint()
    )
    # The fingerprint names the CA's generation, and issues no member certificate for it.
    assert not list((tmp_path / "tls").glob("member-*")), "a fingerprint issues no certificate"


@pytest.mark.parametrize(
    ("user", "prefix", "named"),
    [
        ("a:b", "/apps", "user: 'a:b'"),
        ("", "/apps", "user: ''"),
        ("app", "apps", "prefix: 'apps'"),
        ("app", "/", "prefix: '/'"),
        ("app", "/apps/", "prefix: '/apps/'"),
        ("app", "/zookeeper/quota", "prefix: '/zookeeper/quota'"),
        ("app", "/quorumkeeper", "prefix: '/quorumkeeper'"),
    ],
)
def test_a_user_with_a_bad_name_or_prefix_is_refused_before_any_call(
    user: str, prefix: str, named: str
) -> None:
    store = ZookeeperStore([], password="p")  # no server: refused before connecting
    with pytest.raises(ValueError, match="fix: ") as refused:
        store.grant_prefix(user, "secret", prefix)
    assert str(refused.value).startswith(named)


def test_a_reissued_certificate_reaches_a_running_members_keystore_without_a_restart(
    tmp_path: Path,
) -> None:
    """The keeper hands it over at every certificate check, so only a keystore that differs is
    replaced (each replacement resets the server's SSL contexts); the fingerprint, which would
    restart members, does not move."""
    authority = LocalAuthority(tmp_path / "tls", "zk")
    launcher = ZookeeperLauncher(versions.ZOOKEEPER_VERSION, SETTINGS, "p", authority)
    member = Endpoint("zk-0", 0, "127.0.9.1")
    data_dir = tmp_path / "zk-0"
    launcher.conf_dir(data_dir).mkdir(parents=True)  # as its first start made it
    launcher.write_certificates(member, data_dir)
    keystore = launcher.conf_dir(data_dir) / KEYSTORE
    first, inode, before = keystore.read_text(), keystore.stat().st_ino, launcher.fingerprint()
    launcher.write_certificates(member, data_dir)
    assert keystore.stat().st_ino == inode, "an equal keystore is kept"
    authority.start_rotation()
    authority.advance_rotation([member])  # the new CA signs: the member's certificate reissued
    assert launcher.fingerprint() == before
    launcher.write_certificates(member, data_dir)
    assert keystore.read_text() != first
    assert keystore.read_text() == keystore_text(authority.member(member))
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
