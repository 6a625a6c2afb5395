"""Spec validation: every bad value is refused with field, value, rule and a fix that passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from quorumkeeper.spec import (
    REMOVE,
    ClusterSpec,
    SpecError,
    apply_fix,
    dump_spec,
    go_duration_ns,
    machine_memory_bytes,
    parse_spec,
    yaml_value,
)

BAD_INPUTS: list[tuple[dict[str, Any], str]] = [
    # issue 10, part 3
    ({"zookeeper": {"min_session_timeout_ms": 60000}}, "zookeeper.min_session_timeout_ms"),
    ({"etcd": {"election_timeout_ms": 60000}}, "etcd.election_timeout_ms"),
    ({"etcd": {"snapshot_count": 10**30}}, "etcd.snapshot_count"),
    ({"etcd": {"quota_backend_bytes": 16 * 1024**3}}, "etcd.quota_backend_bytes"),
    ({"etcd": {"quota_backend_bytes": 10**30}}, "etcd.quota_backend_bytes"),
    ({"zookeeper": {"max_client_cnxns": 3_000_000_000}}, "zookeeper.max_client_cnxns"),
    ({"zookeeper": {"purge_interval_hours": 3_000_000_000}}, "zookeeper.purge_interval_hours"),
    ({"zookeeper": {"heap": "99999999G"}}, "zookeeper.heap"),
    ({"etcd": {"auto_compaction_retention": "banana"}}, "etcd.auto_compaction_retention"),
    ({"members": True}, "members"),
    # strict types and the stores' other formats
    ({"members": "3"}, "members"),
    ({"members": 3.0}, "members"),
    ({"members": 0}, "members"),
    ({"members": 10}, "members"),
    ({"zookeeper": {"tick_time_ms": False}}, "zookeeper.tick_time_ms"),
    ({"zookeeper": {"max_session_timeout_ms": 3000}}, "zookeeper.max_session_timeout_ms"),
    (
        {"zookeeper": {"min_session_timeout_ms": 9000, "max_session_timeout_ms": 5000}},
        "zookeeper.min_session_timeout_ms",
    ),
    ({"zookeeper": {"heap": "lots"}}, "zookeeper.heap"),
    ({"zookeeper": {"heap": "32M"}}, "zookeeper.heap"),
    ({"zookeeper": {"data_dir": "/var/lib/zk"}}, "zookeeper.data_dir"),
    ({"zookeeper": {"log_level": "LOUD"}}, "zookeeper.log_level"),
    ({"zookeeper": {"jvm_flags": ["-Xmx2g"]}}, "zookeeper.jvm_flags"),
    (
        {"zookeeper": {"jvm_flags": ["-XX:+UseG1GC", "-Dzookeeper.enforce.auth.enabled=false"]}},
        "zookeeper.jvm_flags",
    ),
    ({"zookeeper": {"jvm_flags": ["-Dx=$(SECRET)"]}}, "zookeeper.jvm_flags"),
    ({"zookeeper": {"jvm_flags": ["-XX:+UseG1GC -Xss1m"]}}, "zookeeper.jvm_flags"),
    ({"zookeeper": {"jvm_flags": "-XX:+UseG1GC"}}, "zookeeper.jvm_flags"),
    ({"etcd": {"heartbeat_interval_ms": 500}}, "etcd.election_timeout_ms"),
    ({"etcd": {"heartbeat_interval_ms": 6000}}, "etcd.heartbeat_interval_ms"),
    ({"etcd": {"auto_compaction_retention": "-1h"}}, "etcd.auto_compaction_retention"),
    ({"etcd": {"auto_compaction_retention": "1.5"}}, "etcd.auto_compaction_retention"),
    ({"etcd": {"auto_compaction_retention": "5ns"}}, "etcd.auto_compaction_retention"),
    ({"etcd": {"auto_compaction_retention": "²"}}, "etcd.auto_compaction_retention"),
    ({"members": "³"}, "members"),
    ({"etcd": {"auto_compaction_retention": "9999999h"}}, "etcd.auto_compaction_retention"),
    ({"etcd": {"auto_compaction_mode": "revision"}}, "etcd.auto_compaction_retention"),
    (
        {"etcd": {"auto_compaction_mode": "revision", "auto_compaction_retention": "lots"}},
        "etcd.auto_compaction_retention",
    ),
    ({"name": "Bad_Name"}, "name"),
    ({"name": "-x"}, "name"),
    ({"store": "redis"}, "store"),
    ({"version": "3.4.23"}, "version"),
    ({"version": "latest"}, "version"),
    ({"store": "zookeeper", "version": "3.4.14"}, "version"),
    ({"store": "zookeeper", "version": "3.7.1"}, "version"),
    ({"local": {"subnet": "10.0.0"}}, "local.subnet"),
    ({"colour": "blue"}, "colour"),
    ({"data_dir": "relative/data"}, "data_dir"),
]


@pytest.mark.parametrize(("bad", "field"), BAD_INPUTS)
def test_every_refusal_names_field_value_rule_and_a_fix_that_validates(
    bad: dict[str, Any], field: str
) -> None:
    data = {"name": "x", **bad}
    with pytest.raises(SpecError) as refused:
        parse_spec(data)
    error = refused.value
    problem = next((p for p in error.problems if p.field == field), None)
    assert problem is not None, str(error)
    line = str(problem)
    assert line.startswith(f"{field}: {yaml_value(problem.value)}; rule: "), line
    assert "; fix: " in line and problem.fix, line
    assert str(error).splitlines()[0] == str(error.problems[0])

    fixed = parse_spec(apply_fix(data, error.fix))
    assert isinstance(fixed, ClusterSpec)


def test_fixes_reach_cross_field_rules_a_first_fix_reveals() -> None:
    """heartbeat 6000 is clamped to 5000, which the default election timeout then breaks."""
    with pytest.raises(SpecError) as refused:
        parse_spec({"name": "x", "etcd": {"heartbeat_interval_ms": 6000}})
    assert refused.value.fix == {
        "etcd.heartbeat_interval_ms": 5000,
        "etcd.election_timeout_ms": 25000,
    }


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (
            {"etcd": {"election_timeout_ms": 60000}},
            [
                "60000",
                "between 50 and 50000",
                "etcd refuses",
                "fix: set etcd.election_timeout_ms: 50000",
            ],
        ),
        (
            {"zookeeper": {"min_session_timeout_ms": 60000}},
            ["unset and so 20 x tick_time_ms = 40000", "max_session_timeout_ms: 60000"],
        ),
        ({"members": True}, ["members: true;", "whole number", "fix: set members: 3"]),
        ({"members": None}, ["members: null;", "fix: set members: 3"]),
        ({"members": "3"}, ["members: '3'", "quoted", "fix: set members: 3"]),
        ({"members": 0}, ["members must be between 1 and 9", "fix: set members: 1"]),
        ({"etcd": {"quota_backend_bytes": 10**30}}, ["MaxQuotaBytes", "8589934592"]),
        ({"zookeeper": {"heap": "99999999G"}}, ["at most 64T", "this machine has"]),
        (
            {"zookeeper": {"jvm_flags": ["-XX:+UseG1GC", "-Xmx2g"]}},
            [
                "the heap is zookeeper.heap",
                "fix: set zookeeper.jvm_flags: ['-XX:+UseG1GC'], set zookeeper.heap: 2G",
            ],
        ),
        (  # newcomer's input: one flag where a list goes
            {"zookeeper": {"jvm_flags": "-Xlog:gc"}},
            ["a list: [a, b]", "fix: set zookeeper.jvm_flags: ['-Xlog:gc']"],
        ),
        (  # newcomer's input: a list where settings go
            {"etcd": [1, 2]},
            ["a mapping of settings", "fix: remove etcd"],
        ),
        ({"etcd": {"auto_compaction_retention": "banana"}}, ["Go duration", '"0" turns']),
        ({"colour": "blue"}, ["not a field", "fix: remove colour"]),
        (  # newcomer's input: a misspelt field is renamed, not only dropped
            {"store": "zookeeper", "zookeeper": {"tick_time": 2500}},
            ["fix: remove zookeeper.tick_time, set zookeeper.tick_time_ms: 2500"],
        ),
        ({"memberz": 5}, ["fix: remove memberz, set members: 5"]),
        ({"name": "Bad_Name"}, ["DNS-1123", "fix: set name: bad-name"]),
        ({"version": "3.4.23"}, ["3.5, 3.6, 3.7"]),
        ({"store": "zookeper"}, ["'etcd' or 'zookeeper'", "fix: set store: zookeeper"]),
        ({"store": "redis"}, ["fix: set store: etcd"]),
        ({"store": "zookeeper", "version": "3.4.14"}, ["dynamic reconfig", "version: 3.9.5"]),
    ],
)
def test_messages_say_value_rule_and_fix(bad: dict[str, Any], says: list[str]) -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec({"name": "x", **bad})
    for words in says:
        assert words in str(refused.value), str(refused.value)


def test_revision_mode_fix_keeps_what_the_user_chose() -> None:
    with pytest.raises(SpecError) as mode_only:
        parse_spec({"name": "x", "etcd": {"auto_compaction_mode": "revision"}})
    assert mode_only.value.fix == {"etcd.auto_compaction_retention": "1000"}
    with pytest.raises(SpecError) as duration:
        parse_spec(
            {
                "name": "x",
                "etcd": {"auto_compaction_mode": "revision", "auto_compaction_retention": "2h"},
            }
        )
    assert duration.value.fix == {"etcd.auto_compaction_mode": "periodic"}


def test_a_fix_may_remove_a_field() -> None:
    assert apply_fix({"a": {"b": 1, "c": 2}}, {"a.b": REMOVE, "d.e": 3}) == {
        "a": {"c": 2},
        "d": {"e": 3},
    }


@pytest.mark.parametrize(
    "zookeeper",
    [
        {"max_session_timeout_ms": 90000},
        {"tick_time_ms": 3000},
        {"tick_time_ms": 200},
        {"min_session_timeout_ms": 1000},
        {"sync_limit": 30},
    ],
)
def test_what_zookeeper_runs_with_is_accepted(zookeeper: dict[str, Any]) -> None:
    parse_spec({"name": "x", "store": "zookeeper", "zookeeper": zookeeper})


def test_unset_session_bounds_derive_from_tick_time_as_zookeeper_does() -> None:
    settings = parse_spec({"name": "x", "zookeeper": {"tick_time_ms": 3000}}).zookeeper
    assert (settings.min_session_timeout_ms, settings.max_session_timeout_ms) == (None, None)
    assert settings.session_timeout_bounds_ms == (6000, 60000)
    explicit = parse_spec({"name": "x", "zookeeper": {"max_session_timeout_ms": 90000}})
    assert explicit.zookeeper.session_timeout_bounds_ms == (4000, 90000)


@pytest.mark.parametrize(
    ("mode", "retention", "off"),
    [
        ("periodic", "1h", False),
        ("periodic", "30m", False),
        ("periodic", "1h30m", False),
        ("periodic", ".5h", False),
        ("periodic", "5", False),
        ("periodic", 5, False),
        ("periodic", "0", True),
        ("periodic", "0s", True),
        ("revision", "1000", False),
        ("revision", "0", True),
    ],
)
def test_compaction_retention_in_the_format_etcd_reads(
    mode: str, retention: object, off: bool
) -> None:
    etcd = parse_spec(
        {
            "name": "x",
            "etcd": {"auto_compaction_mode": mode, "auto_compaction_retention": retention},
        }
    ).etcd
    assert etcd.auto_compaction_retention == str(retention)
    assert etcd.compaction_off is off


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("0", 0),
        ("1h", 3600 * 10**9),
        ("1h30m", 5400 * 10**9),
        ("1.5h", 5400 * 10**9),
        ("300ms", 3 * 10**8),
        ("2µs", 2000),
        ("1", None),
        ("h", None),
        ("1d", None),
        ("-1h", None),
        ("", None),
        ("2562048h", None),
    ],
)
def test_go_durations(text: str, nanoseconds: int | None) -> None:
    assert go_duration_ns(text) == nanoseconds


def test_a_quota_with_compaction_off_warns_of_nospace() -> None:
    spec = parse_spec(
        {
            "name": "x",
            "etcd": {"quota_backend_bytes": 16777216, "auto_compaction_retention": "0"},
        }
    )
    (warning,) = spec.warnings
    assert "16777216" in warning and "NOSPACE" in warning and "fix:" in warning
    assert parse_spec({"name": "x"}).warnings == []


def test_advice_beyond_zookeepers_rules_is_a_warning() -> None:
    spec = parse_spec(
        {
            "name": "x",
            "store": "zookeeper",
            "members": 4,
            "zookeeper": {"sync_limit": 30, "min_session_timeout_ms": 1000},
        }
    )
    warnings = "\n".join(spec.warnings)
    assert "odd count" in warnings
    assert "no client session survives" in warnings and "max_session_timeout_ms: 60000" in warnings
    assert "init_limit: 30" in warnings
    assert "min_session_timeout_ms 1000 is under 2 x" in warnings
    assert parse_spec({"name": "x", "store": "zookeeper"}).warnings == []


def test_a_heap_above_this_machines_memory_warns() -> None:
    terabytes = machine_memory_bytes() // 1024**4 + 1
    spec = parse_spec({"name": "x", "store": "zookeeper", "zookeeper": {"heap": f"{terabytes}T"}})
    assert any("more than this machine's memory" in w for w in spec.warnings)


def test_relative_data_dir_is_resolved_once_against_the_command_folder(tmp_path: Path) -> None:
    spec = parse_spec({"name": "x", "data_dir": "reldata/../data"}, base_dir=tmp_path)
    assert spec.data_dir == tmp_path / "data"
    stored = tmp_path / "spec.yaml"
    stored.write_text(dump_spec(spec))
    assert parse_spec(yaml.safe_load(stored.read_text())).data_dir == tmp_path / "data"
    assert parse_spec({"name": "x", "data_dir": "~/d"}).data_dir == Path.home() / "d"


def test_a_stored_relative_data_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="data_dir: reldata; rule: a stored spec"):
        parse_spec({"name": "x", "data_dir": "reldata"})


def test_each_store_defaults_to_its_pinned_release() -> None:
    assert parse_spec({"name": "x"}).version == "3.7.3"
    assert parse_spec({"name": "x", "store": "zookeeper"}).version == "3.9.5"


def test_even_member_count_is_allowed_with_a_warning() -> None:
    spec = parse_spec({"name": "x", "members": 4})
    assert spec.members == 4
    assert spec.even_count_warning and "odd" in spec.even_count_warning
    assert parse_spec({"name": "x", "members": 3}).even_count_warning is None


def test_a_spec_must_be_a_mapping() -> None:
    with pytest.raises(SpecError, match="a spec is a mapping"):
        parse_spec(["members", 3])


def test_bounds_reach_the_json_schema_of_the_custom_resources() -> None:
    schema = ClusterSpec.model_json_schema()
    assert (
        schema["properties"]["members"]["minimum"],
        schema["properties"]["members"]["maximum"],
    ) == (1, 9)
    election = schema["$defs"]["EtcdSettings"]["properties"]["election_timeout_ms"]
    assert election["maximum"] == 50000


def test_new_clusters_are_secure_and_an_opt_out_is_warned() -> None:
    spec = parse_spec({"name": "orders"})
    assert (spec.tls, spec.auth) == (True, True)
    assert not any(w.startswith(("tls:", "auth:")) for w in spec.warnings)
    open_spec = parse_spec({"name": "orders", "tls": False, "auth": False})
    warned = [w for w in open_spec.warnings if w.startswith(("tls:", "auth:"))]
    assert [w.split(":")[0] for w in warned] == ["tls", "auth"]
    assert all("fix: tls: true" in w or "fix: auth: true" in w for w in warned)


def test_a_spec_stored_before_security_keeps_its_cluster_as_it_runs() -> None:
    stored = parse_spec({"name": "orders", "store": "etcd"}, stored=True)
    assert (stored.tls, stored.auth) == (False, False)
    kept = parse_spec({"name": "orders", "tls": True, "auth": False}, stored=True)
    assert (kept.tls, kept.auth) == (True, False)
    # Once written back, the choice is explicit and survives another load.
    reloaded = parse_spec(yaml.safe_load(dump_spec(stored)), stored=True)
    assert (reloaded.tls, reloaded.auth) == (False, False)


def test_values_are_written_as_yaml_and_fixes_as_the_command_line_that_gave_them() -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec({"name": "x", "members": 10, "etcd": {"heartbeat_interval_ms": 6000}})
    error = refused.value
    assert "fix: set members: 9" in str(error)
    with pytest.raises(SpecError) as as_yaml:
        parse_spec({"name": "x", "members": False, "version": None})
    assert "members: false; rule: " in str(as_yaml.value), as_yaml.value
    assert "version: null; rule: " in str(as_yaml.value), as_yaml.value
    assert "fix: remove version" in str(as_yaml.value), "it takes the store's pinned release"
    assert parse_spec(apply_fix({"name": "x", "version": None}, as_yaml.value.fix)).version
    worded = error.describe({"members": lambda value: f"`quorumkeeper scale x {value}`"})
    assert "members: 10; rule: " in worded and "fix: `quorumkeeper scale x 9`" in worded
    assert "set members" not in worded
    assert "fix: set etcd.heartbeat_interval_ms: 5000" in worded, "fields not given stay YAML"


def test_a_misspelt_fields_fix_keeps_its_value_under_the_field_meant() -> None:
    data = {"name": "x", "store": "zookeeper", "zookeeper": {"tick_time": 2500}}
    with pytest.raises(SpecError) as refused:
        parse_spec(data)
    assert parse_spec(apply_fix(data, refused.value.fix)).zookeeper.tick_time_ms == 2500
