"""Damage and timing helpers for the data-position tests: what an operator's `dd` does."""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def written_bytes(path: Path) -> int:
    """How much of a preallocated file was written: everything before its zero tail."""
    return len(path.read_bytes().rstrip(b"\0"))


def overwrite_middle(path: Path, size: int, seed: int) -> int:
    """`dd if=/dev/urandom of=path bs=size seek=... conv=notrunc`: `size` random bytes over the
    middle of the file's written part, flushed to disk. Returns the offset written at."""
    written = written_bytes(path)
    assert written >= 4 * size, f"{path.name} has only {written} bytes written; write more first"
    offset = written // 2 - size // 2
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(random.Random(seed).randbytes(size))
        handle.flush()
        os.fsync(handle.fileno())
    return offset


def median_ms(read: Callable[[], object], times: int = 5) -> tuple[float, float]:
    """Median wall and CPU time of `times` calls, in milliseconds: the CPU time says what the
    call costs when other work shares the cores."""
    wall, cpu = [], []
    for _ in range(times):
        started, used = time.perf_counter(), time.process_time()
        read()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def log_since(path: Path, offset: int) -> str:
    """What a member printed after `offset` bytes of its (appended-to) log."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
