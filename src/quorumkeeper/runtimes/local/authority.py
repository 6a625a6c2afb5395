"""A local cluster's certificate authority and certificates, as files in its state folder.

    <state>/<name>/tls/
        ca.crt, ca.key              the cluster's CA (the key never leaves this folder)
        trust.pem                   the CA certificates members and clients trust
        member-<member>.crt/.key    a member's certificate, for its server and its peers
        client-<user>.crt/.key      a client's certificate; `client-keeper` is the keeper's
        renewed                     when `renew` last reissued certificates ahead of their end
        rotation, ca-next.*, ca-previous.crt   a CA rotation under way (`start_rotation`)

Keys are written 0600 and only ever replaced whole (`write_atomically`). Certificates are made on
first use and made again when they come within `RENEW_BEFORE` of their end, when the CA that
signed them is no longer the cluster's, or when a member's addresses changed; a member picks a new
certificate up at its next start, which the rollout's ordered restarts bring about (the launcher's
fingerprint includes it).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from quorumkeeper.certificates import (
    ROTATION_PHASES,
    KeyPair,
    TlsFiles,
    authority_due,
    current,
    ending_soon,
    issue,
    new_authority,
)
from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.local.state import FileLock, write_atomically
from quorumkeeper.stores.users import KEEPER

__all__ = ["KEEPER", "LocalAuthority"]


class LocalAuthority:
    """The CA of local cluster `cluster` and the certificates it issued, under `folder`."""

    def __init__(self, folder: Path, cluster: str) -> None:
        self.folder = folder
        self.cluster = cluster

    @property
    def trust(self) -> Path:
        return self.folder / "trust.pem"

    def _lock(self) -> FileLock:
        """Held while the CA or a certificate is made: the keeper and a command may both ask
        for the same file, and two CAs made at once would leave members trusting different ones."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return FileLock(self.folder / "authority.lock").acquire()

    def authority(self) -> KeyPair:
        """The cluster's CA, made on first use, with `trust.pem` trusting it."""
        certificate, key = self.folder / "ca.crt", self.folder / "ca.key"
        if not (certificate.is_file() and key.is_file()):
            with self._lock():
                if not (certificate.is_file() and key.is_file()):
                    made = new_authority(self.cluster, now=datetime.now(UTC))
                    write_atomically(key, made.key.decode(), mode=0o600)
                    write_atomically(certificate, made.certificate.decode())
                    write_atomically(self.trust, made.certificate.decode())
        return KeyPair(certificate.read_bytes(), key.read_bytes())

    def member(self, endpoint: Endpoint) -> TlsFiles:
        """The certificate member `endpoint` serves clients and peers with: both key usages,
        its address and client address as subject alternative names."""
        hosts = [endpoint.address, endpoint.client_host]
        return self._leaf(f"member-{endpoint.name}", endpoint.name, hosts, server=True)

    def client(self, user: str) -> TlsFiles:
        """A client certificate for `user`, with `user` as its common name (etcd takes it for
        the user name over gRPC), except the keeper's, which has none."""
        common_name = "" if user == KEEPER else user
        return self._leaf(f"client-{user}", common_name, [], server=False)

    def _leaf(self, stem: str, common_name: str, hosts: Sequence[str], *, server: bool) -> TlsFiles:
        files = self._files(stem)
        authority = self.authority()
        if self._current(files, authority, hosts):
            return files
        with self._lock():
            if not self._current(files, authority, hosts):
                made = issue(
                    authority,
                    common_name=common_name,
                    hosts=hosts,
                    server=server,
                    client=True,
                    now=datetime.now(UTC),
                )
                write_atomically(files.key, made.key.decode(), mode=0o600)
                write_atomically(files.certificate, made.certificate.decode())
        return files

    @staticmethod
    def _current(files: TlsFiles, authority: KeyPair, hosts: Sequence[str]) -> bool:
        """Whether the certificate in `files` can be served as it is."""
        try:
            leaf = KeyPair(files.certificate.read_bytes(), files.key.read_bytes())
        except OSError:
            return False
        return current(leaf, authority, hosts, now=datetime.now(UTC))

    def generation(self) -> str:
        """What members' certificates come from now: the CA's fingerprint, the trust bundle's
        digest and when `renew` last reissued any. Launchers put it in their fingerprint, so a
        new CA, a changed trust bundle or a renewal is rolled out by ordered restarts, while a
        new member's first certificate changes nothing."""
        renewed = self.folder / "renewed"
        mark = renewed.read_text().strip() if renewed.is_file() else "never"
        ca = self.authority().fingerprint()[:16]
        trust = hashlib.sha256(self.trust.read_bytes()).hexdigest()[:16]
        return f"{ca} trust {trust} renewed {mark}"

    # CA rotation: trust old and new, then serve certificates of the new, then trust it alone.

    @property
    def _rotation(self) -> Path:
        return self.folder / "rotation"

    def rotation(self) -> str | None:
        """The phase of the CA rotation under way, None when there is none."""
        return self._rotation.read_text().strip() if self._rotation.is_file() else None

    def phase_age(self) -> float:
        """Seconds since the rotation under way entered its phase (0 without one)."""
        try:
            return max(0.0, time.time() - self._rotation.stat().st_mtime)
        except FileNotFoundError:
            return 0.0

    def start_rotation(self) -> bool:
        """Begin a CA rotation: a new CA (`ca-next.*`), and `trust.pem` holding the old and the
        new, so members restarted onto it accept certificates of either. False (and nothing
        changed) when a rotation is under way already."""
        with self._lock():
            if self.rotation() is not None:
                return False
            current = self.authority()
            made = new_authority(self.cluster, now=datetime.now(UTC))
            write_atomically(self.folder / "ca-next.key", made.key.decode(), mode=0o600)
            write_atomically(self.folder / "ca-next.crt", made.certificate.decode())
            bundle = current.certificate.decode() + made.certificate.decode()
            write_atomically(self.trust, bundle)
            write_atomically(self._rotation, f"{ROTATION_PHASES[0]}\n")
        return True

    def advance_rotation(self, endpoints: Sequence[Endpoint]) -> str | None:
        """Move the rotation under way one phase on, once every member runs with the last:
        from trusting both to the new CA signing (every certificate of `endpoints`, the
        keeper's and the users' reissued by it), then to trusting the new CA alone, then to
        its end. Returns the phase entered ("done" at the end), None when there is no
        rotation."""
        phase = self.rotation()
        if phase is None:
            return None
        with self._lock():
            if phase == ROTATION_PHASES[0]:
                previous = self.folder / "ca.crt"
                write_atomically(self.folder / "ca-previous.crt", previous.read_text())
                nxt = self.folder / "ca-next.crt", self.folder / "ca-next.key"
                write_atomically(self.folder / "ca.key", nxt[1].read_text(), mode=0o600)
                write_atomically(previous, nxt[0].read_text())
                write_atomically(self._rotation, f"{ROTATION_PHASES[1]}\n")
                for path in nxt:
                    path.unlink()
                entered = ROTATION_PHASES[1]
            elif phase == ROTATION_PHASES[1]:
                write_atomically(self.trust, (self.folder / "ca.crt").read_text())
                (self.folder / "ca-previous.crt").unlink(missing_ok=True)
                write_atomically(self._rotation, f"{ROTATION_PHASES[2]}\n")
                entered = ROTATION_PHASES[2]
            else:
                self._rotation.unlink()
                entered = "done"
        if entered == ROTATION_PHASES[1]:
            for endpoint in endpoints:
                if (self.folder / f"member-{endpoint.name}.crt").is_file():
                    self.member(endpoint)
            for client in sorted(self.folder.glob("client-*.crt")):
                self.client(client.stem.removeprefix("client-"))
        return entered

    def renew(self, endpoints: Sequence[Endpoint]) -> list[str]:
        """Reissue the clients' certificates (the keeper's, the users') and those of
        `endpoints` that have one but can't be served as they are (within `RENEW_BEFORE` of
        their end, from another CA, for other addresses), and record a member's renewal
        (`generation`). Begin a CA rotation when the CA is within `ROTATE_AUTHORITY_BEFORE` of
        its end. Returns what changed: the certificate files reissued and the rotation begun."""
        authority = self.authority()
        due = [
            endpoint
            for endpoint in endpoints
            if (self.folder / f"member-{endpoint.name}.crt").is_file()
            and not self._current(
                self._files(f"member-{endpoint.name}"),
                authority,
                [endpoint.address, endpoint.client_host],
            )
        ]
        clients = [
            path.stem.removeprefix("client-")
            for path in sorted(self.folder.glob("client-*.crt"))
            if not self._current(self._files(path.stem), authority, [])
        ]
        for endpoint in due:
            self.member(endpoint)
        for user in clients:
            self.client(user)
        renewed = [f"member-{e.name}.crt" for e in due] + [f"client-{u}.crt" for u in clients]
        if due:
            write_atomically(self.folder / "renewed", f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\n")
        if authority_due(authority, datetime.now(UTC)) and self.start_rotation():
            ends = f"{authority.not_after():%Y-%m-%d}"
            renewed.append(f"CA rotation: {ROTATION_PHASES[0]} (the CA ends {ends})")
        return renewed

    def _files(self, stem: str) -> TlsFiles:
        return TlsFiles(self.trust, self.folder / f"{stem}.crt", self.folder / f"{stem}.key")

    def expiring(self, now: datetime) -> list[tuple[str, datetime]]:
        """The certificates of this folder (file name, end of validity) that end within
        `RENEW_BEFORE` of `now`, soonest first."""
        found = {}
        for path in self.folder.glob("*.crt"):
            try:
                found[path.name] = path.read_bytes()
            except OSError:
                continue
        return ending_soon(found, now)
