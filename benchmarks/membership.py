"""Membership changes under a steady writer: quorumkeeper against the seed's static method.

    python -m benchmarks.membership --store etcd|zookeeper --out FILE

With a writer putting one key every 10 ms it measures failed writes and the longest gap between
acknowledged writes while scaling 3 -> 5 -> 3 and 2 -> 3 -> 2, the time from a new member's
process start to it voting, from a leader's kill -9 or SIGSTOP to the next acknowledged write,
and for quorumkeeper also from a wiped member's discovery to its replacement being a healthy
voter, the keeper's RSS, and for etcd the longest write gap of a NOSPACE recovery
(`measure_nospace_recovery`). `measure_idle` adds what a keeper costs while nothing happens
(`--idle-only` measures just that); `measure_rollout` a settings change rolled out to 3 members
by `quorumkeeper apply` (`--rollout-only` measures just that); `measure_security` the store
with TLS and authentication on (the default) beside both off: failed writes and gaps while scaling
3 -> 5 -> 3 and the writer's latency on a steady cluster (`--security-only` measures just
that, `--security on|off` one side; with `--rollout-only` the rollout's side). The
baseline (`seed_method.py`) does what the seed did: static member lists, changed by hand and
loaded by restarting every member, one at a time; settings rolled out as a StatefulSet
RollingUpdate, highest ordinal first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from benchmarks.seed_method import seed_method
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.etcd.client import EtcdStore
from quorumkeeper.stores.zookeeper.words import server_state
from tests.acceptance.harness import (
    FILLER,
    SMALL_QUOTA,
    LocalClusterUnderTest,
    Writer,
    delete_prefix,
    fill_until_nospace,
    spec_file,
    zookeeper_words_tls,
)
from tests.polling import loopback_subnet, wait_until


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
    nospace_recovery_max_write_gap_s: float | None = None
    nospace_reclaim_command_s: float | None = None


@dataclass(frozen=True)
class Idle:
    """What a keeper costs on an idle, healthy 3-member cluster, and how fast it still sees a
    member die."""

    keeper_cpu_percent: float
    """The keeper's user and system CPU time over `IDLE_SECONDS`, in % of one core."""
    store_transactions_per_minute: float
    """How far the store's log advanced meanwhile: ZooKeeper's zxid (sessions opened and closed
    are transactions), etcd's raft index (a request served through raft is an entry, reads by
    ReadIndex are not). Nothing else talks to the cluster, so all of it is the keeper's."""
    keeper_rss_mb: float
    crash_detection_s: float
    """From a follower's SIGKILL to status.json showing it without that process."""
    members_cpu_percent: float
    """The three members' CPU time over `IDLE_SECONDS`, in % of one core: their own idle cost
    and what answering the keeper's passes costs them (a TLS handshake per question)."""


IDLE_SECONDS = 30.0


@dataclass(frozen=True)
class Rollout:
    """A settings change (`ROLLOUT_CHANGES`) rolled out to 3 members with the writer running."""

    rollout_lost_writes: int
    """Acknowledged writes the cluster no longer holds afterwards."""
    rollout_failed_writes: int
    """Writes the store refused or did not answer within the writer's timeout: never
    acknowledged, so nothing a client was told is kept."""
    rollout_max_write_gap_s: float
    """The longest time between two acknowledged writes, in seconds."""
    rollout_duration_s: float
    """From the change being made to every member running with it and ready, in seconds:
    quorumkeeper's from `apply`'s start (CLI start-up included) to its return, every member
    healthy and caught up; the seed's from its first stop to its last member passing the
    seed's readiness probe (ZooKeeper's `ruok` passes before the member rejoins)."""


ROLLOUT_CHANGES = {
    "etcd": {"snapshot_count": 5000},
    "zookeeper": {"max_client_cnxns": 100},
}
"""Per store: the settings rolled out (the store's section of a spec), one that every member
takes only by a restart: etcd's `--snapshot-count` flag, ZooKeeper's zoo.cfg `maxClientCnxns`."""

ROLLOUT_TARGETS = {
    "etcd": {
        "rollout_lost_writes": "0",
        "rollout_failed_writes": "",
        "rollout_max_write_gap_s": "<= 0.3",
        "rollout_duration_s": "",
    },
    "zookeeper": {
        "rollout_lost_writes": "0",
        "rollout_failed_writes": "",
        "rollout_max_write_gap_s": "<= 1.5",
        "rollout_duration_s": "",
    },
}
"""ZooKeeper's gap target is wider: its leader's restart costs an election (issue 15)."""


IDLE_TARGETS = {
    "idle_keeper_cpu_percent": "<= 1",
    "idle_store_transactions_per_minute": "0",
    "idle_keeper_rss_mb": "<= 60",
    "crash_detection_s": "<= 0.5",
    "idle_members_cpu_percent": "",
}

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
        "nospace_recovery_max_write_gap_s": "",
        "nospace_reclaim_command_s": "",
        **ROLLOUT_TARGETS["etcd"],
        **IDLE_TARGETS,
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
        **ROLLOUT_TARGETS["zookeeper"],
        **IDLE_TARGETS,
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


def _scale_under_writes(
    cluster: LocalClusterUnderTest, start: int, peak: int, *up_flags: str
) -> Writer:
    cluster.up(start, *up_flags)
    cluster.wait_ready(start)
    with Writer(cluster) as writer:
        for target in (peak, start):
            cluster.scale(target)
            cluster.wait_ready(target)
    writer.assert_nothing_lost()
    cluster.cli("down", cluster.name, "--purge")
    return writer


def _leader_fault_recovery(
    cluster: LocalClusterUnderTest,
    fault: signal.Signals,
    leader_pid: Callable[[], int],
    recover: Callable[[], object],
) -> float:
    """Seconds from `fault` hitting the leader to the next acknowledged write, with a client
    that gives each member 0.25 s (a longer timeout would measure the client, not the store);
    `recover` waits until the cluster is whole again."""
    with Writer(cluster, timeout=0.25) as writer:
        pid = leader_pid()
        wait_until(lambda: writer.ack_times, 10, "a first write")
        hit = time.monotonic()
        os.kill(pid, fault)
        try:
            recovery = _first_ack_after(writer, hit) - hit
        finally:
            if fault is signal.SIGSTOP:
                os.kill(pid, signal.SIGCONT)
        recover()
    writer.assert_nothing_lost()
    return recovery


def _keeper_leader_fault(cluster: LocalClusterUnderTest, fault: signal.Signals) -> float:
    def leader_pid() -> int:
        return int(cluster.member(cluster.wait_ready(3), "leader")["pid"])

    return _leader_fault_recovery(cluster, fault, leader_pid, lambda: cluster.wait_ready(3))


def measure_quorumkeeper(store: str, workdir: Path) -> Figures:
    small = _scale_under_writes(
        LocalClusterUnderTest(store, "small", loopback_subnet(89), workdir / "small"), 2, 3
    )
    cluster = LocalClusterUnderTest(store, "bench", loopback_subnet(90), workdir / "qk")
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
        recovery = _keeper_leader_fault(cluster, signal.SIGKILL)
        hung = _keeper_leader_fault(cluster, signal.SIGSTOP)
        tuned = _tuned_hung_leader(workdir) if store == "zookeeper" else None
        nospace = measure_nospace_recovery(workdir) if store == "etcd" else (None, None)
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
            nospace_recovery_max_write_gap_s=nospace[0],
            nospace_reclaim_command_s=nospace[1],
        )
    finally:
        cluster.cli("down", cluster.name, "--purge", check=False)
        cluster.destroy()


def _log_position(cluster: LocalClusterUnderTest, addresses: list[str]) -> int:
    """The store's log position, from each member's own status (which adds no entry): the
    highest zxid or raft index among `addresses`."""
    positions = []
    for address in addresses:
        if cluster.store == "zookeeper":
            state = server_state(address, 1.0, tls=zookeeper_words_tls(cluster.paths))
            positions.append(state.zxid if state and state.zxid else 0)
            continue
        store = cluster.client(timeout=1.0)
        assert isinstance(store, EtcdStore)
        try:
            status = store.member_status(address)
        finally:
            store.close()
        positions.append(int(status["raftIndex"]) if status else 0)
    return max(positions)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure_idle(store: str, workdir: Path) -> Idle:
    """The idle keeper's CPU, store transactions and RSS over `IDLE_SECONDS`, then the time it
    takes to notice a follower killed with SIGKILL."""
    cluster = LocalClusterUnderTest(store, "idle", loopback_subnet(95), workdir / "idle")
    try:
        cluster.up(3)
        status = cluster.wait_ready(3)
        addresses = [m["address"] for m in status["members"]]
        keeper = psutil.Process(cluster.paths.keeper_pid() or 0)
        members = [psutil.Process(m["pid"]) for m in status["members"]]
        cpu_before, position_before = keeper.cpu_times(), _log_position(cluster, addresses)
        members_before = sum(_cpu_seconds(member) for member in members)
        time.sleep(IDLE_SECONDS)  # the measurement itself: an idle period of fixed length
        cpu_after, position_after = keeper.cpu_times(), _log_position(cluster, addresses)
        members_busy = sum(_cpu_seconds(member) for member in members) - members_before
        busy = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        rss = keeper.memory_info().rss / 2**20
        victim = cluster.member(cluster.status(), "follower")
        os.kill(victim["pid"], signal.SIGKILL)
        killed = time.monotonic()

        while time.monotonic() - killed < 10:  # finer than wait_until: this is the figure
            seen = cluster.named(cluster.paths.load_status() or status, victim["name"])
            if seen["pid"] != victim["pid"]:
                break
            time.sleep(0.01)
        detection = time.monotonic() - killed
        cluster.wait_ready(3)
        return Idle(
            keeper_cpu_percent=round(100 * busy / IDLE_SECONDS, 2),
            store_transactions_per_minute=round(
                (position_after - position_before) * 60 / IDLE_SECONDS, 1
            ),
            keeper_rss_mb=round(rss, 1),
            crash_detection_s=round(detection, 3),
            members_cpu_percent=round(100 * members_busy / IDLE_SECONDS, 2),
        )
    finally:
        cluster.cli("down", cluster.name, "--purge", check=False)
        cluster.destroy()


def _tuned_hung_leader(workdir: Path) -> float:
    spec_file = workdir / "tuned.yaml"
    spec_file.write_text(TUNED_ZOOKEEPER)
    cluster = LocalClusterUnderTest("zookeeper", "tuned", loopback_subnet(92), workdir / "tuned")
    try:
        cluster.up(3, "--spec-file", str(spec_file))
        return round(_keeper_leader_fault(cluster, signal.SIGSTOP), 3)
    finally:
        cluster.cli("down", cluster.name, "--purge", check=False)
        cluster.destroy()


def measure_nospace_recovery(workdir: Path) -> tuple[float, float]:
    """NOSPACE recovery: the longest gap between acknowledged writes of a small-key writer, and
    how long `maintenance reclaim-space` took, in seconds.

    A 3-member etcd with a 16 MiB quota and compaction off is filled with 512 KiB values until
    it raises NOSPACE; then, at once, the filler is deleted and the command runs. etcd refuses
    every write from the alarm until the disarm, the command's last step, so the gap spans the
    refused writes, the delete and the whole command (CLI start-up included).
    """
    spec_file = workdir / "quota.yaml"
    spec_file.write_text(SMALL_QUOTA)
    cluster = LocalClusterUnderTest("etcd", "full", loopback_subnet(94), workdir / "nospace")
    try:
        cluster.up(3, "--spec-file", str(spec_file))
        leader = cluster.member(cluster.wait_ready(3), "leader")
        with Writer(cluster) as writer:
            wait_until(lambda: writer.ack_times, 10, "a first write")
            fill_until_nospace(cluster)
            delete_prefix(cluster.paths, leader["address"], FILLER)
            started = time.monotonic()
            cluster.cli("maintenance", "reclaim-space", cluster.name)
            command_s = time.monotonic() - started
            _first_ack_after(writer, started)
        writer.assert_nothing_lost()
        return round(writer.longest_gap, 3), round(command_s, 3)
    finally:
        cluster.cli("down", cluster.name, "--purge", check=False)
        cluster.destroy()


def _rolled_out(cluster: LocalClusterUnderTest, roll_out: Callable[[], object]) -> Rollout:
    """The writer's figures while `roll_out` runs on a Ready `cluster` and returns once every
    member runs with the change, and until the store serves writes again after it."""
    with Writer(cluster) as writer:
        wait_until(lambda: writer.ack_times, 10, "a first write")
        started = time.monotonic()
        roll_out()
        duration = time.monotonic() - started
        _first_ack_after(writer, time.monotonic())
    return Rollout(
        rollout_lost_writes=len(writer.lost()),
        rollout_failed_writes=writer.failed,
        rollout_max_write_gap_s=round(writer.longest_gap, 3),
        rollout_duration_s=round(duration, 3),
    )


def measure_rollout(store: str, workdir: Path, side: str = "on") -> Rollout:
    """`quorumkeeper apply` of `ROLLOUT_CHANGES` to a Ready 3-member cluster with TLS and auth
    `side` (`SECURITY_FLAGS`); `apply` waits until every member runs with it (followers
    first, the leader last)."""
    cluster = LocalClusterUnderTest(store, "roll", loopback_subnet(96), workdir / "rollout")
    try:
        cluster.up(3, *SECURITY_FLAGS[side])
        cluster.wait_ready(3)
        change = str(spec_file(cluster, {store: ROLLOUT_CHANGES[store]}))
        rollout = _rolled_out(
            cluster, lambda: cluster.cli("apply", cluster.name, "--spec-file", change)
        )
        status = cluster.wait_ready(3)
        configs = [member["config"] for member in status["members"]]
        assert configs == ["updated"] * 3, f"every member runs with the change: {configs}"
        return rollout
    finally:
        cluster.cli("down", cluster.name, "--purge", check=False)
        cluster.destroy()


def measure_seed_rollout(store: str, workdir: Path) -> Rollout:
    """The seed's StatefulSet RollingUpdate of `ROLLOUT_CHANGES` on 3 members
    (`SeedMethod.roll_out`)."""
    seed = seed_method(store, loopback_subnet(97), workdir / "seed-rollout")
    try:
        seed.bootstrap(3)
        return _rolled_out(seed.cluster, lambda: seed.roll_out(ROLLOUT_CHANGES[store]))
    finally:
        seed.stop_all()


def _seed_scaling(store: str, subnet: str, workdir: Path, start: int, peak: int) -> Writer:
    seed = seed_method(store, subnet, workdir)
    try:
        seed.bootstrap(start)
        with Writer(seed.cluster) as writer:
            seed.grow(peak)
            seed.shrink(start)
        writer.assert_nothing_lost()
        return writer
    finally:
        seed.stop_all()


def measure_seed_method(store: str, workdir: Path) -> Figures:
    small = _seed_scaling(store, loopback_subnet(93), workdir / "seed-small", 2, 3)
    seed = seed_method(store, loopback_subnet(91), workdir / "seed")
    try:
        seed.bootstrap(3)
        with Writer(seed.cluster) as scaling:
            promote = seed.grow(5)
            seed.shrink(3)
        scaling.assert_nothing_lost()

        def leader_pid() -> int:
            return seed.runtime.pid(seed.leader()) or 0

        def restart_stopped() -> None:
            """What the StatefulSet does for a killed pod: start it again as it was."""
            for endpoint in seed.members:
                if seed.runtime.pid(endpoint) is None:
                    seed.start(endpoint)
            for endpoint in seed.members:
                seed.wait_voter(endpoint)

        kill = _leader_fault_recovery(seed.cluster, signal.SIGKILL, leader_pid, restart_stopped)
        hung = _leader_fault_recovery(seed.cluster, signal.SIGSTOP, leader_pid, restart_stopped)
        return Figures(
            failed_writes=scaling.failed,
            max_write_gap_s=round(scaling.longest_gap, 3),
            promote_s=round(promote, 3),
            leader_kill_recovery_s=round(kill, 3),
            replace_s=None,
            keeper_rss_mb=None,
            failed_writes_2_3_2=small.failed,
            max_write_gap_2_3_2_s=round(small.longest_gap, 3),
            hung_leader_recovery_s=round(hung, 3),
        )
    finally:
        seed.stop_all()


SECURITY_FLAGS = {"on": (), "off": ("--no-tls", "--no-auth")}
"""`up`'s flags per side of `measure_security` and `measure_rollout`: the default, and both
opt-outs."""

STEADY_SECONDS = 20.0


@dataclass(frozen=True)
class Security:
    """One side of `measure_security`: 3 -> 5 -> 3 under the writer (every 10 ms), and the
    writer's latency on a steady, Ready 3-member cluster over `STEADY_SECONDS`."""

    failed_writes: int
    max_write_gap_s: float
    write_latency_median_ms: float
    write_latency_p99_ms: float
    writes: int


def measure_security(store: str, workdir: Path, side: str) -> Security:
    """`Security` for `store` with TLS and auth `side` ("on": the default, "off": both opted
    out). The writer's latency is a write's round trip from the client over connections it
    keeps (etcd: one per member; ZooKeeper: its session), so a TLS handshake, a token or an
    `addauth` is paid once per connection, not per write."""
    flags = SECURITY_FLAGS[side]
    cluster = LocalClusterUnderTest(store, f"sec-{side}", loopback_subnet(91), workdir / side)
    try:
        cluster.up(3, *flags)
        cluster.wait_ready(3)
        with Writer(cluster) as steady:
            time.sleep(STEADY_SECONDS)  # a measuring window, not a wait for a condition
        steady.assert_nothing_lost()
        cluster.cli("down", cluster.name, "--purge")
        latencies = sorted(
            ack - issued for issued, ack in zip(steady.issue_times, steady.ack_times, strict=True)
        )
        scaling = _scale_under_writes(cluster, 3, 5, *flags)
    finally:
        cluster.cli("down", cluster.name, "--purge", check=False)
        cluster.destroy()
    return Security(
        failed_writes=scaling.failed,
        max_write_gap_s=round(scaling.longest_gap, 3),
        write_latency_median_ms=round(1000 * latencies[len(latencies) // 2], 2),
        write_latency_p99_ms=round(1000 * latencies[int(len(latencies) * 0.99)], 2),
        writes=len(latencies),
    )


def _report_security(store: str, out: Path, sides: dict[str, Security]) -> None:
    result = {side: asdict(figures) for side, figures in sides.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"store": store, "security": result}, indent=2))
    table = Table(title=f"membership benchmark: {store}, TLS and auth on (default) and off")
    table.add_column("figure")
    for side in sides:
        table.add_column(f"security {side}")
    for key in asdict(next(iter(sides.values()))):
        table.add_row(key, *(str(result[side][key]) for side in sides))
    Console().print(table)


def _report(store: str, out: Path, result: dict[str, Any], targets: dict[str, str]) -> None:
    """Write `result` as JSON to `out` and print `targets`' rows beside the baseline's."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    table = Table(title=f"membership benchmark: {store}, writer every 10 ms")
    for column in ("figure", "quorumkeeper", "seed method", "target"):
        table.add_column(column)
    for key, target in targets.items():
        theirs = result["baseline"].get(key)
        table.add_row(key, str(result[key]), "n/a" if theirs is None else str(theirs), target)
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["etcd", "zookeeper"], default="etcd")
    parser.add_argument("--out", type=Path, required=True)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--idle-only", action="store_true", help="measure the idle keeper only")
    only.add_argument(
        "--rollout-only", action="store_true", help="measure the settings rollout only"
    )
    only.add_argument(
        "--security-only",
        action="store_true",
        help="scaling and writer latency with TLS and auth on and off, side by side",
    )
    parser.add_argument(
        "--security",
        choices=["on", "off", "both"],
        help="with --security-only: measure one side, or both (default); with --rollout-only:"
        " quorumkeeper's cluster with TLS and auth on (default) or off",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qk-bench-") as work:
        workdir = Path(work)
        if args.security_only:
            sides = ["on", "off"] if args.security in (None, "both") else [args.security]
            measured = {side: measure_security(args.store, workdir, side) for side in sides}
            _report_security(args.store, args.out, measured)
            return
        if args.rollout_only:
            if args.security == "both":
                parser.error("--rollout-only measures one side; fix: --security on or off")
            rollout = {
                "store": args.store,
                "security": args.security or "on",
                **asdict(measure_rollout(args.store, workdir, args.security or "on")),
                "baseline": asdict(measure_seed_rollout(args.store, workdir)),
            }
            _report(args.store, args.out, rollout, ROLLOUT_TARGETS[args.store])
            return
        idle = {
            f"idle_{key}" if key != "crash_detection_s" else key: value
            for key, value in asdict(measure_idle(args.store, workdir)).items()
        }
        if args.idle_only:  # the seed method has no keeper: nothing to set beside it
            _report(
                args.store, args.out, {"store": args.store, **idle, "baseline": {}}, IDLE_TARGETS
            )
            return
        ours = {
            **asdict(measure_quorumkeeper(args.store, workdir)),
            **asdict(measure_rollout(args.store, workdir)),
        }
        baseline = {
            **asdict(measure_seed_method(args.store, workdir)),
            **asdict(measure_seed_rollout(args.store, workdir)),
        }
    result = {"store": args.store, **ours, **idle, "baseline": baseline}
    _report(args.store, args.out, result, TARGETS[args.store])


if __name__ == "__main__":
    main()
