"""The store versions quorumkeeper runs and supports: facts every runtime shares.

Every version the project runs is pinned here and nowhere else; the local runtime builds them
into its cache (`runtimes.local.distributions`), the Kubernetes runtime names their images.
"""

from __future__ import annotations

from quorumkeeper.errors import Refused

ETCD_VERSION = "3.7.3"
"""The etcd release new clusters run; the newest one the Go module proxy serves."""

ETCD_PREVIOUS_VERSION = "3.6.16"
"""The newest 3.6 release the Go module proxy serves: the stop-over on the way to 3.7, built
beside `ETCD_VERSION` so upgrades from it are tested."""

ETCD_3_6_FLOOR = "3.5.26"
"""The oldest 3.5 release every member must run before any runs 3.6: 3.5.1-3.5.19 did not
persist learner promotions to the v3 store, which 3.6 reads as the membership (members come
back as learners, "too many learner member in cluster": etcd-io/etcd#19557), and a learner
could still receive such a membership in a snapshot from an older member up to 3.5.23
(etcd-io/etcd#20793, fixed in 3.5.24 by #20797); the floor is the newest 3.5 patch, as etcd's
upgrade policy asks before a minor upgrade (https://etcd.io/docs/v3.6/upgrades/upgrading-etcd/)."""

SUPPORTED_ETCD_SERIES = ("3.5", "3.6", "3.7")
"""etcd series with learners and the v3 JSON gateway paths the store relies on."""

ZOOKEEPER_VERSION = "3.9.5"
"""The ZooKeeper release new clusters run: the newest 3.9 whose dependencies Maven Central serves
(3.9.6 is listed but its parent POM is not served, so it cannot be resolved)."""

SUPPORTED_ZOOKEEPER_SERIES = ("3.8", "3.9")
"""ZooKeeper series with dynamic reconfiguration and the `mntr`/`srvr` answers the store reads."""

ZOOKEEPER_PREVIOUS_VERSION = "3.8.6"
"""The newest 3.8 release Maven Central can resolve (3.8.7's jar is served, its parent POM is
not), fetched beside `ZOOKEEPER_VERSION` so upgrades from it are tested."""

DEBIAN_ZOOKEEPER_VERSION = "3.8.0"
"""The release Debian 12 packages; selecting it runs Debian's jars instead of Maven's."""


ZOOKEEPER_DATA_LOSS = {
    "3.9.3": (
        "a follower that synced from the leader keeps a hole in its committed log and, once it "
        "leads, hands the hole on to other lagging servers, losing committed transactions "
        "(ZOOKEEPER-4925, fixed in 3.9.4: apache/zookeeper#2254)"
    ),
}
"""ZooKeeper releases with a known loss of committed data: never chosen for a cluster, nor
installed; a cluster already on one moves off it by a patch upgrade."""


def zookeeper_data_loss(version: str) -> str | None:
    """Why ZooKeeper `version` loses committed data, with the fix; None for other releases."""
    why = ZOOKEEPER_DATA_LOSS.get(version)
    if why is None:
        return None
    return (
        f"ZooKeeper {version} is refused: {why}; fix: use {ZOOKEEPER_VERSION} (or 3.9.4 or newer)"
    )


class UnsupportedZookeeperVersion(Refused):
    """A ZooKeeper version the project cannot run; the message says why and what to pick."""


def check_zookeeper_version(version: str, *, known_data_loss: bool = True) -> None:
    """Refuse versions without what the store needs, with the reason and the fix, and (unless
    `known_data_loss` is False: a spec stored before) the releases of `ZOOKEEPER_DATA_LOSS`."""
    loss = zookeeper_data_loss(version) if known_data_loss else None
    if loss is not None:
        raise UnsupportedZookeeperVersion(loss)
    series = ".".join(version.split(".")[:2])
    if series == "3.4":
        raise UnsupportedZookeeperVersion(
            f"ZooKeeper {version} is not supported: 3.4 has no dynamic reconfiguration (added in "
            f"3.5), so members could only be added or removed by restarting every server with a "
            f"new static zoo.cfg; fix: use {ZOOKEEPER_VERSION} (or a "
            f"{' or '.join(SUPPORTED_ZOOKEEPER_SERIES)} release)"
        )
    if series not in SUPPORTED_ZOOKEEPER_SERIES:
        raise UnsupportedZookeeperVersion(
            f"ZooKeeper {version} is not supported; fix: use one of the "
            f"{', '.join(SUPPORTED_ZOOKEEPER_SERIES)} series (default {ZOOKEEPER_VERSION})"
        )
