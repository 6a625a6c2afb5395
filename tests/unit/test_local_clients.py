"""A local cluster's users and the files their ZooKeeper Java client reads, on real files."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from quorumkeeper.certificates import new_authority
from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.local.authority import LocalAuthority
from quorumkeeper.runtimes.local.clients import (
    java_client,
    password_file,
    refresh_keystores,
    users,
)
from quorumkeeper.runtimes.local.state import ClusterPaths, ensure_secret, write_atomically


def _properties(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_the_java_client_gets_one_private_keystore_and_tls_settings(tmp_path: Path) -> None:
    authority = LocalAuthority(tmp_path / "tls", "zk")
    client = java_client(authority, "orders")
    files = authority.client("orders")
    assert client.keystore.read_text() == files.key.read_text() + files.certificate.read_text()
    assert stat.S_IMODE(client.keystore.stat().st_mode) == 0o600
    settings = _properties(client.properties)
    assert settings == client.settings()
    assert settings["zookeeper.client.secure"] == "true"
    assert settings["zookeeper.ssl.keyStore.location"] == str(client.keystore)
    assert settings["zookeeper.ssl.trustStore.location"] == str(authority.trust)
    assert settings["zookeeper.clientCnxnSocket"].endswith("ClientCnxnSocketNetty")


def test_a_ca_rotation_reaches_the_keystores(tmp_path: Path) -> None:
    """The rotation reissues users' certificates in place; the keystore, a copy, follows."""
    authority = LocalAuthority(tmp_path / "tls", "zk")
    # A CA of an hour ago: a CA's name carries the second it was made, and one made in the
    # same second as the next would sign under the same name (taken as the same CA).
    first = new_authority("zk", now=datetime.now(UTC) - timedelta(hours=1))
    authority.folder.mkdir(mode=0o700)
    write_atomically(authority.folder / "ca.key", first.key.decode(), mode=0o600)
    write_atomically(authority.folder / "ca.crt", first.certificate.decode())
    write_atomically(authority.trust, first.certificate.decode())
    client = java_client(authority, "orders")
    before = client.keystore.read_text()
    authority.start_rotation()
    authority.advance_rotation([Endpoint("zk-0", 0, "127.0.0.1")])
    files = authority.client("orders")
    assert client.keystore.read_text() == before, "nothing rewrote it yet"
    refresh_keystores(authority)
    after = client.keystore.read_text()
    assert after != before
    assert after == files.key.read_text() + files.certificate.read_text()


def test_users_are_those_with_a_password(tmp_path: Path) -> None:
    paths = ClusterPaths(tmp_path, "zk")
    assert users(paths) == []
    for user in ("orders", "billing"):
        ensure_secret(password_file(paths, user))
    LocalAuthority(paths.tls_dir, "zk").client("keeper")
    (paths.tls_dir / ".orders.password.123").write_text("a crashed write's leftover")
    assert users(paths) == ["billing", "orders"]
