"""ZooKeeper's four-letter words: each server's own account of itself (mode, zxid, epoch, how many
voters follow it in sync), read without a session, so asking writes nothing to the ensemble.

On a TLS ensemble they are asked on the secure client port, inside a TLS session with the
keeper's client certificate: Netty's connection handler reads a four-letter word as the first
bytes of a connection once TLS is set up (`NettyServerCnxn.checkFourLetterWord`; measured on
3.8.6 and 3.9.5: `srvr`, `mntr`, `conf` and `ruok` answer as on the plain port), so no plain
listener is needed for them, and `zookeeper.enforce.auth.enabled` does not apply to them (they
open no session).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from quorumkeeper.stores.zookeeper.ensemble import CLIENT_PORT

FOUR_LETTER_WORDS = ("srvr", "mntr", "conf", "ruok")
"""The only four-letter words a server answers: what the store reads, plus `ruok` for probes."""

_SERVING_MODES = {"leader", "follower", "observer"}


def four_letter_word(
    address: str, word: str, timeout: float, tls: ssl.SSLContext | None = None
) -> str:
    """Send one four-letter word to a server's client port and return its whole answer.

    `tls`: the client context of a TLS ensemble (the server's certificate is checked against
    `address`); None for a plain one. Raises OSError (ssl.SSLError included) when the server
    does not answer or refuses the handshake."""
    with socket.create_connection((address, CLIENT_PORT), timeout=timeout) as raw:
        connection = raw if tls is None else tls.wrap_socket(raw, server_hostname=address)
        with connection:
            connection.sendall(word.encode())
            chunks = []
            while chunk := connection.recv(65536):  # mntr answers tens of KiB
                chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class ServerState:
    """One server's own account of itself. `mode` is None while it is not serving (electing,
    syncing, or cut off from a quorum): ZooKeeper only reports a mode while it serves.
    `synced_voters` is, on a server in leader mode, how many voting followers are in sync with
    it (itself not counted). `version` is the release it runs, from `srvr`'s "Zookeeper
    version:" line ("3.9.5-<commit>, built on <date>" -> "3.9.5"), None while it does not serve
    (`srvr` then answers only that it is not serving)."""

    mode: str | None
    zxid: int | None
    data_bytes: int | None
    synced_voters: int | None = None
    version: str | None = None

    @property
    def serving(self) -> bool:
        return self.mode in _SERVING_MODES

    @property
    def epoch(self) -> int | None:
        return None if self.zxid is None else self.zxid >> 32


_MNTR_KEYS = (
    "zk_synced_followers\t",
    "zk_synced_non_voting_followers\t",
    "zk_approximate_data_size\t",
)


def _count(metrics: dict[str, str], key: str) -> int | None:
    value = metrics.get(key)
    return int(value) if value is not None and value.isdigit() else None


def server_state(
    address: str,
    timeout: float,
    previous: ServerState | None = None,
    tls: ssl.SSLContext | None = None,
) -> ServerState | None:
    """`srvr` and `mntr` of one server (over TLS with `tls`); None when it does not answer at all.

    On a leader, `mntr`'s `zk_synced_followers` counts every follower in sync, non-voting ones
    (joiners) included, and `zk_synced_non_voting_followers` those alone
    (`LeaderZooKeeperServer.registerMetrics`): the difference is the voters following it.

    `previous`, this server's state as last asked, spares the `mntr` (some 19 KiB to read and
    split) of a server that does not lead and whose mode and zxid are unchanged: all it adds
    for a non-leader is the data size, which only an applied transaction changes (ZooKeeper's
    `DataTree` adjusts `nodeDataSize` in `createNode`, `deleteNode` and `setData`), and every
    applied transaction moves the zxid. A leader's count of synced followers changes without
    a transaction, so a leader's `mntr` is always read.
    """
    try:
        srvr = four_letter_word(address, "srvr", timeout, tls)
    except OSError:
        return None
    fields = dict(line.split(": ", 1) for line in srvr.splitlines() if ": " in line)
    mode = fields.get("Mode")
    zxid = int(fields["Zxid"], 16) if "Zxid" in fields else None
    if (
        previous is not None
        and previous.data_bytes is not None  # its last `mntr` was read
        and mode != "leader"
        and (previous.mode, previous.zxid) == (mode, zxid)
    ):
        return previous
    metrics: dict[str, str] = {}
    if mode is not None:
        try:
            mntr = four_letter_word(address, "mntr", timeout, tls)
        except OSError:
            mntr = ""
        # mntr answers some 500 lines (3.9: every metric); parse only the three read here
        metrics = dict(
            line.split("\t", 1) for line in mntr.splitlines() if line.startswith(_MNTR_KEYS)
        )
    synced = _count(metrics, "zk_synced_followers")
    non_voting = _count(metrics, "zk_synced_non_voting_followers")
    return ServerState(
        mode=mode,
        zxid=zxid,
        data_bytes=_count(metrics, "zk_approximate_data_size"),
        synced_voters=None if synced is None else synced - (non_voting or 0),
        version=_release(fields.get("Zookeeper version")),
    )


def _release(banner: str | None) -> str | None:
    """The release at the head of `srvr`'s version line, up to its commit or build note
    (`Version.getFullVersion()`: "3.9.5-<commit>, built on <date> UTC")."""
    if banner is None:
        return None
    return banner.split(",", 1)[0].split("-", 1)[0].strip() or None


def serving_id(address: str, timeout: float, tls: ssl.SSLContext | None = None) -> int | None:
    """The server id the server on `address` runs as (`conf`), while it serves."""
    try:
        conf = four_letter_word(address, "conf", timeout, tls)
    except OSError:
        return None
    fields = dict(line.split("=", 1) for line in conf.splitlines() if "=" in line)
    value = fields.get("serverId", "")
    return int(value) if value.isdigit() else None
