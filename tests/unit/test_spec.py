"""Spec validation: every bad value is refused with the field named and a fix."""

from __future__ import annotations

import pytest

from quorumkeeper.spec import SpecError, parse_spec


@pytest.mark.parametrize(
    ("data", "field", "fix"),
    [
        ({"name": "x", "members": 0}, "members", "between 1 and 9"),
        ({"name": "x", "members": 10}, "members", "between 1 and 9"),
        ({"name": "Bad_Name"}, "name", "DNS-1123"),
        ({"name": "-x"}, "name", "DNS-1123"),
        ({"name": "x", "store": "redis"}, "store", "etcd"),
        ({"name": "x", "version": "3.4.23"}, "version", "3.5, 3.6, 3.7"),
        ({"name": "x", "store": "zookeeper", "version": "3.4.14"}, "version", "dynamic reconfig"),
        ({"name": "x", "store": "zookeeper", "version": "3.7.1"}, "version", "3.8, 3.9"),
        ({"name": "x", "zookeeper": {"heap": "lots"}}, "zookeeper.heap", "K, M or G"),
        ({"name": "x", "zookeeper": {"tick_time_ms": 200}}, "zookeeper", "max_session_timeout"),
        ({"name": "x", "zookeeper": {"sync_limit": 30}}, "zookeeper", "hung leader"),
        ({"name": "x", "version": "latest"}, "version", "3.7.3"),
        ({"name": "x", "local": {"subnet": "10.0.0"}}, "local.subnet", "127.0.0.0/8"),
        ({"name": "x", "etcd": {"heartbeat_interval_ms": 500}}, "etcd", "election_timeout_ms"),
        ({"name": "x", "colour": "blue"}, "colour", "remove it"),
    ],
)
def test_bad_spec_names_field_and_fix(data: dict[str, object], field: str, fix: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(data)
    assert raised.value.args[0].startswith(f"{field}:"), raised.value.args[0]
    assert fix in raised.value.args[0]


def test_each_store_defaults_to_its_pinned_release() -> None:
    assert parse_spec({"name": "x"}).version == "3.7.3"
    assert parse_spec({"name": "x", "store": "zookeeper"}).version == "3.9.5"


def test_even_member_count_is_allowed_with_a_warning() -> None:
    spec = parse_spec({"name": "x", "members": 4})
    assert spec.members == 4
    assert spec.even_count_warning and "odd" in spec.even_count_warning
    assert parse_spec({"name": "x", "members": 3}).even_count_warning is None
