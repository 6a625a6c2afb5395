"""The CRD schema generator and the pure parts of rendering: what the API server would refuse
to take (a `$ref`, a default, a null branch) never reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from quorumkeeper.runtimes.kubernetes.crd import crd, structural
from quorumkeeper.runtimes.kubernetes.objects import Membership, max_unavailable, placement
from quorumkeeper.runtimes.kubernetes.render import (
    CONFIG_ANNOTATION,
    cluster_objects,
    fingerprint,
    merge,
    statefulset,
)
from quorumkeeper.runtimes.kubernetes.resources import (
    Kind,
    ResourceError,
    ResourceStatus,
    parse_resource,
)
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.status import StepStatus

Schema = dict[str, Any]


def nodes(schema: Any, where: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its path."""
    if not isinstance(schema, dict):
        return
    yield where, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from nodes(child, f"{where}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from nodes(schema[key], f"{where}{'[]' if key == 'items' else '.*'}")


def openapi(kind: Kind) -> Schema:
    schema: Schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("kind", list(Kind))
def test_the_schema_is_structural(kind: Kind) -> None:
    for where, node in nodes(openapi(kind)):
        assert "$ref" not in node and "$defs" not in node, where
        assert "default" not in node, where
        assert node.get("additionalProperties") is not False, where
        free = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert "type" in node or free, f"{where} has no type"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{where}: a union"


@pytest.mark.parametrize("kind", list(Kind))
def test_optional_fields_are_nullable_and_required_ones_are_not(kind: Kind) -> None:
    spec = openapi(kind)["properties"]["spec"]
    assert set(spec["required"]) == {"members", "version", "storage"}
    for name in spec["required"]:
        assert "nullable" not in spec["properties"][name], name
    for name in set(spec["properties"]) - set(spec["required"]):
        assert spec["properties"][name]["nullable"] is True, name
    storage = spec["properties"]["storage"]["properties"]
    assert storage["className"]["nullable"] is True
    assert "nullable" not in storage["size"]


def test_quantities_are_int_or_string_with_the_quantity_pattern() -> None:
    spec = openapi(Kind.ETCD)["properties"]["spec"]["properties"]
    size = spec["storage"]["properties"]["size"]
    request = spec["resources"]["properties"]["requests"]["additionalProperties"]
    for quantity in (size, request):
        assert quantity["x-kubernetes-int-or-string"] is True
        assert "type" not in quantity
        assert quantity["pattern"].startswith("^")


def test_store_settings_keep_the_local_spec_names_and_bounds() -> None:
    spec = openapi(Kind.ETCD)["properties"]["spec"]["properties"]
    election = spec["etcd"]["properties"]["election_timeout_ms"]
    assert (election["minimum"], election["maximum"], election["nullable"]) == (50, 50000, True)
    zookeeper = openapi(Kind.ZOOKEEPER)["properties"]["spec"]["properties"]["zookeeper"]
    assert "tick_time_ms" in zookeeper["properties"]


def test_status_is_camel_case_like_the_rest_of_kubernetes() -> None:
    status = openapi(Kind.ZOOKEEPER)["properties"]["status"]["properties"]
    assert {"readyMembers", "desiredMembers", "connectString", "observedGeneration"} <= set(status)
    member = status["members"]["items"]["properties"]
    assert "clientUrl" in member and member["id"]["nullable"] is True
    condition = status["conditions"]["items"]["properties"]
    assert condition["type"]["enum"] == ["Available", "Progressing", "Degraded", "Secured"]


def test_a_union_the_api_server_cannot_take_is_refused_by_name() -> None:
    class Either(BaseModel):
        value: int | str

    with pytest.raises(ValueError, match=r"\.value: a union is not structural"):
        structural(Either.model_json_schema())


def test_scale_and_printer_columns() -> None:
    version = crd(Kind.ETCD)["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.members",
        "statusReplicasPath": ".status.readyMembers",
    }
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["Desired", "Ready", "Leader", "Phase", "Age", "CA-Rotation"]
    assert version["additionalPrinterColumns"][-1]["jsonPath"] == ".status.caRotation"


@pytest.mark.parametrize(
    ("now", "after", "budget"), [(1, 1, 0), (3, 3, 1), (3, 2, 0), (2, 3, 0), (5, 4, 1), (5, 5, 2)]
)
def test_the_disruption_budget_keeps_a_quorum_of_the_smaller_membership(
    now: int, after: int, budget: int
) -> None:
    assert max_unavailable(now, after) == budget


def test_pod_template_overrides_merge_named_items_by_name() -> None:
    base = {"containers": [{"name": "etcd", "image": "a", "env": [{"name": "A", "value": "1"}]}]}
    override = {"containers": [{"name": "etcd", "env": [{"name": "B", "value": "2"}]}]}
    assert merge(base, override) == {
        "containers": [
            {
                "name": "etcd",
                "image": "a",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            }
        ]
    }
    assert merge({"tolerations": [1]}, {"tolerations": [2]}) == {"tolerations": [2]}


def resource(kind: Kind, **spec: Any) -> dict[str, Any]:
    version = "3.7.3" if kind is Kind.ETCD else "3.9.5"
    return {
        "apiVersion": "quorumkeeper.io/v1alpha1",
        "kind": kind.value,
        "metadata": {"name": "c", "namespace": "apps"},
        "spec": {"members": 3, "version": version, "storage": {"size": "1Gi"}, **spec},
    }


def test_etcd_flags_are_args_with_per_pod_and_per_change_values_expanded_by_the_kubelet() -> None:
    parsed = parse_resource(resource(Kind.ETCD))
    objects = cluster_objects(parsed, Membership.steady(placement(parsed), 3))
    statefulset = objects[-1]
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert "--name=$(POD_NAME)" in container["args"]
    assert "--initial-cluster=$(QK_INITIAL_CLUSTER)" in container["args"]
    assert all(arg.startswith("--") for arg in container["args"])
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert config["initial-cluster"].count("=https://c-") == 3
    assert config["initial-cluster-state"] == "existing"


def test_a_secure_etcd_pod_serves_tls_from_its_own_files_in_the_mounted_secret() -> None:
    parsed = parse_resource(resource(Kind.ETCD))
    template = statefulset(parsed, 3, "generation-1")["spec"]["template"]
    container = template["spec"]["containers"][0]
    args = container["args"]
    for expected in (
        "--listen-client-urls=https://$(POD_IP):2379,https://127.0.0.1:2379",
        "--listen-peer-urls=https://$(POD_IP):2380",
        "--advertise-client-urls=https://$(POD_NAME).c-peers.apps.svc.cluster.local:2379",
        "--cert-file=/etc/quorumkeeper-tls/$(POD_NAME).crt",
        "--key-file=/etc/quorumkeeper-tls/$(POD_NAME).key",
        "--trusted-ca-file=/etc/quorumkeeper-tls/ca.crt",
        "--peer-trusted-ca-file=/etc/quorumkeeper-tls/ca.crt",
        "--client-cert-auth",
        "--peer-client-cert-auth",
        "--listen-metrics-urls=http://$(POD_IP):2381",  # the kubelet's probes, plain
    ):
        assert expected in args, expected
    assert {"name": "tls", "secret": {"secretName": "c-tls", "defaultMode": 0o440}} in template[
        "spec"
    ]["volumes"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert mount["readOnly"] is True
    # The authority's generation makes members stale; nothing else about it does.
    assert fingerprint(parsed, "generation-1") != fingerprint(parsed, "generation-2")
    assert template["metadata"]["annotations"][CONFIG_ANNOTATION] == fingerprint(
        parsed, "generation-1"
    )


def test_a_plain_text_etcd_pod_has_no_tls_and_its_spec_says_so() -> None:
    parsed = parse_resource(resource(Kind.ETCD, tls=False, auth=False))
    assert not parsed.spec.cluster_spec("c").tls
    assert parse_resource(resource(Kind.ETCD)).spec.cluster_spec("c").auth
    objects = cluster_objects(parsed, Membership.steady(placement(parsed), 3))
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert config["initial-cluster"].count("=http://c-") == 3
    pod = objects[-1]["spec"]["template"]["spec"]
    assert not any(arg.startswith("--cert-file") for arg in pod["containers"][0]["args"])
    assert "volumes" not in pod


def test_a_zookeeper_cluster_needs_its_superuser_password() -> None:
    parsed = parse_resource(resource(Kind.ZOOKEEPER))
    with pytest.raises(ValueError, match="superuser"):
        cluster_objects(parsed, Membership.steady(placement(parsed), 3))


def test_null_means_unset_and_takes_the_default() -> None:
    parsed = parse_resource(resource(Kind.ETCD, tolerations=None, etcd={"snapshot_count": None}))
    assert parsed.spec.tolerations == []
    assert parsed.spec.settings == EtcdSettings()


def test_the_local_spec_rules_apply_with_their_fix() -> None:
    with pytest.raises(ResourceError) as caught:
        parse_resource(resource(Kind.ETCD, etcd={"heartbeat_interval_ms": 500}))
    assert "spec.etcd.election_timeout_ms: 1000" in str(caught.value)
    assert "fix: set spec.etcd.election_timeout_ms: 2500" in str(caught.value)
    fixed = resource(Kind.ETCD, etcd={"heartbeat_interval_ms": 500, "election_timeout_ms": 2500})
    assert parse_resource(fixed).spec.settings == EtcdSettings(
        heartbeat_interval_ms=500, election_timeout_ms=2500
    )


@pytest.mark.parametrize(
    ("kind", "users", "refusals"),
    [
        (Kind.ETCD, [{"name": "root", "prefix": "app/"}], ["spec.users.0.name: 'root'; rule:"]),
        (Kind.ZOOKEEPER, [{"name": "super", "prefix": "/app"}], ["spec.users.0.name: 'super'"]),
        (Kind.ETCD, [{"name": "App", "prefix": "app/"}], ["fix: e.g. orders-app"]),
        (Kind.ETCD, [{"name": "app", "prefix": ""}], ["spec.users.0.prefix: ''; rule:"]),
        (
            Kind.ZOOKEEPER,
            [{"name": "app", "prefix": "/zookeeper/app"}],
            ["spec.users.0.prefix: '/zookeeper/app'", "fix: a znode such as /app"],
        ),
        (
            Kind.ETCD,
            [{"name": "app", "prefix": "a/"}, {"name": "app", "prefix": "b/"}],
            ["spec.users.1.name: 'app'; rule: names are unique; fix:"],
        ),
    ],
)
def test_users_are_refused_by_the_local_cli_rules_naming_field_value_rule_and_fix(
    kind: Kind, users: list[dict[str, str]], refusals: list[str]
) -> None:
    with pytest.raises(ResourceError) as caught:
        parse_resource(resource(kind, users=users))
    for refusal in refusals:
        assert refusal in str(caught.value)
    assert caught.value.field == "spec.users"


def test_users_need_tls_and_auth_and_are_keyed_by_name() -> None:
    users = [{"name": "app", "prefix": "/app"}]
    with pytest.raises(ResourceError, match=r"spec.users: \['app'\]; rule: users need tls"):
        parse_resource(resource(Kind.ZOOKEEPER, users=users, auth=False))
    assert [u.name for u in parse_resource(resource(Kind.ZOOKEEPER, users=users)).spec.users] == [
        "app"
    ]
    schema = openapi(Kind.ETCD)["properties"]["spec"]["properties"]["users"]
    assert schema["x-kubernetes-list-map-keys"] == ["name"]
    assert set(schema["items"]["required"]) == {"name", "prefix"}


def test_status_json_keeps_its_snake_case_and_both_forms_read_back() -> None:
    status = ResourceStatus(
        name="c",
        store="etcd",
        version="3.7.3",
        members=[],
        desired_members=3,
        phase="Running",
        quorum=True,
        connect_string="c-0:2379",
        step=StepStatus(kind="done", reason="in shape"),
    )
    local = status.model_dump(mode="json")
    resource = status.model_dump(mode="json", by_alias=True)
    assert "desired_members" in local and "desiredMembers" in resource
    assert ResourceStatus.model_validate(local) == ResourceStatus.model_validate(resource) == status
