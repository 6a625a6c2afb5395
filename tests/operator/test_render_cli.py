"""`quorumkeeper render operator` and `render cluster FILE`, run as a user runs them, their output
applied to the real API server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.operator.conftest import ApiServer

pytestmark = pytest.mark.operator


def quorumkeeper(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorumkeeper", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


CLUSTERS = """\
apiVersion: quorumkeeper.io/v1alpha1
kind: EtcdCluster
metadata: {name: orders, namespace: NAMESPACE}
spec: {members: 3, version: 3.7.3, storage: {size: 2Gi, className: ceph-rbd}}
---
apiVersion: quorumkeeper.io/v1alpha1
kind: ZookeeperCluster
metadata: {name: locks, namespace: NAMESPACE}
spec: {members: 5, version: 3.9.5, storage: {size: 1Gi}, zookeeper: {heap: 256M}}
"""


def test_render_operator_then_render_cluster_apply(
    api_server: ApiServer, namespace: str, tmp_path: Path
) -> None:
    operator = quorumkeeper("render", "operator", "--namespace", "qk-cli-test")
    assert operator.returncode == 0, operator.stderr
    installed = api_server.kubectl("apply", "-f", "-", stdin=operator.stdout)
    assert installed.returncode == 0, installed.stderr
    assert "deployment.apps/quorumkeeper-operator created" in installed.stdout

    # Least privilege: what the reconciler needs, and not what it must never do.
    account = "system:serviceaccount:qk-cli-test:quorumkeeper-operator"
    allowed = [
        ("patch", "etcdclusters.quorumkeeper.io/status"),
        ("create", "statefulsets.apps"),
        ("create", "pods/eviction"),
        ("delete", "persistentvolumeclaims"),
        ("create", "secrets"),
    ]
    denied = [
        ("create", "pods/exec"),
        ("update", "secrets"),
        ("create", "pods"),
        ("delete", "etcdclusters.quorumkeeper.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ]
    for verb, resource in [*allowed, *denied]:
        name, _, subresource = resource.partition("/")
        answer = api_server.kubectl(
            "auth",
            "can-i",
            verb,
            name,
            f"--subresource={subresource}",
            "-n",
            namespace,
            "--as",
            account,
        )
        assert answer.stdout.strip() == ("yes" if (verb, resource) in allowed else "no"), (
            verb,
            resource,
            answer.stdout,
            answer.stderr,
        )

    manifest = tmp_path / "clusters.yaml"
    manifest.write_text(CLUSTERS.replace("NAMESPACE", namespace))
    rendered = quorumkeeper("render", "cluster", str(manifest))
    assert rendered.returncode == 0, rendered.stderr
    kinds = [o["kind"] for o in yaml.safe_load_all(rendered.stdout)]
    assert kinds.count("StatefulSet") == 2 and kinds.count("Secret") == 1
    applied = api_server.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered.stdout)
    assert applied.returncode == 0, applied.stderr
    # The cluster resources themselves are accepted by the CRDs `render operator` installed.
    created = api_server.kubectl("apply", "-f", str(manifest))
    assert created.returncode == 0, created.stderr


def test_render_cluster_refuses_a_bad_spec_naming_field_and_fix(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    bad = CLUSTERS.split("---")[0].replace(
        "members: 3", "members: 3, etcd: {heartbeat_interval_ms: 500}"
    )
    manifest.write_text(bad.replace("NAMESPACE", "default"))
    refused = quorumkeeper("render", "cluster", str(manifest))
    assert refused.returncode == 2, refused.stderr
    assert "spec.etcd.election_timeout_ms: 1000" in refused.stderr
    assert "fix: set spec.etcd.election_timeout_ms: 2500" in " ".join(refused.stderr.split())
    assert refused.stdout == ""
    manifest.write_text(
        bad.replace(
            "heartbeat_interval_ms: 500", "heartbeat_interval_ms: 500, election_timeout_ms: 2500"
        ).replace("NAMESPACE", "default")
    )
    assert quorumkeeper("render", "cluster", str(manifest)).returncode == 0  # the fix passes


EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "kubernetes").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_the_examples_are_accepted_and_render_to_valid_objects(
    api_server: ApiServer, namespace: str, example: Path
) -> None:
    installed = api_server.kubectl(
        "apply", "-f", "-", stdin=quorumkeeper("render", "operator").stdout
    )
    assert installed.returncode == 0, installed.stderr
    created = api_server.kubectl("apply", "-n", namespace, "-f", str(example))
    assert created.returncode == 0, created.stderr
    rendered = quorumkeeper("render", "cluster", str(example), "--namespace", namespace)
    assert rendered.returncode == 0, rendered.stderr
    applied = api_server.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered.stdout)
    assert applied.returncode == 0, applied.stderr
