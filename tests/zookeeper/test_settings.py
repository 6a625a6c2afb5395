"""Settings, versions and the superuser secret: no JVM needed."""

from __future__ import annotations

import base64
import hashlib
import stat
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from quorumkeeper import versions
from quorumkeeper.runtimes.local import distributions
from quorumkeeper.runtimes.local.state import ensure_secret
from quorumkeeper.spec import SpecError, ZookeeperSettings, apply_fix, parse_spec
from quorumkeeper.stores.zookeeper.ensemble import parse_config, superuser_digest_flag
from quorumkeeper.stores.zookeeper.words import four_letter_word
from tests.zookeeper.conftest import Ensemble


def test_defaults_are_the_seeds() -> None:
    settings = ZookeeperSettings()
    assert (settings.tick_time_ms, settings.init_limit, settings.sync_limit) == (2000, 10, 5)
    assert (settings.heap, settings.max_client_cnxns, settings.log_level) == ("512M", 60, "INFO")
    assert (settings.snap_retain_count, settings.purge_interval_hours) == (3, 12)
    assert settings.session_timeout_bounds_ms == (4000, 40000)


@pytest.mark.parametrize(
    ("fields", "names", "fix"),
    [
        ({"max_session_timeout_ms": 3000}, "max_session_timeout_ms", "2 x tick_time_ms = 4000"),
        ({"min_session_timeout_ms": 60000}, "min_session_timeout_ms", "max_session_timeout_ms"),
        ({"max_client_cnxns": 2**31}, "max_client_cnxns", "between 0 and 65535"),
        ({"purge_interval_hours": 2**31}, "purge_interval_hours", "a Java int"),
        ({"snap_retain_count": 2}, "snap_retain_count", "ZooKeeper keeps at least 3"),
        ({"heap": "lots"}, "heap", "followed by K, M, G or T"),
        ({"heap": "512"}, "heap", "followed by K, M, G or T"),
        ({"heap": "32M"}, "heap", "at least 64M"),
        ({"heap": "99999999G"}, "heap", "at most 64T"),
        ({"data_dir": "/var/lib/zk"}, "data_dir", "relative path"),
        ({"data_log_dir": "../log"}, "data_log_dir", "relative path"),
        ({"tick_time_ms": 0}, "tick_time_ms", "between 10 and 60000"),
        ({"tick_time_ms": True}, "tick_time_ms", "valid integer"),
    ],
)
def test_bad_settings_are_refused_with_the_field_and_fix(
    fields: dict[str, object], names: str, fix: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        ZookeeperSettings.model_validate(fields)
    message = str(refused.value)
    assert names in message
    assert fix in message


def test_tuned_timing_is_accepted() -> None:
    tuned = ZookeeperSettings(
        tick_time_ms=500, min_session_timeout_ms=1000, max_session_timeout_ms=10000
    )
    assert tuned.sync_limit * tuned.tick_time_ms <= tuned.session_timeout_bounds_ms[1]
    assert tuned.warnings == []


def _server_conf(ensemble: Ensemble) -> dict[str, str]:
    text = four_letter_word(ensemble.endpoint(0).address, "conf", 5, ensemble.words_tls)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.mark.zookeeper
def test_zookeeper_runs_with_what_the_spec_accepts(
    ensemble_factory: Callable[..., Ensemble],
) -> None:
    """A max session of 90 s at tick 2000 and a tick of 3000 alone are ZooKeeper's to accept:
    a real server starts with them, and unset bounds are the ones it derives (2 and 20 ticks)."""
    long_sessions = ensemble_factory(ZookeeperSettings(heap="128M", max_session_timeout_ms=90000))
    slow_ticks = ensemble_factory(ZookeeperSettings(heap="128M", tick_time_ms=3000))
    long_sessions.bootstrap()
    slow_ticks.bootstrap()
    assert _session_bounds(long_sessions) == ("4000", "90000")
    assert _session_bounds(slow_ticks) == ("6000", "60000")
    zoo_cfg = slow_ticks.runtime.data_dir(slow_ticks.endpoint(0)) / "conf" / "zoo.cfg"
    assert "SessionTimeout" not in zoo_cfg.read_text()


@pytest.mark.zookeeper
def test_jvm_flags_of_the_spec_follow_the_keepers_own(
    ensemble_factory: Callable[..., Ensemble],
) -> None:
    flags = ("-XX:TieredStopAtLevel=1", "-Dquorumkeeper.test=on")
    ensemble = ensemble_factory(ZookeeperSettings(heap="128M", jvm_flags=flags))
    ensemble.bootstrap()
    pid = ensemble.runtime.pid(ensemble.endpoint(0))
    assert pid is not None
    argv = psutil.Process(pid).cmdline()
    assert "-Xmx128M" in argv and all(flag in argv for flag in flags), argv
    assert argv.index("-Xmx128M") < argv.index(flags[0]) < argv.index(flags[1]), argv


def _session_bounds(ensemble: Ensemble) -> tuple[str, str]:
    conf = _server_conf(ensemble)
    return conf["minSessionTimeout"], conf["maxSessionTimeout"]


@pytest.mark.parametrize("version", ["3.4.14", "3.4.10"])
def test_zookeeper_34_is_refused_for_lack_of_reconfig(version: str) -> None:
    with pytest.raises(versions.UnsupportedZookeeperVersion, match="no dynamic reconfig"):
        distributions.zookeeper_classpath(version)
    with pytest.raises(versions.UnsupportedZookeeperVersion, match=r"fix: use 3\.9\.5"):
        distributions.fetch_zookeeper(version)


def test_a_release_that_loses_data_is_never_installed_nor_chosen_but_a_stored_spec_loads() -> None:
    with pytest.raises(versions.UnsupportedZookeeperVersion, match=r"ZOOKEEPER-4925.*use 3\.9\.5"):
        distributions.fetch_zookeeper("3.9.3")
    with pytest.raises(SpecError, match="ZOOKEEPER-4925") as refused:
        parse_spec({"name": "x", "store": "zookeeper", "version": "3.9.3"})
    assert "3.9.4 or newer" in str(refused.value)
    fixed = apply_fix({"name": "x", "store": "zookeeper", "version": "3.9.3"}, refused.value.fix)
    assert parse_spec(fixed).version == versions.ZOOKEEPER_VERSION
    # A cluster created on it before keeps loading, so `apply` can move it to 3.9.4 or newer.
    stored = {"name": "x", "store": "zookeeper", "version": "3.9.3"}
    assert parse_spec(stored, stored=True).version == "3.9.3"
    assert versions.zookeeper_data_loss("3.9.4") is None


def test_other_unsupported_series_are_refused() -> None:
    with pytest.raises(versions.UnsupportedZookeeperVersion, match=r"3\.8, 3\.9"):
        versions.check_zookeeper_version("3.7.2")


def test_missing_release_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUMKEEPER_CACHE_DIR", str(tmp_path))
    with pytest.raises(distributions.DistributionMissing, match="install zookeeper --version"):
        distributions.zookeeper_classpath("3.9.4")


def test_superuser_password_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "superuser"
    password = ensure_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(password) >= 32
    assert ensure_secret(path) == password
    expected = base64.b64encode(hashlib.sha1(f"super:{password}".encode()).digest()).decode()
    assert superuser_digest_flag(password).endswith(f"=super:{expected}")
    assert password not in superuser_digest_flag(password)


def test_committed_config_parses_roles_and_hex_version() -> None:
    config = parse_config(
        "server.1=127.0.110.1:2888:3888:participant;127.0.110.1:2181\n"
        "server.3=127.0.110.3:2888:3888:observer;127.0.110.3:2181\n"
        "version=10000000a"
    )
    assert config.version == 0x10000000A
    assert [(s.id, s.address, s.participant) for s in config.servers] == [
        (1, "127.0.110.1", True),
        (3, "127.0.110.3", False),
    ]
    assert config.voter(1)
    assert not config.voter(3)
    assert not config.voter(2)
