"""The desired state of a cluster, as typed models.

The CLI writes a spec file, the keeper daemon reads it, and later the operator's custom resources
are generated from the same models, so none of them can disagree on a field or a default.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from quorumkeeper import distributions

MAX_MEMBERS = 9
_HEAP = re.compile(r"^([1-9][0-9]*)([kKmMgG])$")
_HEAP_UNIT = {"k": 1024, "m": 1024**2, "g": 1024**3}
_MIN_HEAP_BYTES = 64 * 1024**2
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Store(StrEnum):
    ETCD = "etcd"
    ZOOKEEPER = "zookeeper"


class SpecError(ValueError):
    """A spec that can't be accepted; the message names each field and its fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EtcdSettings(_Strict):
    """etcd server flags worth tuning; defaults are etcd's own."""

    heartbeat_interval_ms: Annotated[int, Field(ge=10, le=5000)] = 100
    election_timeout_ms: Annotated[int, Field(ge=50, le=50000)] = 1000
    snapshot_count: Annotated[int, Field(ge=100)] = 10000
    quota_backend_bytes: Annotated[int, Field(ge=0)] = 2 * 1024**3
    auto_compaction_mode: Literal["periodic", "revision"] = "periodic"
    auto_compaction_retention: str = "1h"

    @model_validator(mode="after")
    def _election_outlasts_heartbeats(self) -> EtcdSettings:
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms:
            raise ValueError(
                "etcd.election_timeout_ms must be at least 5 x etcd.heartbeat_interval_ms "
                f"(got {self.election_timeout_ms} < 5 x {self.heartbeat_interval_ms}); "
                "fix: raise election_timeout_ms or lower heartbeat_interval_ms"
            )
        return self


class ZookeeperSettings(_Strict):
    """ZooKeeper server settings; every default is the seed's value.

    The two directories are relative to the member's data directory, so the defaults give the
    seed's `/var/lib/zookeeper/data` and `/var/lib/zookeeper/data/log` when a member's volume is
    mounted at `/var/lib/zookeeper`.
    """

    tick_time_ms: Annotated[int, Field(ge=10, le=60000)] = 2000
    init_limit: Annotated[int, Field(ge=1, le=1000)] = 10
    sync_limit: Annotated[int, Field(ge=1, le=1000)] = 5
    heap: str = "512M"
    max_client_cnxns: Annotated[int, Field(ge=0)] = 60
    snap_retain_count: Annotated[int, Field(ge=3)] = 3
    purge_interval_hours: Annotated[int, Field(ge=0)] = 12
    min_session_timeout_ms: Annotated[int, Field(ge=1)] = 4000
    max_session_timeout_ms: Annotated[int, Field(ge=1)] = 40000
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR"] = "INFO"
    data_dir: str = "data"
    data_log_dir: str = "data/log"

    @field_validator("heap")
    @classmethod
    def _heap_parses(cls, value: str) -> str:
        match = _HEAP.match(value)
        if match is None:
            raise ValueError(
                f"zookeeper.heap must be a JVM size such as 512M or 1G (got {value!r}); "
                "fix: write a whole number followed by K, M or G"
            )
        if int(match[1]) * _HEAP_UNIT[match[2].lower()] < _MIN_HEAP_BYTES:
            raise ValueError(
                f"zookeeper.heap must be at least 64M (got {value!r}); fix: raise it to 64M or more"
            )
        return value

    @field_validator("data_dir", "data_log_dir")
    @classmethod
    def _inside_member_dir(cls, value: str) -> str:
        path = Path(value)
        if not value or path.is_absolute() or ".." in path.parts:
            raise ValueError(
                f"must be a relative path inside the member's data directory (got {value!r}); "
                "fix: use a path such as data or data/log"
            )
        return value

    @model_validator(mode="after")
    def _timing_rules(self) -> ZookeeperSettings:
        """ZooKeeper's session bounds, plus the rule that a session can outlive a hung leader.

        A follower gives up on a silent leader after sync_limit x tick_time; a client can only
        keep its session across that failover if it may ask for a longer session than that.
        """
        tick = self.tick_time_ms
        problems = []
        if self.min_session_timeout_ms < 2 * tick:
            problems.append(
                f"zookeeper.min_session_timeout_ms must be at least 2 x zookeeper.tick_time_ms "
                f"(got {self.min_session_timeout_ms} < 2 x {tick}); fix: raise it to {2 * tick} "
                "or lower tick_time_ms"
            )
        if self.max_session_timeout_ms > 20 * tick:
            problems.append(
                f"zookeeper.max_session_timeout_ms must be at most 20 x zookeeper.tick_time_ms "
                f"(got {self.max_session_timeout_ms} > 20 x {tick}); fix: lower it to "
                f"{20 * tick} or raise tick_time_ms"
            )
        if self.min_session_timeout_ms > self.max_session_timeout_ms:
            problems.append(
                f"zookeeper.min_session_timeout_ms ({self.min_session_timeout_ms}) must not exceed "
                f"zookeeper.max_session_timeout_ms ({self.max_session_timeout_ms}); fix: swap them"
            )
        if self.max_session_timeout_ms < self.sync_limit * tick:
            problems.append(
                f"zookeeper.max_session_timeout_ms must be at least zookeeper.sync_limit x "
                f"zookeeper.tick_time_ms (got {self.max_session_timeout_ms} < {self.sync_limit} x "
                f"{tick}), or no session survives a hung leader; fix: raise it to "
                f"{self.sync_limit * tick} or lower sync_limit"
            )
        if self.init_limit < self.sync_limit:
            problems.append(
                f"zookeeper.init_limit must be at least zookeeper.sync_limit (got "
                f"{self.init_limit} < {self.sync_limit}): the first sync of a joiner is the "
                "longest; fix: raise init_limit"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class LocalSettings(_Strict):
    """Where members of the local runtime live: one loopback address each, standard ports."""

    subnet: str = Field(
        default="127.0.1",
        description="first three octets of the loopback /24 the members bind to (127.x.y)",
    )
    keep_removed_data: bool = Field(
        default=False,
        description="archive a removed member's data instead of deleting it",
    )

    @field_validator("subnet")
    @classmethod
    def _loopback_subnet(cls, value: str) -> str:
        try:
            address = ipaddress.IPv4Address(f"{value}.1")
        except ValueError:
            address = None
        if address is None or not address.is_loopback or value.count(".") != 2:
            raise ValueError(
                f"local.subnet must be three octets inside 127.0.0.0/8 such as 127.0.1 "
                f"(got {value!r})"
            )
        return value

    def address(self, ordinal: int) -> str:
        return f"{self.subnet}.{ordinal + 1}"


class ClusterSpec(_Strict):
    """A cluster as the user wants it."""

    name: str
    store: Store = Store.ETCD
    version: str
    members: Annotated[int, Field(ge=1, le=MAX_MEMBERS)] = 3
    etcd: EtcdSettings = EtcdSettings()
    zookeeper: ZookeeperSettings = ZookeeperSettings()
    local: LocalSettings = LocalSettings()
    data_dir: Path | None = Field(
        default=None, description="where member data lives; default <state-dir>/<name>/members"
    )

    @model_validator(mode="before")
    @classmethod
    def _store_default_version(cls, data: object) -> object:
        """Without a version, a cluster runs the pinned release of its own store."""
        if isinstance(data, dict) and "version" not in data:
            zookeeper = data.get("store") == Store.ZOOKEEPER.value
            pinned = distributions.ZOOKEEPER_VERSION if zookeeper else distributions.ETCD_VERSION
            return {**data, "version": pinned}
        return data

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if len(value) > 40 or not DNS_LABEL.match(value):
            raise ValueError(
                f"name must be a DNS-1123 label of at most 40 characters: lowercase letters, "
                f"digits and '-', starting and ending with a letter or digit (got {value!r})"
            )
        return value

    @field_validator("version")
    @classmethod
    def _supported_version(cls, value: str, info: ValidationInfo) -> str:
        if not re.fullmatch(r"\d+\.\d+\.\d+", value):
            raise ValueError(f"version must look like 3.7.3 (got {value!r})")
        store = info.data.get("store")
        series = ".".join(value.split(".")[:2])
        if store is Store.ETCD and series not in distributions.SUPPORTED_ETCD_SERIES:
            raise ValueError(
                f"version {value} of etcd is not supported; fix: use one of the "
                f"{', '.join(distributions.SUPPORTED_ETCD_SERIES)} series "
                f"(default {distributions.ETCD_VERSION})"
            )
        if store is Store.ZOOKEEPER:
            distributions.check_zookeeper_version(value)
        return value

    @property
    def even_count_warning(self) -> str | None:
        if self.members % 2:
            return None
        return (
            f"{self.members} members tolerate no more failures than {self.members - 1}: "
            f"an odd count is the better choice"
        )


def parse_spec(data: object) -> ClusterSpec:
    """Validate raw data into a spec, turning pydantic's errors into one readable message."""
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(describe_validation_error(error)) from None


def describe_validation_error(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "spec"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field; fix: remove it or check its spelling"
        elif field == "members" and problem["type"].startswith(("greater", "less")):
            message = f"members must be between 1 and {MAX_MEMBERS} (got {problem['input']})"
        lines.append(f"{field}: {message}")
    return "; ".join(lines)


def load_spec(path: Path) -> ClusterSpec:
    return parse_spec(yaml.safe_load(path.read_text()))


def dump_spec(spec: ClusterSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
