"""Pod network: one bridge in the root namespace; the nodes' CNI bridge plugin attaches pods to it.

Pod IPs (10.244.0.0/16) exist only on the bridge and inside the pods' namespaces; pods get no
default route, so nothing they send can leave this machine's test bed.

Each node also gets a namespace whose address is its InternalIP on the bridge: its kubelet and
its own Ceph clients run there, so Ceph tells nodes apart by address as on real machines.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

BRIDGE = "qktb0"
POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
# The bridge's own address: where the host reaches pods and where CoreDNS listens for them.
BRIDGE_IP = "10.244.0.1"
BRIDGE_MAC = "02:71:6b:74:62:30"  # locally administered
NETNS_PREFIX = "qktb-"
VETH_PREFIX = "qktb"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def node_pod_cidr(index: int) -> ipaddress.IPv4Network:
    """Node ``index`` (1-based) allocates pod IPs from 10.244.<index>.0/24."""
    return ipaddress.IPv4Network(f"10.244.{index}.0/24")


def create_bridge() -> None:
    """Create the pod bridge with its address; idempotent.

    Its MAC address is fixed: a bridge without one takes the lowest of its ports', so every pod
    joining or leaving could change it, and the nodes and pods that cached the old one for
    10.244.0.1 (their way to the control plane, Ceph and CoreDNS) would lose packets until their
    ARP entries expire.
    """
    if _ip("link", "show", BRIDGE, check=False).returncode != 0:
        _ip("link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge")
    _ip("addr", "replace", f"{BRIDGE_IP}/{POD_CIDR.prefixlen}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def delete_bridge() -> None:
    _ip("link", "del", BRIDGE, check=False)


def netns_path(name: str) -> Path:
    return Path("/run/netns") / name


def node_ip(index: int) -> str:
    """Node ``index``'s (1-based) InternalIP: 10.244.0.<10 + index>, on the pod bridge."""
    return str(POD_CIDR.network_address + 10 + index)


def node_netns(index: int) -> str:
    return f"{NETNS_PREFIX}node-{index}"


def create_node_network(index: int) -> str:
    """Create netns ``qktb-node-<index>``, where node ``index``'s kubelet and Ceph clients run.

    Its eth0 holds :func:`node_ip` on the pod bridge, so the node reaches its pods and CoreDNS
    on one L2 segment, the API server reaches the kubelet, and Ceph sees the node's clients at
    the node's own InternalIP, as on real machines.  All of 127.0.0.0/8 but its own 127.0.0.1
    is routed to the bridge's address: the control plane's and the Ceph mini cluster's loopback
    addresses are reached from the node's address.  ``route_localnet`` on the bridge and on
    eth0 lets loopback addresses cross; nothing else on the host changes.
    """
    netns, veth, ip = node_netns(index), f"{VETH_PREFIX}n{index}", node_ip(index)
    _ip("netns", "del", netns, check=False)
    _ip("link", "del", veth, check=False)
    _ip("netns", "add", netns)
    _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    _ip("link", "set", veth, "master", BRIDGE, "up")
    _sysctl(None, f"net.ipv4.conf.{BRIDGE}.route_localnet=1")
    _sysctl(netns, "net.ipv4.conf.eth0.route_localnet=1")
    _sysctl(netns, "net.ipv6.conf.all.disable_ipv6=1")
    _ip("-n", netns, "addr", "add", f"{ip}/{POD_CIDR.prefixlen}", "dev", "eth0")
    _ip("-n", netns, "link", "set", "eth0", "up")
    _ip("-n", netns, "link", "set", "lo", "up")
    _ip("-n", netns, "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local")
    _ip("-n", netns, "route", "add", "127.0.0.0/8", "via", BRIDGE_IP, "dev", "eth0", "src", ip)
    return netns


def delete_node_network(index: int) -> None:
    _ip("netns", "del", node_netns(index), check=False)
    _ip("link", "del", f"{VETH_PREFIX}n{index}", check=False)


def _sysctl(netns: str | None, setting: str) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "sysctl", "-qw", setting], check=True)


def delete_node_networks() -> None:
    """Remove every node namespace and veth this test bed created (also an earlier, killed run's;
    pods' namespaces go with their containerd)."""
    for entry in _ip("-o", "netns", "list").stdout.splitlines():
        name = entry.split()[0] if entry.strip() else ""
        if name.startswith(NETNS_PREFIX):
            _ip("netns", "del", name, check=False)
    for entry in _ip("-o", "link", "show").stdout.splitlines():
        name = entry.split(":")[1].strip().split("@")[0]
        if name.startswith(VETH_PREFIX) and name != BRIDGE:
            _ip("link", "del", name, check=False)
