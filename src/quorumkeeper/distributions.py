"""Where the store binaries come from: pinned versions, built into a cache outside the repository.

Every version the project runs is pinned here and nowhere else. etcd is built from the official
Go modules through a small wrapper module, because `go install` refuses modules whose go.mod
carries replace directives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ETCD_VERSION = "3.7.3"
"""The etcd release new clusters run; the newest one the Go module proxy serves."""

SUPPORTED_ETCD_SERIES = ("3.5", "3.6", "3.7")
"""etcd series with learners and the v3 JSON gateway paths the store relies on."""

_ETCD_MODULES = ("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3")


class DistributionMissing(RuntimeError):
    """A store binary is not in the cache; the message says how to build it."""


def cache_dir() -> Path:
    """The build cache: `QUORUMKEEPER_CACHE_DIR`, else `~/.cache/quorumkeeper`."""
    configured = os.environ.get("QUORUMKEEPER_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "quorumkeeper"


def etcd_dir(version: str = ETCD_VERSION) -> Path:
    return cache_dir() / f"etcd-v{version}" / "bin"


def etcd_binary(version: str = ETCD_VERSION) -> Path:
    """Path of the cached `etcd` server binary of `version`."""
    binary = etcd_dir(version) / "etcd"
    if not binary.is_file():
        raise DistributionMissing(
            f"etcd {version} is not built yet (looked for {binary}); "
            f"fix: run `quorumkeeper install etcd --version {version}`"
        )
    return binary


def build_etcd(version: str = ETCD_VERSION, *, log: Path | None = None) -> Path:
    """Build etcd and etcdctl `version` with Go into the cache; a no-op when both exist."""
    target = etcd_dir(version)
    if (target / "etcd").is_file() and (target / "etcdctl").is_file():
        return target / "etcd"
    go = shutil.which("go") or "/usr/local/go/bin/go"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="etcd-build-", dir=target.parent) as work:
        workdir = Path(work)
        (workdir / "go.mod").write_text("module quorumkeeper.local/etcdbuild\n\ngo 1.24\n")
        imports = "\n".join(f'\t_ "{module}"' for module in _ETCD_MODULES)
        (workdir / "tools.go").write_text(
            f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
        )
        env = {**os.environ, "GOFLAGS": "-buildvcs=false", "CGO_ENABLED": "0"}
        commands = [
            [go, "get", *(f"{module}@v{version}" for module in _ETCD_MODULES)],
            [go, "build", "-trimpath", "-o", str(workdir / "etcd"), _ETCD_MODULES[0]],
            [go, "build", "-trimpath", "-o", str(workdir / "etcdctl"), _ETCD_MODULES[1]],
        ]
        with open(log or os.devnull, "ab") as output:
            for command in commands:
                subprocess.run(
                    command, cwd=workdir, env=env, check=True, stdout=output, stderr=output
                )
        for name in ("etcdctl", "etcd"):  # etcd last: its presence marks a complete build
            os.replace(workdir / name, target / name)
    return target / "etcd"
