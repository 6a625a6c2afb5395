"""Pure parts of the kubelet stand-in: $(VAR) expansion, downward API, images, probe counting."""

from __future__ import annotations

import pytest

from testbed import images
from testbed.runtime import Probe
from testbed.volumes import expand, field_ref

pytestmark = pytest.mark.testbed

POD = {
    "metadata": {"name": "zk-0", "namespace": "ns", "uid": "u-1", "labels": {"app": "zk"}},
    "spec": {"nodeName": "node-2", "serviceAccountName": "default"},
}


def test_expand_replaces_known_names_and_keeps_escapes_and_unknown_references() -> None:
    env = {"ID": "3", "HOST": "zk-0"}
    assert expand("--id=$(ID) $(HOST).zk $(NOPE) $$(ID)", env) == "--id=3 zk-0.zk $(NOPE) $(ID)"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "zk-0"),
        ("metadata.namespace", "ns"),
        ("metadata.labels['app']", "zk"),
        ("metadata.labels", 'app="zk"'),
        ("spec.nodeName", "node-2"),
        ("status.podIP", "10.244.2.2"),
        ("status.hostIP", "127.0.200.12"),
    ],
)
def test_field_ref_answers_like_the_downward_api(path: str, value: str) -> None:
    assert field_ref(POD, path, "10.244.2.2", "127.0.200.12") == value


def test_field_ref_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unsupported fieldRef"):
        field_ref(POD, "spec.nothing", "", "")


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("docker.io/library/zookeeper:3.9", "zookeeper"),
        ("quay.io/coreos/etcd:v3.7.3", "quay.io/coreos/etcd"),
        ("registry:5000/etcd@sha256:abc", "registry:5000/etcd"),
    ],
)
def test_image_repository_strips_registry_defaults_tags_and_digests(
    image: str, repository: str
) -> None:
    assert images.repository(image) == repository


def test_images_match_by_last_path_component_and_unknown_images_fail() -> None:
    assert images.lookup("quay.io/coreos/etcd:v3.7.3") is images.IMAGES["etcd"]
    with pytest.raises(images.ImageError, match=r"testbed/images\.py"):
        images.lookup("example.com/unknown:1")


def test_zookeeper_needs_a_classpath(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(images.ZOOKEEPER_CLASSPATH_ENV, raising=False)
    with pytest.raises(images.ImageError, match=images.ZOOKEEPER_CLASSPATH_ENV):
        images.lookup("zookeeper:3.9").executables()
    monkeypatch.setenv(images.ZOOKEEPER_CLASSPATH_ENV, "/opt/zk/lib/*")
    server = images.lookup("zookeeper:3.9").executables()["zookeeper-server"]
    assert server[-3:] == [
        "-cp",
        "/opt/zk/lib/*",
        "org.apache.zookeeper.server.quorum.QuorumPeerMain",
    ]


def test_probe_decides_only_at_its_thresholds() -> None:
    probe = Probe({"successThreshold": 2, "failureThreshold": 3})
    assert [probe.record(ok) for ok in (True, True, False, False, True, False, False, False)] == [
        None,
        True,
        None,
        None,
        None,
        None,
        None,
        False,
    ]


def test_probe_waits_for_initial_delay_then_runs_every_period() -> None:
    probe = Probe({"initialDelaySeconds": 5, "periodSeconds": 2})
    assert [probe.due(100.0, t) for t in (104.0, 105.0, 106.0, 107.0)] == [
        False,
        True,
        False,
        True,
    ]
