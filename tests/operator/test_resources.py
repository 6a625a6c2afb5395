"""The custom resources and every rendered object on the real API server: CRDs apply, rendered
objects pass server-side dry-run under the restricted Pod Security Standard, valid specs are
accepted as they are, invalid ones are refused naming the field, and `kubectl scale` works."""

from __future__ import annotations

import json
from typing import Any

import pytest

from quorumkeeper.runtimes.kubernetes.install import operator_objects
from quorumkeeper.runtimes.kubernetes.objects import Membership, placement
from quorumkeeper.runtimes.kubernetes.render import cluster_objects
from quorumkeeper.runtimes.kubernetes.resources import (
    Kind,
    ResourceError,
    ResourceStatus,
    parse_resource,
)
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.status import Condition, ConditionType, MemberStatus, StepStatus
from testbed.kube import MERGE_PATCH, ApiError, ns_path
from tests.operator.conftest import ApiServer

pytestmark = pytest.mark.operator

Obj = dict[str, Any]
GROUP = "quorumkeeper.io"
VERSIONS = {Kind.ETCD: "3.7.3", Kind.ZOOKEEPER: "3.9.5"}


@pytest.fixture
def restricted(installed: ApiServer, namespace: str) -> str:
    """`namespace` enforcing (and warning about) the restricted Pod Security Standard, with the
    default ServiceAccount a pod needs (no controller manager creates it here)."""
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}
    installed.kube.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": labels}})
    installed.kube.create(ns_path(namespace, "serviceaccounts"), {"metadata": {"name": "default"}})
    return namespace


def manifest(kind: Kind, name: str, namespace: str, **spec: Any) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": kind.value,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"members": 3, "version": VERSIONS[kind], "storage": {"size": "1Gi"}, **spec},
    }


def test_every_crd_applies_and_is_established(installed: ApiServer) -> None:
    names = installed.kubectl("get", "crd", "-o", "name").stdout.split()
    assert sorted(names) == [
        "customresourcedefinition.apiextensions.k8s.io/etcdclusters.quorumkeeper.io",
        "customresourcedefinition.apiextensions.k8s.io/zookeeperclusters.quorumkeeper.io",
    ]


@pytest.mark.parametrize("members", [3, 5])
@pytest.mark.parametrize("kind", list(Kind))
def test_every_rendered_object_passes_server_side_dry_run(
    installed: ApiServer, restricted: str, kind: Kind, members: int
) -> None:
    spec: Obj = {
        "members": members,
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": 1073741824},
        },
        "imagePullSecrets": [{"name": "mirror"}],
        "image": {"repository": "172.16.18.100:5000/mirror/store"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "stores", "effect": "NoSchedule"}
        ],
        "nodeSelector": {"disk": "ssd"},
        "labels": {"team": "storage"},
        "annotations": {"owner": "storage-team"},
        "podTemplate": {"spec": {"terminationGracePeriodSeconds": 60}},
    }
    resource = parse_resource(manifest(kind, f"c{members}", restricted, **spec))
    objects = cluster_objects(
        resource, Membership.steady(placement(resource), members), "superuser-password"
    )
    result = installed.apply(objects, "--dry-run=server", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert "would violate PodSecurity" not in result.stderr
    accepted = {item["kind"]: item for item in json.loads(result.stdout)["items"]}
    assert set(accepted) == {o["kind"] for o in objects}
    budget = accepted["PodDisruptionBudget"]["spec"]
    assert budget["maxUnavailable"] == (members - 1) // 2
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    sts = accepted["StatefulSet"]["spec"]
    assert (sts["replicas"], sts["podManagementPolicy"], sts["updateStrategy"]["type"]) == (
        members,
        "Parallel",
        "OnDelete",
    )
    assert accepted["Service"]  # the last Service applied, both checked by the dry-run
    # A pod of the template, created for real by admission (dry run): the restricted standard
    # is enforced on pods, not on StatefulSets.
    template = sts["template"]
    claim = {"name": "data", "persistentVolumeClaim": {"claimName": f"data-c{members}-0"}}
    volumes = [*template["spec"].get("volumes", []), claim]
    pod = {
        "metadata": {"name": f"c{members}-0", **template["metadata"]},
        "spec": {**template["spec"], "volumes": volumes},
    }
    created = installed.kube.request(
        "POST", ns_path(restricted, "pods"), pod, params={"dryRun": "All"}
    )
    assert created["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_operator_manifests_apply(installed: ApiServer) -> None:
    """Applied for real (this API server is thrown away): a dry-run can't create the namespace
    the other objects then go into."""
    result = installed.apply(operator_objects())
    assert result.returncode == 0, result.stderr
    for kind in ("namespace", "serviceaccount", "clusterrole", "clusterrolebinding", "deployment"):
        assert f"{kind}" in result.stdout.lower(), result.stdout
    assert "would violate PodSecurity" not in result.stderr


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {
            "storage": {"size": 2147483648, "className": "ceph-rbd"},
            "pvcRetention": {"whenScaled": "Delete"},
        },
        {"antiAffinity": "Preferred", "members": 1},
        {"tolerations": None, "image": {"tag": None}},
    ],
    ids=["minimal", "integer-size-and-retention", "preferred-spread", "nulls-mean-unset"],
)
@pytest.mark.parametrize("kind", list(Kind))
def test_valid_specs_are_stored_as_they_are(
    installed: ApiServer, namespace: str, kind: Kind, spec: Obj
) -> None:
    settings = (
        {"etcd": {"snapshot_count": 5000}} if kind is Kind.ETCD else {"zookeeper": {"heap": "256M"}}
    )
    sent = manifest(kind, "ok", namespace, **settings, **spec)
    stored = installed.kube.create(ns_path(namespace, kind.plural, group=f"{GROUP}/v1alpha1"), sent)
    assert stored["spec"] == sent["spec"]  # nothing pruned, nothing defaulted
    assert parse_resource(stored).spec == parse_resource(sent).spec


INVALID_AT_CREATE = [
    (Kind.ETCD, {"members": 0}, "spec.members", "greater than or equal to 1"),
    (Kind.ZOOKEEPER, {"members": 10}, "spec.members", "less than or equal to 9"),
    (Kind.ETCD, {"replicas": 3}, 'unknown field "spec.replicas"', ""),
    (Kind.ETCD, {"storage": {"size": "1Gx"}}, "spec.storage.size", "should match"),
    (
        Kind.ZOOKEEPER,
        {"resources": {"requests": {"cpu": "lots"}}},
        "spec.resources.requests.cpu",
        "should match",
    ),
    (Kind.ETCD, {"version": "3.7"}, "spec.version", "should match"),
    (Kind.ETCD, {"antiAffinity": "Sometimes"}, "spec.antiAffinity", "Unsupported value"),
    (Kind.ETCD, {"etcd": {"election_timeout_ms": 60000}}, "spec.etcd.election_timeout_ms", "less"),
    (
        Kind.ETCD,
        {"etcd": {"heartbeat_interval_ms": 500}},
        "spec.etcd.election_timeout_ms",
        "at least 5 x heartbeat_interval_ms",
    ),
    (
        Kind.ZOOKEEPER,
        {"zookeeper": {"min_session_timeout_ms": 50000}},
        "spec.zookeeper",
        "at most max_session_timeout_ms",
    ),
]


def test_a_name_that_cannot_name_members_is_refused(installed: ApiServer, namespace: str) -> None:
    for name in ("a" * 41, "orders.eu"):
        sent = manifest(Kind.ETCD, name, namespace)
        result = installed.apply([sent])
        assert result.returncode != 0
        assert "metadata.name must be a DNS-1123 label of at most 40" in result.stderr
        with pytest.raises(ResourceError, match=r"^metadata\.name: .*fix: set metadata\.name"):
            parse_resource(sent)


@pytest.mark.parametrize(
    ("kind", "change", "field", "words"),
    INVALID_AT_CREATE,
    ids=[f"{c[2]}-{i}" for i, c in enumerate(INVALID_AT_CREATE)],
)
def test_invalid_specs_are_refused_naming_the_field(
    installed: ApiServer, namespace: str, kind: Kind, change: Obj, field: str, words: str
) -> None:
    sent = manifest(kind, "bad", namespace, **change)
    result = installed.apply([sent])
    assert result.returncode != 0
    assert field in result.stderr and words in result.stderr, result.stderr
    # The operator's own parse refuses the same spec, naming the same field.
    with pytest.raises(ResourceError, match=field.split('"')[1] if '"' in field else field):
        parse_resource(sent)


INVALID_UPDATES = [
    ({"storage": {"size": "2Gi"}}, "spec.storage.size", "storage.size is immutable"),
    ({"storage": {"size": "1Gi", "className": "other"}}, "spec.storage.className", "immutable"),
    ({"version": "3.9.0"}, "spec.version", "at most one minor release"),
    ({"version": "3.6.9"}, "spec.version", "may not go back"),
    ({"version": "4.0.0"}, "spec.version", "at most one minor release"),
    ({"tls": False}, "spec.tls", "tls is immutable"),
    ({"auth": False}, "spec.auth", "auth is immutable"),
]


@pytest.mark.parametrize(
    ("change", "field", "words"), INVALID_UPDATES, ids=[c[2] + "-" + c[1] for c in INVALID_UPDATES]
)
def test_invalid_changes_are_refused_naming_the_field(
    installed: ApiServer, namespace: str, change: Obj, field: str, words: str
) -> None:
    created = installed.apply([manifest(Kind.ETCD, "x", namespace, version="3.7.3")])
    assert created.returncode == 0, created.stderr
    result = installed.apply([manifest(Kind.ETCD, "x", namespace, **change)])
    assert result.returncode != 0
    assert f"{field}: Forbidden: " in result.stderr and words in result.stderr, result.stderr
    allowed = installed.apply([manifest(Kind.ETCD, "x", namespace, version="3.8.0")])
    assert allowed.returncode == 0, allowed.stderr  # one minor forward is a valid change


def test_a_version_the_operator_refused_can_be_moved_back_to_its_stop_over(
    installed: ApiServer, namespace: str
) -> None:
    """The operator refused 3.5.10 -> 3.6.16 (3.6 needs 3.5.26 first) and its status keeps the
    version the cluster runs: the spec may go back to the stop-over the refusal names, never
    below nor more than a minor past what runs."""
    created = installed.apply([manifest(Kind.ETCD, "x", namespace, version="3.5.10")])
    assert created.returncode == 0, created.stderr
    path = ns_path(namespace, Kind.ETCD.plural, "x", group=f"{GROUP}/v1alpha1")
    status = ResourceStatus(
        name="x",
        store="etcd",
        version="3.5.10",
        members=[],
        desired_members=3,
        phase="Ready",
        quorum=True,
        connect_string="",
        step=StepStatus(kind="Done", reason="in shape"),
    )
    body = {"status": status.model_dump(mode="json", by_alias=True)}
    installed.kube.patch(path + "/status", body, MERGE_PATCH)
    refused_by_the_operator = installed.apply(
        [manifest(Kind.ETCD, "x", namespace, version="3.6.16")]
    )
    assert refused_by_the_operator.returncode == 0, refused_by_the_operator.stderr

    back = installed.apply([manifest(Kind.ETCD, "x", namespace, version="3.5.26")])

    assert back.returncode == 0, back.stderr
    below = installed.apply([manifest(Kind.ETCD, "x", namespace, version="3.5.9")])
    assert below.returncode != 0 and "may not go back" in below.stderr, below.stderr
    skip = installed.apply([manifest(Kind.ETCD, "x", namespace, version="3.7.0")])
    assert skip.returncode != 0 and "at most one minor release" in skip.stderr, skip.stderr
    assert installed.kube.get(path)["spec"]["version"] == "3.5.26"


def test_kubectl_scale_changes_members(installed: ApiServer, namespace: str) -> None:
    created = installed.apply([manifest(Kind.ETCD, "x", namespace)])
    assert created.returncode == 0, created.stderr
    scaled = installed.kubectl("scale", "-n", namespace, "etcdcluster/x", "--replicas=5")
    assert scaled.returncode == 0, scaled.stderr
    path = ns_path(namespace, Kind.ETCD.plural, "x", group=f"{GROUP}/v1alpha1")
    assert installed.kube.get(path)["spec"]["members"] == 5
    refused = installed.kubectl("scale", "-n", namespace, "etcdcluster/x", "--replicas=10")
    assert refused.returncode != 0 and "spec.members" in refused.stderr, refused.stderr
    assert installed.kube.get(path)["spec"]["members"] == 5


def test_the_status_round_trips_and_feeds_the_printer_columns(
    installed: ApiServer, namespace: str
) -> None:
    created = installed.apply([manifest(Kind.ZOOKEEPER, "z", namespace)])
    assert created.returncode == 0, created.stderr
    status = ResourceStatus(
        name="z",
        store="zookeeper",
        version="3.9.5",
        members=[
            MemberStatus(
                name=f"z-{i}",
                id=str(i + 1),
                address=f"z-{i}.z-peers",
                client_url=f"z-{i}.z-peers:2181",
                role="leader" if i == 0 else "follower",
                healthy=True,
            )
            for i in range(3)
        ],
        desired_members=3,
        phase="Running",
        quorum=True,
        connect_string="z-0.z-peers:2181",
        step=StepStatus(kind="done", reason="in shape"),
        conditions=[
            Condition(
                type=ConditionType.AVAILABLE,
                status="True",
                reason="Quorum",
                message="3 of 3 voters answer",
                last_transition_time="2026-12-01T00:00:00Z",
            )
        ],
        ready_members=3,
        leader="z-0",
        observed_generation=1,
    )
    path = ns_path(namespace, Kind.ZOOKEEPER.plural, "z", group=f"{GROUP}/v1alpha1")
    body = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    try:
        installed.kube.patch(f"{path}/status", body, content_type="application/merge-patch+json")
    except ApiError as error:
        pytest.fail(f"status refused: {error}")
    stored = installed.kube.get(path)["status"]
    assert ResourceStatus.model_validate(stored) == status  # nothing pruned
    row = installed.kubectl(
        "get", "-n", namespace, "zookeepercluster/z", "--no-headers"
    ).stdout.split()
    assert row[:5] == ["z", "3", "3", "z-0", "Running"]


def test_null_settings_are_unset_for_the_cel_rules_as_for_the_operator(
    installed: ApiServer, namespace: str
) -> None:
    sent = manifest(Kind.ETCD, "nulls", namespace, etcd={"heartbeat_interval_ms": None})
    result = installed.apply([sent])
    assert result.returncode == 0, result.stderr
    assert parse_resource(sent).spec.settings == EtcdSettings()
