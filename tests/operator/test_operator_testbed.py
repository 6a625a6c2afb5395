"""The operator end to end on the real-node test bed: `kubectl scale` of an EtcdCluster and a
ZookeeperCluster while a writer runs, the store's membership equal to the pods after every step,
no existing pod restarted, and no acknowledged write lost.

How the operator and this process reach the test bed: `tests/operator/harness.py`.
"""

from __future__ import annotations

import functools
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumkeeper.runtimes.kubernetes.resources import API_VERSION, Kind
from testbed.cluster import Cluster
from testbed.kube import Kube, Obj, ns_path
from tests.acceptance.harness import Writer
from tests.operator.harness import (
    ClusterUnderTest,
    OperatorProcess,
    api_getaddrinfo,
    create_namespace,
    install_crds,
)
from tests.operator.harness import create_cluster as _create
from tests.operator.harness import exists as _exists
from tests.polling import wait_until

pytestmark = [pytest.mark.operator, pytest.mark.testbed]

STEP_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def crds_installed(testbed_cluster: Cluster) -> None:
    install_crds(testbed_cluster)


@pytest.fixture
def bed_namespace(
    kube: Kube, crds_installed: None, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace on the test bed, deleted afterwards."""
    name = f"op-{request.node.name[5:30].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    create_namespace(kube, name)
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def api_resolver(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake resolver for this process only: `<pod>.<service>.<ns>.svc.cluster.local` is the
    pod's IP as the API server reports it (the test process is outside the cluster's DNS)."""
    monkeypatch.setattr(socket, "getaddrinfo", api_getaddrinfo(kube))


@pytest.fixture
def operator(
    testbed_cluster: Cluster, bed_namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    running = OperatorProcess(testbed_cluster, bed_namespace, tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        print(f"operator log ({running.log}):\n{running.tail(40)}")


def _identity(pods: dict[str, Obj]) -> dict[str, tuple[str, int]]:
    """Each pod's UID and its containers' restart count."""
    return {
        name: (
            pod["metadata"]["uid"],
            sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or []),
        )
        for name, pod in pods.items()
    }


def _scale_up_and_down(
    target: ClusterUnderTest,
    operator: OperatorProcess,
    start: int,
    peak: int,
    *,
    kill_midway: bool = False,
) -> None:
    """`start` -> `peak` -> `start` by `kubectl scale`, checked after each step. With
    `kill_midway`, the operator is SIGKILLed as soon as the store's membership first changes in
    each direction, and started again."""
    timings: dict[str, float] = {}
    began = time.monotonic()
    try:
        pods = wait_until(lambda: target.settled(start), STEP_TIMEOUT, f"{start} members")
    except AssertionError:
        raise AssertionError(f"not settled at {start}; operator log:\n{operator.tail()}") from None
    timings[f"apply -> {start} settled"] = time.monotonic() - began
    before = _identity(pods)
    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        for members in (peak, start):
            began = time.monotonic()
            target.scale(members)
            if kill_midway:
                wait_until(
                    functools.partial(target.membership_differs, set(pods)),
                    STEP_TIMEOUT,
                    "the first membership change",
                )
                operator.stop(signal.SIGKILL)
                print(f"operator killed after membership changed from {sorted(pods)}")
                operator.start()
            try:
                pods = wait_until(
                    functools.partial(target.settled, members), STEP_TIMEOUT, f"{members} members"
                )
            except AssertionError:
                raise AssertionError(
                    f"not settled at {members}; operator log:\n{operator.tail()}"
                ) from None
            timings[f"scale -> {members} settled"] = time.monotonic() - began
            now = _identity(pods)
            kept = {name: now.get(name) for name in before}
            assert kept == before, f"existing pods restarted or replaced: {before} -> {kept}"
    writer.assert_nothing_lost()
    assert "pass failed" not in operator.log.read_text(), operator.tail()
    events = target.kube.get(
        ns_path(target.namespace, "events"), fieldSelector=f"involvedObject.name={target.name}"
    )["items"]
    reasons = {event["reason"] for event in events}
    assert {"AddLearner", "Promote", "RemoveMember"} <= reasons, reasons
    print(
        f"{target.kind.value} {start} -> {peak} -> {start}: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + f"; {len(writer.acknowledged)} writes acknowledged, {writer.failed} failed, "
        f"longest gap {writer.longest_gap:.2f}s"
    )


def _deleted_with_its_volumes(target: ClusterUnderTest, operator: OperatorProcess) -> None:
    """Deleting the resource goes through the operator's finalizer, which applies
    `pvcRetention.whenDeleted: Delete`: the resource and every member PVC are gone."""
    target.kube.delete(ns_path(target.namespace, target.kind.plural, target.name, API_VERSION))

    def gone() -> bool:
        claims = target.kube.get(
            ns_path(target.namespace, "persistentvolumeclaims"),
            labelSelector=f"app.kubernetes.io/instance={target.name}",
        )["items"]
        path = ns_path(target.namespace, target.kind.plural, target.name, API_VERSION)
        return not claims and not _exists(target.kube, path)

    try:
        wait_until(gone, 120, f"{target.name} and its PVCs deleted")
    except AssertionError:
        raise AssertionError(f"not deleted; operator log:\n{operator.tail()}") from None


def test_etcd_scales_3_5_3_with_kubectl_scale(
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    target = _create(kube, testbed_cluster, Kind.ETCD, bed_namespace, 3)
    _scale_up_and_down(target, operator, 3, 5)
    _deleted_with_its_volumes(target, operator)


def test_zookeeper_scales_2_3_2_with_kubectl_scale(
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    target = _create(kube, testbed_cluster, Kind.ZOOKEEPER, bed_namespace, 2)
    _scale_up_and_down(target, operator, 2, 3)
    _deleted_with_its_volumes(target, operator)


@pytest.mark.parametrize(("kind", "start", "peak"), [(Kind.ETCD, 3, 5), (Kind.ZOOKEEPER, 2, 3)])
def test_the_operator_killed_in_the_middle_of_scaling_resumes(
    kind: Kind,
    start: int,
    peak: int,
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    target = _create(kube, testbed_cluster, kind, bed_namespace, start)
    _scale_up_and_down(target, operator, start, peak, kill_midway=True)


@pytest.mark.parametrize("kind", [Kind.ETCD, Kind.ZOOKEEPER])
def test_a_member_whose_pod_and_pvc_are_deleted_rejoins_under_a_new_identity(
    kind: Kind,
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    target = _create(kube, testbed_cluster, kind, bed_namespace, 3)
    pods = wait_until(lambda: target.settled(3), STEP_TIMEOUT, "3 members")
    before = _identity(pods)
    store = target.client()
    try:
        old_ids = {target.placement.locate(m.address): m.id for m in store.members()}
    finally:
        store.close()
    victim = target.placement.endpoint(1)
    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        began = time.monotonic()
        kube.delete(ns_path(bed_namespace, "persistentvolumeclaims", f"data-{victim.name}"))
        kube.delete(ns_path(bed_namespace, "pods", victim.name))

        def rejoined() -> dict[str, Obj] | None:
            settled = target.settled(3)
            if settled is None or settled[victim.name]["metadata"]["uid"] == before[victim.name][0]:
                return None
            return settled

        try:
            pods = wait_until(rejoined, STEP_TIMEOUT, f"{victim.name} replaced")
        except AssertionError:
            raise AssertionError(f"not replaced; operator log:\n{operator.tail()}") from None
        took = time.monotonic() - began
    writer.assert_nothing_lost()
    store = target.client()
    try:
        new_ids = {target.placement.locate(m.address): m.id for m in store.members()}
    finally:
        store.close()
    assert new_ids[victim] != old_ids[victim], "the wiped member kept its old identity"
    others = {name: ident for name, ident in _identity(pods).items() if name != victim.name}
    assert others == {name: i for name, i in before.items() if name != victim.name}
    print(
        f"{victim.name} replaced under a new identity in {took:.1f}s; "
        f"{len(writer.acknowledged)} writes acknowledged, {writer.failed} failed, "
        f"longest gap {writer.longest_gap:.2f}s"
    )
