"""RBD images that ceph-csi created for this cluster but no PV references any more.

With reclaim policy Retain, or after a PV was deleted by hand, ceph-csi never removes the
image; these pile up unseen. Cleaning them up is the one place where a bug destroys user data
outright, so the rules fail closed:

- Ownership first: an image is this cluster's only if ceph-csi's journal for this cluster's
  instance id names it (see `journal.py`), or the user lists it explicitly. Images another
  instance's journal or the image metadata `csi.ceph.com/cluster/name` assign elsewhere,
  snapshot clones (`csi-snap-...`) and images with snapshots or clones, images with watchers
  or locks, and images already in the trash are kept, each with its reasons.
- Evidence must be complete: an empty PV list is refused unless the caller vouches for it
  *and* this instance's journal exists to name what is ours; a PV source that failed never
  reaches here (the caller refuses).
- Deleting means `rbd trash mv` with a deferment, so a mistake can be undone with
  `rbd trash restore`; removing trash entries for good is a separate, explicit purge.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from quorumkeeper.ceph.client import CephClient, CephError, ImageInfo, TrashEntry
from quorumkeeper.ceph.journal import Journal, JournalEntry, Kind, other_journals, read_journal

CLUSTER_NAME_KEY = "csi.ceph.com/cluster/name"  # ceph-csi --clustername, with --setmetadata
SNAPSHOT_PREFIX = "csi-snap-"
DEFAULT_DEFERMENT_S = 3 * 86400
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_HANDLE_UUID = re.compile(rf"({_UUID})$")


class Action(StrEnum):
    TRASH = "trash"  # ours and unused: `--delete` moves it to the trash
    KEEP = "keep"
    PURGE = "purge"  # a trash entry of ours whose deferment is over: `--purge-trash` removes it


@dataclass(frozen=True)
class PvRef:
    """One PV as the PV source reported it (`image` from volumeAttributes when present)."""

    pv: str
    handle: str
    image: str | None = None


@dataclass(frozen=True)
class Ownership:
    """How this cluster's images are recognised: ceph-csi's `--instanceid` and
    `--clustername`, plus image names the user vouches for."""

    instance_id: str
    cluster_name: str | None = None
    explicit: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ImageVerdict:
    """What `--delete` (images) or `--purge-trash` (trash entries) does with one image, and why.

    `size` in bytes, `age_s` seconds since creation (None for trash entries).
    """

    image: str
    action: Action
    owner: str
    reasons: tuple[str, ...]
    size: int | None = None
    age_s: float | None = None
    trash: TrashEntry | None = None


@dataclass(frozen=True)
class OrphanPlan:
    pool: str
    instance_id: str
    deferment_s: int
    images: tuple[ImageVerdict, ...]
    trash: tuple[ImageVerdict, ...]

    @property
    def to_trash(self) -> tuple[ImageVerdict, ...]:
        return tuple(v for v in self.images if v.action == Action.TRASH)

    @property
    def to_purge(self) -> tuple[ImageVerdict, ...]:
        return tuple(v for v in self.trash if v.action == Action.PURGE)


@dataclass(frozen=True)
class Outcome:
    """One deletion or purge as it happened; `done` False means the image was left as it was."""

    image: str
    done: bool
    message: str


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


def restore_command(pool: str, trash_id: str) -> str:
    return f"rbd trash restore -p {pool} {trash_id}"


def _referencing(
    pvs: Iterable[PvRef], journal: Journal, images: Iterable[str]
) -> dict[str, list[str]]:
    """Image -> the PVs that reference it, matched every way ceph-csi links them: the PV's
    imageName attribute, the journal entry of the handle's uuid, and the image name's uuid."""
    by_uuid = journal.by_uuid()
    names = list(images)
    refs: dict[str, list[str]] = {}
    for ref in pvs:
        uuid = handle_uuid(ref.handle)
        targets = {n for n in names if n.endswith(uuid)}
        if ref.image:
            targets.add(ref.image)
        if uuid in by_uuid:
            targets.add(by_uuid[uuid].image)
        for t in targets:
            refs.setdefault(t, []).append(ref.pv)
    return refs


def _in_use(info: ImageInfo) -> list[str]:
    """Reasons an image is busy or load-bearing right now, whoever owns it."""
    reasons = []
    reasons += [f"watched by {w.client} at {w.address} (in use)" for w in info.watchers]
    reasons += [f"locked by {lk.client} at {lk.address} ({lk.cookie!r})" for lk in info.lockers]
    if info.children:
        reasons.append(f"parent of clone(s) {', '.join(info.children)}")
    if info.snapshots:
        snaps = ", ".join(
            f"{s.name}{' (protected)' if s.protected else ''}" for s in info.snapshots
        )
        reasons.append(f"has snapshot(s) {snaps}")
    return reasons


def _owner(
    image: str,
    info: ImageInfo,
    ours: dict[str, JournalEntry],
    foreign: dict[str, JournalEntry],
    ownership: Ownership,
    journal: Journal,
    trust_explicit: bool,
) -> tuple[str, list[str]]:
    """Who owns `image`, and the reasons that forbid treating it as ours."""
    reasons = []
    entry = ours.get(image)
    if image in foreign:
        other = foreign[image]
        reasons.append(
            f"named by the journal of ceph-csi instance {other.instance!r} "
            f"(csi.volumes.{other.instance}, request {other.request}): another cluster's volume"
        )
    meta = info.metadata.get(CLUSTER_NAME_KEY)
    if meta is not None and meta != ownership.cluster_name:
        if ownership.cluster_name:
            reasons.append(
                f"image metadata {CLUSTER_NAME_KEY}={meta!r}, not this cluster's "
                f"{ownership.cluster_name!r}"
            )
        else:
            reasons.append(
                f"image metadata {CLUSTER_NAME_KEY}={meta!r}; pass --cluster-name {meta} if "
                "that is this cluster"
            )
    if entry is not None:
        owner = f"{ownership.instance_id} ({entry.request})"
    elif image in foreign:
        owner = foreign[image].instance
    elif image in ownership.explicit and trust_explicit:
        owner = "listed by you"
    else:
        owner = "unknown"
        if image in ownership.explicit:
            reasons.append(
                "listed by you, but with an empty PV list only the journal proves ownership"
            )
        elif image not in foreign:
            reasons.append(
                f"not named by {journal.directory}"
                + ("" if journal.exists else " (no such journal in this pool)")
                + ": not proven this cluster's"
            )
    if (entry is not None and entry.kind == Kind.SNAPSHOT) or image.startswith(SNAPSHOT_PREFIX):
        what = f" {entry.request}" if entry is not None else ""
        reasons.append(f"snapshot clone standing for VolumeSnapshot content{what}")
    return owner, reasons


def _trash_verdict(
    pool: str,
    entry: TrashEntry,
    ours: dict[str, JournalEntry],
    ownership: Ownership,
    now: datetime,
) -> ImageVerdict:
    reasons = [
        f"in the RBD trash since {entry.moved:%Y-%m-%d %H:%M} UTC (source {entry.source}, "
        f"id {entry.id})"
    ]
    journal_entry = ours.get(entry.name)
    owner = (
        f"{ownership.instance_id} ({journal_entry.request})"
        if journal_entry
        else "listed by you"
        if entry.name in ownership.explicit
        else "unknown"
    )
    purgeable = owner != "unknown"
    if not purgeable:
        reasons.append("not proven this cluster's: --purge-trash leaves it")
    if entry.source != "USER":
        purgeable = False
        reasons.append(f"trashed by {entry.source.lower()}, not by a user: left to Ceph")
    if entry.deferred_until > now:
        purgeable = False
        reasons.append(
            f"deferred until {entry.deferred_until:%Y-%m-%d %H:%M} UTC; restore with "
            f"`{restore_command(pool, entry.id)}`"
        )
    if purgeable:
        reasons.append("deferment over: --purge-trash removes it for good")
    return ImageVerdict(
        entry.name, Action.PURGE if purgeable else Action.KEEP, owner, tuple(reasons), trash=entry
    )


def find_orphans(
    client: CephClient,
    pool: str,
    pvs: Iterable[PvRef],
    ownership: Ownership,
    *,
    empty_pv_list_confirmed: bool = False,
    deferment_s: int = DEFAULT_DEFERMENT_S,
    now: datetime | None = None,
) -> OrphanPlan:
    """What `--delete` and `--purge-trash` would do in `pool`, with a reason for every image.

    `pvs` must be every PV that exists (the caller refuses partial or failed PV lists).
    Raises CephError if the evidence can't support any deletion: an empty PV list not
    confirmed, or confirmed while this instance's journal is missing; an unreadable journal.
    """
    now = now or datetime.now(UTC)
    refs = list(pvs)
    journal = read_journal(client, pool, ownership.instance_id)
    if not refs:
        if not empty_pv_list_confirmed:
            raise CephError(
                "the PV list is empty: a new cluster, a wrong context or a permissions filter "
                "looks exactly like this, and every image would seem unreferenced. Nothing "
                "listed or deleted; if truly no PV exists, pass --no-pvs",
                field="pvs",
            )
        if not journal.exists:
            raise CephError(
                f"--no-pvs needs ceph-csi's journal to agree, but {journal.directory} does not "
                f"exist in pool {pool!r}: check --instance-id (ceph-csi's --instanceid)",
                field="pvs",
            )
    ours = journal.by_image()
    foreign = other_journals(client, pool, ownership.instance_id)
    names = sorted(client.list_images(pool))
    referenced = _referencing(refs, journal, names)
    verdicts = []
    for image in names:
        info = client.image_info(pool, image)
        owner, reasons = _owner(image, info, ours, foreign, ownership, journal, bool(refs))
        if image in referenced:
            reasons.insert(0, f"referenced by PV {', '.join(sorted(referenced[image]))}")
        reasons += _in_use(info)
        action = Action.KEEP if reasons else Action.TRASH
        if not reasons:
            reasons = [
                "ours and unused: no PV, watcher, lock, snapshot or clone; --delete moves it to "
                f"the trash for {deferment_s / 86400:g} d"
            ]
        verdicts.append(
            ImageVerdict(
                image,
                action,
                owner,
                tuple(reasons),
                size=info.size,
                age_s=(now - info.created).total_seconds(),
            )
        )
    trash = tuple(_trash_verdict(pool, e, ours, ownership, now) for e in client.trash_list(pool))
    return OrphanPlan(pool, ownership.instance_id, deferment_s, tuple(verdicts), trash)


def _trash_id(client: CephClient, pool: str, image: str) -> str:
    """The newest trash id of `image`; a placeholder if the trash can't be read just now, as
    the move itself already succeeded."""
    try:
        entries = [e for e in client.trash_list(pool) if e.name == image]
    except CephError:
        entries = []
    return max(entries, key=lambda e: e.moved).id if entries else "<ID from rbd trash ls>"


def delete_orphans(
    client: CephClient,
    plan: OrphanPlan,
    report: Callable[[Outcome], None] = lambda _: None,
) -> list[Outcome]:
    """Move each planned image to the trash, re-checking it first; `report` is called as each
    one is done, and one failure never stops the rest."""
    outcomes = []
    for verdict in plan.to_trash:
        try:
            info = client.image_info(plan.pool, verdict.image)
            busy = _in_use(info)
            if busy:
                outcome = Outcome(
                    verdict.image, False, f"not moved: {'; '.join(busy)} (since the listing)"
                )
            else:
                client.trash_move(plan.pool, verdict.image, plan.deferment_s)
                until = datetime.now(UTC) + timedelta(seconds=plan.deferment_s)
                outcome = Outcome(
                    verdict.image,
                    True,
                    f"moved to the trash, restorable until {until:%Y-%m-%d %H:%M} UTC with "
                    f"`{restore_command(plan.pool, _trash_id(client, plan.pool, verdict.image))}`",
                )
        except CephError as exc:
            outcome = Outcome(verdict.image, False, f"failed: {exc}")
        outcomes.append(outcome)
        report(outcome)
    return outcomes


def purge_trash(
    client: CephClient,
    plan: OrphanPlan,
    report: Callable[[Outcome], None] = lambda _: None,
) -> list[Outcome]:
    """Remove for good the trash entries that are ours and past their deferment."""
    outcomes = []
    for verdict in plan.to_purge:
        assert verdict.trash is not None
        try:
            client.trash_remove(plan.pool, verdict.trash)
            outcome = Outcome(verdict.image, True, f"removed from the trash ({verdict.trash.id})")
        except CephError as exc:
            outcome = Outcome(verdict.image, False, f"failed: {exc}")
        outcomes.append(outcome)
        report(outcome)
    return outcomes
