"""How far an etcd member's write-ahead log reaches, read the way etcd 3.7 reads it at start.

Sources (etcd v3.7.3, `server/`): `storage/wal/decoder.go` (frames, CRCs, torn writes),
`storage/wal/wal.go` (`ReadAll`, `ValidSnapshotEntries`, `selectWALFiles`),
`storage/wal/repair.go` (`Repair`), `etcdserver/bootstrap.go` (`recoverSnapshot`,
`openWALFromSnapshot`), `storage/backend.go` (`RecoverSnapshotBackend`), and go.etcd.io/raft
v3.7 `raft.go` (`loadState`).

At start etcd first decodes every WAL file in order to find its snapshot records
(`ValidSnapshotEntries`: a CRC mismatch or an undecodable record anywhere stops etcd; a record cut
short ends the read), takes the newest snapshot record at or below the last committed index, then
reads the files from the one holding that snapshot on (`ReadAll`), where only a record cut short
in the last file is forgiven: `Repair` truncates that file there and etcd starts. Anything else it
can't read stops it for good, on every restart. Entries are replayed in order: an entry replaces
every entry at or after its index, so the last entry read is the member's last log position.

Each file is a sequence of frames: an 8-byte little-endian length (low 56 bits: record size; top
bit set: bits 56-58 give the padding after it), then a `walpb.Record`. A zero length ends a file
(the rest is preallocated). Record CRCs are CRC-32C over the records' data, rolling from record to
record and file to file; each `crcType` record carries the running value and must match it.
"""

from __future__ import annotations

import itertools
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from quorumkeeper.model import DataPosition
from quorumkeeper.stores.base import data_after

WAL_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
"""`walName`: `%016x-%016x.wal`, sequence then the raft index the file starts after."""

METADATA_TYPE, ENTRY_TYPE, STATE_TYPE, CRC_TYPE, SNAPSHOT_TYPE = 1, 2, 3, 4, 5
FRAME_SIZE_BYTES = 8
MIN_SECTOR_SIZE = 512
_LENGTH_MASK = (1 << 56) - 1
_FRAME_LENGTH = struct.Struct("<q")


class _Undecodable(ValueError):
    """Bytes that are not a protobuf message (Go's `proto.Unmarshal` would fail)."""


def _varint(buffer: bytes, offset: int) -> tuple[int, int]:
    """The varint at `offset` and the offset after it; single bytes (most keys and small
    numbers) take the short path, this function is the hot loop of a WAL read."""
    try:
        byte = buffer[offset]
        if byte < 0x80:
            return byte, offset + 1
        result, shift = byte & 0x7F, 7
        while True:
            offset += 1
            byte = buffer[offset]
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result & 0xFFFFFFFFFFFFFFFF, offset + 1
            shift += 7
            if shift > 63:
                raise _Undecodable("overlong varint")
    except IndexError:
        raise _Undecodable("truncated varint") from None


def _fields(buffer: bytes) -> dict[int, int | bytes]:
    """The last value of each field of a protobuf message (proto wire format): varints as ints,
    length-delimited fields as bytes. Raises `_Undecodable` on malformed input."""
    fields: dict[int, int | bytes] = {}
    offset, end = 0, len(buffer)
    while offset < end:
        key, offset = _varint(buffer, offset)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise _Undecodable("field number 0")
        if wire_type == 0:
            fields[number], offset = _varint(buffer, offset)
        elif wire_type == 2:
            size, offset = _varint(buffer, offset)
            if offset + size > end:
                raise _Undecodable("length-delimited field past the end")
            fields[number] = buffer[offset : offset + size]
            offset += size
        elif wire_type in (1, 5):
            offset += 8 if wire_type == 1 else 4
            if offset > end:
                raise _Undecodable("fixed-width field past the end")
        else:
            raise _Undecodable(f"wire type {wire_type}")
    return fields


def _walpb_record(buffer: bytes) -> tuple[int, int, bytes]:
    """(type, crc, data) of a `walpb.Record`. etcd writes the fields in number order, each
    once: `08 type 10 crc 1a length data`, which is read directly; anything else (valid
    protobuf all the same) goes through `_fields`."""
    end = len(buffer)
    if end >= 4 and buffer[0] == 0x08 and buffer[1] < 0x80 and buffer[2] == 0x10:
        crc, offset = _varint(buffer, 3)
        if offset == end:
            return buffer[1], crc & 0xFFFFFFFF, b""
        if buffer[offset] == 0x1A:
            size, offset = _varint(buffer, offset + 1)
            if offset + size == end:
                return buffer[1], crc & 0xFFFFFFFF, buffer[offset:]
    fields = _fields(buffer)
    return _int(fields, 1), _int(fields, 2) & 0xFFFFFFFF, _bytes(fields, 3)


def _leading_varints(buffer: bytes, count: int) -> list[int]:
    """Fields 1..`count` of a message whose first fields are varints, as raft and etcd write
    them: in number order, each at most once, unset ones left out (`08 a 10 b 18 c ...`).
    Absent fields read as 0; bytes of another shape go through `_fields`."""
    values, offset, end = [], 0, len(buffer)
    for key in range(0x08, 0x08 * (count + 1), 0x08):
        found = buffer[offset] if offset < end else 0x80
        if found == key:
            value, offset = _varint(buffer, offset + 1)
            values.append(value)
        elif key < found < 0x80:
            values.append(0)  # left out: a later field comes first
        else:
            fields = _fields(buffer)
            return [_int(fields, number) for number in range(1, count + 1)]
    return values


def _int(fields: dict[int, int | bytes], number: int) -> int:
    value = fields.get(number, 0)
    return value if isinstance(value, int) else 0


def _bytes(fields: dict[int, int | bytes], number: int) -> bytes:
    value = fields.get(number, b"")
    return value if isinstance(value, bytes) else b""


def _torn(data: bytes, file_offset: int) -> bool:
    """`isTornEntry`: a frame with a sector-aligned chunk of zeros was never fully written."""
    position = 0
    while position < len(data):
        size = min(MIN_SECTOR_SIZE - (file_offset % MIN_SECTOR_SIZE), len(data) - position)
        if data[position : position + size].count(0) == size:
            return True
        file_offset += size
        position += size
    return False


class _Stop(Exception):
    """Decoding stops here: `cut_short` for etcd's `io.ErrUnexpectedEOF`, else a failed check."""

    def __init__(self, what: str, *, cut_short: bool) -> None:
        super().__init__(what)
        self.cut_short = cut_short


@dataclass
class _Read:
    """What one pass over the files found, in stream order, and where it stopped."""

    names: list[str]
    records: list[tuple[int, int, int, int]] = field(default_factory=list)
    """(file number, record type, term, index) of every entry and snapshot record."""
    metadata_conflict: str | None = None
    unexpected_type: tuple[int, str] | None = None
    commit: int = 0
    stop: str | None = None
    """Where and why decoding stopped early, None when every file ended cleanly."""
    stop_file: int = -1
    cut_short: bool = False
    zeroed: str | None = None
    """Where a zero length hid data after it: etcd reads it as the end of the file."""
    _crc: int = 0
    _metadata: bytes | None = None

    def decode_file(self, path: Path, number: int) -> None:
        """Decode one file, carrying the rolling CRC over from the previous one."""
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                offset = 0
                while offset < size:
                    try:
                        next_offset = self._frame(view, size, offset, number)
                    except _Stop as stop:
                        self.stop = f"{path.name} at byte {offset}: {stop}"
                        self.stop_file = number
                        self.cut_short = stop.cut_short
                        raise
                    if next_offset == 0:  # a zero length: the rest should be preallocated
                        if self.zeroed is None and data_after(view, offset + 8, size):
                            self.zeroed = (
                                f"{path.name} at byte {offset}: a zero length with records "
                                "after it (etcd ends the file here and zeroes the rest)"
                            )
                        return
                    offset = next_offset

    def _frame(self, view: mmap.mmap, size: int, offset: int, number: int) -> int:
        """Decode the frame at `offset`; returns where the next one starts, 0 at a file's end."""
        if offset + FRAME_SIZE_BYTES > size:
            raise _Stop("frame length cut short", cut_short=True)
        length: int = _FRAME_LENGTH.unpack_from(view, offset)[0]
        if length == 0:
            return 0
        record_size = length & _LENGTH_MASK
        padding = (length >> 56) & 0x7 if length < 0 else 0
        start = offset + FRAME_SIZE_BYTES
        end = start + record_size + padding
        if record_size > size - offset - padding or end > size:
            raise _Stop(f"record of {record_size} bytes runs past the end", cut_short=True)
        frame = view[start:end]
        last_file = number == len(self.names) - 1
        try:
            kind, stored_crc, data = _walpb_record(frame[:record_size] if padding else frame)
        except _Undecodable as error:
            torn = last_file and _torn(frame, start)
            raise _Stop(f"undecodable record ({error})", cut_short=torn) from error
        if kind != CRC_TYPE:
            self._crc = crc32c.crc32c(data, value=self._crc)
            if stored_crc != self._crc:
                torn = last_file and _torn(frame, start)
                raise _Stop(f"walpb: crc mismatch (type {kind} record)", cut_short=torn)
        elif self._crc != 0 and stored_crc != self._crc:
            raise _Stop("walpb: crc mismatch (crc record breaks the chain)", cut_short=False)
        else:
            self._crc = stored_crc
        try:
            self._record(number, kind, data, offset)
        except _Undecodable as error:
            raise _Stop(f"undecodable type {kind} record ({error})", cut_short=False) from error
        return end

    def _record(self, number: int, kind: int, data: bytes, offset: int) -> None:
        if kind == ENTRY_TYPE:
            _, term, index = _leading_varints(data, 3)  # raftpb.Entry: Type, Term, Index
            self.records.append((number, kind, term, index))
        elif kind == SNAPSHOT_TYPE:
            index, term = _leading_varints(data, 2)  # walpb.Snapshot: index, term
            self.records.append((number, kind, term, index))
        elif kind == STATE_TYPE:
            self.commit = _leading_varints(data, 3)[2]  # raftpb.HardState: term, vote, commit
        elif kind == METADATA_TYPE:
            if self._metadata is not None and self._metadata != data:
                self.metadata_conflict = self.metadata_conflict or (
                    f"{self.names[number]} at byte {offset}: wal: conflicting metadata found"
                )
            self._metadata = data
        elif kind != CRC_TYPE and self.unexpected_type is None:
            where = f"{self.names[number]} at byte {offset}"
            self.unexpected_type = (number, f"{where}: unexpected block type {kind}")


def _decode(wal_dir: Path, names: list[str]) -> _Read:
    read = _Read(names)
    for number, name in enumerate(names):
        try:
            read.decode_file(wal_dir / name, number)
        except _Stop:
            break
    return read


def _label(term: int, index: int) -> str:
    return f"term {term}, index {index}"


def _wal_files(wal_dir: Path) -> list[tuple[str, int, int]]:
    """(name, sequence, first index) of each WAL file, in name order as etcd lists them."""
    files = []
    for name in sorted(os.listdir(wal_dir)):
        match = WAL_NAME.match(name)
        if match:
            files.append((name, int(match[1], 16), int(match[2], 16)))
    return files


def _database_missing(snap_dir: Path, snapshot_index: int) -> str | None:
    """`RecoverSnapshotBackend`: from a snapshot past index 0 etcd needs its database (`db`), or
    the snapshot's own database file to put in its place. A database older than the snapshot
    fails the same way; telling that needs bbolt's consistent index, which is not read here."""
    if snapshot_index == 0 or (snap_dir / "db").exists():
        return None
    if (snap_dir / f"{snapshot_index:016x}.snap.db").exists():
        return None
    return (
        f"{snap_dir}: failed to find database snapshot file (snap: snapshot file doesn't exist) "
        f"for the snapshot at index {snapshot_index}"
    )


def read_position(wal_dir: Path) -> DataPosition:
    """The (last term, last index) etcd would start from with the WAL files in `wal_dir`.

    `damage` says where and why decoding stopped early; `loads` is False when etcd refuses to
    start on these files (it would log one of `UNUSABLE_DATA_ERRORS`, below). Raises OSError only
    when the folder or a file can't be read at all.
    """
    files = _wal_files(wal_dir)
    if not files:
        return DataPosition(0, 0, "no WAL", damage=f"no WAL file in {wal_dir}", loads=False)
    names = [name for name, _, _ in files]
    read = _decode(wal_dir, names)
    refused = read.stop if read.stop is not None and not read.cut_short else None
    snapshots = [(t, i) for _, kind, t, i in read.records if kind == SNAPSHOT_TYPE]
    valid = [(t, i) for t, i in snapshots if i <= read.commit]
    if not valid:
        term, index = snapshots[-1] if snapshots else (0, 0)
        missing = refused or f"{wal_dir}: wal: snapshot not found"
        return DataPosition(term, index, _label(term, index), damage=missing, loads=False)
    start_term, start_index = valid[-1]
    covering = [n for n, (_, _, first) in enumerate(files) if first <= start_index]
    if not covering:
        refused = refused or f"{wal_dir}: wal: file not found which matches the snapshot index"
    first_file = covering[-1] if covering else len(files)
    sequences = [sequence for _, sequence, _ in files[first_file:]]
    if any(b != a + 1 for a, b in itertools.pairwise(sequences)):
        refused = refused or f"{wal_dir}: wal: file sequence numbers do not increase continuously"
    if read.stop is not None and read.cut_short and read.stop_file != len(files) - 1:
        refused = refused or f"{read.stop} (not in the last file: etcd can't repair it)"
    if read.unexpected_type is not None and read.unexpected_type[0] >= first_file:
        refused = refused or read.unexpected_type[1]
    refused = refused or read.metadata_conflict
    term, index, entries = start_term, start_index, 0
    for number, kind, record_term, record_index in read.records:
        if number < first_file or kind != ENTRY_TYPE or record_index <= start_index:
            continue
        offset = record_index - start_index - 1
        if offset > entries:
            refused = refused or (
                f"{names[number]}: wal: slice bounds out of range (entry {record_index} after "
                f"{start_index + entries})"
            )
            break
        entries = offset + 1
        term, index = record_term, record_index
    if read.commit > index:
        refused = refused or f"{wal_dir}: state.commit {read.commit} is out of range [.., {index}]"
    refused = refused or _database_missing(wal_dir.parent / "snap", start_index)
    if refused is not None:
        return DataPosition(term, index, _label(term, index), damage=refused, loads=False)
    damage = read.zeroed if read.stop is None else f"{read.stop} (etcd truncates the file there)"
    return DataPosition(term, index, _label(term, index), damage=damage)


UNUSABLE_DATA_ERRORS: tuple[tuple[str, str], ...] = (
    # (regular expression, upstream source in etcd v3.7.3 / go.etcd.io/raft v3.7), causes first
    (r"walpb: crc mismatch", "server/storage/wal/walpb/record.go ErrCRCMismatch"),
    (
        r"proto: cannot parse invalid wire-format data",
        "google.golang.org/protobuf errDecode, from storage/wal/decoder.go decodeRecord",
    ),
    (
        r"tocommit\(\d+\) is out of range \[lastIndex\(\d+\)\]",
        "raft log.go raftLog.commitTo (a wiped member restarted under its old identity)",
    ),
    (r"state\.commit \d+ is out of range", "raft raft.go raft.loadState"),
    (r"wal: snapshot not found", "server/storage/wal/wal.go ErrSnapshotNotFound"),
    (r"wal: snapshot mismatch", "server/storage/wal/wal.go ErrSnapshotMismatch"),
    (r"wal: slice bounds out of range", "server/storage/wal/wal.go ErrSliceOutOfRange"),
    (r"wal: conflicting metadata found", "server/storage/wal/wal.go ErrMetadataConflict"),
    (r"wal: file not found", "server/storage/wal/wal.go selectWALFiles, ErrFileNotFound"),
    (r"wal: file sequence numbers", "server/storage/wal/wal.go selectWALFiles"),
    (r"failed to find database snapshot file", "server/storage/backend.go OpenSnapshotBackend"),
    (r"does not match with snapshot", "server/etcdserver/bootstrap.go recoverSnapshot"),
    (r"failed to recover v3 backend from snapshot", "server/etcdserver/bootstrap.go"),
    (r"failed to open database", "server/storage/backend/backend.go newBackend (bbolt)"),
    (r"failed to read WAL, cannot be repaired", "server/etcdserver/bootstrap.go"),
    (r"failed to repair WAL", "server/etcdserver/bootstrap.go openWALFromSnapshot"),
)
"""etcd's errors for data it can't start from: restarting never helps. Not here: "address
already in use" (a port another program holds) and bad flags, which moving data can't fix."""
