"""The desired state of a cluster, as typed models.

The CLI writes a spec file, the keeper daemon reads it, and later the operator's custom resources
are generated from the same models, so none of them can disagree on a field or a default.

Every field is bounded by what its store accepts (each bound cites its source), integers are
strict (YAML `true` or `"3"` is refused, never read as 1 or 3), and each refusal is a `Problem`
that names the field, the value, the rule and a fix the spec then passes with. Advice beyond the
store's own rules is a warning (`ClusterSpec.warnings`), never a refusal.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from quorumkeeper import versions
from quorumkeeper.errors import Refused

MAX_MEMBERS = 9
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 40
"""A cluster's name is the prefix of its members' (`<name>-N`) and of their DNS names on
Kubernetes (`<name>-N.<name>-peers`), each a DNS label of at most 63 characters."""

JAVA_INT_MAX = 2**31 - 1
"""ZooKeeper reads its numeric settings with `Integer.parseInt` (QuorumPeerConfig.parseProperties):
a bigger value stops the server at start."""
GO_INT64_MAX = 2**63 - 1
"""Go's `time.Duration` counts int64 nanoseconds; `strconv.Atoi` reads an int64."""

ETCD_MAX_ELECTION_MS = 50000
"""embed/config.go `maxElectionMs`: etcd refuses to start with "--election-timeout[Nms] is too
long, and should be set less than 50000ms"."""
ETCD_MAX_QUOTA_BYTES = 8 * 1024**3
"""storage/quota.go `MaxQuotaBytes`: etcd's maximum backend quota (etcd 3.7 logs "quota exceeds
the maximum value" above it and degrades)."""
ETCD_DEFAULT_QUOTA_BYTES = 2 * 1024**3
"""storage/quota.go `DefaultQuotaBytes`, what a quota of 0 means."""
ETCD_SANE_SNAPSHOT_COUNT = 10_000_000
"""Well inside the uint64 of `--snapshot-count` (embed/config.go), and 1000 x etcd 3.6's
default: etcd 3.5 keeps that many raft entries in memory between snapshots
and every member replays them from its WAL at start."""

_HEAP = re.compile(r"^([1-9][0-9]*)([kKmMgGtT])$")
_HEAP_UNIT = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_MIN_HEAP_BYTES = 64 * 1024**2
MAX_HEAP_BYTES = 64 * 1024**4
"""The largest heap HotSpot can reserve on 64-bit Linux (a 47-bit user address space): with
OpenJDK 17, `-Xmx80T` starts and `-Xmx90T` fails "Could not reserve enough space for ...
object heap"; beyond 2^64 bytes it is an "Invalid maximum heap size"."""

_GO_DURATION_UNIT_NS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "μs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_GO_DURATION_PART = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_HOUR_NS = 3600 * 10**9


class Store(StrEnum):
    ETCD = "etcd"
    ZOOKEEPER = "zookeeper"


REMOVE = None
"""A fix value meaning "remove the field", so its default applies."""


@dataclass(frozen=True)
class Problem:
    """One refused value.

    `field` is dotted (`zookeeper.heap`); `fix` maps dotted fields to the values that satisfy
    the rule (`REMOVE` to drop a field), applied to the input with `apply_fix`;
    `alternative` is another fix in words.
    """

    field: str
    value: object
    rule: str
    fix: Mapping[str, object]
    alternative: str = ""

    @property
    def advice(self) -> str:
        return self.advice_by({})

    def advice_by(self, commands: Mapping[str, Callable[[object], str]]) -> str:
        """The fix in words: `set field: value` in the spec's YAML, or, for a field a command
        line gave, what `commands[field]` makes of the value (`--members 9`)."""
        changes = ", ".join(
            f"remove {name}"
            if value is REMOVE
            else commands[name](value)
            if name in commands
            else f"set {name}: {yaml_value(value)}"
            for name, value in self.fix.items()
        )
        return f"{changes} (or {self.alternative})" if self.alternative else changes

    def describe(self, commands: Mapping[str, Callable[[object], str]]) -> str:
        """`field: value; rule: ...; fix: ...`, values as YAML writes them (`true`, not
        Python's `True`), the fix as `advice_by(commands)` words it."""
        return (
            f"{self.field}: {yaml_value(self.value)}; rule: {self.rule}; "
            f"fix: {self.advice_by(commands)}"
        )

    def __str__(self) -> str:
        return self.describe({})

    def under(self, prefix: str) -> Problem:
        """The same problem for a model nested at `prefix`."""
        if not prefix:
            return self
        fix = {f"{prefix}.{name}": value for name, value in self.fix.items()}
        return replace(self, field=f"{prefix}.{self.field}", fix=fix)


class SpecError(Refused):
    """A spec that can't be accepted: one line per problem, `field: value; rule: ...; fix: ...`.

    `fix` merges every problem's fix; applied with `apply_fix`, the spec validates.
    """

    fix: dict[str, object]

    def describe(self, commands: Mapping[str, Callable[[object], str]]) -> str:
        """The problems, one a line, with the fixes of fields a command line gave worded as
        that command's (`Problem.describe`)."""
        return "\n".join(problem.describe(commands) for problem in self.problems)

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        merged: dict[str, object] = {}
        for problem in self.problems:
            merged.update(problem.fix)
        super().__init__(
            "\n".join(str(problem) for problem in self.problems),
            field=self.problems[0].field if self.problems else None,
            fix=merged,
        )


def yaml_value(value: object) -> str:
    """`value` on one line as YAML writes it, the way a person would put it in a spec file:
    `true`, `null`, `3`, `'3'` (a string YAML would otherwise read as a number). A value YAML
    can't represent (no spec input is one) is shown as Python shows it."""
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30)
    except yaml.YAMLError:
        return repr(value)
    return text.removesuffix("\n...\n").strip()


def _refuse(rule: str, fix: object, alternative: str = "") -> PydanticCustomError:
    """A refusal of the field being validated; `fix` is the value that satisfies `rule`."""
    return PydanticCustomError(
        "spec_rule", "{rule}", {"rule": rule, "fix": fix, "alternative": alternative}
    )


def _refuse_all(problems: Sequence[Problem]) -> PydanticCustomError:
    """Refusals of a model's cross-field rules, fields named relative to the model."""
    return PydanticCustomError(
        "spec_rules", "{summary}", {"summary": "; ".join(map(str, problems)), "problems": problems}
    )


@dataclass(frozen=True)
class _Within:
    """Bounds of an int field: refused outside with the nearest bound as the fix, and shown
    as `minimum`/`maximum` in the JSON schema the custom resources are generated from."""

    low: int
    high: int
    why: str = ""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(schema), "minimum": self.low, "maximum": self.high}

    def _check(self, value: int, info: ValidationInfo) -> int:
        if self.low <= value <= self.high:
            return value
        raise _refuse(
            f"{info.field_name} must be between {self.low} and {self.high}{self.why}",
            min(max(value, self.low), self.high),
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_whole(text: str) -> bool:
    """ASCII digits only, as Go's strconv.Atoi reads them (str.isdigit also takes "²")."""
    return re.fullmatch(r"[0-9]+", text) is not None


def go_duration_ns(text: str) -> int | None:
    """Nanoseconds of an unsigned Go duration (`1h`, `30m`, `1h30m`, `1.5h`, `0`), or None when
    Go's `time.ParseDuration` would refuse it or it overflows int64 nanoseconds."""
    if text == "0":
        return 0
    total, position = 0, 0
    while position < len(text):
        part = _GO_DURATION_PART.match(text, position)
        if part is None:
            return None
        whole, _, fraction = part[1].partition(".")
        unit = _GO_DURATION_UNIT_NS[part[2]]
        total += int(whole or "0") * unit + int(fraction or "0") * unit // 10 ** len(fraction)
        position = part.end()
    return total if text and total <= GO_INT64_MAX else None


class EtcdSettings(_Strict):
    """etcd server flags worth tuning; defaults are etcd's own, bounds are etcd 3.7's."""

    heartbeat_interval_ms: Annotated[int, Strict(), _Within(10, 5000)] = 100
    election_timeout_ms: Annotated[
        int,
        Strict(),
        _Within(50, ETCD_MAX_ELECTION_MS, ": etcd refuses longer election timeouts"),
    ] = 1000
    snapshot_count: Annotated[
        int,
        Strict(),
        _Within(
            100,
            ETCD_SANE_SNAPSHOT_COUNT,
            " (etcd reads a uint64; between snapshots etcd 3.5 holds that many raft entries in "
            "memory and every restart replays them)",
        ),
    ] = 10000
    quota_backend_bytes: Annotated[
        int,
        Strict(),
        _Within(
            0,
            ETCD_MAX_QUOTA_BYTES,
            " (8 GiB is etcd's MaxQuotaBytes, beyond which etcd warns \"quota exceeds the maximum "
            "value\" and degrades; 0 means etcd's default 2 GiB)",
        ),
    ] = ETCD_DEFAULT_QUOTA_BYTES
    auto_compaction_mode: Literal["periodic", "revision"] = "periodic"
    auto_compaction_retention: str = Field(
        default="1h",
        description="periodic: a Go duration (1h, 30m) or whole hours; revision: a whole number "
        'of revisions; "0" turns compaction off',
    )

    @field_validator("auto_compaction_retention", mode="before")
    @classmethod
    def _whole_number_as_text(cls, value: object) -> object:
        """YAML reads `auto_compaction_retention: 5` as a number: it means the text "5"."""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @property
    def compaction_off(self) -> bool:
        """etcd runs no compactor when the retention parses to zero (embed/etcd.go)."""
        retention = self.auto_compaction_retention
        return go_duration_ns(retention) == 0 or (_is_whole(retention) and int(retention) == 0)

    @model_validator(mode="after")
    def _etcd_rules(self) -> EtcdSettings:
        problems = [
            problem
            for problem in (self._election_problem(), self._retention_problem())
            if problem is not None
        ]
        if problems:
            raise _refuse_all(problems)
        return self

    def _election_problem(self) -> Problem | None:
        """embed/config.go: "--election-timeout[Nms] should be at least as 5 times as
        --heartbeat-interval[Mms]"."""
        needed = 5 * self.heartbeat_interval_ms
        if self.election_timeout_ms >= needed:
            return None
        return Problem(
            "election_timeout_ms",
            self.election_timeout_ms,
            f"etcd needs election_timeout_ms at least 5 x heartbeat_interval_ms "
            f"(5 x {self.heartbeat_interval_ms} = {needed})",
            {"election_timeout_ms": needed},
            f"lower heartbeat_interval_ms to {max(self.election_timeout_ms // 5, 10)}",
        )

    def _retention_problem(self) -> Problem | None:
        """What embed/etcd.go `parseCompactionRetention` accepts, minus what it accepts by
        accident: a duration in revision mode is read as that many nanoseconds of revisions."""
        retention = self.auto_compaction_retention
        if self.auto_compaction_mode == "revision":
            if _is_whole(retention) and int(retention) <= GO_INT64_MAX:
                return None
            meant_periodic = (
                "auto_compaction_retention" in self.model_fields_set
                and go_duration_ns(retention) is not None
            )
            return Problem(
                "auto_compaction_retention",
                retention,
                "in revision mode etcd keeps the last N revisions: N must be a whole number "
                "(0 turns compaction off)",
                {"auto_compaction_mode": "periodic"}
                if meant_periodic
                else {"auto_compaction_retention": "1000"},
                "keep revision mode with a whole number such as 1000" if meant_periodic else "",
            )
        if _is_whole(retention):
            if int(retention) * _HOUR_NS <= GO_INT64_MAX:
                return None
            rule = "a whole number of hours must fit etcd's duration (int64 nanoseconds)"
        else:
            duration = go_duration_ns(retention)
            # v3compactor/periodic.go retries every tenth of the window: below a second it
            # compacts almost without pause (and below 10 ns with none).
            if duration is not None and (duration == 0 or duration >= 10**9):
                return None
            rule = (
                "in periodic mode etcd keeps a window of time: a Go duration such as 1h, 30m or "
                '1h30m, or a whole number of hours; "0" turns compaction off'
            )
            if duration is not None:
                rule = "a compaction window below 1s makes etcd compact almost continuously"
        return Problem(
            "auto_compaction_retention",
            retention,
            rule,
            {"auto_compaction_retention": "1h"},
            '"0" to turn compaction off',
        )

    @property
    def warnings(self) -> list[str]:
        """Risks of settings etcd accepts, each with its fix."""
        if not self.compaction_off:
            return []
        quota = self.quota_backend_bytes or ETCD_DEFAULT_QUOTA_BYTES
        return [
            f"etcd.auto_compaction_retention is {yaml_value(self.auto_compaction_retention)}, so "
            f"compaction is off and every revision is kept: once the database reaches "
            f"etcd.quota_backend_bytes ({quota} bytes) etcd raises the NOSPACE alarm and refuses "
            f"writes until someone compacts, defragments and disarms it; fix: set "
            f"etcd.auto_compaction_retention: 1h"
        ]


def heap_bytes(heap: str) -> int | None:
    """Bytes of a JVM size such as 512M or 2G, or None when it is not one."""
    match = _HEAP.match(heap)
    return None if match is None else int(match[1]) * _HEAP_UNIT[match[2].lower()]


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _size(count: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if count >= _HEAP_UNIT[unit.lower()]:
            return f"{count // _HEAP_UNIT[unit.lower()]}{unit}"
    return f"{count}"


_JVM_FLAG = re.compile(r"-[A-Za-z0-9_.:+=,/@%-]+")
_KEEPER_JVM_FLAGS = (  # -Xmx too, refused with its own fix (`_heap_only_through_heap`)
    ("-Dzookeeper.DigestAuthenticationProvider.", "it carries the superuser's digest"),
    ("-Dzookeeper.enforce.auth.", "auth: true or false in the spec decides it"),
)
"""Flag prefixes of `jvm_flags` that would override a setting quorumkeeper makes, and why."""

_SessionTimeoutMs = Annotated[int, Strict(), _Within(1, JAVA_INT_MAX, " (a Java int)")]


class ZookeeperSettings(_Strict):
    """ZooKeeper server settings; every default is the seed's value or ZooKeeper's own.

    The two directories are relative to the member's data directory, so the defaults give the
    seed's `/var/lib/zookeeper/data` and `/var/lib/zookeeper/data/log` when a member's volume is
    mounted at `/var/lib/zookeeper`. Unset session bounds are ZooKeeper's: 2 and 20 ticks.
    """

    tick_time_ms: Annotated[int, Strict(), _Within(10, 60000)] = 2000
    init_limit: Annotated[int, Strict(), _Within(1, 1000)] = 10
    sync_limit: Annotated[int, Strict(), _Within(1, 1000)] = 5
    heap: str = "512M"
    max_client_cnxns: Annotated[
        int,
        Strict(),
        _Within(
            0,
            65535,
            " (connections per client address to one server port; a client address has no "
            "more source ports than that; 0 means no limit)",
        ),
    ] = 60
    snap_retain_count: Annotated[
        int, Strict(), _Within(3, JAVA_INT_MAX, " (ZooKeeper keeps at least 3; a Java int)")
    ] = 3
    purge_interval_hours: Annotated[
        int,
        Strict(),
        _Within(
            0,
            8760,
            " (a Java int; purging less often than yearly lets snapshots and logs pile up as "
            "if it were off, which 0 does)",
        ),
    ] = 12
    min_session_timeout_ms: _SessionTimeoutMs | None = None
    max_session_timeout_ms: _SessionTimeoutMs | None = None
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR"] = "INFO"
    data_dir: str = "data"
    data_log_dir: str = "data/log"
    jvm_flags: tuple[str, ...] = ()
    """JVM flags added after quorumkeeper's own (heap, serial GC, exit on OOM, authentication):
    GC logging, or `-XX:TieredStopAtLevel=1` for members that live minutes (a test's). One
    flag per entry; changing them restarts the members one at a time."""

    @field_validator("jvm_flags")
    @classmethod
    def _flags_the_keeper_does_not_own(cls, flags: tuple[str, ...]) -> tuple[str, ...]:
        for flag in flags:
            kept = [other for other in flags if other != flag]
            if not _JVM_FLAG.fullmatch(flag):
                raise _refuse(
                    f"{flag!r} is not one JVM flag: each entry starts with '-' and holds "
                    "letters, digits and - _ . : + = , / @ % only (no spaces or quotes: the "
                    "flags reach the JVM through a shell variable)",
                    kept,
                )
            owner = next((o for p, o in _KEEPER_JVM_FLAGS if flag.startswith(p)), None)
            if owner:
                raise _refuse(f"{flag} is quorumkeeper's to set: {owner}", kept)
        return flags

    @field_validator("heap")
    @classmethod
    def _heap_fits_the_jvm(cls, value: str) -> str:
        size = heap_bytes(value)
        if size is None:
            raise _refuse(
                "heap must be a JVM size: a whole number followed by K, M, G or T", "512M"
            )
        if size < _MIN_HEAP_BYTES:
            raise _refuse("heap must be at least 64M", "64M")
        if size > MAX_HEAP_BYTES:
            raise _refuse(
                f"heap must be at most {_size(MAX_HEAP_BYTES)}: a larger heap is more than a "
                "64-bit JVM can reserve, and the JVM exits at start",
                "512M",
                f"at most {_size(MAX_HEAP_BYTES)}; this machine has "
                f"{_size(machine_memory_bytes())} of memory",
            )
        return value

    @field_validator("data_dir", "data_log_dir")
    @classmethod
    def _inside_member_dir(cls, value: str, info: ValidationInfo) -> str:
        path = Path(value)
        if not value or path.is_absolute() or ".." in path.parts:
            default = "data" if info.field_name == "data_dir" else "data/log"
            raise _refuse("must be a relative path inside the member's data directory", default)
        return value

    @property
    def session_timeout_bounds_ms(self) -> tuple[int, int]:
        """The (min, max) session timeouts ZooKeeper applies: unset ones are 2 and 20 ticks
        (QuorumPeerConfig.parseProperties, ZooKeeperServer.setMin/MaxSessionTimeout)."""
        tick = self.tick_time_ms
        low = self.min_session_timeout_ms
        high = self.max_session_timeout_ms
        return (2 * tick if low is None else low, 20 * tick if high is None else high)

    @model_validator(mode="after")
    def _heap_only_through_heap(self) -> ZookeeperSettings:
        """An -Xmx among `jvm_flags` would override `heap`, which the keeper checks against
        the machine's memory: the fix moves its size there."""
        sizes = [flag.removeprefix("-Xmx") for flag in self.jvm_flags if flag.startswith("-Xmx")]
        if not sizes:
            return self
        fix: dict[str, object] = {
            "jvm_flags": [flag for flag in self.jvm_flags if not flag.startswith("-Xmx")]
        }
        if heap_bytes(sizes[-1].upper()) is not None:
            fix["heap"] = sizes[-1].upper()
        rule = f"-Xmx{sizes[-1]} is quorumkeeper's to set: the heap is zookeeper.heap"
        raise _refuse_all([Problem("jvm_flags", list(self.jvm_flags), rule, fix)])

    @model_validator(mode="after")
    def _session_bounds_in_order(self) -> ZookeeperSettings:
        """ZooKeeper's one rule on session bounds: "minSessionTimeout must not be larger than
        maxSessionTimeout" (QuorumPeerConfig), after unset ones took their defaults."""
        low, high = self.session_timeout_bounds_ms
        if low <= high:
            return self
        if self.min_session_timeout_ms is None:
            problem = Problem(
                "max_session_timeout_ms",
                high,
                f"ZooKeeper needs it at least min_session_timeout_ms, which is unset and so "
                f"2 x tick_time_ms = {low}",
                {"max_session_timeout_ms": low},
                f"lower tick_time_ms to {max(high // 2, 10)}",
            )
        else:
            derived = (
                f" ({high})"
                if self.max_session_timeout_ms is not None
                else (f", which is unset and so 20 x tick_time_ms = {high}")
            )
            problem = Problem(
                "min_session_timeout_ms",
                low,
                f"ZooKeeper needs it at most max_session_timeout_ms{derived}",
                {"max_session_timeout_ms": low},
                f"lower min_session_timeout_ms to {high} or less",
            )
        raise _refuse_all([problem])

    @property
    def warnings(self) -> list[str]:
        """Settings ZooKeeper runs with but that risk sessions or joins."""
        tick = self.tick_time_ms
        low, high = self.session_timeout_bounds_ms
        found = []
        if low < 2 * tick:
            found.append(
                f"zookeeper.min_session_timeout_ms {low} is under 2 x zookeeper.tick_time_ms "
                f"({2 * tick}): ZooKeeper expires sessions in whole ticks, so a session this short "
                f"can expire between two client pings; fix: set zookeeper.min_session_timeout_ms: "
                f"{2 * tick} or remove it"
            )
        if high < self.sync_limit * tick:
            found.append(
                f"zookeeper.max_session_timeout_ms {high} is under zookeeper.sync_limit x "
                f"zookeeper.tick_time_ms ({self.sync_limit} x {tick} = {self.sync_limit * tick}): "
                f"followers wait that long before leaving a hung leader, so no client session "
                f"survives that failover; fix: set zookeeper.max_session_timeout_ms: "
                f"{self.sync_limit * tick} or lower zookeeper.sync_limit"
            )
        if self.init_limit < self.sync_limit:
            found.append(
                f"zookeeper.init_limit {self.init_limit} is under zookeeper.sync_limit "
                f"{self.sync_limit}: a joiner's first sync (a whole snapshot) gets less time than "
                f"a routine one and may never finish; fix: set zookeeper.init_limit: "
                f"{self.sync_limit}"
            )
        memory = machine_memory_bytes()
        size = heap_bytes(self.heap) or 0
        if size > memory:
            found.append(
                f"zookeeper.heap {self.heap} is more than this machine's memory "
                f"({_size(memory)}): once the heap grows past it the kernel's OOM killer stops "
                f"the member; fix: set zookeeper.heap to at most {_size(memory // 2)}"
            )
        return found


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
            raise _refuse(
                "local.subnet must be three octets inside 127.0.0.0/8 such as 127.0.1",
                "127.0.1",
                "leave it out and `up` picks a free one",
            )
        return value

    def address(self, ordinal: int) -> str:
        return f"{self.subnet}.{ordinal + 1}"


def _dns_label_like(value: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:MAX_NAME].strip("-")
    return label or "cluster"


class ClusterSpec(_Strict):
    """A cluster as the user wants it."""

    name: str
    store: Store = Store.ETCD
    version: str
    members: Annotated[int, Strict(), _Within(1, MAX_MEMBERS)] = 3
    etcd: EtcdSettings = EtcdSettings()
    zookeeper: ZookeeperSettings = ZookeeperSettings()
    local: LocalSettings = LocalSettings()
    data_dir: Path | None = Field(
        default=None,
        description="where member data lives, absolute; default <state-dir>/<name>/members. "
        "A relative path given to `up` is taken from the folder `up` runs in",
    )
    tls: bool = Field(
        default=True,
        description="TLS for clients and between members, with certificates from the "
        "cluster's own CA; false sends everything in plain text",
    )
    auth: bool = Field(
        default=True,
        description="clients authenticate (etcd users, ZooKeeper digest) and the keeper alone "
        "holds the administrator's credentials; false lets any client that connects act",
    )

    @model_validator(mode="before")
    @classmethod
    def _store_default_version(cls, data: object) -> object:
        """Without a version, a cluster runs the pinned release of its own store."""
        if isinstance(data, dict) and "version" not in data:
            return {**data, "version": _pinned(data.get("store"))}
        return data

    @model_validator(mode="before")
    @classmethod
    def _stored_before_security(cls, data: object, info: ValidationInfo) -> object:
        """A spec stored before `tls` and `auth` existed describes a cluster that runs without
        them: it keeps running as it was until a person applies the change."""
        if isinstance(data, dict) and (info.context or {}).get("stored", False):
            return {"tls": False, "auth": False, **data}
        return data

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if len(value) > MAX_NAME or not DNS_LABEL.match(value):
            raise _refuse(
                "name must be a DNS-1123 label of at most 40 characters: lowercase letters, "
                "digits and '-', starting and ending with a letter or digit",
                _dns_label_like(value),
            )
        return value

    @field_validator("version")
    @classmethod
    def _supported_version(cls, value: str, info: ValidationInfo) -> str:
        store = info.data.get("store")
        pinned = _pinned(store)
        if not re.fullmatch(r"\d+\.\d+\.\d+", value):
            raise _refuse(f"version must look like {pinned}", pinned)
        series = ".".join(value.split(".")[:2])
        if store is Store.ETCD and series not in versions.SUPPORTED_ETCD_SERIES:
            raise _refuse(
                f"version {value} of etcd is not supported",
                pinned,
                f"a {', '.join(versions.SUPPORTED_ETCD_SERIES)} release",
            )
        if store is Store.ZOOKEEPER:
            # A spec stored before a release was found to lose data still loads, so that the
            # cluster can be moved off it by a patch upgrade.
            stored = (info.context or {}).get("stored", False)
            try:
                versions.check_zookeeper_version(value, known_data_loss=not stored)
            except versions.UnsupportedZookeeperVersion as error:
                rule = str(error).partition("; fix: ")[0]
                series = ", ".join(versions.SUPPORTED_ZOOKEEPER_SERIES)
                other = f"a {series} release"
                if value in versions.ZOOKEEPER_DATA_LOSS:
                    other = "a release without it (3.9.4 or newer)"
                raise _refuse(rule, pinned, other) from None
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """A relative path is resolved once, against the folder of the command that accepts
        the spec (`base_dir` in the validation context); a stored spec is always absolute,
        so the keeper's working directory never changes what it names."""
        if value is None:
            return None
        value = value.expanduser()
        if value.is_absolute():
            return Path(os.path.normpath(value))
        base = (info.context or {}).get("base_dir")
        if base is None:
            raise _refuse(
                "a stored spec names data_dir as an absolute path (`up` resolves a relative one "
                "against the folder it runs in)",
                os.path.abspath(value),
            )
        return Path(os.path.abspath(Path(base) / value))

    @property
    def even_count_warning(self) -> str | None:
        if self.members % 2:
            return None
        return (
            f"{self.members} members tolerate no more failures than {self.members - 1}: "
            f"an odd count is the better choice"
        )

    @property
    def warnings(self) -> list[str]:
        """Risks of settings the store accepts, each with its fix; `up` prints them."""
        settings = self.etcd if self.store is Store.ETCD else self.zookeeper
        found = [self.even_count_warning] if self.even_count_warning else []
        return [*found, *self.security_warnings, *settings.warnings]

    @property
    def security_warnings(self) -> list[str]:
        """What an opt-out of TLS or authentication leaves open, each with its fix."""
        found = []
        if not self.tls:
            found.append(
                "tls: false: clients and members talk in plain text that anyone on the network "
                "can read and alter; fix: tls: true"
            )
        if not self.auth:
            found.append(
                "auth: false: any client that can connect may read, write and delete every key; "
                "fix: auth: true"
            )
        return found


def _pinned(store: object) -> str:
    zookeeper = store in (Store.ZOOKEEPER, Store.ZOOKEEPER.value)
    return versions.ZOOKEEPER_VERSION if zookeeper else versions.ETCD_VERSION


def _field_info(location: Sequence[str | int]) -> FieldInfo | None:
    """The spec field at `location` (dotted through the nested settings models), or None when
    there is none."""
    model: type[BaseModel] = ClusterSpec
    info = None
    for part in location:
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            model = type(default)
    return info


def _field_default(location: Sequence[str | int]) -> object:
    """The default of the field at `location`, or REMOVE when it has none (or is unknown):
    a required field left out takes what the spec derives for it (`version`: the store's
    pinned release)."""
    info = _field_info(location)
    if info is None or info.is_required():
        return REMOVE
    default = info.get_default(call_default_factory=True)
    if isinstance(default, BaseModel | Path):
        return REMOVE
    return default.value if isinstance(default, StrEnum) else default


def _closest_field(location: Sequence[str | int]) -> str | None:
    """The dotted spec field that the unknown field at `location` most looks like a
    misspelling of (`zookeeper.tick_time` -> `zookeeper.tick_time_ms`), or None."""
    *parents, unknown = location
    model: type[BaseModel] = ClusterSpec
    if parents:
        info = _field_info(parents)
        default = info.get_default(call_default_factory=True) if info is not None else None
        if not isinstance(default, BaseModel):
            return None
        model = type(default)
    close = difflib.get_close_matches(str(unknown), list(model.model_fields), n=1, cutoff=0.75)
    return ".".join([*map(str, parents), close[0]]) if close else None


def _closest_choice(location: Sequence[str | int], value: object, default: str) -> str:
    """Of the choices of the enum field at `location`, the one `value` most looks like a
    misspelling of; `default` when none is close."""
    info = _field_info(location)
    choices = info.annotation if info is not None else None
    if not (isinstance(choices, type) and issubclass(choices, StrEnum)):
        return default
    close = difflib.get_close_matches(str(value), [m.value for m in choices], n=1)
    return close[0] if close else default


def _whole(value: object) -> int | None:
    if isinstance(value, str) and _is_whole(value.strip()):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


_RULES: dict[str, Callable[[ErrorDetails], str]] = {
    "extra_forbidden": lambda _: "not a field of the spec",
    "int_type": lambda _: (
        "a whole number, unquoted (true/false and quoted or decimal numbers "
        "are refused, not converted)"
    ),
    "tuple_type": lambda _: "a list: [a, b] or one '- item' per line",
    "list_type": lambda _: "a list: [a, b] or one '- item' per line",
    "model_type": lambda _: "a mapping of settings: one 'key: value' per line",
    "dict_type": lambda _: "a mapping: one 'key: value' per line",
    "literal_error": lambda error: f"must be one of {error.get('ctx', {}).get('expected')}",
    "enum": lambda error: f"must be one of {error.get('ctx', {}).get('expected')}",
    "missing": lambda _: "required",
}


def problems_of(error: ErrorDetails) -> list[Problem]:
    """The problems of one pydantic error of a spec model, fields dotted from the validated
    model (the custom resources add their own prefix with `Problem.under`)."""
    location = error["loc"]
    name = ".".join(str(part) for part in location) or "spec"
    context = error.get("ctx") or {}
    kind = error["type"]
    if kind == "spec_rules":
        return [problem.under(name) for problem in context["problems"]]
    if kind == "spec_rule":
        return [
            Problem(
                name,
                error["input"],
                context["rule"],
                {name: context["fix"]},
                context["alternative"],
            )
        ]
    described = _RULES.get(kind)
    rule = described(error) if described else error["msg"]
    if kind == "extra_forbidden":
        meant = _closest_field(location)
        if meant is not None:  # a misspelt field: its value under the field it most looks like
            return [Problem(name, error["input"], rule, {name: REMOVE, meant: error["input"]})]
        fix: object = REMOVE
    elif kind == "missing" and location == ("name",):
        fix = "my-cluster"
    else:
        whole = _whole(error["input"]) if kind == "int_type" else None
        fix = whole if whole is not None else _field_default(location)
        if kind in ("tuple_type", "list_type") and isinstance(error["input"], str):
            fix = [error["input"]]  # one item given where a list goes
        if isinstance(fix, str) and kind == "enum":  # a misspelt choice: its closest one
            fix = _closest_choice(location, error["input"], fix)
    value = None if kind == "missing" else error["input"]
    return [Problem(name, value, rule, {name: fix})]


def apply_fix(data: Mapping[str, Any], fix: Mapping[str, object]) -> dict[str, Any]:
    """A copy of `data` with each dotted field of `fix` set (or removed, for REMOVE)."""
    fixed: dict[str, Any] = _copy(data)
    for dotted, value in fix.items():
        *parents, last = dotted.split(".")
        target = fixed
        for part in parents:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        if value is REMOVE:
            target.pop(last, None)
        else:
            target[last] = value
    return fixed


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def parse_spec(data: object, *, base_dir: Path | None = None, stored: bool = False) -> ClusterSpec:
    """Validate raw data into a spec; relative paths resolve against `base_dir` (the folder a
    user's command runs in), and without it they are refused. A `stored` spec (accepted
    before) may name a release refused since for data loss, so that it can be upgraded off it.

    Raises SpecError naming every problem, including those that only show once the first ones
    are fixed, so that its merged `fix` makes the spec valid.
    """
    context = {"base_dir": base_dir, "stored": stored}
    if not isinstance(data, Mapping):
        raise SpecError(
            [
                Problem(
                    "spec",
                    data,
                    "a spec is a mapping of fields",
                    {},
                    "write fields such as members: 3",
                )
            ]
        )
    problems: list[Problem] = []
    current: dict[str, Any] = _copy(data)
    for _ in range(4):  # a fix can only reveal a cross-field rule, which the next round fixes
        try:
            spec = ClusterSpec.model_validate(current, context=context)
        except ValidationError as error:
            found = [p for e in error.errors() for p in problems_of(e)]
            problems.extend(found)
            current = apply_fix(current, SpecError(found).fix)
            continue
        if problems:
            raise SpecError(problems)
        return spec
    raise SpecError(problems)


def dump_spec(spec: ClusterSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
