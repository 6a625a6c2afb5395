"""When the operator's cluster daemon passes again: at once after a membership change, soon after
the store refused one for now, and at once when the resource's spec changes."""

from __future__ import annotations

import pytest

from quorumkeeper.model import Endpoint, Member, Role
from quorumkeeper.planner import AddLearner, Done, Phase, Promote, StartMember, Step, Wait
from quorumkeeper.runtimes.kubernetes.operator import (
    BUSY_INTERVAL,
    IDLE_INTERVAL,
    RETRY_INTERVAL,
    _Wakes,
    next_pass_in,
)

JOINER = Endpoint("orders-3", 3, "orders-3.orders-peer.apps.svc.cluster.local")
LEARNER = Member(id="7", address=JOINER.address, role=Role.LEARNER, healthy=True, started=True)


ADDED = AddLearner("adding orders-3", JOINER)
PROMOTED = Promote("orders-3 catches up", LEARNER, JOINER)


@pytest.mark.parametrize(
    ("step", "acted", "deferred", "resizing", "interval"),
    [
        (ADDED, True, False, True, 0.0),
        (ADDED, False, True, True, RETRY_INTERVAL),
        (ADDED, False, False, True, BUSY_INTERVAL),
        (PROMOTED, True, False, False, 0.0),
        (PROMOTED, False, True, False, RETRY_INTERVAL),
        (StartMember("orders-3 starts", JOINER, joining=True), True, False, False, BUSY_INTERVAL),
        (Wait("adding orders-4 waits: grace", Phase.SCALING), True, True, True, RETRY_INTERVAL),
        (Wait("adding a member waits for orders-3", Phase.DEGRADED), True, False, True, 1.0),
        (Wait("orders-1 restarts after a backoff", Phase.DEGRADED), True, False, False, 5.0),
        (Done("cluster matches its spec", degraded=False), True, False, False, IDLE_INTERVAL),
    ],
    ids=[
        "added",
        "add-refused-for-now",
        "add-failed",
        "promoted",
        "not-caught-up",
        "started",
        "adds-refused",
        "waits-while-resizing",
        "waits-at-size",
        "done",
    ],
)
def test_the_next_pass_follows_what_the_last_one_did(
    step: Step, acted: bool, deferred: bool, resizing: bool, interval: float
) -> None:
    assert (BUSY_INTERVAL, IDLE_INTERVAL) == (1.0, 5.0)
    assert next_pass_in(step, acted=acted, deferred=deferred, resizing=resizing) == interval


def test_a_new_generation_wakes_the_daemon_and_a_status_write_does_not() -> None:
    wakes = _Wakes()
    wake = wakes.of("apps", "orders")
    wakes.spec_seen("apps", "orders", 1)  # the first sight of the resource
    assert wake.is_set()
    wake.clear()
    wakes.spec_seen("apps", "orders", 1)  # the daemon's own status patch: same generation
    assert not wake.is_set()
    wakes.spec_seen("apps", "orders", 2)  # kubectl scale
    assert wake.is_set()
    wakes.forget("apps", "orders")
    assert wakes.of("apps", "orders") is not wake
