"""The test bed itself: real control plane, real nodes, DNS, volumes, migration, node loss."""

from __future__ import annotations

import functools
import ipaddress
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.cluster import Cluster
from testbed.kube import Kube, Obj, condition_true, ns_path
from testbed.network import POD_CIDR
from testbed.procs import wait_for
from testbed.versions import (
    BUSYBOX_IMAGE,
    ETCD_IMAGES,
    KUBERNETES_VERSION,
    TOOLBOX_IMAGE,
    ZOOKEEPER_IMAGE,
)

pytestmark = pytest.mark.testbed

PORT = 8080
DATA = "/var/lib/testbed-data"


def statefulset(name: str, replicas: int) -> list[dict[str, Any]]:
    """Headless Service plus StatefulSet of toolbox pods with a PVC each, one pod per node."""
    labels = {"app": name}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "clusterIP": "None",
            "selector": labels,
            "ports": [{"name": "http", "port": PORT}],
        },
    }
    container = {
        "name": "toolbox",
        "image": TOOLBOX_IMAGE,
        "args": [str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "startupProbe": {
            "exec": {"command": ["sh", "-c", f"test -d {DATA}"]},
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 2},
        "volumeMounts": [{"name": "data", "mountPath": DATA}],
    }
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "affinity": {
                        "podAntiAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "labelSelector": {"matchLabels": labels},
                                    "topologyKey": "kubernetes.io/hostname",
                                }
                            ]
                        }
                    },
                    "containers": [container],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }
    return [service, sts]


def apply(cluster: Cluster, namespace: str, objects: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(objects))


def ready_pods(kube: Kube, namespace: str, app: str, count: int) -> list[Obj]:
    """Exactly ``count`` Ready pods of ``app`` sorted by name, else an empty list."""
    pods = kube.get(ns_path(namespace, "pods"), labelSelector=f"app={app}")["items"]
    ready = [
        p for p in pods if "deletionTimestamp" not in p["metadata"] and condition_true(p, "Ready")
    ]
    return sorted(ready, key=lambda p: str(p["metadata"]["name"])) if len(ready) == count else []


def toolbox(pod_ip: str, path: str, data: bytes | None = None) -> Any:
    """Ask the toolbox server inside a pod, over the pod network."""
    request = urllib.request.Request(
        f"http://{pod_ip}:{PORT}{path}", data=data, method="PUT" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def in_phase(kube: Kube, path: str, phase: str) -> Obj | None:
    pod = kube.get(path)
    return pod if pod["status"].get("phase") == phase else None


def network_namespace(pid: int) -> str:
    """``net:[<inode>]``: how the kernel names the process's network namespace."""
    return Path(f"/proc/{pid}/ns/net").readlink().name


def namespace_exists(namespace: str) -> bool:
    """Whether any process is in ``namespace`` or any mount (a netns file) holds it."""
    mounts = Path("/proc/self/mountinfo").read_text()
    if f" {namespace} " in mounts:
        return True
    for ns in Path("/proc").glob("[0-9]*/ns/net"):
        try:
            if ns.readlink().name == namespace:
                return True
        except OSError:
            continue  # the process is gone
    return False


def test_kubectl_matches_the_server_minor_release(testbed_cluster: Cluster) -> None:
    versions = json.loads(testbed_cluster.kubectl("version", "-o", "json").stdout)
    assert versions["clientVersion"]["minor"] == versions["serverVersion"]["minor"]
    assert versions["serverVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_nodes_are_registered_with_hostname_labels_and_leases(
    testbed_cluster: Cluster, kube: Kube
) -> None:
    nodes = kube.get("/api/v1/nodes")["items"]
    hostnames = sorted(n["metadata"]["labels"]["kubernetes.io/hostname"] for n in nodes)
    assert hostnames == testbed_cluster.nodes
    assert all(condition_true(n, "Ready") for n in nodes)
    leases = kube.get(ns_path("kube-node-lease", "leases", group="coordination.k8s.io/v1"))
    assert {lease["spec"]["holderIdentity"] for lease in leases["items"]} == set(hostnames)


def test_statefulset_spreads_over_nodes_and_resolves_through_cluster_dns(
    testbed_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    apply(testbed_cluster, namespace, statefulset("web", 3))
    pods = wait_for(lambda: ready_pods(kube, namespace, "web", 3), 120, "3 Ready pods")

    assert len({p["spec"]["nodeName"] for p in pods}) == 3
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
    assert all(ipaddress.ip_address(ip) in POD_CIDR for ip in ips.values())
    pvcs = kube.get(ns_path(namespace, "persistentvolumeclaims"))["items"]
    assert [p["status"]["phase"] for p in pvcs] == ["Bound"] * 3

    first = ips["web-0"]
    assert toolbox(first, "/healthz")["hostname"] == "web-0"
    expected = {f"{pod}.web.{namespace}.svc.cluster.local": [ip] for pod, ip in ips.items()}
    expected.update({f"{pod}.web": [ip] for pod, ip in ips.items()})
    expected["web"] = sorted(ips.values())
    for name, addresses in expected.items():
        # EndpointSlices, and so DNS records, follow pod readiness with a short delay.
        check = functools.partial(resolves_to, first, name, addresses)
        wait_for(check, 30, f"{name} to resolve to {addresses} in web-0")
    assert resolve(first, "nothing-here") == []


def resolve(pod_ip: str, name: str) -> list[str]:
    """Addresses ``name`` resolves to inside the pod, through its resolv.conf and cluster DNS."""
    answer = toolbox(pod_ip, f"/resolve?name={name}")
    return list(answer.get("addresses", []))


def resolves_to(pod_ip: str, name: str, addresses: list[str]) -> bool:
    """False also while the pod's lookup outlasts the toolbox call (a resolver retrying a
    cluster DNS that is not answering yet)."""
    try:
        return resolve(pod_ip, name) == addresses
    except TimeoutError:  # timed out reading the answer
        return False
    except urllib.error.URLError as error:  # timed out before the answer began
        if isinstance(error.reason, TimeoutError):
            return False
        raise


def write_and_delete(kube: Kube, namespace: str, pod: Obj, text: str) -> None:
    """Write ``text`` into the pod's PVC through the pod itself, then delete the pod."""
    written = toolbox(pod["status"]["podIP"], f"/file?path={DATA}/proof", text.encode())
    assert written == {"written": len(text)}
    kube.delete(ns_path(namespace, "pods", pod["metadata"]["name"]))


def replaced(kube: Kube, namespace: str, app: str, old: Obj) -> list[Obj]:
    """The single Ready pod of ``app`` if it is not ``old`` any more."""
    pods = ready_pods(kube, namespace, app, 1)
    return [p for p in pods if p["metadata"]["uid"] != old["metadata"]["uid"]]


def test_pvc_data_survives_deleting_the_pod(
    testbed_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    apply(testbed_cluster, namespace, statefulset("keep", 1))
    (pod,) = wait_for(lambda: ready_pods(kube, namespace, "keep", 1), 120, "Ready pod")
    pid = testbed_cluster.container_pid(pod)
    write_and_delete(kube, namespace, pod, "still here")
    (new,) = wait_for(lambda: replaced(kube, namespace, "keep", pod), 120, "replacement pod")

    assert not Path(f"/proc/{pid}").exists()
    assert toolbox(new["status"]["podIP"], f"/file?path={DATA}/proof") == {"content": "still here"}


def test_pod_migrates_off_a_cordoned_node_with_its_volume(
    testbed_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    apply(testbed_cluster, namespace, statefulset("move", 1))
    (pod,) = wait_for(lambda: ready_pods(kube, namespace, "move", 1), 120, "Ready pod")
    old_node = pod["spec"]["nodeName"]
    testbed_cluster.kubectl("cordon", old_node)
    try:
        write_and_delete(kube, namespace, pod, "migrated")
        (new,) = wait_for(lambda: replaced(kube, namespace, "move", pod), 120, "migrated pod")
    finally:
        testbed_cluster.kubectl("uncordon", old_node)

    assert new["spec"]["nodeName"] != old_node
    assert new["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "data-move-0"
    assert toolbox(new["status"]["podIP"], f"/file?path={DATA}/proof") == {"content": "migrated"}


@pytest.mark.parametrize("kill", [False, True], ids=["stop", "kill"])
def test_losing_a_node_is_node_loss(
    testbed_cluster: Cluster, kube: Kube, namespace: str, kill: bool
) -> None:
    apply(testbed_cluster, namespace, statefulset("lost", 1))
    (pod,) = wait_for(lambda: ready_pods(kube, namespace, "lost", 1), 120, "Ready pod")
    node = pod["spec"]["nodeName"]
    pid = testbed_cluster.container_pid(pod)
    pod_network = network_namespace(pid)

    testbed_cluster.stop_node(node, kill=kill)
    try:
        # A killed kubelet alone leaves its pods running: node loss takes every process (the
        # host's init reaps it).
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the pod's process to die")
        wait_for(lambda: not testbed_cluster.node_ready(node), 60, f"{node} NotReady")
    finally:
        testbed_cluster.start_node(node)
        testbed_cluster.wait_nodes_ready([node], 60)
    # As after a reboot: the dead pod's network is gone, so its IP can't shadow a new pod's. The
    # kernel lets go of it once the last killed process is reaped and the lazy unmount is done.
    wait_for(lambda: not namespace_exists(pod_network), 30, f"{pod_network} to be gone")


def test_a_hung_node_goes_not_ready_and_its_pods_live_on_after_it_thaws(
    testbed_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    apply(testbed_cluster, namespace, statefulset("hung", 1))
    (pod,) = wait_for(lambda: ready_pods(kube, namespace, "hung", 1), 120, "Ready pod")
    node, pid = pod["spec"]["nodeName"], testbed_cluster.container_pid(pod)

    testbed_cluster.freeze_node(node)
    try:
        wait_for(lambda: not testbed_cluster.node_ready(node), 60, f"{node} NotReady")
        assert "\nState:\tD" in Path(f"/proc/{pid}/status").read_text()  # frozen, not dead
    finally:
        testbed_cluster.freeze_node(node, frozen=False)
    testbed_cluster.wait_nodes_ready([node], 60)
    (again,) = wait_for(lambda: ready_pods(kube, namespace, "hung", 1), 60, "the pod Ready")
    assert again["metadata"]["uid"] == pod["metadata"]["uid"]
    assert testbed_cluster.container_pid(again) == pid


def test_restart_policy_restart_counts_and_logs(
    testbed_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    # The second run waits to be told to finish: once the pod has succeeded, kubelet removes
    # all but its last container (one dead container per container), and the previous log
    # goes with it.
    script = (
        "if [ -f /scratch/ran ]; then echo second run of $(POD_NAME); "
        "while [ ! -f /scratch/done ]; do sleep 0.2; done; exit 0; fi; "
        "touch /scratch/ran; echo first run; exit 3"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "once"},
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "command": ["sh", "-c", script],
                    "env": [
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        }
                    ],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    }
    apply(testbed_cluster, namespace, [pod])

    path = ns_path(namespace, "pods", "once")

    def restarted() -> Obj | None:
        statuses = kube.get(path)["status"].get("containerStatuses") or [{}]
        running = "running" in statuses[0].get("state", {})
        return statuses[0] if running and statuses[0].get("restartCount") else None

    container = wait_for(restarted, 60, "a second run after the failed first one")
    assert container["restartCount"] == 1
    assert container["lastState"]["terminated"]["exitCode"] == 3
    previous = testbed_cluster.kubectl("logs", "-n", namespace, "once", "--previous").stdout
    assert previous == "first run\n"

    def logs() -> str:
        return testbed_cluster.kubectl("logs", "-n", namespace, "once").stdout

    wait_for(lambda: logs() == "second run of once\n", 10, "the second run's log")

    testbed_cluster.kubectl("exec", "-n", namespace, "once", "--", "touch", "/scratch/done")
    status = wait_for(lambda: in_phase(kube, path, "Succeeded"), 60, "success")["status"]
    (container,) = status["containerStatuses"]
    assert container["restartCount"] == 1
    assert container["state"]["terminated"]["exitCode"] == 0


def busybox_pod(name: str, script: str, **spec: Any) -> Obj:
    """A pod running ``script`` under sh, with an emptyDir at /scratch."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                    **spec.pop("container", {}),
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            **spec,
        },
    }


def test_failed_liveness_probe_restarts_the_container(
    testbed_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    # Unhealthy on its first run, healthy after the restart; the emptyDir outlives the restart.
    script = (
        "[ -f /scratch/second ] && touch /scratch/healthy; touch /scratch/second; "
        "trap 'exit 0' TERM; while true; do sleep 0.2; done"
    )
    probe = {"exec": {"command": ["test", "-f", "/scratch/healthy"]}, "periodSeconds": 1}
    apply(
        testbed_cluster,
        namespace,
        [
            busybox_pod(
                "flaky", script, container={"livenessProbe": {**probe, "failureThreshold": 2}}
            )
        ],
    )

    def restarted_and_ready() -> Obj | None:
        pod = kube.get(ns_path(namespace, "pods", "flaky"))
        statuses = pod["status"].get("containerStatuses") or [{}]
        return (
            pod if statuses[0].get("restartCount") == 1 and condition_true(pod, "Ready") else None
        )

    pod = wait_for(restarted_and_ready, 60, "one restart, then Ready")
    (container,) = pod["status"]["containerStatuses"]
    assert "running" in container["state"]
    assert container["lastState"]["terminated"]["exitCode"] == 0  # it exited on SIGTERM


def test_deletion_waits_for_the_grace_period_of_a_process_ignoring_sigterm(
    testbed_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    # A shell as PID 1 without a trap ignores SIGTERM, as in a real container.
    pod = busybox_pod("stubborn", "while true; do sleep 0.2; done", terminationGracePeriodSeconds=3)
    apply(testbed_cluster, namespace, [pod])
    path = ns_path(namespace, "pods", "stubborn")
    pid = testbed_cluster.container_pid(
        wait_for(lambda: in_phase(kube, path, "Running"), 60, "pod Running")
    )

    started = time.monotonic()
    kube.delete(path)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 20, "the process to be killed")
    waited = time.monotonic() - started
    assert 3 <= waited < 10
    wait_for(lambda: not kube.get(ns_path(namespace, "pods"))["items"], 20, "the pod to be gone")


def test_configmap_and_env_reach_the_container_and_configmap_updates_follow(
    testbed_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    config_map: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"mode": "first"},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reader", "labels": {"app": "reader"}},
        "spec": {
            "containers": [
                {
                    "name": "toolbox",
                    "image": TOOLBOX_IMAGE,
                    "args": [str(PORT)],
                    "env": [
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "GREETING", "value": "on $(NODE)"},
                    ],
                    "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "settings", "mountPath": "/etc/testbed-settings"}],
                }
            ],
            "volumes": [{"name": "settings", "configMap": {"name": "settings"}}],
        },
    }
    apply(testbed_cluster, namespace, [config_map, pod])
    (ready,) = wait_for(lambda: ready_pods(kube, namespace, "reader", 1), 60, "Ready pod")
    ip = ready["status"]["podIP"]
    environ = toolbox(ip, "/file?path=/proc/self/environ")["content"].split("\0")
    assert f"GREETING=on {ready['spec']['nodeName']}" in environ
    assert toolbox(ip, "/file?path=/etc/testbed-settings/mode") == {"content": "first"}

    config_map["data"]["mode"] = "second"
    apply(testbed_cluster, namespace, [config_map])
    wait_for(
        lambda: toolbox(ip, "/file?path=/etc/testbed-settings/mode") == {"content": "second"},
        30,
        "the ConfigMap update inside the pod",
    )


def test_etcd_and_zookeeper_images_have_the_upstream_layouts(
    testbed_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    zookeeper = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "zk", "labels": {"app": "images"}},
        "spec": {
            "containers": [
                {
                    "name": "zookeeper",
                    "image": ZOOKEEPER_IMAGE.removeprefix("docker.io/library/"),
                    "env": [{"name": "ZOO_4LW_COMMANDS_WHITELIST", "value": "ruok"}],
                    "readinessProbe": {
                        "exec": {"command": ["sh", "-c", "echo ruok | nc -w2 127.0.0.1 2181"]},
                        "periodSeconds": 1,
                        "timeoutSeconds": 5,
                    },
                }
            ]
        },
    }
    etcd = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "etcd", "labels": {"app": "images"}},
        "spec": {
            "containers": [
                {
                    "name": "etcd",
                    "image": ETCD_IMAGES[0],
                    "readinessProbe": {
                        "exec": {"command": ["etcdctl", "endpoint", "health"]},
                        "periodSeconds": 1,
                    },
                }
            ]
        },
    }
    apply(testbed_cluster, namespace, [zookeeper, etcd])
    wait_for(lambda: ready_pods(kube, namespace, "images", 2), 120, "both pods Ready")

    def run(pod: str, *command: str) -> subprocess.CompletedProcess[str]:
        return testbed_cluster.kubectl("exec", "-n", namespace, pod, "--", *command, check=False)

    # The official ZooKeeper image: config written from ZOO_* into /conf, the server dropped
    # to the zookeeper user, the release's bin/ on PATH.
    config = run("zk", "cat", "/conf/zoo.cfg").stdout.splitlines()
    assert "dataDir=/data" in config and "4lw.commands.whitelist=ruok" in config
    assert "Uid:\t1000\t1000\t1000\t1000" in run("zk", "cat", "/proc/1/status").stdout
    assert run("zk", "sh", "-c", "command -v zkServer.sh").stdout.strip() == (
        f"/apache-zookeeper-{ZOOKEEPER_IMAGE.rpartition(':')[2]}-bin/bin/zkServer.sh"
    )
    # The upstream etcd image: distroless, so there is no shell; its three binaries are there.
    assert "executable file not found" in run("etcd", "sh", "-c", "true").stderr
    assert run("etcd", "etcdutl", "version").stdout.startswith("etcdutl version:")
