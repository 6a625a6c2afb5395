"""Which version changes a running cluster may take: the checked upgrade path, as pure rules.

Every runtime asks these before it stores a new version (the local `apply`, the operator), with
the versions its members really run, so a refusal changes nothing. The rules are the stores'
own: etcd supports patch upgrades within a minor and minor upgrades one minor at a time, after
updating to that minor's newest patch ("Upgrade policy",
https://etcd.io/docs/v3.6/upgrades/upgrading-etcd/). ZooKeeper is held to the same rule, the
path this project tests (3.8 -> 3.9). A newer release may write data or membership an older one
does not read, so downgrades are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from quorumkeeper import versions
from quorumkeeper.errors import Refused
from quorumkeeper.spec import Store

_RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


class UpgradeRefused(Refused):
    """A version change off the checked path; the message names both versions, the rule and
    the stop-over that makes it pass."""


def release(version: str) -> tuple[int, int, int]:
    """`"3.6.16"` -> `(3, 6, 16)`; a suffix such as ZooKeeper's `-<commit>` is ignored.
    Raises ValueError for text that starts with no major.minor.patch."""
    found = _RELEASE.match(version)
    if found is None:
        raise ValueError(f"{version!r} is not a major.minor.patch version")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def _series(major: int, minor: int) -> str:
    return f"{major}.{minor}"


def stop_over(store: Store, series: str) -> str:
    """The release to upgrade to within `series` on the way through it: the one built beside the
    pinned release where that is this series, etcd's 3.6 floor for 3.5, else the series' newest
    release (named only, for the user to pick)."""
    pinned = {
        Store.ETCD: (versions.ETCD_VERSION, versions.ETCD_PREVIOUS_VERSION),
        Store.ZOOKEEPER: (versions.ZOOKEEPER_VERSION, versions.ZOOKEEPER_PREVIOUS_VERSION),
    }[store]
    for version in pinned:
        if version.startswith(f"{series}."):
            return version
    if store is Store.ETCD and versions.ETCD_3_6_FLOOR.startswith(f"{series}."):
        return versions.ETCD_3_6_FLOOR
    return f"the newest {series} release"


def upgrade_refusal(store: Store, running: str, target: str) -> str | None:
    """Why a member running `running` may not move to `target`, with the fix; None when it may.

    Rules: the same release or a newer patch of the same minor passes; a newer minor passes when
    it is the next one (etcd 3.6 only from 3.5.26 on); anything older is a downgrade and refused.
    """
    name = "etcd" if store is Store.ETCD else "ZooKeeper"
    now, then = release(running), release(target)
    move = f"{name} {running} -> {target}"
    if then == now or (then[:2] == now[:2] and then > now):
        return None
    if then < now:
        own = (
            "etcd's own downgrade procedure (`etcdctl downgrade enable`, which lowers the "
            "cluster version before the binaries) is not supported by quorumkeeper"
            if store is Store.ETCD
            else "ZooKeeper supports no downgrade"
        )
        return (
            f"{move} is a downgrade: data and membership written by {running} may not load in "
            f"{target}, and {own}; fix: keep version {running} (take version out of the file)"
        )
    if then[0] != now[0]:
        return (
            f"{move} changes the major version, which has no supported upgrade path; fix: keep "
            f"version {running}, or create a new cluster at {target} and copy the data over"
        )
    stops = _stop_overs(store, now, then)
    if not stops:
        return None
    fix = f"fix: set version {', then '.join([*stops, target])}, applying each before the next"
    if then[1] > now[1] + 1:
        step = _series(now[0], now[1] + 1)
        return (
            f"{move} skips {step}; rule: an upgrade moves one minor at a time ({name}'s "
            f"upgrade policy); {fix}"
        )
    floor = versions.ETCD_3_6_FLOOR
    return (
        f"{move}: every member must run {floor} or newer before 3.6; 3.5 releases before it "
        f"may not have persisted learner promotions to the store 3.6 reads membership from, and "
        f"3.6 then fails to start (etcd-io/etcd#19557, #20793); {fix}"
    )


def _stop_overs(store: Store, now: tuple[int, int, int], then: tuple[int, int, int]) -> list[str]:
    """The releases to run, in order, between `now` and the newer `then` of the same major:
    etcd's 3.6 floor when a 3.5 below it goes to 3.6 or later, then one per skipped minor."""
    stops = []
    floor = release(versions.ETCD_3_6_FLOOR)
    if store is Store.ETCD and now < floor and then[:2] > floor[:2]:
        stops.append(versions.ETCD_3_6_FLOOR)
    stops.extend(stop_over(store, _series(now[0], minor)) for minor in range(now[1] + 1, then[1]))
    return stops


def check_upgrade(store: Store, running: Iterable[str], target: str) -> None:
    """Refuse `target` unless every version in `running` (what the members run now, and the
    spec's) may move to it; raises `UpgradeRefused` naming the first that may not."""
    for version in sorted(set(running), key=release):
        refusal = upgrade_refusal(store, version, target)
        if refusal is not None:
            raise UpgradeRefused(f"version: {refusal}")
