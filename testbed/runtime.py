"""Container runtime stand-in and per-pod worker of the kubelet stand-in.

A container is a local process tree in the pod's network namespace and its own PID, mount and
UTS namespaces (see :mod:`testbed.shim`).  Its first process is tied to the node agent's pod
worker thread by PDEATHSIG, and ``unshare --kill-child`` takes the whole PID namespace down with
it, so a killed node agent leaves no container process behind.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import logging
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed import cephcsi, images, network
from testbed.kube import ApiError, Kube, Obj, ns_path
from testbed.procs import PDEATHSIG
from testbed.volumes import NotReadyYet, PodVolumes, expand

log = logging.getLogger(__name__)

SHIM = Path(__file__).with_name("shim.py")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# kubelet uses 10 s doubling to 5 min; shorter here so crash loops don't stall tests.
BACKOFF_BASE, BACKOFF_CAP, BACKOFF_RESET_AFTER = 1.0, 30.0, 60.0
TICK = 0.3
VOLUME_REFRESH_SECONDS = 2.0


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class NodeInfo:
    """What a pod worker needs to know about its node."""

    name: str
    host_ip: str
    state_dir: Path
    mountpoints_log: Path
    cluster_domain: str
    dns_ip: str
    storage_netns: str  # where the node's own storage clients run (see testbed.network)


@dataclass
class Probe:
    """Probe state of one container; counts consecutive results like kubelet."""

    spec: Obj
    next_run: float = 0.0
    successes: int = 0
    failures: int = 0

    def due(self, started_at: float, t: float) -> bool:
        if t < started_at + self.spec.get("initialDelaySeconds", 0) or t < self.next_run:
            return False
        self.next_run = t + self.spec.get("periodSeconds", 10)
        return True

    def record(self, ok: bool) -> bool | None:
        """True/False once the success/failure threshold is crossed, None while undecided."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            return True if self.successes >= self.spec.get("successThreshold", 1) else None
        self.successes, self.failures = 0, self.failures + 1
        return False if self.failures >= self.spec.get("failureThreshold", 3) else None


@dataclass
class Container:
    """One container of a pod: its current process and the state reported in the pod status."""

    spec: Obj
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    pid1: int | None = None
    container_id: str = ""
    log: Path | None = None  # output of the current (or last) run, for `kubectl logs`
    previous_log: Path | None = None
    started_at: float = 0.0
    started_iso: str = ""
    restart_count: int = 0
    consecutive_failures: int = 0
    next_start: float = 0.0
    ready: bool = False
    started: bool = False
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    last_termination: Obj | None = None
    exit_code: int | None = None
    probes: dict[str, Probe] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> Obj:
        return {
            "name": self.name,
            "image": self.spec["image"],
            "imageID": "testbed://" + images.repository(self.spec["image"]),
            "containerID": self.container_id,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


def pod_key(uid: str) -> str:
    """A pod's short name for its network namespace and veth (interface names fit 15 bytes)."""
    return uid.replace("-", "")[:10]


def clear_pod_networks(state_dir: Path) -> None:
    """Delete the network namespaces a killed agent's pods left (a real node's die with it):
    left on the bridge, they would answer for IPs the restarted agent hands out again."""
    for folder in (state_dir / "pods").glob("*_*_*"):
        network.delete_pod_network(pod_key(folder.name.rsplit("_", 1)[1]))


class PodWorker(threading.Thread):
    """Runs one pod bound to this node from setup to teardown, like kubelet's pod worker.

    The thread outlives every process it starts: PDEATHSIG follows the spawning thread.
    """

    def __init__(self, api: Kube, node: NodeInfo, pod: Obj, pod_ip: str) -> None:
        super().__init__(
            name=f"pod-{pod['metadata']['namespace']}/{pod['metadata']['name']}", daemon=True
        )
        self.api, self.node, self.pod, self.pod_ip = api, node, pod, pod_ip
        self.uid: str = pod["metadata"]["uid"]
        self.key = pod_key(self.uid)
        self.dir = node.state_dir / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self.lost = threading.Event()  # force-deleted or node loss: kill everything, report nothing
        self.node_lost = False  # set with `lost` when the node goes: volumes are left as they are
        self.containers: list[Container] = []
        self.init_containers: list[Container] = []
        self.network_ready = False
        rbd = cephcsi.NodePlugin(api, node.name, node.storage_netns, node.state_dir / "csi")
        self.volumes = PodVolumes(api, pod, self.dir / "volumes", pod_ip, node.host_ip, rbd)
        self.volumes_ready = False
        self.start_time = now()
        self.phase = "Pending"
        self.message = ""
        self.last_status: Obj | None = None
        self.transitions: dict[str, tuple[str, str]] = {}  # condition -> (status, since)
        self.next_refresh = 0.0
        self.done = False

    @property
    def pod_name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    def update(self, pod: Obj) -> None:
        """Hand over the latest API object (a single assignment: no lock needed)."""
        self.pod = pod

    # ---------------------------------------------------------------- lifecycle

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker %s/%s failed", self.namespace, self.pod_name)
            self._kill_all()
        finally:
            try:
                self.volumes.release(self.node_lost)
            finally:
                network.delete_pod_network(self.key)
                self.done = True

    def _run(self) -> None:
        spec = self.pod["spec"]
        self.init_containers = [Container(c, init=True) for c in spec.get("initContainers") or []]
        self.containers = [Container(c) for c in spec["containers"]]
        for c in self.containers:
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                if c.spec.get(kind):
                    c.probes[kind] = Probe(c.spec[kind])
        while not self.lost.is_set():
            if self.pod["metadata"].get("deletionTimestamp"):
                self._terminate()
                return
            if not self._setup():
                self._publish()
                self.lost.wait(1.0)
                continue
            if time.monotonic() >= self.next_refresh:
                self.volumes.refresh(self.pod)
                self.next_refresh = time.monotonic() + VOLUME_REFRESH_SECONDS
            if self.phase in ("Succeeded", "Failed"):
                self._kill_all()
            elif not self._init_done():
                self._step_init()
            else:
                self._step_containers()
            self._publish()
            self.lost.wait(TICK)
        self._kill_all()

    def _setup(self) -> bool:
        """Network, volumes, resolv.conf and hosts: kubelet's sandbox and volume manager."""
        if self.volumes_ready:
            return True
        try:
            if not self.network_ready:
                network.create_pod_network(self.key, self.pod_ip)
                self.network_ready = True
            self.volumes.pod = self.pod
            self.volumes.prepare()
        except NotReadyYet as exc:
            if str(exc) != self.message:
                log.warning("%s/%s: %s", self.namespace, self.pod_name, exc)
                self._warning("FailedMount", str(exc))
            self.message = str(exc)
            return False
        except ApiError as exc:
            self.message = str(exc)
            return False
        self._write_etc()
        self.volumes_ready = True
        self.message = ""
        return True

    def _warning(self, reason: str, message: str) -> None:
        """Record a Warning Event on the pod, where kubelet tells users what holds it up."""
        t = now()
        body: Obj = {
            "metadata": {"generateName": f"{self.pod_name}."},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": self.namespace,
                "name": self.pod_name,
                "uid": self.uid,
            },
            "type": "Warning",
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": self.node.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node.name,
            "firstTimestamp": t,
            "lastTimestamp": t,
            "count": 1,
        }
        try:
            self.api.create(ns_path(self.namespace, "events"), body)
        except ApiError as exc:
            log.warning("event on %s/%s failed: %s", self.namespace, self.pod_name, exc)

    def _write_etc(self) -> None:
        spec, ns, domain = self.pod["spec"], self.namespace, self.node.cluster_domain
        search = [f"{ns}.svc.{domain}", f"svc.{domain}", domain]
        (self.dir / "etc").mkdir(parents=True, exist_ok=True)
        (self.dir / "etc" / "resolv.conf").write_text(
            f"nameserver {self.node.dns_ip}\nsearch {' '.join(search)}\noptions ndots:5\n"
        )
        hostname = spec.get("hostname") or self.pod_name
        names = [hostname]
        if spec.get("subdomain"):
            names.insert(0, f"{hostname}.{spec['subdomain']}.{ns}.svc.{domain}")
        (self.dir / "etc" / "hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{self.pod_ip}\t{' '.join(names)}\n"
        )

    def _init_done(self) -> bool:
        return all(c.exit_code == 0 for c in self.init_containers)

    def _step_init(self) -> None:
        """Run init containers one at a time, each to success, before any app container."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for c in self.init_containers:
            if c.exit_code == 0:
                continue
            if c.proc is not None:
                if c.running:
                    return
                self._reap(c)
                if c.exit_code == 0:
                    continue
            if c.exit_code is not None and policy == "Never":
                self.phase = "Failed"
            else:
                self._maybe_start(c)
            return

    def _step_containers(self) -> None:
        t = time.monotonic()
        for c in self.containers:
            if c.proc is not None and not c.running:
                self._reap(c)
            if c.running:
                self._probe(c, t)
            elif c.exit_code is None or self._restarts(c):
                self._maybe_start(c)
        if all(
            c.proc is None and c.exit_code is not None and not self._restarts(c)
            for c in self.containers
        ):
            failed = any(c.exit_code != 0 for c in self.containers)
            self.phase = "Failed" if failed else "Succeeded"
        elif any(c.running for c in self.containers):
            self.phase = "Running"

    def _restarts(self, c: Container) -> bool:
        """Whether the restart policy restarts this exited container."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        return policy == "Always" or (policy == "OnFailure" and c.exit_code != 0)

    def _terminate(self) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, then confirm to the API."""
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        self._stop_containers(self.containers + self.init_containers, float(grace))
        for c in self.containers:
            c.ready = False
        self._publish()
        # Like kubelet, confirm the deletion only once the pod's volumes are torn down.
        self.volumes.release(node_lost=False)
        network.delete_pod_network(self.key)
        with contextlib.suppress(ApiError):
            self.api.delete(
                ns_path(self.namespace, "pods", self.pod_name),
                {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )

    def _kill_all(self) -> None:
        for c in self.containers + self.init_containers:
            if c.running:
                self._signal(c, signal.SIGKILL)
            if c.proc is not None:
                c.proc.wait()

    def _stop_containers(self, containers: list[Container], grace: float) -> None:
        running = [c for c in containers if c.running]
        for c in running:
            self._signal(c, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in running:
            assert c.proc is not None
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(c, signal.SIGKILL)
                c.proc.wait()
            self._reap(c)

    @staticmethod
    def _signal(c: Container, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if c.pid1:
                os.kill(c.pid1, sig)
            elif c.proc is not None:
                os.kill(c.proc.pid, signal.SIGKILL)

    # ---------------------------------------------------------------- containers

    def _maybe_start(self, c: Container) -> None:
        t = time.monotonic()
        if t < c.next_start:
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off restarting failed container {c.name}",
                }
            }
            return
        try:
            self._start(c)
        except images.ImageError as exc:
            c.state = {"waiting": {"reason": "ErrImagePull", "message": str(exc)}}
            c.next_start = t + BACKOFF_CAP
        except (NotReadyYet, ValueError) as exc:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            c.next_start = t + BACKOFF_BASE

    def _start(self, c: Container) -> None:
        image = images.lookup(c.spec["image"])
        cdir = self.dir / "containers" / c.name
        bindir = cdir / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        for exe, prefix in image.executables().items():
            wrapper = bindir / exe
            wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(prefix)} "$@"\n')
            wrapper.chmod(0o755)
        env = {
            "PATH": f"{bindir}:{BASE_PATH}",
            "HOSTNAME": self.pod["spec"].get("hostname") or self.pod_name,
            "HOME": "/root",
        }
        env.update(self.volumes.env(c.spec))
        command = c.spec.get("command") or image.entrypoint
        args = c.spec.get("args")
        if args is None:
            args = [] if c.spec.get("command") else image.cmd
        argv = [expand(a, env) for a in [*command, *args]]
        if not argv:
            raise images.ImageError(f"container {c.name} has no command")
        if "/" in argv[0] and (bindir / Path(argv[0]).name).exists():
            argv[0] = str(bindir / Path(argv[0]).name)
        spec = {
            "hostname": env["HOSTNAME"],
            "mounts": self._mounts(c),
            "cwd": c.spec.get("workingDir") or "/",
            "argv": argv,
            "env": env,
        }
        (cdir / "spec.json").write_text(json.dumps(spec))
        c.previous_log, c.log = c.log, cdir / f"{c.restart_count}.log"
        with open(c.log, "ab") as out:
            c.proc = subprocess.Popen(
                [
                    *PDEATHSIG,
                    "nsenter",
                    f"--net={network.netns_path(network.NETNS_PREFIX + self.key)}",
                    "--",
                    "unshare",
                    "--pid",
                    "--mount",
                    "--uts",
                    "--ipc",
                    "--mount-proc",
                    "--kill-child=SIGKILL",
                    "--",
                    sys.executable,
                    "-S",
                    str(SHIM),
                    str(cdir / "spec.json"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        c.pid1 = self._find_pid1(c.proc)
        # The host PID of the container's first process: lets tests check processes directly.
        c.container_id = f"testbed://{c.pid1 or c.proc.pid}"
        c.started_at = time.monotonic()
        c.started_iso = now()
        c.exit_code = None
        c.ready = False
        c.started = "startupProbe" not in c.probes
        c.ready = not c.init and not c.probes.keys() & {"startupProbe", "readinessProbe"}
        for probe in c.probes.values():
            probe.next_run, probe.successes, probe.failures = 0.0, 0, 0
        c.state = {"running": {"startedAt": c.started_iso}}
        c.last_state = {"terminated": c.last_termination} if c.last_termination else {}

    @staticmethod
    def _find_pid1(proc: subprocess.Popen[bytes]) -> int | None:
        """The container's PID 1 is unshare's only child; poll for it briefly."""
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids:
                    return int(pids[0])
            time.sleep(0.01)
        return None

    def _mounts(self, c: Container) -> list[Obj]:
        etc = self.dir / "etc"
        mounts = [
            {"source": str(etc / "resolv.conf"), "target": "/etc/resolv.conf", "readOnly": False},
            {"source": str(etc / "hosts"), "target": "/etc/hosts", "readOnly": False},
        ]
        for m in c.spec.get("volumeMounts") or []:
            source = self.volumes.paths[m["name"]]
            if m.get("subPath"):
                source = source / m["subPath"]
                if not source.exists():
                    source.mkdir(parents=True)
            target = Path(m["mountPath"])
            self._ensure_mountpoint(target, directory=source.is_dir())
            mounts.append(
                {"source": str(source), "target": str(target), "readOnly": bool(m.get("readOnly"))}
            )
        return mounts

    def _ensure_mountpoint(self, target: Path, directory: bool) -> None:
        """Mount points must exist on the shared host filesystem; log new ones for cleanup."""
        missing = [p for p in [target, *target.parents] if not p.exists()]
        if not missing:
            return
        if directory:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        with open(self.node.mountpoints_log, "a") as f:
            f.writelines(f"{p}\n" for p in missing)

    def _reap(self, c: Container) -> None:
        """Record a finished process in the container's state and schedule a restart."""
        assert c.proc is not None
        code = c.proc.wait()
        c.proc = None
        c.exit_code = 128 - code if code < 0 else code
        c.ready = False
        termination = self._terminated(c, "Completed" if c.exit_code == 0 else "Error")
        # Like kubelet: lastState is the termination before the current state's.
        c.last_state = {"terminated": c.last_termination} if c.last_termination else {}
        c.last_termination = termination
        c.state = {"terminated": termination}
        c.pid1 = None
        if c.init and c.exit_code == 0:
            return
        ran = time.monotonic() - c.started_at
        c.consecutive_failures = 1 if ran >= BACKOFF_RESET_AFTER else c.consecutive_failures + 1
        c.next_start = time.monotonic() + min(
            BACKOFF_CAP, BACKOFF_BASE * 2 ** (c.consecutive_failures - 1)
        )
        if self._restarts(c):
            c.restart_count += 1

    def _terminated(self, c: Container, reason: str) -> Obj:
        return {
            "exitCode": c.exit_code,
            "reason": reason,
            "startedAt": c.started_iso,
            "finishedAt": now(),
            "containerID": c.container_id,
        }

    # ---------------------------------------------------------------- probes

    def _probe(self, c: Container, t: float) -> None:
        startup = c.probes.get("startupProbe")
        if startup and not c.started:
            if startup.due(c.started_at, t):
                result = startup.record(self._run_probe(c, startup.spec))
                if result is True:
                    c.started = True
                    c.ready = "readinessProbe" not in c.probes
                elif result is False:
                    self._restart_unhealthy(c, "startup")
            return
        liveness = c.probes.get("livenessProbe")
        if (
            liveness
            and liveness.due(c.started_at, t)
            and liveness.record(self._run_probe(c, liveness.spec)) is False
        ):
            self._restart_unhealthy(c, "liveness")
            return
        readiness = c.probes.get("readinessProbe")
        if readiness and readiness.due(c.started_at, t):
            result = readiness.record(self._run_probe(c, readiness.spec))
            if result is not None:
                c.ready = result

    def _restart_unhealthy(self, c: Container, kind: str) -> None:
        log.info("%s/%s: %s failed its %s probe", self.namespace, self.pod_name, c.name, kind)
        grace = c.probes[f"{kind}Probe"].spec.get("terminationGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        self._stop_containers([c], float(grace))

    def _run_probe(self, c: Container, spec: Obj) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        try:
            if "exec" in spec:
                return self._exec_probe(c, spec["exec"]["command"], timeout)
            if "httpGet" in spec:
                return self._http_probe(c, spec["httpGet"], timeout)
            if "tcpSocket" in spec:
                port = self._port(c, spec["tcpSocket"]["port"])
                host = spec["tcpSocket"].get("host") or self.pod_ip
                with socket.create_connection((host, port), timeout=timeout):
                    return True
            if "grpc" in spec:
                port = self._port(c, spec["grpc"]["port"])
                with socket.create_connection((self.pod_ip, port), timeout=timeout):
                    return True
        except OSError:
            return False
        return False

    def _port(self, c: Container, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise OSError(f"no port named {port}")

    def _http_probe(self, c: Container, spec: Obj, timeout: float) -> bool:
        host = spec.get("host") or self.pod_ip
        port = self._port(c, spec["port"])
        conn = (
            http.client.HTTPSConnection(  # kubelet does not verify probe certificates either
                host, port, timeout=timeout, context=ssl._create_unverified_context()
            )
            if spec.get("scheme") == "HTTPS"
            else http.client.HTTPConnection(host, port, timeout=timeout)
        )
        try:
            headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
            conn.request("GET", spec.get("path", "/"), headers=headers)
            return 200 <= conn.getresponse().status < 400
        finally:
            conn.close()

    def _exec_probe(self, c: Container, command: list[str], timeout: float) -> bool:
        """Run the command inside the container's namespaces with its environment."""
        if not c.pid1:
            return False
        spec = json.loads((self.dir / "containers" / c.name / "spec.json").read_text())
        proc = subprocess.Popen(
            [
                *PDEATHSIG,
                "nsenter",
                f"--target={c.pid1}",
                "--net",
                "--pid",
                "--mount",
                "--uts",
                "--ipc",
                f"--wd={spec['cwd']}",
                "--",
                "env",
                "-i",
                *[f"{k}={v}" for k, v in spec["env"].items()],
                *command,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return False

    # ---------------------------------------------------------------- status

    def _publish(self) -> None:
        """Patch pods/status when anything changed, like kubelet's status manager."""
        status = self._status()
        if status == self.last_status or self.lost.is_set():
            return
        try:
            path = ns_path(self.namespace, "pods", self.pod_name) + "/status"
            self.api.patch(path, {"status": status})
            self.last_status = status
        except ApiError as exc:
            if exc.status != 404:
                log.warning("status update of %s/%s failed: %s", self.namespace, self.pod_name, exc)

    def _status(self) -> Obj:
        def condition(kind: str, ok: bool) -> Obj:
            value = "True" if ok else "False"
            previous = self.transitions.get(kind)
            if previous is None or previous[0] != value:
                self.transitions[kind] = (value, now())
            return {
                "type": kind,
                "status": value,
                "lastTransitionTime": self.transitions[kind][1],
            }

        initialized = self._init_done()
        containers_ready = (
            initialized and self.phase == "Running" and all(c.ready for c in self.containers)
        )
        status: Obj = {
            "phase": self.phase,
            "hostIP": self.node.host_ip,
            "hostIPs": [{"ip": self.node.host_ip}],
            "startTime": self.start_time,
            "conditions": [
                condition("PodReadyToStartContainers", self.network_ready),
                condition("Initialized", initialized),
                condition("ContainersReady", containers_ready),
                condition("Ready", containers_ready),
            ],
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.network_ready:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if self.message:
            status["message"] = self.message
        return status
