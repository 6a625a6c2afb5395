"""Checks made before a request changes anything, each failing with the field and the fix."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from quorumkeeper.errors import Refused
from quorumkeeper.runtimes.local import distributions
from quorumkeeper.runtimes.local.processes import HeldPort, held_ports
from quorumkeeper.runtimes.local.state import ClusterPaths, cluster_names, foreign_entries
from quorumkeeper.spec import ClusterSpec
from quorumkeeper.stores import member_ports


def check_state_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".probe-"):
            pass
    except OSError as error:
        raise Refused(
            f"state dir {state_dir} is not writable ({error.strerror}); fix: pass "
            f"--state-dir or set QUORUMKEEPER_STATE_DIR to a folder you can write"
        ) from None


def check_name_free(paths: ClusterPaths) -> None:
    if paths.exists():
        try:
            stored = paths.load_stored()
            details = f" (on {stored.spec.local.subnet}.x; {stored.change.describe()})"
        except (OSError, ValueError):
            details = ""
        raise Refused(
            f"name: a cluster named {paths.name!r} already exists in {paths.state_dir}"
            f"{details}; fix: choose another name, or remove it first with "
            f"`quorumkeeper down {paths.name} --purge`"
        )


def check_binary(spec: ClusterSpec) -> None:
    try:
        distributions.check_installed(spec)
    except distributions.DistributionMissing as error:
        raise Refused(f"version: {error}") from None


def taken_addresses(
    spec: ClusterSpec, ordinals: Iterable[int] | None = None, *, ours: Iterable[int] = ()
) -> list[HeldPort]:
    """The ports of the members `ordinals` (default: every member of `spec`) that a process
    other than `ours` (PIDs) already holds."""
    mine = set(ours)
    return [
        held
        for ordinal in (range(spec.members) if ordinals is None else ordinals)
        for held in held_ports(spec.local.address(ordinal), member_ports(spec.store))
        if held.pid is None or held.pid not in mine
    ]


def check_folder_is_ours(folder: Path, field: str, value: object, fix: str) -> None:
    """Refuse to create a cluster in a folder that holds files quorumkeeper did not put there:
    `down --purge` would later have to tell them apart from its own."""
    foreign = foreign_entries(folder)
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise Refused(
            f"{field}: {value} holds {folder}, which already contains files quorumkeeper did "
            f"not create ({shown}); fix: {fix}"
        )


def subnets_in_use(state_dir: Path, *, besides: str) -> dict[str, str]:
    used = {}
    for name in cluster_names(state_dir):
        if name == besides:
            continue
        try:
            used[ClusterPaths(state_dir, name).load_spec().local.subnet] = name
        except (OSError, ValueError):
            continue
    return used


def choose_subnet(spec: ClusterSpec, state_dir: Path, *, explicit: bool) -> ClusterSpec:
    """The spec with a loopback /24 no other cluster uses and whose ports are free."""
    used = subnets_in_use(state_dir, besides=spec.name)
    if explicit:
        if spec.local.subnet in used:
            raise Refused(
                f"subnet: {spec.local.subnet} is used by cluster {used[spec.local.subnet]!r}; "
                f"fix: pick another --subnet or leave it out to choose a free one"
            )
        taken = taken_addresses(spec)
        if taken:
            raise Refused(
                f"subnet: {', '.join(map(str, taken))}; fix: stop that process, or pick "
                f"another --subnet"
            )
        return spec
    for third in range(1, 100):
        subnet = f"127.0.{third}"
        if subnet in used:
            continue
        candidate = spec.model_copy(
            update={"local": spec.local.model_copy(update={"subnet": subnet})}
        )
        if not taken_addresses(candidate):
            return candidate
    raise Refused("subnet: no free loopback /24 in 127.0.1-99; fix: pass --subnet 127.x.y")
