"""One real Kubernetes node: upstream kubelet with its own containerd and runc.

Each node has its own containerd (root, state, sockets, runc root: a shared CRI would make each
kubelet kill the other's pods), cgroup root, kubelet root dir, pod address range, and network
namespace holding its InternalIP on the pod bridge, where its kubelet runs
(:func:`testbed.network.create_node_network`).  Nothing here changes the host's sysctls or
iptables:

* kubelet runs with ``protectKernelDefaults`` (it only checks the three sysctls it wants) in its
  own mount namespace, where private read-only files holding those values are bind-mounted over
  the ``/proc/sys`` paths; its root dir is an rshared bind mount so that the volume mounts it
  makes there reach containerd in the host's namespace;
* ``makeIPTablesUtilChains: false`` keeps kubelet's host-wide chains (a DROP of packets to
  127.0.0.0/8 from non-loopback sources among them) out of the host;
* containerd's ``restrict_oom_score_adj`` (the host lacks CAP_SYS_RESOURCE, so runc could not
  lower a score below 0) and ``netns_mounts_under_state_dir`` (netns files nobody else's
  ``ip netns`` can hide).

The settings and the error each one avoids are measured in ``KUBELET-NOTES.md`` of the project's
shared notes.  Node loss is real: :meth:`Node.stop` kills kubelet, containerd, the node's shims and
every process in the node's cgroups, all by PID, then unmounts what they left behind, as a reboot
would.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
import yaml

from testbed import cephcsi, imagestore, network
from testbed.controlplane import HOST as CONTROL_PLANE_HOST
from testbed.pki import Pki, node_client_cert
from testbed.procs import spawn, stop, wait_for
from testbed.versions import IMAGE_ARCHIVES, PAUSE_IMAGE, Binaries

CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
# The sysctls kubelet wants (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables):
# with protectKernelDefaults it refuses to start unless they already hold these values.
KERNEL_DEFAULTS = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}
# Hard-coded in kubelet (pkg/kubelet/cm/devicemanager) and wiped at start: each node's kubelet
# gets its own folder bound over it in its mount namespace.
DEVICE_PLUGINS_DIR = Path("/var/lib/kubelet/device-plugins")


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (the v2 one at ``unified`` has no controllers here)."""
    return sorted(
        p
        for p in CGROUP_ROOT.iterdir()
        if p.is_dir() and not p.is_symlink() and p.name != "unified"
    )


def node_cgroup(name: str) -> str:
    """Node ``name``'s cgroup root, the same path in every v1 hierarchy."""
    return f"/qktb-{name}"


def remove_cgroups(cgroup: str) -> None:
    """Remove ``cgroup`` and its children in every hierarchy, deepest first (a cgroup that
    still holds a process stays)."""
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / cgroup.lstrip("/")
        if root.exists():
            children = [p for p in root.rglob("*") if p.is_dir()]
            for directory in sorted(children, key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()


def _shims(binaries: Binaries) -> dict[int, Path]:
    """Running shims of the test bed's containerd build, by PID, with the socket they serve."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                argv = (proc / "cmdline").read_bytes().decode().split("\0")
                if argv[0] == str(binaries.containerd_shim):
                    found[int(proc.name)] = Path(argv[argv.index("-address") + 1])
    return found


def kill_leftovers(name: str, binaries: Binaries) -> None:
    """SIGKILL what a killed earlier run left of node ``name``: processes in its cgroups and
    shims whose containerd's socket is gone; then remove its cgroups."""
    orphans = [pid for pid, socket in _shims(binaries).items() if not socket.exists()]
    cgroup = node_cgroup(name)
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / cgroup.lstrip("/")
        for procs in root.rglob("cgroup.procs") if root.exists() else []:
            with contextlib.suppress(OSError):
                orphans.extend(int(p) for p in procs.read_text().split())
    _kill_all(orphans, signal.SIGKILL)
    remove_cgroups(cgroup)


def _mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = Path(line.split()[4].replace("\\040", " "))
        if target == root or root in target.parents:
            found.append(target)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_under(root: Path) -> None:
    """Unmount everything the node mounted below its own folder (detached, so busy ones go too)."""
    for target in _mounts_under(root):
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def _kill_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class Node:
    """A node ``name`` (1-based ``index``) whose files live under ``state_dir``."""

    name: str
    index: int
    state_dir: Path
    server: str
    pki: Pki
    binaries: Binaries
    cluster_dns: str
    cluster_domain: str
    mountpoints_log: Path
    admin_kubeconfig: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ip(self) -> str:
        return network.node_ip(self.index)

    @property
    def stream_address(self) -> str:
        """Where containerd serves exec, attach and port-forward streams (kubelet proxies them):
        a loopback address of the test bed's range, reachable from kubelet's network."""
        return str(ipaddress.ip_address(CONTROL_PLANE_HOST) + 10 + self.index)

    @property
    def cgroup(self) -> str:
        """The node's cgroup root, the same path in every v1 hierarchy."""
        return node_cgroup(self.name)

    @property
    def run_dir(self) -> Path:
        """What a reboot clears: containerd's state, sockets, the CSI plugin's state."""
        return self.state_dir / "run"

    @property
    def kubelet_dir(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def start(self) -> None:
        """Start containerd, import the images, start kubelet; returns without waiting for Ready."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._create_cgroups()
        if not (self.state_dir / "containerd").exists():
            imagestore.clone(self.binaries, self.state_dir / "containerd")
        self._start_containerd()
        self._check_images()
        self._start_kubelet()
        self._start_csi_plugin()

    # ---------------------------------------------------------------- containerd

    def _containerd_config(self) -> Path:
        runtime = "io.containerd.cri.v1.runtime"
        config = {
            "version": 3,
            "root": str(self.state_dir / "containerd"),
            "state": str(self.run_dir / "containerd"),
            "grpc": {"address": str(self.containerd_socket)},
            "ttrpc": {"address": f"{self.containerd_socket}.ttrpc"},
            "plugins": {
                # NRI's default socket is shared by every containerd on the host.
                "io.containerd.nri.v1.nri": {"disable": True},
                runtime: {
                    "restrict_oom_score_adj": True,
                    # An exec probe whose command leaves a child holding its output would
                    # otherwise block kubelet's prober for that container forever.
                    "drain_exec_sync_io_timeout": "5s",
                    "netns_mounts_under_state_dir": True,
                    "cni": {
                        "bin_dirs": [str(self.binaries.cni_dir)],
                        "conf_dir": str(self.state_dir / "cni"),
                    },
                    "containerd": {
                        "default_runtime_name": "runc",
                        "runtimes": {
                            "runc": {
                                "runtime_type": "io.containerd.runc.v2",
                                "options": {
                                    "BinaryName": str(self.binaries.runc),
                                    "Root": str(self.run_dir / "runc"),
                                    "SystemdCgroup": False,
                                },
                            }
                        },
                    },
                },
                "io.containerd.cri.v1.images": {
                    "snapshotter": "overlayfs",
                    "pinned_images": {"sandbox": PAUSE_IMAGE},
                },
                "io.containerd.grpc.v1.cri": {
                    "stream_server_address": self.stream_address,
                    "stream_server_port": "0",
                },
            },
        }
        path = self.state_dir / "containerd.toml"
        path.write_text(tomli_w.dumps(config))
        return path

    def _write_cni_config(self) -> None:
        """One bridge for all nodes; this node's pods get 10.244.<index>.1-254 of the /16, with
        no gateway, masquerade or route: one L2 segment that never leaves the test bed."""
        cidr = network.node_pod_cidr(self.index)
        hosts = list(cidr.hosts())
        conf = {
            "cniVersion": "1.0.0",
            "name": "qktb",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": network.BRIDGE,
                    "isGateway": False,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        # Kept across a node's restart, as on a real node's disk: a restarted
                        # node handing out its dead pods' addresses again would meet ARP
                        # entries on the bridge that still name the dead pods' interfaces.
                        "dataDir": str(self.state_dir / "cni-ipam"),
                        "ranges": [
                            [
                                {
                                    "subnet": str(network.POD_CIDR),
                                    "rangeStart": str(hosts[0]),
                                    "rangeEnd": str(hosts[-1]),
                                }
                            ]
                        ],
                    },
                }
            ],
        }
        directory = self.state_dir / "cni"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "10-qktb.conflist").write_text(json.dumps(conf, indent=2))

    def _start_containerd(self) -> None:
        self._write_cni_config()
        config = self._containerd_config()
        self.processes["containerd"] = spawn(
            [self.binaries.containerd, f"--config={config}"], self.logs / "containerd.log"
        )
        wait_for(
            lambda: self._alive() and self._ctr("version").returncode == 0,
            30,
            f"containerd of {self.name}",
        )

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return imagestore.ctr(self.binaries, self.containerd_socket, *args)

    def _check_images(self) -> None:
        """Every image must be in the node's store (a copy of :mod:`testbed.imagestore`)."""
        present = set(self._ctr("images", "ls", "-q").stdout.split())
        missing = [n for names in IMAGE_ARCHIVES.values() for n in names if n not in present]
        if missing:
            raise RuntimeError(f"images {missing} missing in {self.name}'s containerd")

    # ---------------------------------------------------------------- kubelet

    def _create_cgroups(self) -> None:
        """Create the node's cgroup root in every hierarchy; cpuset needs its cpus and mems set."""
        for hierarchy in cgroup_hierarchies():
            path = hierarchy / self.cgroup.lstrip("/")
            path.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((hierarchy / name).read_text())

    def cgroup_pids(self) -> list[int]:
        """Every process in the node's cgroups (of the pids hierarchy, which holds them all)."""
        pids: set[int] = set()
        for hierarchy in cgroup_hierarchies():
            root = hierarchy / self.cgroup.lstrip("/")
            if root.exists():
                for procs in root.rglob("cgroup.procs"):
                    with contextlib.suppress(OSError):
                        pids.update(int(p) for p in procs.read_text().split())
        return sorted(pids)

    def _kubelet_config(self) -> Path:
        cert, key = node_client_cert(self.pki, self.state_dir / "pki", self.name)
        kubeconfig = self.pki.write_kubeconfig(
            self.state_dir / "kubelet.kubeconfig", self.server, client=(cert, key)
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": self.ip,
            "healthzPort": KUBELET_HEALTHZ_PORT,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup,
            # kubelet 1.37 still runs on cgroup v1 when told to (a warning only).
            "failCgroupV1": False,
            "failSwapOn": False,
            "protectKernelDefaults": True,
            "makeIPTablesUtilChains": False,
            # Without CAP_SYS_RESOURCE kubelet cannot lower its own score to the default -999.
            "oomScoreAdj": 0,
            "clusterDNS": [self.cluster_dns],
            "clusterDomain": self.cluster_domain,
            "resolvConf": "",
            "podLogsDir": str(self.state_dir / "pod-logs"),
            "volumePluginDir": str(self.state_dir / "volume-plugins"),
            # Side-loaded images are never pulled again: never collect them, never evict for disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            # Renewal every 2 s against the control plane's 12 s node-monitor grace period.
            "nodeLeaseDurationSeconds": 8,
            "nodeStatusReportFrequency": "10s",
            "serializeImagePulls": False,
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
        }
        path = self.state_dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        return kubeconfig

    def _namespace_script(self) -> Path:
        """The shell run in kubelet's own mount namespace before it becomes kubelet."""
        sysctls = self.state_dir / "sysctl"
        lines = ["set -eu"]
        for name, value in KERNEL_DEFAULTS.items():
            file = sysctls / name.replace("/", ".")
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(value + "\n")
            target = f"/proc/sys/{name}"
            lines.append(f"mount --bind {file} {target}")
            lines.append(f"mount -o remount,bind,ro {target}")
        device_plugins = self.state_dir / "device-plugins"
        device_plugins.mkdir(exist_ok=True)
        lines.append(f"mount --bind {device_plugins} {DEVICE_PLUGINS_DIR}")
        lines.append('exec "$@"')
        script = self.state_dir / "kubelet-namespace.sh"
        script.write_text("\n".join(lines) + "\n")
        return script

    def _prepare_host_mounts(self) -> None:
        """Make kubelet's root dir an rshared bind mount, and the device plugins mount point."""
        self.kubelet_dir.mkdir(parents=True, exist_ok=True)
        if self.kubelet_dir not in _mounts_under(self.kubelet_dir):
            subprocess.run(["mount", "--bind", self.kubelet_dir, self.kubelet_dir], check=True)
            subprocess.run(["mount", "--make-rshared", self.kubelet_dir], check=True)
        created = []
        for path in [*reversed(DEVICE_PLUGINS_DIR.parents), DEVICE_PLUGINS_DIR]:
            if not path.exists():
                path.mkdir()
                created.append(str(path))
        if created:
            with open(self.mountpoints_log, "a") as log:
                log.writelines(p + "\n" for p in created)

    def _start_kubelet(self) -> None:
        kubeconfig = self._kubelet_config()
        self._prepare_host_mounts()
        argv: list[str | Path] = [
            *self._in_node_network(),
            "unshare",
            "--mount",
            "--propagation",
            "unchanged",
            "--",
            "sh",
            self._namespace_script(),
            self.binaries.kubelet,
            f"--config={self.state_dir / 'kubelet.yaml'}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.kubelet_dir}",
            f"--cert-dir={self.state_dir / 'pki'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.ip}",
            "--v=1",
        ]
        self.processes["kubelet"] = spawn(argv, self.logs / "kubelet.log")

    def _in_node_network(self) -> list[str]:
        return ["nsenter", f"--net={network.netns_path(network.node_netns(self.index))}", "--"]

    def _start_csi_plugin(self) -> None:
        """The ceph-csi node plugin stand-in, in the node's network and its cgroup (like the
        plugin's pod on a real node), so node loss takes it and its Ceph clients."""
        repo = str(Path(__file__).resolve().parent.parent)
        pythonpath = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
        plugin = spawn(
            [
                *self._in_node_network(),
                sys.executable,
                "-m",
                "testbed.csinode",
                f"--node={self.name}",
                f"--kubelet-dir={self.kubelet_dir}",
                f"--state-dir={self.run_dir / 'csi'}",
                f"--kubeconfig={self.admin_kubeconfig}",
            ],
            self.logs / "csi-node.log",
            env={**os.environ, "PYTHONPATH": pythonpath},
        )
        self.processes["csi-node"] = plugin
        for hierarchy in cgroup_hierarchies():
            system = hierarchy / self.cgroup.lstrip("/") / "system"
            system.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (system / name).write_text((system.parent / name).read_text())
            (system / "cgroup.procs").write_text(str(plugin.pid))

    # ---------------------------------------------------------------- lifecycle

    def _alive(self) -> bool:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} of {self.name} exited with {proc.returncode}; see {self.logs}"
                )
        return True

    def check_alive(self) -> None:
        """Raise if kubelet or containerd exited."""
        self._alive()

    def container_pid(self, container_id: str) -> int:
        """The host PID of a running container's first process, from runc's state
        (``<runc root>/<containerd namespace>/<id>/state.json``)."""
        state = self.run_dir / "runc" / "k8s.io" / container_id / "state.json"
        return int(json.loads(state.read_text())["init_process_pid"])

    def shim_pids(self) -> list[int]:
        """The node's containerd shims: the shim binary serving this node's containerd."""
        return [
            pid for pid, socket in _shims(self.binaries).items() if socket == self.containerd_socket
        ]

    def freeze(self, frozen: bool = True) -> None:
        """A hung node: stop (or resume) kubelet, containerd, the CSI plugin and the shims by PID
        and freeze (or thaw) the node's cgroup, so its pods neither run nor die."""
        freezer = CGROUP_ROOT / "freezer" / self.cgroup.lstrip("/") / "freezer.state"
        daemons = [p.pid for p in self.processes.values()] + self.shim_pids()
        if frozen:
            _kill_all(daemons, signal.SIGSTOP)
            freezer.write_text("FROZEN")
            wait_for(lambda: freezer.read_text().strip() == "FROZEN", 10, f"{self.name} frozen")
        else:
            with contextlib.suppress(FileNotFoundError):  # a node whose start failed early
                freezer.write_text("THAWED")
            _kill_all(daemons, signal.SIGCONT)

    def stop(self, kill: bool = False, grace: float = 10.0) -> None:
        """Node loss: stop kubelet and containerd, then every shim and every process of the
        node's cgroups (SIGTERM, SIGKILL after ``grace`` s; SIGKILL at once when ``kill``),
        then unmount what they left and clear the run folder, as a reboot would."""
        self.freeze(frozen=False)  # a hung node's processes take signals only once thawed
        for name in ("kubelet", "csi-node", "containerd"):
            proc = self.processes.pop(name, None)
            if proc is not None:
                if kill:
                    proc.kill()
                    proc.wait()
                else:
                    stop(proc, grace)
        signals = [signal.SIGKILL] if kill else [signal.SIGTERM, signal.SIGKILL]
        for sig in signals:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                pids = self.shim_pids() + self.cgroup_pids()
                if not pids:
                    break
                _kill_all(pids, sig)
                time.sleep(0.1)
        pids = self.shim_pids() + self.cgroup_pids()
        if pids:
            raise RuntimeError(f"processes {pids} of {self.name} survived SIGKILL")
        # Pods' volumes first (a staged RBD volume's ext4 on a loop device), then the loop
        # devices on rbd-fuse files, then the rest of the node's run folder.
        unmount_under(self.kubelet_dir)
        cephcsi.clear_leftovers(self.run_dir)
        unmount_under(self.run_dir)
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.run_dir)], check=False)
