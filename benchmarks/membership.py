"""Membership changes under a steady writer: quorumkeeper against the seed's static method.

    python -m benchmarks.membership --store etcd --out FILE

With a writer putting one key every 10 ms it measures, for quorumkeeper: failed writes and the
longest gap between acknowledged writes while scaling 3 -> 5 -> 3, the time from a new member's
process start to its promotion, from a leader's kill -9 to the next acknowledged write, from a
wiped member's discovery to its replacement being a healthy voter, and the keeper's RSS. The
baseline does what the seed did: bootstrap every member statically, then for each membership
change add or remove a voter by hand and restart every member, one at a time, with the new list.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from quorumkeeper import distributions
from quorumkeeper.planner import Desired
from quorumkeeper.runtimes.local import LocalRuntime
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.stores.base import Endpoint, StoreError
from quorumkeeper.stores.etcd import EtcdLauncher, EtcdStore, client_url, peer_url
from tests.acceptance.harness import LocalClusterUnderTest, Writer, wait_until


@dataclass
class Figures:
    failed_writes: int
    max_write_gap_s: float
    promote_s: float | None
    leader_kill_recovery_s: float
    replace_s: float | None
    keeper_rss_mb: float | None
    failed_writes_2_3_2: int | None = None
    max_write_gap_2_3_2_s: float | None = None
    hung_leader_recovery_s: float | None = None
    hung_leader_recovery_tuned_s: float | None = None


TARGETS = {
    "etcd": {
        "failed_writes": "0",
        "max_write_gap_s": "<= 0.3",
        "failed_writes_2_3_2": "0",
        "max_write_gap_2_3_2_s": "<= 0.3",
        "promote_s": "<= 1",
        "leader_kill_recovery_s": "<= 2",
        "hung_leader_recovery_s": "",
        "replace_s": "<= 5",
        "keeper_rss_mb": "<= 60",
    },
    "zookeeper": {
        "failed_writes": "0",
        "max_write_gap_s": "<= 0.5",
        "failed_writes_2_3_2": "0",
        "max_write_gap_2_3_2_s": "<= 0.5",
        "promote_s": "<= 6",
        "leader_kill_recovery_s": "",
        "hung_leader_recovery_s": "",
        "hung_leader_recovery_tuned_s": "",
        "replace_s": "",
        "keeper_rss_mb": "<= 60",
    },
}

TUNED_ZOOKEEPER = """zookeeper:
  tick_time_ms: 500
  min_session_timeout_ms: 1000
  max_session_timeout_ms: 10000
"""
"""The tickTime we recommend: a hung leader costs syncLimit x tickTime = 2.5 s instead of 10 s,
at the price of sessions of at most 10 s."""


def _first_ack_after(writer: Writer, moment: float) -> float:
    return float(
        wait_until(
            lambda: writer.first_ack_of_write_sent_after(moment),
            30,
            "a write acknowledged after the fault",
        )
    )


def _process_age(pid: int) -> float:
    """Seconds since `pid` started, both clocks read from the kernel's uptime (wall-clock
    process start times drift from time.time() in VMs)."""
    start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def _voters(cluster: LocalClusterUnderTest) -> dict[str, str]:
    """address -> member ID of every voter that is healthy right now."""
    store = cluster.client(timeout=0.5)
    try:
        return {m.address: m.id for m in store.members() if m.voter and m.healthy}
    except StoreError:
        return {}
    finally:
        store.close()


def _scale_under_writes(cluster: LocalClusterUnderTest, start: int, peak: int) -> Writer:
    cluster.up(start)
    cluster.wait_ready(start)
    with Writer(cluster) as writer:
        for target in (peak, start):
            cluster.scale(target)
            cluster.wait_ready(target)
    writer.assert_nothing_lost()
    cluster.cli("down", cluster.name, "--purge")
    return writer


def _leader_fault_recovery(cluster: LocalClusterUnderTest, fault: signal.Signals) -> float:
    """Seconds from `fault` hitting the leader to the next acknowledged write, with a client
    that gives each member 0.25 s (a longer timeout would measure the client, not the store)."""
    with Writer(cluster, timeout=0.25) as writer:
        leader = cluster.member(cluster.wait_ready(3), "leader")
        wait_until(lambda: writer.ack_times, 10, "a first write")
        hit = time.monotonic()
        os.kill(leader["pid"], fault)
        try:
            recovery = _first_ack_after(writer, hit) - hit
        finally:
            if fault is signal.SIGSTOP:
                os.kill(leader["pid"], signal.SIGCONT)
        cluster.wait_ready(3)
    writer.assert_nothing_lost()
    return recovery


def measure_quorumkeeper(store: str, workdir: Path) -> Figures:
    small = _scale_under_writes(
        LocalClusterUnderTest(store, "small", "127.0.89", workdir / "small"), 2, 3
    )
    cluster = LocalClusterUnderTest(store, "bench", "127.0.90", workdir / "qk")
    try:
        scaling = _scale_under_writes(cluster, 3, 5)
        cluster.up(3)
        cluster.wait_ready(3)

        cluster.scale(4, "--no-wait")
        joiner = cluster.desired(4).endpoint(3)
        pid_file = workdir / "qk" / "bench" / "members" / joiner.name / "pid"
        wait_until(pid_file.is_file, 60, "the joiner's process started")
        joiner_pid = int(pid_file.read_text())
        wait_until(lambda: joiner.address in _voters(cluster), 60, "promotion")
        promote_s = _process_age(joiner_pid)
        cluster.wait_ready(4)
        cluster.scale(3)

        keeper_rss = psutil.Process(cluster.paths.keeper_pid() or 0).memory_info().rss / 2**20
        victim = cluster.member(cluster.status(), "follower")
        cluster.kill_keeper()
        os.kill(victim["pid"], signal.SIGKILL)
        shutil.rmtree(cluster.member_data(victim["name"]))
        restarted = time.monotonic()
        cluster.spawn_keeper()
        removal = f"RemoveMember: {victim['name']} lost its data"
        wait_until(
            lambda: (
                removal in cluster.paths.keeper_log.read_text()
                and len(voters := _voters(cluster)) == 3
                and victim["address"] in voters
            ),
            90,
            "the wiped member replaced",
        )
        replace_s = time.monotonic() - restarted
        cluster.wait_ready(3)
        recovery = _leader_fault_recovery(cluster, signal.SIGKILL)
        hung = _leader_fault_recovery(cluster, signal.SIGSTOP)
        tuned = _tuned_hung_leader(workdir) if store == "zookeeper" else None
        return Figures(
            failed_writes=scaling.failed,
            max_write_gap_s=round(scaling.longest_gap, 3),
            promote_s=round(promote_s, 3),
            leader_kill_recovery_s=round(recovery, 3),
            replace_s=round(replace_s, 3),
            keeper_rss_mb=round(keeper_rss, 1),
            failed_writes_2_3_2=small.failed,
            max_write_gap_2_3_2_s=round(small.longest_gap, 3),
            hung_leader_recovery_s=round(hung, 3),
            hung_leader_recovery_tuned_s=tuned,
        )
    finally:
        cluster.cli("down", cluster.name, "--purge", check=False)
        cluster.destroy()


def _tuned_hung_leader(workdir: Path) -> float:
    spec_file = workdir / "tuned.yaml"
    spec_file.write_text(TUNED_ZOOKEEPER)
    cluster = LocalClusterUnderTest("zookeeper", "tuned", "127.0.92", workdir / "tuned")
    try:
        cluster.up(3, "--spec-file", str(spec_file))
        return round(_leader_fault_recovery(cluster, signal.SIGSTOP), 3)
    finally:
        cluster.cli("down", cluster.name, "--purge", check=False)
        cluster.destroy()


class SeedMethod:
    """The seed's way: static membership, changed by hand, loaded by restarting every member."""

    def __init__(self, workdir: Path) -> None:
        self.desired = Desired(members=9, name="seed", subnet="127.0.91")
        launcher = EtcdLauncher(distributions.etcd_binary(), EtcdSettings(), "seed-baseline")
        self.runtime = LocalRuntime(workdir / "seed", launcher)
        self.http = httpx.Client(timeout=5)
        self.members: list[Endpoint] = []
        self.cluster = LocalClusterUnderTest("etcd", "seed", "127.0.91", workdir)

    def _start(self, endpoint: Endpoint, *, bootstrap: bool) -> None:
        argv = self.runtime.launcher.argv(
            endpoint, self.runtime.data_dir(endpoint), self.members, bootstrap=bootstrap
        )
        self.runtime.start(endpoint, argv)

    def _wait_healthy(self, endpoint: Endpoint) -> None:
        def healthy() -> bool:
            try:
                reply = self.http.get(f"{client_url(endpoint.address)}/health", timeout=0.5)
                return bool(reply.json().get("health") == "true")
            except (httpx.HTTPError, ValueError):
                return False

        wait_until(healthy, 60, f"{endpoint.name} healthy")

    def bootstrap(self, count: int) -> None:
        self.members = [self.desired.endpoint(n) for n in range(count)]
        for endpoint in self.members:
            self._start(endpoint, bootstrap=True)
        for endpoint in self.members:
            self._wait_healthy(endpoint)

    def rolling_restart(self) -> None:
        for endpoint in self.members:
            self.runtime.stop(endpoint)
            self._start(endpoint, bootstrap=False)
            self._wait_healthy(endpoint)

    def add(self, endpoint: Endpoint) -> float:
        """Add a voter by hand and start it; returns seconds from its start to healthy."""
        wait_until(lambda: self._member_add(endpoint), 60, f"{endpoint.name} added")
        self.members.append(endpoint)
        started = time.monotonic()
        self._start(endpoint, bootstrap=False)
        self._wait_healthy(endpoint)
        return time.monotonic() - started

    def _member_add(self, endpoint: Endpoint) -> bool:
        reply = self.http.post(
            f"{client_url(self.members[0].address)}/v3/cluster/member/add",
            json={"peerURLs": [peer_url(endpoint.address)]},
        )
        return reply.status_code == 200

    def remove(self, endpoint: Endpoint) -> None:
        """Remove a member by hand, retrying while etcd calls the cluster too fresh for it."""
        wait_until(lambda: self._member_remove(endpoint), 60, f"{endpoint.name} removed")
        self.members.remove(endpoint)
        self.runtime.stop(endpoint)

    def _member_remove(self, endpoint: Endpoint) -> bool:
        store = EtcdStore(self.members)
        try:
            member = next(m for m in store.members() if m.address == endpoint.address)
            store.remove(member)
        except StoreError:
            return False
        finally:
            store.close()
        return True

    def stop_all(self) -> None:
        for name in self.runtime.member_names():
            self.runtime.stop(self.desired.endpoint(int(name.rsplit("-", 1)[1])), grace=5)


def measure_seed_method(workdir: Path) -> Figures:
    seed = SeedMethod(workdir)
    try:
        seed.bootstrap(3)
        with Writer(seed.cluster) as scaling:
            promote = [seed.add(seed.desired.endpoint(n)) for n in (3, 4)]
            seed.rolling_restart()
            for ordinal in (4, 3):
                seed.remove(seed.desired.endpoint(ordinal))
            seed.rolling_restart()
        scaling.assert_nothing_lost()
        with Writer(seed.cluster, timeout=0.25) as writer:
            time.sleep(0.5)
            leader = _leader(seed.members)
            pid = seed.runtime.pid(leader)
            assert pid
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            recovery = _first_ack_after(writer, killed) - killed
        return Figures(
            failed_writes=scaling.failed,
            max_write_gap_s=round(scaling.longest_gap, 3),
            promote_s=round(max(promote), 3),
            leader_kill_recovery_s=round(recovery, 3),
            replace_s=None,
            keeper_rss_mb=None,
        )
    finally:
        seed.stop_all()


def _leader(endpoints: list[Endpoint]) -> Endpoint:
    store = EtcdStore(endpoints)
    try:
        leader = next(m for m in store.members() if m.role.value == "leader")
    finally:
        store.close()
    return next(e for e in endpoints if e.address == leader.address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["etcd", "zookeeper"], default="etcd")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qk-bench-") as work:
        ours = measure_quorumkeeper(args.store, Path(work))
        baseline = measure_seed_method(Path(work)) if args.store == "etcd" else None
    result = {
        "store": args.store,
        **asdict(ours),
        "baseline": asdict(baseline) if baseline else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    table = Table(title=f"membership benchmark: {args.store}, writer every 10 ms")
    for column in ("figure", "quorumkeeper", "seed method", "target"):
        table.add_column(column)
    for key, target in TARGETS[args.store].items():
        theirs = (result["baseline"] or {}).get(key)
        table.add_row(key, str(result[key]), "n/a" if theirs is None else str(theirs), target)
    Console().print(table)


if __name__ == "__main__":
    main()
