"""etcd started exactly as the rendered pod starts it: the container's `args` after the kubelet's
`$(VAR)` expansion, with the Downward API and ConfigMap values the pod would get, probed on its
metrics listener as the kubelet probes it. The one stand-in: pods' DNS names become loopback
addresses of this suite's network (there is no cluster DNS outside the test bed), the in-pod
localhost client listener is left out (127.0.0.1 is shared by every suite), and the TLS Secret's
files (certificates of a CA made here, for those addresses) are in a folder of the test's."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from quorumkeeper.certificates import TlsFiles, issue, new_authority
from quorumkeeper.model import Endpoint, Member, Peer
from quorumkeeper.runtimes.kubernetes.etcd_pod import ETCD_DATA_DIR, ETCD_METRICS_PORT
from quorumkeeper.runtimes.kubernetes.objects import TLS_MOUNT, TRUST_KEY, Membership, placement
from quorumkeeper.runtimes.kubernetes.render import cluster_objects, sealed_config
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, Kind, parse_resource
from quorumkeeper.runtimes.local import distributions
from quorumkeeper.stores.base import AddsRefused, NotCaughtUp, StoreUnavailable
from quorumkeeper.stores.etcd.client import EtcdStore
from tests.polling import loopback_subnet, wait_until

pytestmark = pytest.mark.operator

Obj = dict[str, Any]
SUBNET = loopback_subnet(201)
T = TypeVar("T")
_VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's expansion of `$(VAR)` in `args`: defined variables only."""
    return _VARIABLE.sub(lambda m: env.get(m[1], m[0]), text)


def address(ordinal: int) -> str:
    return f"{SUBNET}.{ordinal + 1}"


class Pods:
    """Members of EtcdCluster `c` run from its rendered objects; stopped by PID at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.resource: ClusterResource = parse_resource(
            {
                "apiVersion": "quorumkeeper.io/v1alpha1",
                "kind": "EtcdCluster",
                "metadata": {"name": "c", "namespace": "apps", "uid": "u1"},
                "spec": {"members": 3, "version": "3.7.3", "storage": {"size": "1Gi"}},
            }
        )
        self.placement = placement(self.resource)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.tls = root / "tls"
        self.tls.mkdir()
        now = datetime.now(UTC)
        authority = new_authority("c", now=now)
        (self.tls / TRUST_KEY).write_bytes(authority.certificate)
        for ordinal in range(5):
            made = issue(
                authority,
                common_name="",
                hosts=[address(ordinal)],
                server=True,
                client=True,
                now=now,
            )
            (self.tls / f"c-{ordinal}.crt").write_bytes(made.certificate)
            (self.tls / f"c-{ordinal}.key").write_bytes(made.key)
        made = issue(authority, common_name="", hosts=[], server=False, client=True, now=now)
        (self.tls / "operator.crt").write_bytes(made.certificate)
        (self.tls / "operator.key").write_bytes(made.key)
        self.client_tls = TlsFiles(
            self.tls / TRUST_KEY, self.tls / "operator.crt", self.tls / "operator.key"
        )

    def store(self, *ordinals: int) -> EtcdStore:
        """A client of members `ordinals` with the operator's certificate."""
        return EtcdStore([self.endpoint(n) for n in ordinals], tls=self.client_tls)

    def endpoint(self, ordinal: int) -> Endpoint:
        return Endpoint(f"c-{ordinal}", ordinal, address(ordinal))

    def start(self, ordinal: int, membership: Membership, *, sealed: bool = False) -> None:
        """Start member `ordinal` as its pod would with `membership` in the ConfigMap, or with
        the ConfigMap sealed after that join (`render.sealed_config`)."""
        objects = cluster_objects(self.resource, membership)
        config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
        if sealed:
            config = {**config, **sealed_config(Kind.ETCD, config)}
        sts = next(o for o in objects if o["kind"] == "StatefulSet")
        container = sts["spec"]["template"]["spec"]["containers"][0]
        env = {
            "POD_NAME": f"c-{ordinal}",
            "POD_IP": address(ordinal),
            "QK_INITIAL_CLUSTER": config["initial-cluster"],
            "QK_INITIAL_CLUSTER_STATE": config["initial-cluster-state"],
        }
        names = {self.placement.endpoint(n).address: address(n) for n in range(5)}
        argv = []
        for arg in container["args"]:
            arg = expand(arg, env).replace(",https://127.0.0.1:2379", "")
            arg = arg.replace(str(TLS_MOUNT), str(self.tls))
            for name, ip in names.items():
                arg = arg.replace(name, ip)
            argv.append(arg.replace(ETCD_DATA_DIR, str(self.root / f"c-{ordinal}")))
        log = (self.root / f"c-{ordinal}.log").open("ab")
        binary = distributions.etcd_binary()
        self.processes.append(subprocess.Popen([binary, *argv], stdout=log, stderr=log))

    def log(self, ordinal: int) -> str:
        return (self.root / f"c-{ordinal}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=20)


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Pods]:
    made = Pods(tmp_path)
    yield made
    made.stop()


def retried(step: Callable[[], T]) -> T | None:
    """`step`'s result, or None while the store refuses it for now (etcd's reconfiguration
    grace after a start, a learner not yet caught up)."""
    try:
        return step()
    except (AddsRefused, NotCaughtUp, StoreUnavailable):
        return None


def exited(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is not None


def promoted(store: EtcdStore, learner: Member) -> bool:
    store.promote(learner)
    return True


def probe(ordinal: int, path: str) -> int:
    """The kubelet's httpGet on the container's `metrics` port: the status, 0 if unanswered."""
    try:
        return httpx.get(
            f"http://{address(ordinal)}:{ETCD_METRICS_PORT}{path}", timeout=1
        ).status_code
    except httpx.HTTPError:
        return 0


def test_the_rendered_args_start_a_member_and_a_learner_is_alive_but_not_ready(
    pods: Pods,
) -> None:
    first = pods.placement.endpoint(0)
    pods.start(0, Membership((Peer(first, None),), 1, 1, 1, bootstrap=True))
    wait_until(lambda: probe(0, "/readyz") == 200, 30, "c-0 Ready")
    assert probe(0, "/livez") == 200

    store = pods.store(0)
    try:
        learner = wait_until(
            lambda: retried(lambda: store.add_learner(pods.endpoint(1))),
            30,
            "c-1 added as a learner",
        )
        leader = next(m for m in store.members() if m.address == address(0))
        joining = Membership(
            (Peer(first, leader.id), Peer(pods.placement.endpoint(1), learner.id)), 2, 1, 1
        )
        pods.start(1, joining)
        wait_until(lambda: probe(1, "/livez") == 200, 30, "c-1 alive")
        assert probe(1, "/readyz") == 503  # a learner gets no client traffic
        wait_until(lambda: retried(lambda: promoted(store, learner)), 30, "c-1 promoted")
        wait_until(lambda: probe(1, "/readyz") == 200, 30, "c-1 Ready as a voter")
    finally:
        store.close()


def test_once_sealed_a_member_restarts_from_its_data_and_none_starts_on_an_empty_volume(
    pods: Pods,
) -> None:
    """After a join the operator seals the ConfigMap: a member restarting from its volume
    comes back; one whose volume was replaced, the first member included, exits instead of
    rejoining under its old id with no log or starting a cluster of its own."""
    first, second = pods.placement.endpoint(0), pods.placement.endpoint(1)
    bootstrap = Membership((Peer(first, None),), 1, 1, 1, bootstrap=True)
    pods.start(0, bootstrap)
    wait_until(lambda: probe(0, "/readyz") == 200, 30, "c-0 Ready")
    store = pods.store(0, 1)
    try:
        learner = wait_until(
            lambda: retried(lambda: store.add_learner(pods.endpoint(1))), 30, "c-1 added"
        )
        leader = next(m for m in store.members() if m.address == address(0))
        joining = Membership((Peer(first, leader.id), Peer(second, learner.id)), 2, 1, 2)
        pods.start(1, joining)
        wait_until(lambda: retried(lambda: promoted(store, learner)), 60, "c-1 promoted")

        # c-1 restarts from its data under the sealed ConfigMap.
        restarted = pods.processes.pop()
        restarted.terminate()
        restarted.wait(timeout=20)
        pods.start(1, joining, sealed=True)
        wait_until(lambda: probe(1, "/readyz") == 200, 30, "c-1 Ready again from its data")

        # c-1 on an empty volume, then c-0 (which bootstrapped the cluster), each exit before
        # reaching a peer: etcd checks its name against the initial cluster first.
        for ordinal, membership in ((1, joining), (0, bootstrap)):
            process = pods.processes.pop(ordinal)
            process.terminate()
            process.wait(timeout=20)
            shutil.rmtree(pods.root / f"c-{ordinal}")
            pods.start(ordinal, membership, sealed=True)
            wait_until(functools.partial(exited, pods.processes[-1]), 30, f"c-{ordinal} to exit")
            assert pods.processes[-1].returncode != 0
            fatal = [json.loads(line) for line in pods.log(ordinal).splitlines() if "fatal" in line]
            assert fatal[-1]["error"] == (
                f'couldn\'t find local name "c-{ordinal}" in the initial cluster configuration'
            )
    finally:
        store.close()
