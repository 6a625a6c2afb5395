"""The real Kubernetes control plane on loopback 127.0.200.0/24, plus CoreDNS for pods."""

from __future__ import annotations

import functools
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from testbed import network
from testbed.pki import Pki
from testbed.procs import Fatal, spawn, stop, wait_for
from testbed.versions import Binaries

HOST = "127.0.200.1"
ETCD_CLIENT_PORT = 12379
ETCD_PEER_PORT = 12380
APISERVER_PORT = 6443
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259
COREDNS_READY_PORT = 8181
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
# Short enough that node loss shows within seconds; the node agents renew their Lease every 2 s.
NODE_MONITOR_GRACE_PERIOD = "12s"

_COREFILE = """\
.:53 {{
    bind {bind}
    errors
    ready {host}:{ready_port}
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods verified
        fallthrough in-addr.arpa ip6.arpa
    }}
}}
"""


def _https_ok(url: str, context: ssl.SSLContext) -> bool:
    """GET ``url``; the context is ignored for plain http."""
    with urllib.request.urlopen(url, context=context, timeout=2) as response:
        return bool(response.status == 200)


@dataclass
class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and CoreDNS as processes.

    CoreDNS runs in the root namespace bound to the pod bridge's address, because that is the
    one address both reachable from every pod namespace and able to reach the loopback API server.
    """

    state_dir: Path
    binaries: Binaries
    host: str = HOST
    """Loopback address every component binds; nodes reach the default one only."""
    api_only: bool = False
    """etcd and kube-apiserver only: enough for tests of schemas, admission and dry-runs, and
    free of the pod bridge, so it runs beside another test bed on its own `host`."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pki: Pki | None = None

    @property
    def server(self) -> str:
        return f"https://{self.host}:{APISERVER_PORT}"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def start(self, timeout: float = 90.0) -> None:
        """Start every component and wait until each reports healthy; stops all on failure."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        pki = self.pki = Pki.generate(self.state_dir / "pki", [self.host, "10.96.0.1"])
        pki.write_kubeconfig(self.kubeconfig, self.server)
        etcd_url = f"http://{self.host}:{ETCD_CLIENT_PORT}"
        peer_url = f"http://{self.host}:{ETCD_PEER_PORT}"
        self._run(
            "etcd",
            [
                self.binaries.etcd,
                "--name=testbed",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=testbed={peer_url}",
                "--unsafe-no-fsync",
            ],
        )
        self._run(
            "kube-apiserver",
            [
                self.binaries.kube_apiserver,
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={APISERVER_PORT}",
                f"--tls-cert-file={pki.apiserver_cert}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Kubelets authenticate as system:node:<name>; the Node authorizer and
                # NodeRestriction limit each to its own Node and pods, as on a real cluster.
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                # For logs, exec and port-forward through kubelet's API.
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
                # The loopback advertise address is not a valid Endpoints address.
                "--endpoint-reconciler-type=none",
                # Kubelets serve on their InternalIP; there is no DNS for node names.
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
            ],
        )
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        wait_for(
            lambda: self._healthy(f"{self.server}/readyz", context),
            timeout,
            "kube-apiserver /readyz",
        )
        if self.api_only:
            return
        common = [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--bind-address={self.host}",
            "--leader-elect=false",
            "--profiling=false",
        ]
        self._run(
            "kube-controller-manager",
            [
                self.binaries.kube_controller_manager,
                *common,
                f"--secure-port={CONTROLLER_MANAGER_PORT}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                "--node-monitor-period=2s",
                f"--node-monitor-grace-period={NODE_MONITOR_GRACE_PERIOD}",
            ],
        )
        self._run(
            "kube-scheduler",
            [self.binaries.kube_scheduler, *common, f"--secure-port={SCHEDULER_PORT}"],
        )
        corefile = self.state_dir / "Corefile"
        corefile.write_text(
            _COREFILE.format(
                bind=network.BRIDGE_IP,
                host=self.host,
                ready_port=COREDNS_READY_PORT,
                domain=CLUSTER_DOMAIN,
                kubeconfig=self.kubeconfig,
            )
        )
        self._run("coredns", [self.binaries.coredns, "-conf", corefile])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed serving certs of loopback components
        health = {
            "kube-controller-manager": f"https://{self.host}:{CONTROLLER_MANAGER_PORT}/healthz",
            "kube-scheduler": f"https://{self.host}:{SCHEDULER_PORT}/healthz",
            "CoreDNS": f"http://{self.host}:{COREDNS_READY_PORT}/ready",
        }
        for name, url in health.items():
            wait_for(functools.partial(self._healthy, url, insecure), timeout, f"{name} healthy")

    def _healthy(self, url: str, context: ssl.SSLContext) -> bool:
        return self._alive() and _https_ok(url, context)

    def _run(self, name: str, argv: list[str | Path]) -> None:
        self.processes[name] = spawn(argv, self.logs / f"{name}.log")

    def _alive(self) -> bool:
        """Raise if a component exited: a crash should fail fast, not wait for a timeout."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise Fatal(
                    f"{name} exited with {proc.returncode}; see {self.logs / (name + '.log')}"
                )
        return True

    def stop(self) -> None:
        """Stop components in reverse start order so nothing logs errors about missing peers."""
        for name in reversed(list(self.processes)):
            stop(self.processes.pop(name))
