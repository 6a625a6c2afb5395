"""Preflight for an RBD-backed cluster: can this client do what ceph-csi and lock recovery need?

Run before volumes exist, so a missing right shows up as a fix command instead of a volume
stuck on a dead node.
"""

from __future__ import annotations

import errno
import socket
import uuid
from dataclasses import dataclass

from quorumkeeper.ceph.caps import Finding, Severity, analyse_caps, caps_command
from quorumkeeper.ceph.client import CephClient, CephError, CephTarget, connect

# An address that passes `profile rbd`'s address pattern but that the mon cannot parse:
# the mon checks caps first, so EACCES means "no right" and EINVAL means "allowed, no change".
BLOCKLIST_PROBE_ADDR = "quorumkeeper-probe/0"


@dataclass(frozen=True)
class CheckReport:
    """`ok` is False if any finding is a failure; warnings leave a working setup."""

    findings: tuple[Finding, ...] = ()

    @property
    def verdict(self) -> Severity:
        severities = {f.severity for f in self.findings}
        for s in (Severity.FAIL, Severity.WARN):
            if s in severities:
                return s
        return Severity.OK

    @property
    def ok(self) -> bool:
        return self.verdict != Severity.FAIL

    @property
    def fixes(self) -> list[str]:
        return sorted({f.fix for f in self.findings if f.fix and f.severity != Severity.OK})


def _monitor_reachable(monitor: str, timeout: float) -> str | None:
    """None if some mon port accepts TCP; otherwise the reason."""
    mon = monitor.removeprefix("v1:").removeprefix("v2:")
    if mon.startswith("["):
        host, _, rest = mon[1:].partition("]")
        port = rest.removeprefix(":")
    elif mon.count(":") == 1:
        host, port = mon.split(":")
    else:
        host, port = mon, ""
    ports = [int(port)] if port else [3300, 6789]
    errors = []
    for p in ports:
        try:
            with socket.create_connection((host, p), timeout=timeout):
                return None
        except OSError as exc:
            errors.append(f"{host}:{p}: {exc.strerror or exc}")
    return "; ".join(errors)


def _probe_blocklist(client: CephClient, pool: str, user: str) -> Finding:
    rc, _, status = client.mon_command(
        {"prefix": "osd blocklist", "blocklistop": "add", "addr": BLOCKLIST_PROBE_ADDR}
    )
    if -rc in (errno.EACCES, errno.EPERM):
        return Finding(
            Severity.FAIL,
            "caps.mon",
            "the monitors refuse this user 'osd blocklist': breaking a dead node's RBD lock "
            "fails with 'rbd: releasing lock failed: (13) Permission denied'",
            caps_command(user, pool),
        )
    if -rc == errno.EINVAL:
        return Finding(Severity.OK, "caps.mon", "may blocklist dead clients (probed)")
    return Finding(Severity.WARN, "caps.mon", f"blocklist probe inconclusive: {status} ({rc})")


def _probe_pool_io(client: CephClient, pool: str, user: str) -> list[Finding]:
    """Read and write probes on the pool; the write leaves nothing behind."""
    findings = []
    try:
        client.list_images(pool)
        findings.append(Finding(Severity.OK, "caps.osd", f"may list images in {pool!r}"))
    except CephError as exc:
        return [
            Finding(
                Severity.FAIL,
                "caps.osd",
                f"cannot list images in {pool!r}: {exc}",
                caps_command(user, pool),
            )
        ]
    name = f"quorumkeeper-check-{uuid.uuid4().hex}"
    try:
        client.write_and_remove_object(pool, name)
        findings.append(Finding(Severity.OK, "caps.osd", f"may write to {pool!r}"))
    except CephError as exc:
        findings.append(
            Finding(
                Severity.FAIL,
                "caps.osd",
                f"cannot write to {pool!r}: {exc}",
                caps_command(user, pool),
            )
        )
    return findings


def check_access(target: CephTarget, pool: str, admin: CephTarget | None = None) -> CheckReport:
    """Check monitors, key, pool and caps for `target`.

    With `admin` the user's caps are read and analysed exactly; without it the two rights
    that matter are probed live (blocklist and pool I/O), which changes nothing.
    """
    findings: list[Finding] = []
    unreachable = {
        m: reason
        for m in target.monitors
        if (reason := _monitor_reachable(m, min(target.timeout, 3.0))) is not None
    }
    for mon, reason in unreachable.items():
        findings.append(Finding(Severity.WARN, "monitors", f"monitor {mon} unreachable: {reason}"))
    if len(unreachable) == len(target.monitors):
        findings.append(
            Finding(
                Severity.FAIL,
                "monitors",
                "no monitor reachable; check --monitors and the network path",
            )
        )
        return CheckReport(tuple(findings))

    try:
        with connect(target) as client:
            findings.append(Finding(Severity.OK, "key", f"client.{target.user} authenticated"))
            pools = client.pools()
            if pool not in pools:
                findings.append(
                    Finding(
                        Severity.FAIL,
                        "pool",
                        f"pool {pool!r} does not exist (pools: "
                        f"{', '.join(sorted(pools)) or 'none'})",
                        f"ceph osd pool create {pool} && rbd pool init {pool}",
                    )
                )
                return CheckReport(tuple(findings))
            apps = pools[pool].get("application_metadata") or {}
            if "rbd" not in apps:
                findings.append(
                    Finding(
                        Severity.FAIL,
                        "pool",
                        f"pool {pool!r} is not initialised for RBD "
                        f"(applications: {', '.join(apps) or 'none'})",
                        f"rbd pool init {pool}",
                    )
                )
            else:
                findings.append(
                    Finding(Severity.OK, "pool", f"pool {pool!r} has the rbd application")
                )
            if admin is None:
                findings.append(_probe_blocklist(client, pool, target.user))
                findings += _probe_pool_io(client, pool, target.user)
    except CephError as exc:
        findings.append(Finding(Severity.FAIL, exc.field or "ceph", str(exc)))
        return CheckReport(tuple(findings))

    if admin is not None:
        try:
            with connect(admin) as admin_client:
                caps = admin_client.user_caps(target.user)
        except CephError as exc:
            findings.append(Finding(Severity.FAIL, "admin", f"reading caps as admin: {exc}"))
            return CheckReport(tuple(findings))
        findings += analyse_caps(target.user, pool, caps)
    return CheckReport(tuple(findings))
