"""A throwaway Ceph cluster (one mon, one memstore OSD) on a loopback address.

Built from Debian's packages without systemd or cephadm, so tests exercise real daemons
(cephx, caps, watchers, blocklisting) in a few seconds and leave nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import testbed
from quorumkeeper.ceph.client import CephTarget

MON_PORT = 6789

# Settings measured to bring one mon + one memstore OSD to HEALTH_OK fast and keep it there.
CONF_TEMPLATE = """\
[global]
fsid = {fsid}
mon host = [v2:{ip}:3300,v1:{ip}:{port}]
public addr = {ip}
cluster addr = {ip}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {dir}/admin.keyring
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
log file = {dir}/log/$name.log
mon cluster log file = {dir}/log/cluster.log
pid file = {dir}/run/$name.pid
log to stderr = false
err to stderr = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon mgr mkfs grace = 3600
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.1
ms bind ipv6 = false

[mon]
mon data = {dir}/mon/$id

[osd]
osd data = {dir}/osd/$id
keyring = {dir}/osd/$id/keyring
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd max object name len = 256
osd max object namespace len = 64
osd heartbeat grace = 5
"""


def _run(args: list[str], timeout: float = 30.0) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed (rc {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll `cond` until true; raise naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie counts: PID 1 reaps late here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def target_for(cluster: MiniCluster, user: ClientUser, timeout: float = 5.0) -> CephTarget:
    return CephTarget(monitors=[cluster.mon_addr], user=user.name, key=user.key, timeout=timeout)


def csi_caps(pool: str) -> dict[str, str]:
    """The caps ceph-csi's docs give its RBD user."""
    return {
        "mon": "profile rbd",
        "osd": f"profile rbd pool={pool}",
        "mgr": f"profile rbd pool={pool}",
    }


@dataclass
class ClientUser:
    name: str  # without the "client." prefix, as ceph-csi's userID
    key: str
    keyring: Path


@dataclass
class MiniCluster:
    """Handle on a running mini cluster; all addresses and credentials a test needs."""

    dir: Path
    ip: str
    fsid: str = field(default_factory=lambda: str(uuid.uuid4()))
    pool: str = "k8s"
    memstore_bytes: int = 1 << 30
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    admin_key: str = ""
    _rados: Any = None

    @property
    def mon_addr(self) -> str:
        return f"{self.ip}:{MON_PORT}"

    @property
    def conf(self) -> Path:
        return self.dir / "ceph.conf"

    # --- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        for sub in ("run", "log", "mon/a", "osd/0"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            CONF_TEMPLATE.format(
                fsid=self.fsid,
                ip=self.ip,
                port=MON_PORT,
                dir=self.dir,
                memstore_bytes=self.memstore_bytes,
            )
        )
        mon_keyring = self.dir / "mon.keyring"
        admin_keyring = self.dir / "admin.keyring"
        _run(
            [
                "ceph-authtool",
                "--create-keyring",
                str(mon_keyring),
                "--gen-key",
                "-n",
                "mon.",
                "--cap",
                "mon",
                "allow *",
            ]
        )
        _run(
            [
                "ceph-authtool",
                "--create-keyring",
                str(admin_keyring),
                "--gen-key",
                "-n",
                "client.admin",
                "--cap",
                "mon",
                "allow *",
                "--cap",
                "osd",
                "allow *",
                "--cap",
                "mgr",
                "allow *",
            ]
        )
        _run(["ceph-authtool", str(mon_keyring), "--import-keyring", str(admin_keyring)])
        self.admin_key = _run(
            ["ceph-authtool", str(admin_keyring), "-n", "client.admin", "-p"]
        ).strip()
        monmap = self.dir / "monmap"
        _run(
            [
                "monmaptool",
                "--create",
                "--fsid",
                self.fsid,
                "--addv",
                "a",
                f"[v2:{self.ip}:3300,v1:{self.ip}:{MON_PORT}]",
                str(monmap),
            ]
        )
        _run(
            [
                "ceph-mon",
                "-c",
                str(self.conf),
                "--mkfs",
                "-i",
                "a",
                "--monmap",
                str(monmap),
                "--keyring",
                str(mon_keyring),
            ]
        )
        self._spawn("mon.a", ["ceph-mon", "-f", "-c", str(self.conf), "-i", "a"])

        import rados  # type: ignore[import-not-found]  # only hosts with Ceph get here

        conn = rados.Rados(
            conffile="/dev/null",
            rados_id="admin",
            conf={
                "mon_host": self.mon_addr,
                "key": self.admin_key,
                "client_mount_timeout": str(int(timeout)),
                "rados_osd_op_timeout": str(int(timeout)),
                "rados_mon_op_timeout": str(int(timeout)),
            },
        )
        conn.connect(timeout=int(timeout))
        self._rados = conn

        osd_uuid = str(uuid.uuid4())
        osd_key = _run(["ceph-authtool", "--gen-print-key"]).strip()
        secrets = json.dumps({"cephx_secret": osd_key})
        self.mon_command({"prefix": "osd new", "uuid": osd_uuid, "id": 0}, inbuf=secrets)
        (self.dir / "osd/0/keyring").write_text(f"[osd.0]\n\tkey = {osd_key}\n")
        _run(["ceph-osd", "-c", str(self.conf), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid])
        self._spawn("osd.0", ["ceph-osd", "-f", "-c", str(self.conf), "-i", "0"])

        self.mon_command(
            {"prefix": "osd pool create", "pool": self.pool, "pg_num": 8, "pgp_num": 8}
        )
        self.mon_command({"prefix": "osd pool application enable", "pool": self.pool, "app": "rbd"})
        wait_until(self._healthy, timeout, "HEALTH_OK")
        with self._rados.open_ioctx(self.pool) as ioctx:
            ioctx.write_full("quorumkeeper-ready", b"")  # blocks until the PGs are active
            ioctx.remove_object("quorumkeeper-ready")

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.dir / "log" / f"{name}.stdout").open("wb")
        self.procs[name] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _healthy(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.dir}/log")
        # Without a mgr the pgmap stays empty, so PG readiness is proven by a write instead.
        status = json.loads(self.mon_command({"prefix": "status", "format": "json"}))
        return bool(
            status["health"]["status"] == "HEALTH_OK" and status["osdmap"]["num_up_osds"] == 1
        )

    def stop(self) -> None:
        if self._rados is not None:
            self._rados.shutdown()
            self._rados = None
        # SIGKILL: memstore data is disposable and a graceful OSD stop waits ~5 s on the mon.
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(timeout=10)
        self.procs.clear()

    # --- helpers for tests -------------------------------------------------------------

    def mon_command(self, cmd: dict[str, Any], inbuf: str = "", timeout: int = 15) -> str:
        rc, out, err = self._rados.mon_command(json.dumps(cmd), inbuf.encode(), timeout=timeout)
        if rc != 0:
            raise RuntimeError(f"{cmd['prefix']} failed ({rc}): {err}")
        return str(out.decode())

    def create_user(self, name: str, caps: dict[str, str]) -> ClientUser:
        """Create (or re-cap) client.<name>; returns its key and a keyring file."""
        flat = [part for entity, cap in caps.items() for part in (entity, cap)]
        out = self.mon_command(
            {
                "prefix": "auth get-or-create",
                "entity": f"client.{name}",
                "caps": flat,
                "format": "json",
            }
        )
        self.mon_command({"prefix": "auth caps", "entity": f"client.{name}", "caps": flat})
        key = json.loads(out)[0]["key"]
        keyring = self.dir / f"client.{name}.keyring"
        keyring.write_text(f"[client.{name}]\n\tkey = {key}\n")
        return ClientUser(name=name, key=key, keyring=keyring)

    def cli_args(self, user: ClientUser | None = None) -> list[str]:
        """Flags that point Ceph's CLIs at this cluster without a config file."""
        name, key = (user.name, user.key) if user else ("admin", self.admin_key)
        return ["-c", "/dev/null", "-m", self.mon_addr, "--id", name, "--key", key]

    def rbd(self, *args: str, user: ClientUser | None = None, timeout: float = 30) -> str:
        return _run(["rbd", *self.cli_args(user), *args], timeout=timeout)

    def rbd_json(self, *args: str, user: ClientUser | None = None) -> Any:
        out = self.rbd(*args, "--format", "json", user=user)
        return json.loads(out) if out.strip() else []

    def blocklist_clear(self) -> None:
        self.mon_command({"prefix": "osd blocklist clear"})

    def create_rbd_pool(self, name: str) -> None:
        self.mon_command({"prefix": "osd pool create", "pool": name, "pg_num": 8})
        self.mon_command({"prefix": "osd pool application enable", "pool": name, "app": "rbd"})

    def csi_journal_add(
        self, pool: str, instance: str, request: str, uuid: str, image: str, snapshot: bool = False
    ) -> None:
        """Record `image` in ceph-csi's omap journal exactly as its CreateVolume (or
        CreateSnapshot) does (internal/journal/voljournal.go, ReserveName): the directory
        `csi.volumes.<instance>` maps `csi.volume.<request>` to the uuid, and the object
        `csi.volume.<uuid>` holds the request and image names. ceph-csi itself can't run here
        (no containers, no krbd), so this writes its records in its place."""
        import rados  # only hosts with Ceph get here

        kind, directory, name_key = (
            ("snap", "snaps", "csi.snapname") if snapshot else ("volume", "volumes", "csi.volname")
        )
        with self._rados.open_ioctx(pool) as ioctx:
            records = {
                f"csi.{directory}.{instance}": {f"csi.{kind}.{request}": uuid},
                f"csi.{kind}.{uuid}": {
                    name_key: request,
                    "csi.imagename": image,
                    "csi.imageid": f"id-{uuid[:8]}",
                },
            }
            for obj, values in records.items():
                with rados.WriteOpCtx() as op:
                    ioctx.set_omap(op, tuple(values), tuple(v.encode() for v in values.values()))
                    ioctx.operate_write_op(op, obj)


HOLDER = Path(testbed.__file__).with_name("rbd_holder.py")


class Holder:
    """A lock holder in its own process, so it can die like a node."""

    def __init__(self, cluster: MiniCluster, user: ClientUser, pool: str, image: str, cookie: str):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HOLDER),
                cluster.mon_addr,
                user.name,
                user.key,
                pool,
                image,
                cookie,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        assert self.address, "holder did not lock the image"

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        wait_until(lambda: process_gone(self.proc.pid), 10, "holder to die")
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
