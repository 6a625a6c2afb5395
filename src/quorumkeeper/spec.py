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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quorumkeeper import distributions

MAX_MEMBERS = 9
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
    version: str = distributions.ETCD_VERSION
    members: Annotated[int, Field(ge=1, le=MAX_MEMBERS)] = 3
    etcd: EtcdSettings = EtcdSettings()
    local: LocalSettings = LocalSettings()
    data_dir: Path | None = Field(
        default=None, description="where member data lives; default <state-dir>/<name>/members"
    )

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
    def _known_version(cls, value: str) -> str:
        if not re.fullmatch(r"\d+\.\d+\.\d+", value):
            raise ValueError(f"version must look like 3.7.3 (got {value!r})")
        return value

    @model_validator(mode="after")
    def _supported_version(self) -> ClusterSpec:
        series = ".".join(self.version.split(".")[:2])
        if self.store is Store.ETCD and series not in distributions.SUPPORTED_ETCD_SERIES:
            raise ValueError(
                f"version {self.version} of etcd is not supported; fix: use one of the "
                f"{', '.join(distributions.SUPPORTED_ETCD_SERIES)} series "
                f"(default {distributions.ETCD_VERSION})"
            )
        if self.store is Store.ZOOKEEPER:
            raise ValueError(
                "store zookeeper is not available in this release yet; fix: use --store etcd"
            )
        return self

    def member_name(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"

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
