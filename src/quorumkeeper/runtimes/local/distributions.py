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

from quorumkeeper.errors import Refused
from quorumkeeper.spec import ClusterSpec, Store
from quorumkeeper.versions import (
    DEBIAN_ZOOKEEPER_VERSION,
    ETCD_VERSION,
    ZOOKEEPER_VERSION,
    check_zookeeper_version,
)

_ETCD_MODULES = ("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3")


class DistributionMissing(Refused):
    """A store binary is not in the cache; the message says how to build it."""


def check_installed(spec: ClusterSpec) -> None:
    """Raise `DistributionMissing`, with the command that fixes it, unless the store is there."""
    if spec.store is Store.ETCD:
        etcd_binary(spec.version)
    else:
        zookeeper_classpath(spec.version)


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


# ZooKeeper ---------------------------------------------------------------------------------------

DEBIAN_JAVA_DIR = Path("/usr/share/java")


def zookeeper_lib_dir(version: str = ZOOKEEPER_VERSION) -> Path:
    return cache_dir() / f"zookeeper-{version}" / "lib"


def zookeeper_classpath(version: str = ZOOKEEPER_VERSION) -> list[str]:
    """The classpath entries that run a ZooKeeper `version` server with a logging backend.

    3.8.0 is Debian's package: its jar's manifest names its dependencies, slf4j-simple is the
    backend (without one the server logs nothing), and Netty's codec and resolver, which the
    manifest leaves out, serve the TLS ports (`NettyServerCnxnFactory` fails without them with
    "NoClassDefFoundError: io/netty/handler/codec/ByteToMessageDecoder"). Other versions come
    from the cache that `fetch_zookeeper` fills from Maven Central. A release refused since for
    data loss still runs where it was installed before, until its cluster is upgraded off it.
    """
    check_zookeeper_version(version, known_data_loss=False)
    if version == DEBIAN_ZOOKEEPER_VERSION:
        names = ("zookeeper.jar", "slf4j-simple.jar", "netty-codec.jar", "netty-resolver.jar")
        jars = [DEBIAN_JAVA_DIR / name for name in names]
        missing = [str(jar) for jar in jars if not jar.is_file()]
        if missing:
            raise DistributionMissing(
                f"ZooKeeper {version} comes from Debian's packages (missing: "
                f"{', '.join(missing)}); fix: run "
                "`apt-get install -y zookeeper libslf4j-java libnetty-java`"
            )
        return [str(jar) for jar in jars]
    lib = zookeeper_lib_dir(version)
    if not (lib / f"zookeeper-{version}.jar").is_file():
        raise DistributionMissing(
            f"ZooKeeper {version} is not fetched yet (looked in {lib}); "
            f"fix: run `quorumkeeper install zookeeper --version {version}`"
        )
    return [f"{lib}/*"]


def _zookeeper_pom(version: str) -> str:
    """A POM depending on the server plus the `provided`/optional jars a server needs at run time,
    at the versions ZooKeeper's parent POM manages: logback-classic (the logging backend it was
    built against), metrics-core (its default metrics provider fails to load without it) and
    snappy-java (the snapshot code links it even when compression is off).
    Jetty, Jackson and jline stay out: they serve the AdminServer and the CLI, both unused."""
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>quorumkeeper.local</groupId>
  <artifactId>zookeeper-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>org.apache.zookeeper</groupId>
        <artifactId>parent</artifactId>
        <version>{version}</version>
        <type>pom</type>
        <scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>org.apache.zookeeper</groupId>
      <artifactId>zookeeper</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>ch.qos.logback</groupId>
      <artifactId>logback-classic</artifactId>
    </dependency>
    <dependency>
      <groupId>io.dropwizard.metrics</groupId>
      <artifactId>metrics-core</artifactId>
    </dependency>
    <dependency>
      <groupId>org.xerial.snappy</groupId>
      <artifactId>snappy-java</artifactId>
    </dependency>
  </dependencies>
</project>
"""


def fetch_zookeeper(version: str = ZOOKEEPER_VERSION, *, log: Path | None = None) -> Path:
    """Resolve ZooKeeper `version`, its runtime dependencies and logback from Maven Central into
    the cache; a no-op when the cache already holds them (and for Debian's 3.8.0)."""
    check_zookeeper_version(version)
    if version == DEBIAN_ZOOKEEPER_VERSION:
        return DEBIAN_JAVA_DIR
    target = zookeeper_lib_dir(version)
    if (target / f"zookeeper-{version}.jar").is_file():
        return target
    mvn = shutil.which("mvn") or "mvn"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zookeeper-fetch-", dir=target.parent) as work:
        workdir = Path(work)
        (workdir / "pom.xml").write_text(_zookeeper_pom(version))
        command = [
            mvn,
            "--batch-mode",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={workdir / 'lib'}",
        ]
        with open(log or os.devnull, "ab") as output:
            subprocess.run(command, cwd=workdir, check=True, stdout=output, stderr=output)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(workdir / "lib", target)  # one rename: a lib folder is complete or absent
    return target
