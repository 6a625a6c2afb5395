"""What an etcd member is started with, rendered from the spec: its flags. Pure values; the
runtime adds the binary and the data directory (a command line locally, container `args` on
Kubernetes, where the image has no shell to expand anything else)."""

from __future__ import annotations

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
) -> list[str]:
    """The flags of `endpoint` starting with `peers` (itself included) as its membership.

    etcd names peers, not member IDs, in `--initial-cluster`; it learns IDs itself. `bootstrap`
    starts a new cluster of this one member; otherwise it joins a membership that lists it.
    """
    initial = ",".join(f"{peer.endpoint.name}={peer_url(peer.endpoint.address)}" for peer in peers)
    return [
        f"--name={endpoint.name}",
        f"--listen-client-urls={client_url(endpoint.client_host)}",
        f"--advertise-client-urls={client_url(endpoint.client_host)}",
        f"--listen-peer-urls={peer_url(endpoint.address)}",
        f"--initial-advertise-peer-urls={peer_url(endpoint.address)}",
        f"--initial-cluster={initial}",
        f"--initial-cluster-state={'new' if bootstrap else 'existing'}",
        f"--initial-cluster-token={cluster_token}",
        *setting_flags(settings),
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
