"""A cluster's own certificate authority and the certificates it issues, made with `cryptography`.

Every cluster gets its own CA, so a certificate of one cluster is worth nothing in another. A
member's certificate serves both ends of TLS: etcd's peers and its gRPC gateway present the
server certificate as a client one, and ZooKeeper's quorum connections are mutual. Keys are RSA
2048 in unencrypted PKCS#8 PEM, which etcd, ZooKeeper's PEM keystores and Python's `ssl` all load.
Times are passed in, never read here, so the same inputs make certificates of the same validity.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AUTHORITY_LIFETIME = timedelta(days=3650)
LEAF_LIFETIME = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)
"""A certificate this close to its end is reissued, and status warns about it until it is."""
ROTATE_AUTHORITY_BEFORE = LEAF_LIFETIME
"""A CA this close to its end is rotated (both runtimes start a rotation by themselves): a leaf
issued later would end with it, short of its lifetime."""

ROTATION_PHASES = ("trusting-both", "new-certificates", "trusting-new")
"""A CA rotation's phases, in order; each is rolled out to every member by ordered restarts
before the next: members trust the old and the new CA, then serve certificates of the new one
(still trusting both), then trust the new one alone; once that is rolled out it is "done"."""
ROTATION_ROUNDS = {
    ROTATION_PHASES[0]: "members take a trust bundle of the current and the new CA",
    ROTATION_PHASES[1]: "the new CA signs; members take its certificates",
    ROTATION_PHASES[2]: "members take a trust bundle of the new CA alone",
    "done": "every member trusts the new CA alone",
}
"""What each phase's round does, for people (the CLI, Events): etcd's members restart onto it
in order, ZooKeeper's read the files where they run."""

BACKDATE = timedelta(minutes=5)
"""Validity starts this long before `now`, so a peer whose clock is a little behind accepts it."""

KEY_SIZE = 2048


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    certificate: bytes
    key: bytes

    def loaded(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate)

    def not_after(self) -> datetime:
        """The end of validity, timezone-aware UTC."""
        return self.loaded().not_valid_after_utc

    def fingerprint(self) -> str:
        """The SHA-256 of the DER certificate, 64 hex digits: changes with every issue."""
        return self.loaded().fingerprint(hashes.SHA256()).hex()


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_token_key() -> str:
    """A private key to sign authentication tokens with (ECDSA P-256, for ES256 JWTs), PEM:
    etcd derives the public key from it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _name(common_name: str, unit: str) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "quorumkeeper"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
    ]
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def new_authority(
    cluster: str, *, now: datetime, lifetime: timedelta = AUTHORITY_LIFETIME
) -> KeyPair:
    """A self-signed CA for `cluster`, valid from `now` (less `BACKDATE`) for `lifetime`; it
    signs leaf certificates only (path length 0). Its name ends with its key identifier's first
    8 hex digits: two CAs of one cluster made in the same second (a rotation right after `up`)
    still differ by name, which is how a verifier finds a leaf's issuer in a trust bundle."""
    key = _new_key()
    public = key.public_key()
    identifier = x509.SubjectKeyIdentifier.from_public_key(public).digest.hex()[:8]
    subject = _name(f"quorumkeeper {cluster} CA {now:%Y%m%dT%H%M%SZ} {identifier}", cluster)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def ending_soon(
    certificates: Mapping[str, bytes], now: datetime, within: timedelta = RENEW_BEFORE
) -> list[tuple[str, datetime]]:
    """Which of `certificates` (name -> PEM) end within `within` of `now`: (name, end of
    validity), soonest first. A PEM that can't be read is skipped (it is reissued anyway)."""
    found = []
    for name, pem in certificates.items():
        try:
            end = x509.load_pem_x509_certificate(pem).not_valid_after_utc
        except ValueError:
            continue
        if end - within <= now:
            found.append((name, end))
    return sorted(found, key=lambda item: (item[1], item[0]))


def _subject_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue(
    authority: KeyPair,
    *,
    common_name: str,
    hosts: Sequence[str],
    server: bool,
    client: bool,
    now: datetime,
    lifetime: timedelta = LEAF_LIFETIME,
) -> KeyPair:
    """A leaf certificate signed by `authority`, valid from `now` (less `BACKDATE`) for
    `lifetime`, never beyond the authority's own end.

    `hosts` become subject alternative names (IP literals as IP addresses, the rest as DNS
    names); `common_name` "" leaves the subject without one (etcd's gRPC gateway refuses a client
    certificate with a CN when client-certificate auth is on). `server` and `client` choose the
    extended key usages. Raises ValueError for neither usage or a server without hosts.
    """
    if not (server or client):
        raise ValueError("a certificate is for a server, a client or both")
    if server and not hosts:
        raise ValueError("a server certificate names the hosts it serves")
    ca_certificate = authority.loaded()
    ca_key = serialization.load_pem_private_key(authority.key, password=None)
    if not isinstance(ca_key, rsa.RSAPrivateKey):
        raise ValueError("the authority's key is not an RSA key")
    key = _new_key()
    usages = [
        *([ExtendedKeyUsageOID.SERVER_AUTH] if server else []),
        *([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []),
    ]
    unit = ca_certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, str(unit[0].value) if unit else ""))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + lifetime, ca_certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_subject_names(hosts)), critical=False
        )
    certificate = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def subject_hosts(certificate: x509.Certificate) -> set[str]:
    """The IP addresses and DNS names a certificate's subject alternative names hold."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return {str(name) for name in names.value.get_values_for_type(x509.IPAddress)} | set(
        names.value.get_values_for_type(x509.DNSName)
    )


def current(leaf: KeyPair, authority: KeyPair, hosts: Sequence[str], *, now: datetime) -> bool:
    """Whether `leaf` can be served as it is at `now`: signed by `authority`, further than
    `RENEW_BEFORE` from its end, naming exactly `hosts`. False for a certificate that can't be
    parsed."""
    try:
        certificate = leaf.loaded()
    except ValueError:
        return False
    signer = authority.loaded()
    if certificate.issuer != signer.subject:
        return False
    end = certificate.not_valid_after_utc
    if end <= now or (end - RENEW_BEFORE <= now and end < signer.not_valid_after_utc):
        return False  # one that ends with its CA is as good as any it signs: a rotation renews it
    return subject_hosts(certificate) == set(hosts)


def authority_due(authority: KeyPair, now: datetime) -> bool:
    """Whether CA `authority` is within `ROTATE_AUTHORITY_BEFORE` of its end at `now`."""
    return authority.not_after() - ROTATE_AUTHORITY_BEFORE <= now


@dataclass(frozen=True)
class TlsFiles:
    """Where a process finds its TLS material, as PEM files: `trust` is the bundle of CA
    certificates it trusts (the old and the new CA while a CA is rotated), `certificate` its
    own leaf certificate and `key` that certificate's key (mode 0600)."""

    trust: Path
    certificate: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A TLS client context that checks the server against `trust`, host name included,
        and presents `certificate`. Raises OSError or ssl.SSLError for unreadable files."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.trust))
        context.load_cert_chain(str(self.certificate), str(self.key))
        return context


class ReloadingContext:
    """The TLS client context of `files`, made again when one of them was replaced on disk (a
    renewal or a CA rotation writes them anew, by rename): for a client that outlives them."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._stamp: tuple[tuple[int, int], ...] = ()
        self._context: ssl.SSLContext | None = None

    def get(self) -> ssl.SSLContext:
        """Raises OSError or `ssl.SSLError` for files that can't be read."""
        paths = (self.files.trust, self.files.certificate, self.files.key)
        stamp = tuple((found.st_ino, found.st_mtime_ns) for found in map(os.stat, paths))
        if self._context is None or stamp != self._stamp:
            self._context, self._stamp = self.files.client_context(), stamp
        return self._context
