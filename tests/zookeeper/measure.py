"""Measurements of the ZooKeeper store on real JVMs: `python -m tests.zookeeper.measure`.

Prints one JSON line per scenario: join times, and what a writer doing one write every 10 ms
sees (failed writes, longest gap between successes) while the membership changes or a leader
dies or hangs. Uses 127.0.131-135.x; every JVM is stopped by PID before it exits.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from quorumkeeper import versions
from quorumkeeper.model import Endpoint, Member, Role
from quorumkeeper.spec import ZookeeperSettings
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.zookeeper.client import ZookeeperStore
from tests.polling import wait_until
from tests.zookeeper.conftest import Ensemble, healthy_learner

WRITE_EVERY = 0.01
OBSERVE_SECONDS = 25.0
"""How long the writer keeps writing after a fault: longer than the slowest recovery seen."""


class Writer:
    """One write every 10 ms through a ZookeeperStore of its own, recording every outcome."""

    def __init__(self, ensemble: Ensemble, endpoints: list[Endpoint]) -> None:
        self.store = ZookeeperStore(
            endpoints, password=ensemble.password, tls=ensemble.tls, timeout=1.0
        )
        self.successes: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def _run(self) -> None:
        sequence = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            sequence += 1
            try:
                self.store.write_probe("bench", str(sequence))
                self.successes.append(time.monotonic())
            except StoreError:
                self.failures += 1
            next_at += WRITE_EVERY
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - WRITE_EVERY)

    def outage_after(self, moment: float) -> float:
        """Seconds from `moment` to the first write that succeeded after the longest gap that
        began after it: how long a fault at `moment` kept writes from landing."""
        before = [t for t in self.successes if t <= moment]
        after = [t for t in self.successes if t > moment]
        assert after, "no write succeeded after the fault"
        starts = [before[-1] if before else moment, *after]
        gaps = [(b - a, b) for a, b in itertools.pairwise(starts)]
        return max(gaps)[1] - moment

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.store.close()

    def summary(self) -> dict[str, float]:
        gaps = [b - a for a, b in itertools.pairwise(self.successes)]
        return {
            "writes_ok": len(self.successes),
            "writes_failed": self.failures,
            "longest_gap_s": round(max(gaps, default=0.0), 3),
        }


def join_timed(ensemble: Ensemble, store: ZookeeperStore, joiner: Endpoint) -> dict[str, float]:
    peers = ensemble.peers(store, store.add_learner(joiner))
    started = time.monotonic()
    ensemble.start(joiner, peers)
    learner = wait_until(lambda: healthy_learner(store, joiner), 120, "synced")
    synced = time.monotonic()
    store.promote(learner)
    voting = time.monotonic()
    return {"to_synced_s": round(synced - started, 2), "to_voter_s": round(voting - started, 2)}


def remove(ensemble: Ensemble, store: ZookeeperStore, address: str) -> None:
    member = next(m for m in store.members() if m.address == address)
    store.remove(member)
    ensemble.stop(ensemble.endpoint_at(address))


def leader_of(store: ZookeeperStore) -> str:
    leader: str = wait_until(
        lambda: next((m.address for m in _safe_members(store) if m.role is Role.LEADER), None),
        60,
        "a leader",
    )
    return leader


def _safe_members(store: ZookeeperStore) -> list[Member]:
    try:
        return list(store.members())
    except Exception:
        return []


def three(ensemble: Ensemble) -> ZookeeperStore:
    store = ensemble.bootstrap()
    for n in (1, 2):
        ensemble.join(store, ensemble.endpoint(n))
    return ensemble.store([ensemble.endpoint(n) for n in range(3)])


def scale_and_remove_leader(root: Path) -> None:
    ensemble = Ensemble(root / "scale", "127.0.131", ZookeeperSettings(heap="128M"), VERSION)
    try:
        everyone = [ensemble.endpoint(n) for n in range(5)]
        store = ensemble.bootstrap()
        joins = []
        with Writer(ensemble, everyone) as writer:
            for n in range(1, 5):
                joins.append(join_timed(ensemble, store, ensemble.endpoint(n)))
                store = ensemble.store(everyone[: n + 1])
            leader = leader_of(store)
            for address in [e.address for e in reversed(everyone) if e.address != leader][:2]:
                remove(ensemble, store, address)
        report("join 1->5, one at a time", {"joins": joins})
        report("writer during 1->3->5->3", writer.summary())

        store = ensemble.store([e for e in everyone if ensemble.runtime.pid(e)])
        with Writer(ensemble, everyone) as writer:
            remove(ensemble, store, leader_of(store))
            time.sleep(OBSERVE_SECONDS)
        report("writer during removal of the leader (3->2)", writer.summary())
    finally:
        ensemble.destroy()


def leader_failure(root: Path, subnet: str, settings: ZookeeperSettings, how: str) -> None:
    ensemble = Ensemble(root / f"{how}-{settings.tick_time_ms}", subnet, settings, VERSION)
    try:
        store = three(ensemble)
        everyone = [ensemble.endpoint(n) for n in range(3)]
        leader = ensemble.endpoint_at(leader_of(store))
        with Writer(ensemble, everyone) as writer:
            time.sleep(1)
            failed_at = time.monotonic()
            os.kill(ensemble.pid(leader), signal.SIGKILL if how == "kill-9" else signal.SIGSTOP)
            time.sleep(OBSERVE_SECONDS)  # the observation window is the measurement
            resumed = writer.outage_after(failed_at)
        report(
            f"{how} leader, tickTime {settings.tick_time_ms} syncLimit {settings.sync_limit}",
            {"resumed_s": round(resumed, 2)} | writer.summary(),
        )
    finally:
        ensemble.destroy()


def report(scenario: str, numbers: Mapping[str, object]) -> None:
    print(json.dumps({"scenario": scenario, **numbers}), flush=True)


VERSION = versions.ZOOKEEPER_VERSION
TUNED = ZookeeperSettings(
    heap="128M", tick_time_ms=500, min_session_timeout_ms=1000, max_session_timeout_ms=10000
)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="zk-measure-") as work:
        root = Path(work)
        scale_and_remove_leader(root)
        leader_failure(root, "127.0.132", ZookeeperSettings(heap="128M"), "kill-9")
        leader_failure(root, "127.0.133", ZookeeperSettings(heap="128M"), "sigstop")
        leader_failure(root, "127.0.134", TUNED, "sigstop")
        leader_failure(root, "127.0.135", TUNED, "kill-9")


if __name__ == "__main__":
    main()
