"""RBD images that ceph-csi created but no PV references any more.

With reclaim policy Retain, or after a PV was deleted by hand, ceph-csi never removes the
image; these pile up unseen. ceph-csi names images `<prefix><uuid>` and ends each PV's
volume handle with the same uuid, which is how images and PVs are matched here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from quorumkeeper.ceph.client import CephClient, CephError

CSI_VOL_PREFIX = "csi-vol-"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_HANDLE_UUID = re.compile(rf"({_UUID})$")


@dataclass(frozen=True)
class OrphanImage:
    pool: str
    image: str
    size: int
    created: datetime
    age_s: float
    watchers: int
    locked: bool


@dataclass(frozen=True)
class OrphanReport:
    pool: str
    orphans: tuple[OrphanImage, ...]
    referenced: tuple[str, ...]  # csi images some PV still points at
    foreign: tuple[str, ...]  # images not named by ceph-csi: never considered


@dataclass(frozen=True)
class Deletion:
    image: str
    deleted: bool
    reason: str


def handle_uuid(handle: str) -> str:
    """The uuid a ceph-csi volume handle ends with; a clear error otherwise."""
    m = _HANDLE_UUID.search(handle.strip())
    if not m:
        raise CephError(
            f"volume handle {handle!r} is not a ceph-csi RBD handle (it should end with a uuid, "
            "e.g. 0001-0024-<clusterID>-0000000000000001-<uuid>)",
            field="volume-handle",
        )
    return m.group(1)


def find_orphans(
    client: CephClient,
    pool: str,
    handles: Iterable[str],
    prefix: str = CSI_VOL_PREFIX,
    now: datetime | None = None,
) -> OrphanReport:
    """Orphans among `pool`'s ceph-csi images, given every PV volume handle that exists."""
    wanted = {handle_uuid(h) for h in handles}
    now = now or datetime.now(UTC)
    orphans, referenced, foreign = [], [], []
    for image in sorted(client.list_images(pool)):
        suffix = image.removeprefix(prefix)
        if suffix == image or not re.fullmatch(_UUID, suffix):
            foreign.append(image)
        elif suffix in wanted:
            referenced.append(image)
        else:
            info = client.image_info(pool, image)
            orphans.append(
                OrphanImage(
                    pool=pool,
                    image=image,
                    size=info.size,
                    created=info.created,
                    age_s=(now - info.created).total_seconds(),
                    watchers=len(info.watchers),
                    locked=bool(info.lockers),
                )
            )
    return OrphanReport(pool, tuple(orphans), tuple(referenced), tuple(foreign))


def delete_orphans(client: CephClient, report: OrphanReport) -> list[Deletion]:
    """Remove the orphans, re-checking each just before: never one in use (watched or locked)."""
    results = []
    for orphan in report.orphans:
        try:
            info = client.image_info(orphan.pool, orphan.image)
        except CephError as exc:
            results.append(Deletion(orphan.image, False, f"skipped: {exc}"))
            continue
        if info.watchers:
            addrs = ", ".join(w.address for w in info.watchers)
            results.append(Deletion(orphan.image, False, f"skipped: watched by {addrs}"))
        elif info.lockers:
            results.append(
                Deletion(orphan.image, False, "skipped: locked (see `quorumkeeper ceph locks`)")
            )
        else:
            client.remove_image(orphan.pool, orphan.image)
            results.append(Deletion(orphan.image, True, "removed"))
    return results
