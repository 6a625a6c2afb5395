"""A local cluster's users, and the files their clients connect with, beside the certificates.

    <state>/<name>/tls/
        <user>.password             the user's generated password (0600), which makes it a user
        client-<user>.crt/.key      its client certificate (`authority.LocalAuthority.client`)
        keystore-<user>.pem         ZooKeeper: its key and certificate in one file (0600)
        zkcli-<user>.properties     ZooKeeper: the Java client's TLS settings

ZooKeeper's Java client (zkCli.sh, Curator, any program on the ZooKeeper library) reads its key
and certificate from one PEM keystore, so a user's keystore is written from its certificate
files whenever those may have changed (`java_client`, and the keeper after a renewal or a CA
rotation reissued them in place, `refresh_keystores`). etcdctl and kazoo read the certificate
files themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quorumkeeper.certificates import TlsFiles
from quorumkeeper.runtimes.local.authority import LocalAuthority
from quorumkeeper.runtimes.local.launchers import write_keystore
from quorumkeeper.runtimes.local.state import ClusterPaths, write_atomically
from quorumkeeper.stores.zookeeper.config import client_tls_properties

PASSWORD_SUFFIX = ".password"


def password_file(paths: ClusterPaths, user: str) -> Path:
    return paths.tls_dir / f"{user}{PASSWORD_SUFFIX}"


def users(paths: ClusterPaths) -> list[str]:
    """The users `quorumkeeper user add` made in the cluster, by name."""
    return sorted(
        path.name.removesuffix(PASSWORD_SUFFIX)
        for path in paths.tls_dir.glob(f"*{PASSWORD_SUFFIX}")
    )


@dataclass(frozen=True)
class JavaClient:
    """What ZooKeeper's Java client is given: `properties`, its settings file (which names the
    keystore and the trust bundle), and `tls`, the certificate files it was written from."""

    properties: Path
    keystore: Path
    tls: TlsFiles

    def settings(self) -> dict[str, str]:
        return client_tls_properties(str(self.keystore), str(self.tls.trust))


def java_client(authority: LocalAuthority, user: str) -> JavaClient:
    """Write `user`'s keystore and settings file for ZooKeeper's Java client, from its client
    certificate (issued if missing or due)."""
    client = JavaClient(
        properties=authority.folder / f"zkcli-{user}.properties",
        keystore=authority.folder / f"keystore-{user}.pem",
        tls=authority.client(user),
    )
    write_keystore(client.tls, client.keystore)
    lines = "".join(f"{key}={value}\n" for key, value in client.settings().items())
    write_atomically(client.properties, f"# ZooKeeper client settings of {user}\n{lines}")
    return client


def refresh_keystores(authority: LocalAuthority) -> None:
    """Write every user's keystore again from its certificate files, which a renewal or a CA
    rotation replaced: the Java client reads the keystore alone."""
    for keystore in sorted(authority.folder.glob("keystore-*.pem")):
        user = keystore.stem.removeprefix("keystore-")
        write_keystore(authority.client(user), keystore)
