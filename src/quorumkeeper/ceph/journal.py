"""Reading ceph-csi's RADOS omap journal: which RBD images a ceph-csi instance created.

Layout, as ceph-csi's `internal/journal/voljournal.go` writes it (RBD, default namespace):

- `csi.volumes.<instance-id>`: omap keys `csi.volume.<request name>` (the PV name) whose value
  is the volume uuid, or `<pool id as 16 hex digits>/<uuid>` when the image lives in a pool
  other than the journal's;
- `csi.volume.<uuid>` in the image's pool: omap keys `csi.imagename` (the RBD image; absent on
  old volumes, which are then `csi-vol-<uuid>`), `csi.volname` (the request name),
  `csi.imageid`, optionally `csi.journalpool`;
- the same for snapshots under `csi.snaps.<instance-id>` / `csi.snap.<uuid>`
  (`csi-snap-<uuid>` images, with `csi.source` naming the parent volume).

`<instance-id>` is ceph-csi's `--instanceid` (default "default"), distinct per Kubernetes
cluster sharing a Ceph cluster; it is what makes an image provably one cluster's.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum

from quorumkeeper.ceph.client import CephClient, CephError


class Kind(StrEnum):
    VOLUME = "volume"
    SNAPSHOT = "snapshot"


# (directory prefix, directory key prefix, per-uuid object prefix, default image prefix)
_LAYOUT = {
    Kind.VOLUME: ("csi.volumes.", "csi.volume.", "csi.volume.", "csi-vol-"),
    Kind.SNAPSHOT: ("csi.snaps.", "csi.snap.", "csi.snap.", "csi-snap-"),
}


@dataclass(frozen=True)
class JournalEntry:
    """One image a ceph-csi instance reserved: `request` is the PV (or snapshot) name."""

    instance: str
    kind: Kind
    request: str
    uuid: str
    image: str


@dataclass(frozen=True)
class Journal:
    """One instance's journal in one pool; `exists` is False if it never created a volume."""

    instance: str
    pool: str
    exists: bool
    entries: tuple[JournalEntry, ...]

    @property
    def directory(self) -> str:
        return f"csi.volumes.{self.instance}"

    def by_image(self) -> dict[str, JournalEntry]:
        return {e.image: e for e in self.entries}

    def by_uuid(self) -> dict[str, JournalEntry]:
        return {e.uuid: e for e in self.entries}


def _text(value: bytes) -> str:
    return value.decode(errors="replace")


def read_journal(client: CephClient, pool: str, instance: str) -> Journal:
    """Every volume and snapshot image instance `instance` recorded in `pool`.

    Raises CephError (field "journal") if any journal object exists but can't be read: an
    unreadable journal proves nothing, so callers must not decide ownership without it.
    """
    pools = client.pools()
    pool_id = int(pools[pool]["pool_id"]) if pool in pools else None
    entries: list[JournalEntry] = []
    exists = False
    for kind, (directory, key_prefix, object_prefix, image_prefix) in _LAYOUT.items():
        name = directory + instance
        try:
            keys = client.omap(pool, name)
            if keys is None:
                continue
            exists = True
            for key, value in sorted(keys.items()):
                if not key.startswith(key_prefix):
                    continue
                where, _, uuid = _text(value).rpartition("/")
                if where and int(where, 16) != pool_id:
                    continue  # the image lives in another pool
                record = client.omap(pool, object_prefix + uuid)
                if record is None:
                    continue  # a half-made reservation ceph-csi itself would undo
                image = _text(record.get("csi.imagename", (image_prefix + uuid).encode()))
                request = _text(
                    record.get("csi.volname" if kind == Kind.VOLUME else "csi.snapname", b"")
                )
                entries.append(
                    JournalEntry(
                        instance, kind, request or key.removeprefix(key_prefix), uuid, image
                    )
                )
        except (CephError, ValueError) as exc:
            code = getattr(exc, "errno", None)
            raise CephError(
                f"cannot read ceph-csi's journal {name} in pool {pool!r}: {exc}; without it no "
                "image can be proven to belong to this cluster, so nothing is deleted"
                + (
                    " (grant read access: `quorumkeeper ceph check` prints the caps fix)"
                    if code in (errno.EACCES, errno.EPERM)
                    else ""
                ),
                field="journal",
                errno_=code,
            ) from exc
    return Journal(instance, pool, exists, tuple(entries))


def other_journals(client: CephClient, pool: str, instance: str) -> dict[str, JournalEntry]:
    """Images that journals of *other* ceph-csi instances in `pool` name, by image name."""
    named: dict[str, JournalEntry] = {}
    try:
        directories = client.object_names(pool, "csi.")
    except CephError as exc:
        raise CephError(
            f"cannot list ceph-csi journals in pool {pool!r}: {exc}", field="journal"
        ) from exc
    others = {
        d.removeprefix(prefix)
        for d in directories
        for prefix in ("csi.volumes.", "csi.snaps.")
        if d.startswith(prefix) and d.removeprefix(prefix) != instance
    }
    for other in sorted(others):
        named.update(read_journal(client, pool, other).by_image())
    return named
