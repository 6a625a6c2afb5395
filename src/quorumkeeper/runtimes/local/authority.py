"""A local cluster's certificate authority and certificates, as files in its state folder.

    <state>/<name>/tls/
        ca.crt, ca.key              the cluster's CA (the key never leaves this folder)
        trust.pem                   the CA certificates members and clients trust
        member-<member>.crt/.key    a member's certificate, for its server and its peers
        client-<user>.crt/.key      a client's certificate; `client-keeper` is the keeper's
        renewed                     when `renew` last reissued certificates ahead of their end

Keys are written 0600 and only ever replaced whole (`write_atomically`). Certificates are made on
first use and made again when they come within `RENEW_BEFORE` of their end, when the CA that
signed them is no longer the cluster's, or when a member's addresses changed; a member picks a new
certificate up at its next start, which the rollout's ordered restarts bring about (the launcher's
fingerprint includes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from quorumkeeper.certificates import RENEW_BEFORE, KeyPair, TlsFiles, issue, new_authority
from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.local.state import FileLock, write_atomically

KEEPER = "keeper"
"""The keeper's own client certificate: without a common name, as etcd's gateway needs."""


def _hosts(certificate: x509.Certificate) -> set[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return {str(name) for name in names.value.get_values_for_type(x509.IPAddress)} | set(
        names.value.get_values_for_type(x509.DNSName)
    )


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
            certificate = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        except (OSError, ValueError):
            return False
        if not files.key.is_file() or certificate.issuer != authority.loaded().subject:
            return False
        if certificate.not_valid_after_utc - RENEW_BEFORE <= datetime.now(UTC):
            return False
        return _hosts(certificate) == set(hosts)

    def generation(self) -> str:
        """What members' certificates come from now: the CA's fingerprint and when `renew`
        last reissued any. Launchers put it in their fingerprint, so a new CA or a renewal is
        rolled out by ordered restarts, while a new member's first certificate changes nothing."""
        renewed = self.folder / "renewed"
        mark = renewed.read_text().strip() if renewed.is_file() else "never"
        return f"{self.authority().fingerprint()[:16]} renewed {mark}"

    def renew(self, endpoints: Sequence[Endpoint]) -> list[str]:
        """Reissue the keeper's certificate and those of `endpoints` that have one but can't be
        served as they are (within `RENEW_BEFORE` of their end, from another CA, for other
        addresses), and record the renewal (`generation`). Returns the names of the
        certificate files reissued, none when all were current."""
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
        keeper = self._files(f"client-{KEEPER}")
        keeper_due = keeper.certificate.is_file() and not self._current(keeper, authority, [])
        for endpoint in due:
            self.member(endpoint)
        if keeper_due:
            self.client(KEEPER)
        renewed = [f"member-{e.name}.crt" for e in due] + ([f"client-{KEEPER}.crt"] * keeper_due)
        if due:
            write_atomically(self.folder / "renewed", f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\n")
        return renewed

    def _files(self, stem: str) -> TlsFiles:
        return TlsFiles(self.trust, self.folder / f"{stem}.crt", self.folder / f"{stem}.key")

    def expiring(self, now: datetime) -> list[tuple[str, datetime]]:
        """The certificates of this folder (file name, end of validity) that end within
        `RENEW_BEFORE` of `now`, soonest first."""
        found = []
        for path in sorted(self.folder.glob("*.crt")):
            try:
                end = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
            except (OSError, ValueError):
                continue
            if end - RENEW_BEFORE <= now:
                found.append((path.name, end))
        return sorted(found, key=lambda item: item[1])
