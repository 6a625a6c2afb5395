"""What an etcd member is started with, rendered from the spec: its flags. Pure values; the
runtime adds the binary and the data directory (a command line locally, container `args` on
Kubernetes, where the image has no shell to expand anything else)."""

from __future__ import annotations

from quorumkeeper.certificates import TlsFiles
from quorumkeeper.model import Endpoint, Peer
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.stores.etcd.client import client_url, peer_url


def member_flags(
    endpoint: Endpoint,
    peers: list[Peer],
    settings: EtcdSettings,
    cluster_token: str,
    *,
    bootstrap: bool,
    tls: TlsFiles | None = None,
    token_key: str | None = None,
) -> list[str]:
    """The flags of `endpoint` starting with `peers` (itself included) as its membership.

    etcd names peers, not member IDs, in `--initial-cluster`; it learns IDs itself. `bootstrap`
    starts a new cluster of this one member; otherwise it joins a membership that lists it.
    `tls` is the member's certificate: with it every URL is https and `tls_flags` are added.
    `token_key` is the file of the key every member signs authentication tokens with
    (`token_flags`); None leaves etcd's default, simple tokens.
    """
    secure = tls is not None
    initial = ",".join(
        f"{peer.endpoint.name}={peer_url(peer.endpoint.address, tls=secure)}" for peer in peers
    )
    return [
        f"--name={endpoint.name}",
        f"--listen-client-urls={client_url(endpoint.client_host, tls=secure)}",
        f"--advertise-client-urls={client_url(endpoint.client_host, tls=secure)}",
        f"--listen-peer-urls={peer_url(endpoint.address, tls=secure)}",
        f"--initial-advertise-peer-urls={peer_url(endpoint.address, tls=secure)}",
        f"--initial-cluster={initial}",
        f"--initial-cluster-state={'new' if bootstrap else 'existing'}",
        f"--initial-cluster-token={cluster_token}",
        *(tls_flags(tls) if tls else []),
        *(token_flags(token_key) if token_key else []),
        *setting_flags(settings),
    ]


TOKEN_TTL = "1h"
"""How long a signed token is good for; a client asks for a new one when it is refused, so an
idle keeper makes one raft request per `TOKEN_TTL`. Any change of a user or role refuses every
older token at once (a token carries the auth store's revision, etcd-io/etcd#13300)."""


def token_flags(key: str) -> list[str]:
    """Signed tokens (JWT, ES256) with the private key in file `key`, which every member of
    the cluster is given: a token any member issued is good on every member and across their
    restarts, so a client that fails over to another member, or back to a restarted one, goes
    on with the token it has. etcd's default simple tokens live in the memory of the members
    that applied the authentication (a raft request with a bcrypt check, 0.15-0.5 s measured
    on a loaded machine), and every restart of a rollout drops them, so a client failing over
    during one had to ask again inside its write gap. etcd recommends signed tokens for
    production; they are refused once expired (`TOKEN_TTL`), and a client then asks again."""
    return [f"--auth-token=jwt,priv-key={key},sign-method=ES256,ttl={TOKEN_TTL}"]


def tls_flags(tls: TlsFiles) -> list[str]:
    """Client and peer TLS with the member's certificate, each side asking the other for a
    certificate of the cluster's CA (`--client-cert-auth`, `--peer-client-cert-auth`), so a
    client without one is refused at the handshake. A reissued certificate is taken up at
    the member's next start, which the launcher's fingerprint brings about.

    etcd also checks that a peer's certificate names the address the peer connects from; a
    member's outgoing connections do not leave from the address it serves on (locally they
    come from 127.0.0.1: "x509: certificate is valid for 127.71.20.2, not 127.0.0.1", measured
    on etcd 3.7.3), so that check is skipped. The chain to the cluster's own CA, which only
    its members' certificates have, is still required."""
    return [
        f"--cert-file={tls.certificate}",
        f"--key-file={tls.key}",
        f"--trusted-ca-file={tls.trust}",
        "--client-cert-auth",
        f"--peer-cert-file={tls.certificate}",
        f"--peer-key-file={tls.key}",
        f"--peer-trusted-ca-file={tls.trust}",
        "--peer-client-cert-auth",
        "--peer-skip-client-san-verification",
    ]


def setting_flags(settings: EtcdSettings) -> list[str]:
    """The flags the spec's settings give every member alike, whatever its place."""
    return [
        f"--heartbeat-interval={settings.heartbeat_interval_ms}",
        f"--election-timeout={settings.election_timeout_ms}",
        f"--snapshot-count={settings.snapshot_count}",
        f"--quota-backend-bytes={settings.quota_backend_bytes}",
        f"--auto-compaction-mode={settings.auto_compaction_mode}",
        f"--auto-compaction-retention={settings.auto_compaction_retention}",
        "--log-level=info",
    ]
