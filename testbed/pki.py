"""Certificates, service-account keys and kubeconfigs for a loopback control plane."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=7)


def _write_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


@dataclass(frozen=True)
class Pki:
    """Files the control plane components and clients are started with."""

    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path

    @classmethod
    def generate(cls, directory: Path, apiserver_ips: list[str]) -> Pki:
        """Create a fresh CA and sign the API server's serving cert and an admin client cert."""
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quorumkeeper-testbed-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .sign(ca_key, hashes.SHA256())
        )

        def leaf(
            name: str, cn: str, org: str | None, usage: x509.ObjectIdentifier, sans: list[str]
        ) -> tuple[Path, Path]:
            key = ec.generate_private_key(ec.SECP256R1())
            attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
            if org:
                attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name(attrs))
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now)
                .not_valid_after(now + _VALIDITY)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            )
            if sans:
                alt: list[x509.GeneralName] = []
                for san in sans:
                    try:
                        alt.append(x509.IPAddress(ipaddress.ip_address(san)))
                    except ValueError:
                        alt.append(x509.DNSName(san))
                builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
            cert = builder.sign(ca_key, hashes.SHA256())
            cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            _write_key(key, key_path)
            return cert_path, key_path

        apiserver_sans = [
            *apiserver_ips,
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        apiserver_cert, apiserver_key = leaf(
            "apiserver", "kube-apiserver", None, ExtendedKeyUsageOID.SERVER_AUTH, apiserver_sans
        )
        admin_cert, admin_key = leaf(
            "admin", "testbed-admin", "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH, []
        )
        ca_cert_path, ca_key_path = directory / "ca.crt", directory / "ca.key"
        ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(ca_key, ca_key_path)

        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa_key, sa_pub = directory / "sa.key", directory / "sa.pub"
        _write_key(sa, sa_key)
        sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return cls(
            ca_cert=ca_cert_path,
            ca_key=ca_key_path,
            apiserver_cert=apiserver_cert,
            apiserver_key=apiserver_key,
            admin_cert=admin_cert,
            admin_key=admin_key,
            sa_key=sa_key,
            sa_pub=sa_pub,
        )

    def write_kubeconfig(
        self, path: Path, server: str, client: tuple[Path, Path] | None = None
    ) -> Path:
        """A kubeconfig that references this PKI's files by path; the admin's unless ``client``
        names another (cert, key) pair."""
        cert, key = client or (self.admin_cert, self.admin_key)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {"server": server, "certificate-authority": str(self.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "testbed-admin",
                    "user": {
                        "client-certificate": str(cert),
                        "client-key": str(key),
                    },
                }
            ],
            "contexts": [
                {"name": "testbed", "context": {"cluster": "testbed", "user": "testbed-admin"}}
            ],
            "current-context": "testbed",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


def node_client_cert(pki: Pki, directory: Path, node: str) -> tuple[Path, Path]:
    """Kubelet's client cert for ``node``: ``CN=system:node:<node>, O=system:nodes``, the identity
    the Node authorizer and the NodeRestriction admission plugin expect, signed by the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):  # what Pki.generate writes
        raise TypeError(f"{pki.ca_key}: not the test bed's EC CA key but {type(ca_key).__name__}")
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "kubelet-client.crt", directory / "kubelet-client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


def self_signed(directory: Path, name: str, ip: str) -> tuple[Path, Path]:
    """A self-signed serving cert for ``ip``: the API server does not verify kubelet certs here."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path
