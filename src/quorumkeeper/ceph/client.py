"""The one place that talks to Ceph: a typed, time-bounded wrapper over librados/librbd.

Debian's `rados`/`rbd` bindings ship no type information, so everything untyped stays in this
module. Every call runs under a wall-clock deadline on top of librados' own op timeouts,
because some librbd paths (e.g. exclusive-lock retries) can otherwise block forever.
"""

from __future__ import annotations

import base64
import errno
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quorumkeeper.errors import Refused

rados: Any = None
rbd: Any = None
"""librados' and librbd's Python bindings, imported by `_bindings` when a session opens: loading
them holds about 22 MB of RSS, which a process that never talks to Ceph (the operator, whose
command line shares this package's CLI) should not carry."""


def _bindings() -> bool:
    """Import the bindings once; False when the host has none."""
    global rados, rbd
    if rados is None:
        try:
            import rados as librados  # type: ignore[import-not-found]
            import rbd as librbd  # type: ignore[import-not-found]
        except ImportError:  # pragma: no cover - depends on the host
            return False
        rados, rbd = librados, librbd
    return True


T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0
_MONITOR = re.compile(r"(v[12]:)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?")


def check_monitor(monitor: str) -> str:
    """Accept HOST, HOST:PORT or [IPv6]:PORT, as ceph-csi's config and `-m` take them."""
    if not _MONITOR.fullmatch(monitor):
        raise ValueError(f"monitor {monitor!r} is not HOST[:PORT] (e.g. 10.0.0.1:6789)")
    return monitor


class CephError(Refused):
    """A Ceph request failed or was refused; the message names the input at fault and how to
    fix it, and nothing was changed by the request that failed."""

    def __init__(self, message: str, *, field: str | None = None, errno_: int | None = None):
        super().__init__(message, field=field)
        self.errno = errno_


class CephTarget(BaseModel):
    """How to reach a Ceph cluster as one client user (what ceph-csi's Secret holds)."""

    model_config = ConfigDict(frozen=True)

    monitors: list[str] = Field(min_length=1)
    user: str = Field(min_length=1, description="client id without the 'client.' prefix")
    key: str = Field(min_length=1)
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=300)

    @field_validator("user")
    @classmethod
    def _strip_prefix(cls, v: str) -> str:
        return v.removeprefix("client.")

    @field_validator("key")
    @classmethod
    def _key_form(cls, v: str) -> str:
        try:
            base64.b64decode(v, validate=True)
        except ValueError:
            raise ValueError(
                "not a cephx key: expected base64 as `ceph auth get-key client.USER` prints it"
            ) from None
        return v

    @field_validator("monitors")
    @classmethod
    def _monitor_form(cls, v: list[str]) -> list[str]:
        return [check_monitor(m) for m in v]


@dataclass(frozen=True)
class Locker:
    """One advisory lock holder on an image."""

    client: str  # e.g. "client.4103"
    cookie: str
    address: str  # "ip:port/nonce", what gets blocklisted


@dataclass(frozen=True)
class Watcher:
    client: str
    address: str


@dataclass(frozen=True)
class Snapshot:
    name: str
    protected: bool


@dataclass(frozen=True)
class ImageInfo:
    """What librbd reports of one image; `children` are `pool/image` of its clones."""

    name: str
    size: int
    created: datetime
    lockers: tuple[Locker, ...]
    watchers: tuple[Watcher, ...]
    snapshots: tuple[Snapshot, ...] = ()
    children: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrashEntry:
    """An image in the RBD trash; librbd refuses to remove it before `deferred_until`."""

    id: str
    name: str
    source: str  # USER, MIRRORING, MIGRATION, REMOVING
    moved: datetime
    deferred_until: datetime


def plain_address(address: str) -> str:
    """'v1:10.0.0.5:0/123' -> '10.0.0.5:0/123': lock, watcher and client addresses compare equal."""
    return address.removeprefix("v1:").removeprefix("v2:")


def address_ip(address: str) -> str:
    """The host part of a Ceph entity address like '10.0.0.5:0/12345' or 'v1:[::1]:0/7'."""
    addr = address.split("/", 1)[0].removeprefix("v1:").removeprefix("v2:")
    host = addr.rpartition(":")[0] or addr
    return host.strip("[]")


def _bounded(what: str, timeout: float, fn: Callable[[], T]) -> T:
    """Run `fn` with a hard deadline; a stuck librados call is abandoned in a daemon thread."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, name=f"ceph:{what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise CephError(f"{what} did not finish within {timeout:g}s", errno_=errno.ETIMEDOUT)
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    return abs(code) if isinstance(code, int) else None


class CephClient:
    """A connected client session; use `connect(target)` as a context manager."""

    def __init__(self, target: CephTarget, conn: Any) -> None:
        self.target = target
        self._conn = conn

    # --- cluster-level -----------------------------------------------------------------

    def mon_command(self, cmd: dict[str, Any], inbuf: bytes = b"") -> tuple[int, str, str]:
        """Send one mon command; returns (rc, stdout, status) with rc as a negative errno."""
        t = self.target.timeout
        rc, out, status = _bounded(
            str(cmd.get("prefix")),
            t + 1,
            lambda: self._conn.mon_command(json.dumps(cmd), inbuf, timeout=int(t)),
        )
        return int(rc), bytes(out).decode(), str(status)

    def mon_json(self, cmd: dict[str, Any]) -> Any:
        rc, out, status = self.mon_command({**cmd, "format": "json"})
        if rc != 0:
            raise CephError(f"`{cmd['prefix']}` failed: {status} ({rc})", errno_=-rc)
        return json.loads(out) if out.strip() else None

    def pools(self) -> dict[str, dict[str, Any]]:
        """Pool name -> its `osd pool ls detail` record (carries application_metadata)."""
        return {
            p["pool_name"]: p for p in self.mon_json({"prefix": "osd pool ls", "detail": "detail"})
        }

    def blocklist_add(self, address: str, expire_s: int) -> None:
        rc, _, status = self.mon_command(
            {
                "prefix": "osd blocklist",
                "blocklistop": "add",
                "addr": address,
                "expire": float(expire_s),
            }
        )
        if rc != 0:
            raise CephError(
                f"blocklisting {address} failed: {status} ({rc})", field="caps", errno_=-rc
            )

    def blocklist(self) -> list[str]:
        """Current blocklist entries (addresses)."""
        rc, out, status = self.mon_command({"prefix": "osd blocklist ls", "format": "json"})
        if rc != 0:
            raise CephError(f"`osd blocklist ls` failed: {status} ({rc})", errno_=-rc)
        # Pacific prints two JSON arrays back to back (entries, then range entries).
        decoder = json.JSONDecoder()
        entries: list[str] = []
        pos, text = 0, out.strip()
        while pos < len(text):
            chunk, pos = decoder.raw_decode(text, pos)
            entries += [e["addr"] for e in chunk if isinstance(e, dict) and "addr" in e]
            while pos < len(text) and text[pos].isspace():
                pos += 1
        return entries

    def user_caps(self, user: str) -> dict[str, str]:
        """Caps of client.<user>; needs admin-level mon rights."""
        rc, out, status = self.mon_command(
            {"prefix": "auth get", "entity": f"client.{user}", "format": "json"}
        )
        if -rc == errno.ENOENT:
            raise CephError(f"client.{user} does not exist", field="user", errno_=-rc)
        if rc != 0:
            raise CephError(
                f"reading caps of client.{user} failed: {status} ({rc})", field="admin", errno_=-rc
            )
        caps = json.loads(out)[0].get("caps", {})
        return {str(k): str(v) for k, v in caps.items()}

    def write_and_remove_object(self, pool: str, name: str) -> None:
        with self._ioctx(pool) as ioctx:

            def probe() -> None:
                ioctx.write_full(name, b"quorumkeeper write probe")
                ioctx.remove_object(name)

            self._call(f"write probe object to {pool}", probe, pool=pool)

    # --- images ------------------------------------------------------------------------

    @contextmanager
    def _ioctx(self, pool: str) -> Iterator[Any]:
        ioctx = self._call(f"open pool {pool}", lambda: self._conn.open_ioctx(pool), pool=pool)
        try:
            yield ioctx
        finally:
            ioctx.close()

    def _call(self, what: str, fn: Callable[[], T], *, pool: str = "", image: str = "") -> T:
        try:
            return _bounded(what, self.target.timeout + 1, fn)
        except CephError:
            raise
        except Exception as exc:
            code = _errno_of(exc)
            if code == errno.ENOENT and image:
                raise CephError(
                    f"image {pool}/{image} does not exist; list images with `rbd ls -p {pool}`",
                    field="image",
                    errno_=code,
                ) from exc
            if code == errno.ENOENT and pool:
                raise CephError(
                    f"pool {pool!r} does not exist; create it with `ceph osd pool create {pool}`"
                    f" and `rbd pool init {pool}`",
                    field="pool",
                    errno_=code,
                ) from exc
            if code in (errno.EACCES, errno.EPERM):
                raise CephError(
                    f"{what}: permission denied for client.{self.target.user}; run "
                    "`quorumkeeper ceph check` to see which caps are missing",
                    field="caps",
                    errno_=code,
                ) from exc
            raise CephError(f"{what} failed: {exc}", errno_=code) from exc

    def list_images(self, pool: str) -> list[str]:
        with self._ioctx(pool) as ioctx:
            names: list[str] = self._call(
                f"list images in {pool}", lambda: list(rbd.RBD().list(ioctx)), pool=pool
            )
            return [str(n) for n in names]

    def image_info(self, pool: str, image: str) -> ImageInfo:
        with self._ioctx(pool) as ioctx:

            def read() -> ImageInfo:
                with rbd.Image(ioctx, image, read_only=True) as img:
                    locks = img.list_lockers() or {"lockers": []}
                    created = img.create_timestamp()
                    return ImageInfo(
                        name=image,
                        size=int(img.size()),
                        created=created.replace(tzinfo=UTC),
                        lockers=tuple(
                            Locker(client=str(c), cookie=str(k), address=str(a))
                            for c, k, a in locks["lockers"]
                        ),
                        watchers=tuple(
                            Watcher(client=f"client.{w['id']}", address=str(w["addr"]))
                            for w in img.watchers_list()
                        ),
                        snapshots=tuple(
                            Snapshot(str(s["name"]), bool(img.is_protected_snap(s["name"])))
                            for s in img.list_snaps()
                        ),
                        children=tuple(f"{c['pool']}/{c['image']}" for c in img.list_children2()),
                        metadata={str(k): str(v) for k, v in img.metadata_list()},
                    )

            return self._call(f"read {pool}/{image}", read, pool=pool, image=image)

    def break_lock(self, pool: str, image: str, locker: Locker) -> None:
        with self._ioctx(pool) as ioctx:

            def brk() -> None:
                with rbd.Image(ioctx, image) as img:
                    img.break_lock(locker.client, locker.cookie)

            self._call(
                f"remove lock {locker.cookie!r} on {pool}/{image}", brk, pool=pool, image=image
            )

    # --- trash ------------------------------------------------------------------------

    def trash_list(self, pool: str) -> list[TrashEntry]:
        with self._ioctx(pool) as ioctx:
            entries = self._call(
                f"list the trash of {pool}", lambda: list(rbd.RBD().trash_list(ioctx)), pool=pool
            )
        return [
            TrashEntry(
                id=str(e["id"]),
                name=str(e["name"]),
                source=str(e["source"]),
                moved=e["deletion_time"].replace(tzinfo=UTC),
                deferred_until=e["deferment_end_time"].replace(tzinfo=UTC),
            )
            for e in entries
        ]

    def trash_move(self, pool: str, image: str, deferment_s: int) -> None:
        """Move `image` to the trash; librbd keeps it restorable for `deferment_s` seconds."""
        with self._ioctx(pool) as ioctx:
            self._call(
                f"move {pool}/{image} to the trash",
                lambda: rbd.RBD().trash_move(ioctx, image, deferment_s),
                pool=pool,
                image=image,
            )

    def trash_remove(self, pool: str, entry: TrashEntry) -> None:
        """Remove a trash entry for good; librbd refuses (EPERM) before its deferment ends."""
        with self._ioctx(pool) as ioctx:
            self._call(
                f"remove {entry.name} ({entry.id}) from the trash of {pool}",
                lambda: rbd.RBD().trash_remove(ioctx, entry.id),
                pool=pool,
            )

    # --- objects (ceph-csi's journal) -------------------------------------------------

    def omap(self, pool: str, obj: str) -> dict[str, bytes] | None:
        """Every omap key of `pool`/`obj`, or None if the object does not exist."""
        with self._ioctx(pool) as ioctx:

            def read() -> dict[str, bytes] | None:
                values: dict[str, bytes] = {}
                after = ""
                while True:
                    with rados.ReadOpCtx() as op:
                        it, _ = ioctx.get_omap_vals(op, after, "", 1000)
                        try:
                            ioctx.operate_read_op(op, obj)
                        except rados.ObjectNotFound:
                            return None
                        page = {str(k): bytes(v) for k, v in it}
                    values.update(page)
                    if len(page) < 1000:
                        return values
                    after = max(page)

            return self._call(f"read omap of {pool}/{obj}", read, pool=pool)

    def object_names(self, pool: str, prefix: str) -> list[str]:
        """Names of the RADOS objects in `pool` (default namespace) starting with `prefix`."""
        with self._ioctx(pool) as ioctx:
            return self._call(
                f"list objects in {pool}",
                lambda: sorted(
                    str(o.key) for o in ioctx.list_objects() if str(o.key).startswith(prefix)
                ),
                pool=pool,
            )

    # --- who is who ---------------------------------------------------------------------

    def own_address(self) -> str:
        """This session's entity address ('ip:port/nonce'), as locks and watchers show it."""
        addrs = str(self._conn.get_addrs())
        first = addrs.strip("[]").split(",")[0]
        return plain_address(first)

    def daemon_addresses(self) -> tuple[dict[str, str], tuple[str, ...]]:
        """Entity addresses of Ceph daemons -> their names, and what could not be read.

        From `mon dump`, `osd dump` and `mgr dump` (its `active_clients` are the mgr modules'
        own librados sessions, e.g. rbd_support); `profile rbd` may not read the mgr map.
        """
        found: dict[str, str] = {}
        unread: list[str] = []

        def add(name: str, addrs: Any) -> None:
            # Maps hold {"addrvec": [...]} or the bare list; each entry has addr and nonce.
            vec = addrs.get("addrvec", []) if isinstance(addrs, dict) else addrs or []
            for a in vec:
                if isinstance(a, dict) and a.get("addr"):
                    found[f"{a['addr']}/{a.get('nonce', 0)}"] = name

        for prefix in ("mon dump", "osd dump", "mgr dump"):
            try:
                data = self.mon_json({"prefix": prefix})
            except CephError as exc:
                unread.append(f"`{prefix}`: {exc}")
                continue
            if prefix == "mon dump":
                for m in data.get("mons", []):
                    add(f"mon.{m['name']}", m.get("public_addrs"))
            elif prefix == "osd dump":
                for o in data.get("osds", []):
                    for key in ("public_addrs", "cluster_addrs", "heartbeat_back_addrs"):
                        add(f"osd.{o['osd']}", o.get(key))
            else:
                if data.get("active_name"):
                    add(f"mgr.{data['active_name']}", data.get("active_addrs"))
                for c in data.get("active_clients", []):
                    add(f"mgr.{data.get('active_name')} ({c.get('name')})", c.get("addrvec"))
        return found, tuple(unread)


def _conf(target: CephTarget) -> dict[str, str]:
    t = str(max(1, int(target.timeout)))
    return {
        "mon_host": ",".join(target.monitors),
        "key": target.key,
        "client_mount_timeout": t,
        "rados_mon_op_timeout": t,
        "rados_osd_op_timeout": t,
        # We blocklist explicitly before breaking a lock, so the result can report it.
        "rbd_blocklist_on_break_lock": "false",
        "log_to_stderr": "false",
        "err_to_stderr": "false",
    }


@contextmanager
def connect(target: CephTarget) -> Iterator[CephClient]:
    """Open a session as `target`; failures name the input at fault."""
    if not _bindings():
        raise CephError(
            "the rados/rbd Python bindings are not importable; run scripts/install-ceph.sh",
            field="environment",
        )
    conn = rados.Rados(conffile="/dev/null", rados_id=target.user, conf=_conf(target))
    try:
        _bounded("connect", target.timeout + 1, lambda: conn.connect(timeout=int(target.timeout)))
    except CephError as exc:
        raise CephError(
            f"no monitor of {','.join(target.monitors)} answered within {target.timeout:g}s; "
            "check --monitors and that the mons are reachable from here",
            field="monitors",
            errno_=errno.ETIMEDOUT,
        ) from exc
    except Exception as exc:
        code = _errno_of(exc)
        if code in (errno.EACCES, errno.EPERM):
            raise CephError(
                f"the monitors rejected client.{target.user}'s key; check --user/--key "
                f"against `ceph auth get client.{target.user}`",
                field="key",
                errno_=code,
            ) from exc
        if code in (errno.ETIMEDOUT, errno.EINTR):
            raise CephError(
                f"no monitor of {','.join(target.monitors)} answered within "
                f"{target.timeout:g}s; check --monitors and that the mons are reachable",
                field="monitors",
                errno_=code,
            ) from exc
        raise CephError(
            f"connecting to {','.join(target.monitors)} failed: {exc}",
            field="monitors",
            errno_=code,
        ) from exc
    try:
        yield CephClient(target, conn)
    finally:
        _bounded("disconnect", target.timeout, conn.shutdown)
