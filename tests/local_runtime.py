"""Local runtimes for tests that start members by hand, without a keeper or reconciler."""

from __future__ import annotations

from pathlib import Path

from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.local.launchers import MemberLauncher
from quorumkeeper.runtimes.local.placement import LoopbackPlacement
from quorumkeeper.runtimes.local.processes import LocalRuntime


def spawner(members_root: Path, launcher: MemberLauncher, name: str, subnet: str) -> LocalRuntime:
    """A runtime whose `spawn`, `stop`, folders and logs are the real ones. Nothing observes
    through it, so it probes no member (`answers` is always false) and checks no port."""

    def never(endpoint: Endpoint) -> bool:
        return False

    placement = LoopbackPlacement(name, subnet)
    return LocalRuntime(members_root, launcher, placement, answers=never, ports=())
