"""Pod network: one bridge in the root namespace, a network namespace and veth pair per pod.

Pod IPs (10.244.0.0/16) exist only on the bridge and inside the namespaces created here; pods get
no default route, so nothing they send can leave this machine's test bed.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

BRIDGE = "qktb0"
POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
# The bridge's own address: where the host reaches pods and where CoreDNS listens for them.
BRIDGE_IP = "10.244.0.1"
NETNS_PREFIX = "qktb-"
VETH_PREFIX = "qktb"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def node_pod_cidr(index: int) -> ipaddress.IPv4Network:
    """Node ``index`` (1-based) allocates pod IPs from 10.244.<index>.0/24."""
    return ipaddress.IPv4Network(f"10.244.{index}.0/24")


def create_bridge() -> None:
    """Create the pod bridge with its address; idempotent."""
    if _ip("link", "show", BRIDGE, check=False).returncode != 0:
        _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "replace", f"{BRIDGE_IP}/{POD_CIDR.prefixlen}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def delete_bridge() -> None:
    _ip("link", "del", BRIDGE, check=False)


def netns_path(name: str) -> Path:
    return Path("/run/netns") / name


def create_pod_network(key: str, pod_ip: str) -> str:
    """Create netns ``qktb-<key>`` whose eth0 holds ``pod_ip`` on the bridge; returns its name."""
    netns, veth = NETNS_PREFIX + key, VETH_PREFIX + key
    delete_pod_network(key)
    _ip("netns", "add", netns)
    _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    _ip("link", "set", veth, "master", BRIDGE, "up")
    _ip("-n", netns, "addr", "add", f"{pod_ip}/{POD_CIDR.prefixlen}", "dev", "eth0")
    _ip("-n", netns, "link", "set", "eth0", "up")
    _ip("-n", netns, "link", "set", "lo", "up")
    # IPv4 only: no IPv6 link-local chatter from pods.
    subprocess.run(
        ["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
        check=True,
    )
    return netns


def delete_pod_network(key: str) -> None:
    """Remove a pod's namespace and veth pair; a no-op when already gone."""
    _ip("netns", "del", NETNS_PREFIX + key, check=False)
    _ip("link", "del", VETH_PREFIX + key, check=False)


def delete_all_pod_networks() -> None:
    """Remove every namespace and veth this test bed created, e.g. after a node agent was killed."""
    for entry in _ip("-o", "netns", "list").stdout.splitlines():
        name = entry.split()[0] if entry.strip() else ""
        if name.startswith(NETNS_PREFIX):
            _ip("netns", "del", name, check=False)
    for entry in _ip("-o", "link", "show").stdout.splitlines():
        name = entry.split(":")[1].strip().split("@")[0]
        if name.startswith(VETH_PREFIX) and name != BRIDGE:
            _ip("link", "del", name, check=False)
