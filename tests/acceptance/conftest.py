"""Fixtures for the acceptance suite: a fresh cluster name, subnet and state dir per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.harness import LocalClusterUnderTest
from tests.polling import loopback_subnet

STORES = ["etcd", "zookeeper"]
"""Every store the suite runs against; each test runs once per store."""

_subnets = itertools.count(20)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster(store: str, tmp_path: Path) -> Iterator[LocalClusterUnderTest]:
    under_test = LocalClusterUnderTest(
        store=store, name="qk", subnet=loopback_subnet(next(_subnets)), state_dir=tmp_path / "state"
    )
    yield under_test
    under_test.destroy()
