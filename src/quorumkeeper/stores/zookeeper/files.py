"""How far a ZooKeeper member's snapshots and transaction logs reach, read the way ZooKeeper 3.9
loads its database at start (`ZKDatabase.loadDataBase` -> `FileTxnSnapLog.restore`).

Sources (ZooKeeper 3.9.5, `org.apache.zookeeper.server.persistence`, checked against the jar):
- `FileSnap.deserialize`: the newest of up to 100 snapshots that `SnapStream.isValidSnapshot`
  accepts (a file `snapshot.<hex zxid>` of at least 10 bytes ending with the string "/") and
  whose checksums pass (`SnapStream.checkSealIntegrity`: Adler32 of the stream so far, sealed
  after the tree and again after each optional part, so the last seal covers the whole file).
  Its zxid is the one in its name. If candidates exist and none passes, loading fails.
- `FileTxnSnapLog.restore`: no snapshot but a transaction log -> "No snapshot found, but there are
  log entries" and loading fails; neither -> an empty database.
- `FileTxnLog.FileTxnIterator`: the log files from the newest one named at or below the
  snapshot's zxid on, oldest first. Each starts with a header (magic "ZKLG", version, dbid),
  then records: Adler32 (8 bytes), length (4), the transaction, and the byte 'B'. A zero length,
  a record cut short by the end of the file or a wrong end byte ("Last transaction was partial",
  `Util.readTxnBytes`) ends that file and reading goes on with the next one; a length beyond
  `jute.maxbuffer` plus its extra size ("Unreasonable length", `BinaryInputArchive`), a checksum
  mismatch ("CRC check failed") or a bad header make loading fail.
- `FileTxnSnapLog.fastForwardFromEdits`: transactions below the snapshot's zxid are skipped; the
  highest zxid seen is the database's.
- `server.quorum.QuorumPeer.loadDataBase`: then the `currentEpoch` and `acceptedEpoch` files of
  the snapshot folder (decimal numbers, written when missing) must not be older than the loaded
  zxid's epoch (a `currentEpoch.tmp` left by an interrupted update stands in for the first), and
  the accepted epoch not older than the current one.
All numbers are big-endian (jute). A transaction starts with its header: client id (8), cxid (4),
zxid (8), time (8), type (4). Only uncompressed snapshots are read: the launcher never sets
`zookeeper.snapshot.compression.method`, and a `.gz` or `.snappy` snapshot counts as incomplete.
"""

from __future__ import annotations

import mmap
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from quorumkeeper.model import DataPosition
from quorumkeeper.stores.base import data_after

SNAPSHOT_PREFIX = "snapshot"
LOG_PREFIX = "log"
MAX_SNAPSHOTS_TRIED = 100
"""`FileSnap.deserialize` tries the newest 100 snapshots that look complete."""
SEAL = b"\x00\x00\x00\x01/"
"""`SnapStream.sealStream` ends a checksum with the jute string "/"."""
LOG_MAGIC = b"ZKLG"
LOG_HEADER_BYTES = 16
END_OF_RECORD = 0x42
MAX_TXN_BYTES = 2 * 0xFFFFF
"""`BinaryInputArchive`'s limit: `jute.maxbuffer` (default 0xfffff) plus
`zookeeper.jute.maxbuffer.extrasize` (default: the same); the launcher sets neither."""
TXN_HEADER_BYTES = 32


def zxid_label(zxid: int) -> str:
    return f"zxid 0x{zxid:x}"


def _zxid_from_name(name: str, prefix: str) -> int:
    """`Util.getZxidFromName`: the hex number after `prefix.`, -1 when there is none."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != prefix:
        return -1
    try:
        return int(parts[1], 16)
    except ValueError:
        return -1


def _named(directory: Path, prefix: str) -> list[tuple[int, Path]]:
    """(zxid, path) of the files named `<prefix>.<hex zxid>`, oldest first."""
    found = []
    for name in os.listdir(directory):
        zxid = _zxid_from_name(name, prefix)
        if zxid >= 0:
            found.append((zxid, directory / name))
    return sorted(found)


def _sealed(path: Path) -> bool:
    """Whether the snapshot's last seal holds the Adler32 of everything before it."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < len(SEAL) + 8:
            return False
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            if view[size - len(SEAL) :] != SEAL:
                return False
            stored = int.from_bytes(view[size - len(SEAL) - 8 : size - len(SEAL)], "big")
            with memoryview(view) as whole, whole[: size - len(SEAL) - 8] as stream:
                return zlib.adler32(stream) == stored


@dataclass
class _Snapshot:
    zxid: int
    """-1 when no snapshot loads."""
    damage: str | None
    loads: bool


def _newest_snapshot(snapshot_dir: Path) -> _Snapshot:
    candidates = [
        (zxid, path)
        for zxid, path in reversed(_named(snapshot_dir, SNAPSHOT_PREFIX))
        if path.stat().st_size >= 10 and _ends_sealed(path)
    ][:MAX_SNAPSHOTS_TRIED]
    damage = None
    for zxid, path in candidates:
        if _sealed(path):
            return _Snapshot(zxid, damage, loads=True)
        damage = damage or f"{path.name}: CRC corruption (Adler32 does not match its seal)"
    if candidates:
        damage = f"{damage}; Not able to find valid snapshots in {snapshot_dir}"
    return _Snapshot(-1, damage, loads=not candidates)


def _ends_sealed(path: Path) -> bool:
    """`SnapStream.isValidSnapshot` for uncompressed snapshots: ends with the seal's "/"."""
    with open(path, "rb") as handle:
        handle.seek(-len(SEAL), os.SEEK_END)
        return handle.read(len(SEAL)) == SEAL


class _LoadFails(Exception):
    """ZooKeeper throws here and does not start."""


@dataclass
class _Log:
    highest: int
    start: int
    """Transactions below this zxid are skipped until the first one at or above it."""
    damage: str | None = None
    forwarded: bool = False

    def read_file(self, path: Path, *, last: bool) -> None:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < LOG_HEADER_BYTES:
                if size == 0 and last:
                    return  # ZooKeeper deletes an empty last log (ZOOKEEPER-2332) and goes on
                raise _LoadFails(f"{path.name}: header cut short ({size} bytes)")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                if view[:4] != LOG_MAGIC:
                    raise _LoadFails(f"{path.name}: has invalid magic number {view[:4]!r}")
                offset: int | None = LOG_HEADER_BYTES
                while offset is not None:
                    offset = self._record(view, size, offset, path.name)

    def _partial(self, where: str, what: str) -> None:
        self.damage = self.damage or f"{where}: {what} (ZooKeeper ends this log here)"

    def _record(self, view: mmap.mmap, size: int, offset: int, name: str) -> int | None:
        """Read the record at `offset`; the next record's offset, None at the file's end."""
        where = f"{name} at byte {offset}"
        if offset + 12 > size:
            if offset < size and view[offset:size].count(0) != size - offset:
                self._partial(where, "record header cut short")
            return None
        length = int.from_bytes(view[offset + 8 : offset + 12], "big", signed=True)
        if length == 0:  # preallocated space, unless records follow
            if data_after(view, offset + 12, size):
                self._partial(where, "a zero length with records after it")
            return None
        if length == -1:  # jute's null buffer: `Util.readTxnBytes` fails on it
            raise _LoadFails(f"{where}: length -1 (a null transaction)")
        if length < 0 or length > MAX_TXN_BYTES:
            raise _LoadFails(f"{where}: Unreasonable length = {length}")
        end = offset + 12 + length
        if end >= size:
            self._partial(where, f"transaction of {length} bytes cut short")
            return None
        if view[end] != END_OF_RECORD:
            self._partial(where, "Last transaction was partial (no end-of-record byte)")
            return None
        txn = view[offset + 12 : end]
        if zlib.adler32(txn) != int.from_bytes(view[offset : offset + 8], "big"):
            raise _LoadFails(f"{where}: CRC check failed")
        if length < TXN_HEADER_BYTES:
            self._partial(where, "transaction header cut short")
            return None
        zxid = int.from_bytes(txn[12:20], "big", signed=True)
        if self.forwarded or zxid >= self.start:
            self.forwarded = True
            self.highest = max(self.highest, zxid)
        return end + 1


def _epoch(snapshot_dir: Path, name: str) -> int | None:
    """`QuorumPeer.readLongFromFile`: None when the file is missing; ValueError when it holds
    no number (ZooKeeper: "Found <line> in <file>")."""
    try:
        first_line = (snapshot_dir / name).read_text(errors="replace").partition("\n")[0]
    except FileNotFoundError:
        return None
    try:
        return int(first_line)
    except ValueError:
        raise ValueError(f"Found {first_line} in {snapshot_dir / name}") from None


def _epochs_refuse(snapshot_dir: Path, zxid: int) -> str | None:
    """Why `QuorumPeer.loadDataBase` refuses the epoch files for a database at `zxid`."""
    epoch = zxid >> 32
    try:
        current = _epoch(snapshot_dir, "currentEpoch")
        current = epoch if current is None else current
        if epoch > current:
            interrupted = _epoch(snapshot_dir, "currentEpoch.tmp")
            if interrupted is None:
                return f"The current epoch, 0x{current:x}, is older than the last zxid, {zxid}"
            current = interrupted
        accepted = _epoch(snapshot_dir, "acceptedEpoch")
    except ValueError as error:
        return str(error)
    accepted = epoch if accepted is None else accepted
    if accepted < current:
        return f"The accepted epoch, 0x{accepted:x} is less than the current epoch, 0x{current:x}"
    return None


def read_position(snapshot_dir: Path, log_dir: Path) -> DataPosition:
    """The zxid ZooKeeper would load from `snapshot_dir` and `log_dir` (each a `version-2`
    folder), as a `DataPosition` (term: epoch, index: counter).

    `damage` names the first snapshot or record that failed a check; `loads` is False when
    ZooKeeper refuses to load this data (it would log one of `UNUSABLE_DATA_ERRORS`, below).
    Raises OSError only when a folder or file can't be read at all.
    """
    snapshot = _newest_snapshot(snapshot_dir)
    logs = _named(log_dir, LOG_PREFIX)
    if snapshot.zxid < 0:
        if not snapshot.loads or logs:
            why = snapshot.damage or f"No snapshot found, but there are log entries in {log_dir}"
            return DataPosition(0, 0, "no snapshot", damage=why, loads=False)
        return DataPosition(0, 0, "empty database (no snapshot, no log)")
    first = snapshot.zxid + 1
    below = [n for n, (zxid, _) in enumerate(logs) if zxid < first]
    chosen = logs[below[-1] if below else 0 :]
    log = _Log(highest=snapshot.zxid, start=first)
    loads = True
    try:
        for n, (_, path) in enumerate(chosen):
            log.read_file(path, last=n == len(chosen) - 1)
    except _LoadFails as failure:
        log.damage, loads = str(failure), False
    zxid = log.highest
    refused = _epochs_refuse(snapshot_dir, zxid) if loads else None
    loads = loads and refused is None
    damage = "; ".join(d for d in (snapshot.damage, log.damage, refused) if d) or None
    return DataPosition(zxid >> 32, zxid & 0xFFFFFFFF, zxid_label(zxid), damage, loads)


UNUSABLE_DATA_ERRORS: tuple[tuple[str, str], ...] = (
    # (regular expression, upstream source in ZooKeeper 3.9.5), causes before the wrapper line
    (
        r"No snapshot found, but there are log entries",
        "server/persistence/FileTxnSnapLog.restore",
    ),
    (r"CRC check failed", "server/persistence/FileTxnLog.FileTxnIterator.next"),
    (r"Unreasonable length", "jute BinaryInputArchive.checkLength (txn log record length)"),
    (r"has invalid magic number", "server/persistence/FileTxnLog.FileTxnIterator.inStreamCreated"),
    (r"Not able to find valid snapshots in", "server/persistence/FileSnap.deserialize"),
    (r"mismatching magic headers", "server/persistence/FileSnap.deserialize"),
    (r"The current epoch, .* is older than the last zxid", "server/quorum/QuorumPeer.loadDataBase"),
    (
        r"The accepted epoch, .* is less than the current epoch",
        "server/quorum/QuorumPeer.loadDataBase",
    ),
    (r"Found .* in .*Epoch", "server/quorum/QuorumPeer.readLongFromFile (an epoch file)"),
    (
        r"Failed to process transaction type",
        "server/persistence/FileTxnSnapLog.fastForwardFromEdits",
    ),
    (r"Unable to load database on disk", "server/quorum/QuorumPeer.loadDataBase"),
)
"""ZooKeeper's errors for data it can't load: restarting never helps. Not here: a port in use
("Address already in use") and config errors, which moving data can't fix."""
