"""Polling with a deadline, the suite's one alternative to sleeping."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TEST_NETWORK = int(os.environ.get("QUORUMKEEPER_TEST_NETWORK", "0"))
"""Second octet of the loopback addresses the suites use (127.<this>.x.y): two suites running
at once on one machine each set their own."""


def loopback_subnet(third: int) -> str:
    """The /24 `127.<TEST_NETWORK>.<third>` that a suite's test binds."""
    return f"127.{TEST_NETWORK}.{third}"


def wait_until(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail naming `what`
    at the deadline.

    Between two calls it waits 0.1 s, or as long as the call took when that was longer: a
    condition that runs a command (a new interpreter, TLS handshakes with every member) then
    takes at most half a core, and the machine's other half is left to the cluster it waits
    for."""
    deadline = time.monotonic() + timeout
    while True:
        called = time.monotonic()
        result = condition()
        if result:
            return result
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        time.sleep(max(0.1, now - called))
