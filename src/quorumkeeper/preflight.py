"""Checks made before a request changes anything, each failing with the field and the fix."""

from __future__ import annotations

import errno
import socket
import tempfile
from pathlib import Path

from quorumkeeper import distributions
from quorumkeeper.spec import ClusterSpec
from quorumkeeper.state import ClusterPaths, cluster_names
from quorumkeeper.stores import check_installed, member_ports


class Refused(Exception):
    """A request that would be unsafe or can't be met; nothing was changed."""


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
        raise Refused(
            f"name: a cluster named {paths.name!r} already exists in {paths.state_dir}; fix: "
            f"choose another name, or remove it first with `quorumkeeper down {paths.name} --purge`"
        )


def check_binary(spec: ClusterSpec) -> None:
    try:
        check_installed(spec)
    except distributions.DistributionMissing as error:
        raise Refused(f"version: {error}") from None


def taken_addresses(spec: ClusterSpec) -> list[str]:
    """`address:port` pairs among the spec's members that something already listens on."""
    taken = []
    for ordinal in range(spec.members):
        address = spec.local.address(ordinal)
        for port in member_ports(spec.store):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT
                try:
                    probe.bind((address, port))
                except OSError as error:
                    if error.errno != errno.EADDRINUSE:
                        raise
                    taken.append(f"{address}:{port}")
    return taken


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
                f"subnet: {', '.join(taken)} already in use by another process; fix: stop it, "
                f"or pick another --subnet"
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
