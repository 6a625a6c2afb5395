"""Static analysis of a client's cephx caps against what ceph-csi and lock recovery need.

ceph-csi maps and resizes images (osd read/write/class calls on the pool) and, to recover a
volume from a dead node, must blocklist the dead client before breaking its lock. A user
without the mon right to `osd blocklist` sees `rbd: releasing lock failed: (13) Permission
denied`, and the volume stays stuck on the dead node.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    """One reason behind a verdict; `fix` is a command to run, when one exists."""

    severity: Severity
    subject: str
    message: str
    fix: str | None = None


def recommended_caps(pool: str) -> dict[str, str]:
    """The least-privilege caps ceph-csi's RBD driver documents, for one pool."""
    return {
        "mon": "profile rbd",
        "osd": f"profile rbd pool={pool}",
        "mgr": f"profile rbd pool={pool}",
    }


def caps_command(user: str, pool: str) -> str:
    """`ceph auth caps` replaces every cap of the user, so the fix always lists all of them."""
    parts = " ".join(f"{k} {shlex.quote(v)}" for k, v in recommended_caps(pool).items())
    return f"ceph auth caps client.{user} {parts}"


def create_command(user: str, pool: str) -> str:
    parts = " ".join(f"{k} {shlex.quote(v)}" for k, v in recommended_caps(pool).items())
    return f"ceph auth get-or-create client.{user} {parts}"


def _grants(cap: str) -> list[str]:
    """Split a cap string on commas outside quotes: 'allow r, allow command "a, b"'."""
    parts = re.findall(r'(?:[^,"]|"[^"]*")+', cap)
    return [" ".join(p.split()) for p in parts if p.strip()]


def _pool_of(grant: str) -> str | None:
    m = re.search(r"\bpool\s*=?\s*(\S+)", grant.replace("pool ", "pool="))
    return m.group(1).strip("'\"") if m else None


def _perm(grant: str) -> str:
    m = re.match(r"allow\s+([rwx*]+)(?=\s|$)", grant)
    return m.group(1) if m else ""


def _mon_blocklist(grants: list[str]) -> tuple[bool, bool]:
    """(can blocklist, only through the pre-Pacific 'osd blacklist' command name)."""
    allowed = legacy = False
    for g in grants:
        perm = _perm(g)
        broad = "*" in perm or "w" in perm or g == "profile rbd" or g.startswith("profile rbd ")
        if broad or re.match(r'allow\s+command\s+"?osd blocklist', g):
            allowed = True
        elif re.match(r'allow\s+command\s+"?osd blacklist', g):
            legacy = True
    return allowed, legacy and not allowed


def _mon_readable(grants: list[str]) -> bool:
    return any("r" in _perm(g) or "*" in _perm(g) or g.startswith("profile rbd") for g in grants)


def _osd_covers(grants: list[str], pool: str) -> tuple[bool, bool]:
    """(read-write with class calls on `pool`, read-only access on `pool`)."""
    rw = ro = False
    for g in grants:
        target = _pool_of(g)
        if target not in (None, pool):
            continue
        if g.startswith("profile rbd-read-only"):
            ro = True
        elif g.startswith("profile rbd"):
            rw = True
        else:
            perm = _perm(g)
            if "*" in perm or all(c in perm for c in "rwx"):
                rw = True
            elif "r" in perm:
                ro = True
    return rw, ro


def analyse_caps(user: str, pool: str, caps: dict[str, str]) -> list[Finding]:
    """Findings for `caps` (entity -> cap string, as `ceph auth get` shows them)."""
    fix = caps_command(user, pool)
    findings: list[Finding] = []
    mon = _grants(caps.get("mon", ""))
    osd = _grants(caps.get("osd", ""))
    mgr = _grants(caps.get("mgr", ""))

    if not _mon_readable(mon):
        findings.append(Finding(Severity.FAIL, "caps.mon", "cannot read the cluster maps", fix))
    can_blocklist, legacy = _mon_blocklist(mon)
    if legacy:
        findings.append(
            Finding(
                Severity.FAIL,
                "caps.mon",
                "only 'allow command \"osd blacklist\"': Ceph >= 16 renamed it 'osd blocklist' and "
                "no longer honours the old name, so breaking a dead client's lock fails with (13) "
                "Permission denied",
                fix,
            )
        )
    elif not can_blocklist:
        findings.append(
            Finding(
                Severity.FAIL,
                "caps.mon",
                "cannot run 'osd blocklist': breaking a dead node's RBD lock fails with "
                "'rbd: releasing lock failed: (13) Permission denied'",
                fix,
            )
        )
    elif any("*" in _perm(g) or "w" in _perm(g) for g in mon):
        findings.append(
            Finding(
                Severity.WARN,
                "caps.mon",
                "mon write rights are broader than ceph-csi needs ('profile rbd' suffices)",
                fix,
            )
        )

    rw, ro = _osd_covers(osd, pool)
    if not rw:
        what = "only read access" if ro else "no access"
        findings.append(
            Finding(
                Severity.FAIL,
                "caps.osd",
                f"{what} to pool {pool!r}: ceph-csi needs read, write and class calls "
                f"('profile rbd pool={pool}')",
                fix,
            )
        )
    if not any(g.startswith("profile rbd") or "*" in _perm(g) for g in mgr):
        findings.append(
            Finding(
                Severity.WARN,
                "caps.mgr",
                f"no 'mgr profile rbd pool={pool}': ceph-csi's deferred image deletion (rbd task "
                "trash remove) will fail",
                fix,
            )
        )
    if not findings:
        findings.append(Finding(Severity.OK, "caps", "caps match ceph-csi's needs"))
    return findings
