"""The operator's custom resources, `EtcdCluster` and `ZookeeperCluster` (`quorumkeeper.io/
v1alpha1`), as pydantic models: the CRDs' schemas are generated from them (`crd.py`), and the
operator parses every resource with them before acting on it.

Field names: what Kubernetes owns is camelCase, as its API conventions ask (`members`,
`imagePullSecrets`, `storage.className`, `pvcRetention.whenScaled`, the whole status); the store
settings under `etcd:` and `zookeeper:` are the local spec's own `EtcdSettings` and
`ZookeeperSettings`, reused with their snake_case keys and their validation, so one settings block
means the same in a local spec file and in a custom resource.

Defaults live here, never in the CRD schema (the API server would write them into stored
objects); `null` means unset, as in Kubernetes, and takes the default.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    JsonValue,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from quorumkeeper.errors import Refused
from quorumkeeper.spec import (
    MAX_MEMBERS,
    ClusterSpec,
    EtcdSettings,
    SpecError,
    Store,
    ZookeeperSettings,
    parse_spec,
    problems_of,
)
from quorumkeeper.status import ClusterStatus, Condition, MemberStatus
from quorumkeeper.stores.users import check_grant

GROUP = "quorumkeeper.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""A Kubernetes quantity in its string form: the pattern controller-gen (sigs.k8s.io/
controller-tools) writes into CRDs for `resource.Quantity`, stricter than apimachinery's own
`splitREString` (quantity.go), so every string it matches is one the API server parses."""
_QUANTITY = re.compile(QUANTITY_PATTERN)

SEMVER_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+$"


class _QuantityRule:
    """An int-or-string field holding a Kubernetes quantity (`1Gi`, `500m`, `2`): in the CRD
    schema `x-kubernetes-int-or-string` with the quantity pattern, as Kubernetes' own types
    publish it."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }

    @staticmethod
    def _check(value: int | str) -> int | str:
        if isinstance(value, str) and not _QUANTITY.match(value):
            raise PydanticCustomError(
                "quantity",
                "not a Kubernetes quantity; fix: a whole or decimal number with an optional "
                "suffix, such as 1Gi, 512Mi or 500m",
            )
        return value


Quantity = Annotated[Annotated[int, Strict()] | str, _QuantityRule()]


class _Resource(BaseModel):
    """camelCase on the wire, unknown fields refused, immutable once parsed."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, extra="forbid", frozen=True
    )


class AntiAffinity(StrEnum):
    REQUIRED = "Required"
    """At most one member per node, as in the seed: losing a node costs one member only."""
    PREFERRED = "Preferred"
    """Spread when possible; for test clusters with fewer nodes than members."""


class Image(_Resource):
    """Where the store's image comes from; a private registry mirrors the official image under
    its own repository (as the seed's `172.16.18.100:5000/...`). `repository` defaults to the
    store's official image, `tag` to the spec's version (etcd tags are `v`-prefixed)."""

    repository: str | None = Field(default=None, min_length=1)
    tag: str | None = Field(default=None, min_length=1)
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class LocalObjectReference(_Resource):
    name: str = Field(min_length=1)


class Resources(_Resource):
    """The member container's compute resources, Kubernetes' `ResourceRequirements` shape."""

    requests: dict[str, Quantity] = {}
    limits: dict[str, Quantity] = {}


class Storage(_Resource):
    """Each member's volume. Both fields are immutable: a StatefulSet can't change its volume
    claim templates, and a member's data must never move to a new volume behind its back."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.size == oldSelf.size",
                    "message": "storage.size is immutable: a StatefulSet can't resize its "
                    "volume claim templates; set it back to the size the cluster was created with",
                    "fieldPath": ".size",
                    "reason": "FieldValueForbidden",
                },
                {
                    "rule": "has(self.className) == has(oldSelf.className) && "
                    "(!has(self.className) || self.className == oldSelf.className)",
                    "message": "storage.className is immutable: members keep the volumes they "
                    "were created on; set it back to the class the cluster was created with",
                    "fieldPath": ".className",
                    "reason": "FieldValueForbidden",
                },
            ]
        }
    )

    size: Quantity
    class_name: str | None = Field(default=None, min_length=1)


class PvcRetention(_Resource):
    """What happens to a member's PVC when the member is removed by a scale-down, and when the
    cluster resource is deleted: the StatefulSet's `persistentVolumeClaimRetentionPolicy`.
    Retain by default: data is never destroyed unless asked for."""

    when_scaled: Literal["Retain", "Delete"] = "Retain"
    when_deleted: Literal["Retain", "Delete"] = "Retain"


class Toleration(_Resource):
    """Kubernetes' `Toleration`."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


_RUNS = (
    "(has(oldSelf.status) && has(oldSelf.status.version) && isSemver(oldSelf.status.version) "
    "? oldSelf.status.version : oldSelf.spec.version)"
)
"""CEL for the version the cluster runs: the one the operator last accepted (`status.version`),
else the spec's before this change. A version the operator refused (`UpgradeRefused`) is in the
old spec but never ran, so the rules below let the user move from it back to the stop-over the
refusal names."""
_UNCHANGED = "self.spec.version == oldSelf.spec.version"
VERSION_RULES: list[dict[str, str]] = [
    {
        "rule": f"{_UNCHANGED} || semver(self.spec.version).compareTo(semver({_RUNS})) >= 0",
        "message": "version may not go back: a store's data format only moves forward; set "
        "the version the cluster runs now (status.version) or a later one",
        "fieldPath": ".spec.version",
        "reason": "FieldValueForbidden",
    },
    {
        "rule": f"{_UNCHANGED} || (semver(self.spec.version).major() == semver({_RUNS}).major() "
        f"&& semver(self.spec.version).minor() <= semver({_RUNS}).minor() + 1)",
        "message": "version may move forward by at most one minor release at a time from the "
        "version the cluster runs (status.version; both stores upgrade only between adjacent "
        "minors); set the next minor first",
        "fieldPath": ".spec.version",
        "reason": "FieldValueForbidden",
    },
]
"""Rules on the whole resource (they compare the spec with the status): the CRD's root."""


def _kept(field: str, why: str) -> dict[str, JsonValue]:
    """A CEL transition rule keeping the boolean `field`, true when unset, as it was created."""
    was, now = (f"(has({side}.{field}) ? {side}.{field} : true)" for side in ("oldSelf", "self"))
    return {
        "rule": f"{now} == {was}",
        "message": f"{field} is immutable: {why}; set it back to the value the cluster was "
        f"created with, or create a new cluster with {field} as wanted",
        "fieldPath": f".{field}",
        "reason": "FieldValueForbidden",
    }


SECURITY_RULES: list[JsonValue] = [
    _kept("tls", "members know each other by https or http peer URLs in the membership"),
    _kept("auth", "the operator turns authentication on when a cluster is created, not later"),
]
"""`tls` and `auth` stay as the cluster was created, as the local `apply` keeps them."""


def _keyed(key: str) -> dict[str, Any]:
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


class User(_Resource):
    """A least-privilege user of the cluster: read and write on one key prefix (etcd) or every
    right on one znode (ZooKeeper), nothing else; its credentials are in Secret
    `<cluster>-user-<name>`."""

    name: str = Field(
        description="the user's name: a lowercase letter, then lowercase letters, digits or "
        "'-'; the common name of its client certificate"
    )
    prefix: str = Field(
        description="etcd: the key prefix (orders/); ZooKeeper: the znode (/orders)"
    )


class ClusterResourceSpec(_Resource):
    """What both custom resources share."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": SECURITY_RULES})

    store: ClassVar[Store]

    members: Annotated[int, Strict(), Field(ge=1, le=MAX_MEMBERS)]
    version: Annotated[
        str,
        Field(
            pattern=SEMVER_PATTERN,
            max_length=32,
            description="the store's release, MAJOR.MINOR.PATCH; required, so an operator "
            "upgrade never upgrades a cluster",
        ),
    ]
    image: Image = Image()
    image_pull_secrets: list[LocalObjectReference] = []
    resources: Resources = Resources()
    storage: Storage
    pvc_retention: PvcRetention = PvcRetention()
    anti_affinity: AntiAffinity = AntiAffinity.REQUIRED
    tolerations: list[Toleration] = []
    node_selector: dict[str, str] = {}
    labels: dict[str, str] = Field(
        default={}, description="extra labels on every object of the cluster and its pods"
    )
    annotations: dict[str, str] = Field(
        default={}, description="extra annotations on every object of the cluster and its pods"
    )
    progress_deadline_seconds: Annotated[
        int,
        Strict(),
        Field(
            ge=1,
            description="seconds one membership step (same kind and member) may stay in "
            "progress before Progressing turns False with reason ProgressDeadlineExceeded, as "
            "a Deployment's; 600 when unset",
        ),
    ] = 600
    tls: Annotated[
        bool,
        Strict(),
        Field(
            description="TLS for clients and between members, with the cluster's own CA "
            "(Secrets <name>-ca and <name>-tls); true when unset; immutable",
        ),
    ] = True
    auth: Annotated[
        bool,
        Strict(),
        Field(
            description="clients authenticate (etcd's root user in Secret <name>-root, "
            "ZooKeeper's digest superuser); true when unset; immutable",
        ),
    ] = True
    users: list[User] = Field(
        default=[],
        description="least-privilege users, each with a Secret <name>-user-<user> holding its "
        "password, prefix, client certificate and the trust bundle; needs tls and auth; a user "
        "removed from the list keeps its rights and Secret",
        json_schema_extra=_keyed("name"),
    )
    pod_template: dict[str, Any] = Field(
        default={},
        description="merged into the rendered pod template (a PodTemplateSpec): mappings "
        "recursively, lists of named items (containers, volumes, env) by name, anything else "
        "replaced",
    )

    @field_validator("users")
    @classmethod
    def _grantable(cls, users: list[User], info: ValidationInfo) -> list[User]:
        """The local `user add`'s rules (`stores.users.check_grant`), unique names, and TLS
        with authentication, without which a user's password and certificate protect
        nothing."""
        problems = []
        if users and not (info.data.get("tls", True) and info.data.get("auth", True)):
            problems.append(
                f"users: {[user.name for user in users]}; rule: users need tls and auth (a "
                "user's password and certificate protect nothing without them); fix: remove "
                "users, or create a cluster with tls and auth on"
            )
        seen: set[str] = set()
        for index, user in enumerate(users):
            try:
                check_grant(cls.store, user.name, user.prefix)
            except ValueError as error:
                message = str(error)  # "user: ..." (the CLI's argument) or "prefix: ..."
                if message.startswith("user: "):
                    message = f"name: {message.removeprefix('user: ')}"
                problems.append(f"users.{index}.{message}")
            if user.name in seen:
                problems.append(
                    f"users.{index}.name: {user.name!r}; rule: names are unique; fix: remove "
                    "this entry or give it another name"
                )
            seen.add(user.name)
        if problems:
            raise PydanticCustomError("users", "{problems}", {"problems": problems})
        return users

    def cluster_spec(self, name: str) -> ClusterSpec:
        """The store-level spec the shared planner and reconciler run on, validated by the same
        rules as a local spec (raises `SpecError` naming the field, rule and fix)."""
        return parse_spec(
            {
                "name": name,
                "store": self.store.value,
                "version": self.version,
                "members": self.members,
                self.store.value: self.settings.model_dump(),
                "tls": self.tls,
                "auth": self.auth,
            }
        )

    @property
    def settings(self) -> EtcdSettings | ZookeeperSettings:
        raise NotImplementedError


def _or_default(model: type[BaseModel], field: str) -> str:
    """CEL for a settings field as the model reads it: its value, or its default when unset
    (an unset field is absent from `self`; null counts as unset)."""
    return f"(has(self.{field}) ? self.{field} : {model.model_fields[field].default})"


_ELECTION = _or_default(EtcdSettings, "election_timeout_ms")
_HEARTBEAT = _or_default(EtcdSettings, "heartbeat_interval_ms")
_ETCD_RULES = [
    {
        # EtcdSettings._election_problem; etcd's own words (embed/config.go).
        "rule": f"{_ELECTION} >= 5 * {_HEARTBEAT}",
        "message": "etcd needs election_timeout_ms at least 5 x heartbeat_interval_ms (unset, "
        f"they are {EtcdSettings().election_timeout_ms} and "
        f"{EtcdSettings().heartbeat_interval_ms}); fix: set election_timeout_ms to 5 x "
        "heartbeat_interval_ms or more",
        "fieldPath": ".election_timeout_ms",
    }
]

_TICK = _or_default(ZookeeperSettings, "tick_time_ms")
_MIN_SESSION = f"(has(self.min_session_timeout_ms) ? self.min_session_timeout_ms : 2 * {_TICK})"
_MAX_SESSION = f"(has(self.max_session_timeout_ms) ? self.max_session_timeout_ms : 20 * {_TICK})"
_ZOOKEEPER_RULES = [
    {
        # ZookeeperSettings._session_bounds_in_order: QuorumPeerConfig's "minSessionTimeout
        # must not be larger than maxSessionTimeout", unset bounds being 2 and 20 ticks.
        "rule": f"{_MIN_SESSION} <= {_MAX_SESSION}",
        "message": "ZooKeeper needs min_session_timeout_ms at most max_session_timeout_ms "
        "(unset, they are 2 and 20 x tick_time_ms); fix: set max_session_timeout_ms to "
        "min_session_timeout_ms or more",
    }
]


class EtcdClusterSpec(ClusterResourceSpec):
    store: ClassVar[Store] = Store.ETCD

    etcd: Annotated[
        EtcdSettings, Field(json_schema_extra={"x-kubernetes-validations": _ETCD_RULES})
    ] = EtcdSettings()

    @property
    def settings(self) -> EtcdSettings:
        return self.etcd


class ZookeeperClusterSpec(ClusterResourceSpec):
    store: ClassVar[Store] = Store.ZOOKEEPER

    zookeeper: Annotated[
        ZookeeperSettings,
        Field(json_schema_extra={"x-kubernetes-validations": _ZOOKEEPER_RULES}),
    ] = ZookeeperSettings()

    @property
    def settings(self) -> ZookeeperSettings:
        return self.zookeeper


class ResourceStatus(ClusterStatus):
    """The custom resource's status: the reconciler's `ClusterStatus` (camelCase on the wire)
    plus what `kubectl` shows and the scale subresource reads. `readyMembers` counts members
    that are healthy voters; `leader` is the leader's pod name."""

    # Lists keyed as Kubernetes keys them, so server-side apply merges entries by key.
    members: list[MemberStatus] = Field(json_schema_extra=_keyed("name"))
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=_keyed("type"))
    ready_members: int = 0
    leader: str | None = None
    observed_generation: int | None = None


class Kind(StrEnum):
    ETCD = "EtcdCluster"
    ZOOKEEPER = "ZookeeperCluster"

    @property
    def spec_model(self) -> type[EtcdClusterSpec] | type[ZookeeperClusterSpec]:
        return EtcdClusterSpec if self is Kind.ETCD else ZookeeperClusterSpec

    @property
    def plural(self) -> str:
        return f"{self.value.lower()}s"

    @property
    def short_name(self) -> str:
        return "etcdc" if self is Kind.ETCD else "zkc"


class ClusterResource(BaseModel):
    """One parsed custom resource: what the renderer and the operator need of it."""

    model_config = ConfigDict(frozen=True)

    kind: Kind
    name: str
    namespace: str
    uid: str | None
    spec: EtcdClusterSpec | ZookeeperClusterSpec


class ResourceError(Refused):
    """A custom resource the operator can't act on: one line per problem, naming the field under
    `spec.` and the rule (and, for the local spec's rules, the fix)."""


def _without_nulls(value: Any) -> Any:
    """`null` means unset (the schema's optional fields are nullable), so defaults apply."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _lines(error: ErrorDetails) -> list[str]:
    """One line per problem: the local spec's own rules with their fix, the rest as pydantic
    words them."""
    if error["type"] in ("spec_rule", "spec_rules"):
        return [str(problem.under("spec")) for problem in problems_of(error)]
    where = ".".join(map(str, ("spec", *error["loc"])))
    if error["type"] == "users":
        return [f"spec.{problem}" for problem in (error.get("ctx") or {})["problems"]]
    if error["type"] == "missing":
        return [f"{where}: required; fix: set {where}"]
    fix = f"; fix: remove {where}" if error["type"] == "extra_forbidden" else ""
    return [f"{where}: {error['input']!r}; rule: {error['msg']}{fix}"]


def parse_resource(obj: dict[str, Any]) -> ClusterResource:
    """Parse a custom resource as the API server stores it (apiVersion, kind, metadata, spec).

    Raises ResourceError: `spec.<field>: <rule>` per problem, with the fix where the local
    spec's rules give one.
    """
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") not in set(Kind):
        raise ResourceError(
            f"apiVersion/kind: {obj.get('apiVersion')}/{obj.get('kind')}; rule: must be "
            f"{API_VERSION} EtcdCluster or ZookeeperCluster"
        )
    kind = Kind(obj["kind"])
    metadata = obj.get("metadata") or {}
    try:
        spec = kind.spec_model.model_validate(_without_nulls(obj.get("spec") or {}))
    except ValidationError as error:
        raise ResourceError(
            "\n".join(line for e in error.errors() for line in _lines(e)),
            field=".".join(map(str, ("spec", *error.errors()[0]["loc"]))),
        ) from None
    resource = ClusterResource(
        kind=kind,
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace") or "default"),
        uid=metadata.get("uid"),
        spec=spec,
    )
    try:  # the local spec's own rules too, such as etcd's election timeout against its heartbeat
        spec.cluster_spec(resource.name)
    except SpecError as error:
        problems = [p.under("metadata" if p.field == "name" else "spec") for p in error.problems]
        raise ResourceError(
            "\n".join(map(str, problems)),
            field=problems[0].field,
            fix={name: value for p in problems for name, value in p.fix.items()},
        ) from None
    return resource
