"""Maintenance an operator starts: the way out of etcd's NOSPACE alarm.

Once a member's database file grows past `quota_backend_bytes`, etcd raises NOSPACE and the
whole cluster refuses writes (reads and deletes go on) until the alarm is disarmed; disarming
alone does not help, because the next write raises it again while the file is still too big.
The file only shrinks when old revisions are compacted and then each member is defragmented
(etcd docs, "Maintenance: space quota"). Defragmenting a member stops it serving while it runs,
and defragmenting the leader stalls the whole cluster (etcd-backup-restore#1052), so followers
go first, one at a time, then leadership moves to a defragmented follower and the old leader
goes last. Only then is NOSPACE disarmed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from quorumkeeper.errors import Refused
from quorumkeeper.model import Member, Role
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.etcd.client import EtcdStore

NOSPACE = "NOSPACE"
DEFAULT_QUOTA_BYTES = 2 * 1024**3
"""What etcd uses when its status reports a quota of 0 (no `--quota-backend-bytes`)."""
FULL_WARNING_SHARE = 0.8
"""Above this share of the quota after reclaiming, the data itself is the problem: warn."""


class MaintenanceRefused(Refused):
    """The procedure cannot start or go on safely; the message says why and what to do."""


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise StoreError(f"timed out after {timeout:.0f}s waiting until {what}", retryable=True)
        time.sleep(0.1)


class SpaceReclaimer:
    """Compact, defragment followers then the old leader, disarm NOSPACE, saying each step.

    `name_of` turns a member into the name people know it by; `say` prints one line as the
    step happens. Safe to run again after any failure: every step is idempotent.
    """

    def __init__(
        self,
        store: EtcdStore,
        name_of: Callable[[Member], str],
        say: Callable[[str], None],
        *,
        defragment_timeout: float = 600.0,
        settle_timeout: float = 30.0,
    ) -> None:
        self.store = store
        self.name_of = name_of
        self.say = say
        self.defragment_timeout = defragment_timeout
        self.settle_timeout = settle_timeout

    def run(self) -> None:
        members = self.store.members()
        unhealthy = [self.name_of(m) for m in members if not (m.healthy and m.started)]
        if unhealthy:
            raise MaintenanceRefused(
                f"{', '.join(unhealthy)} is not healthy: taking another member out for "
                "defragmentation could leave no quorum; fix: wait until `quorumkeeper status` "
                "shows every member healthy, then run again"
            )
        self._compact()
        leader = next((m for m in members if m.role is Role.LEADER), None)
        followers = [m for m in members if m is not leader]
        for member in followers:
            self._defragment(member, "follower" if member.voter else member.role.value)
        if leader is not None:
            successor = next((m for m in followers if m.voter), None)
            if successor is not None:
                self._hand_over(leader, successor)
            self._defragment(leader, "old leader" if successor else "leader, alone")
        self._disarm(members)
        self._headroom(members)

    def _compact(self) -> None:
        revision = self.store.revision()
        self.say(f"compacting the key history up to revision {revision}")
        if not self.store.compact(revision):
            self.say(f"  already compacted up to revision {revision}")

    def _defragment(self, member: Member, role: str) -> None:
        name = self.name_of(member)
        before = self.store.space(member)
        self.say(f"defragmenting {name} ({role}, {_mib(before.db_bytes)})")
        started = time.monotonic()
        self.store.defragment(member, timeout=self.defragment_timeout)
        after = self.store.space(member)
        self.say(
            f"  {name}: {_mib(before.db_bytes)} -> {_mib(after.db_bytes)} in "
            f"{time.monotonic() - started:.2f}s"
        )

    def _hand_over(self, leader: Member, successor: Member) -> None:
        self.say(f"handing leadership from {self.name_of(leader)} to {self.name_of(successor)}")
        self.store.transfer_leadership(leader, successor)

        def successor_leads() -> bool:
            try:
                members = self.store.members()
            except StoreError:
                return False  # no leader for a moment while it changes hands
            return any(m.id == successor.id and m.role is Role.LEADER for m in members)

        _until(successor_leads, self.settle_timeout, f"{self.name_of(successor)} leads")

    def _disarm(self, members: list[Member]) -> None:
        names = {m.id: self.name_of(m) for m in members}
        raised = self.store.alarms()
        nospace = [member_id for member_id, alarms in raised.items() if NOSPACE in alarms]
        if not nospace:
            self.say("no NOSPACE alarm is raised: nothing to disarm")
        for member_id in nospace:
            self.say(f"disarming {NOSPACE} on {names.get(member_id, member_id)}")
            self.store.disarm(member_id, NOSPACE)
        left = {
            names.get(member_id, member_id): alarms
            for member_id, alarms in self.store.alarms().items()
        }
        if any(NOSPACE in alarms for alarms in left.values()):
            raise StoreError(
                f"NOSPACE was raised again right after disarming ({left}): the databases are "
                "still too big; delete more keys and run again",
                retryable=True,
            )
        for name, alarms in left.items():
            self.say(f"still raised on {name}: {', '.join(alarms)} (not a space problem)")
        self.say("writes are accepted again")

    def _headroom(self, members: list[Member]) -> None:
        """Say how full the fullest member is now: the filler may still be there."""
        fullest, space = max(
            ((m, self.store.space(m)) for m in members), key=lambda pair: pair[1].db_bytes
        )
        quota = space.quota_bytes or DEFAULT_QUOTA_BYTES
        share = space.db_bytes / quota
        line = (
            f"{self.name_of(fullest)} holds {_mib(space.db_bytes)} of its {_mib(quota)} quota "
            f"({share:.0%})"
        )
        if share >= FULL_WARNING_SHARE:
            line += "; it fills up again soon: delete keys you no longer need and run again"
        self.say(line)
