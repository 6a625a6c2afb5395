"""How each store's member is started as a local process: its command line, the files it needs
on disk first, the marker that tells its process from any other, and what its data says.

The stores render what a member is started with (`stores.etcd.config`, `stores.zookeeper.config`);
this module puts it on disk and on a command line, for the local runtime only.
"""

from __future__ import annotations

import abc
import hashlib
import json
from pathlib import Path

from quorumkeeper.certificates import TlsFiles
from quorumkeeper.model import DataPosition, Endpoint, Peer
from quorumkeeper.runtimes.local import distributions
from quorumkeeper.runtimes.local.authority import LocalAuthority
from quorumkeeper.runtimes.local.state import write_atomically
from quorumkeeper.spec import ClusterSpec, EtcdSettings, ZookeeperSettings
from quorumkeeper.stores.base import unusable_data_line
from quorumkeeper.stores.etcd import wal as etcd_wal
from quorumkeeper.stores.etcd.config import member_flags, setting_flags, token_flags
from quorumkeeper.stores.zookeeper import config, files
from quorumkeeper.stores.zookeeper.ensemble import FIRST_SERVER_ID, dynamic_config, parse_config

KEYSTORE = "keystore.pem"
"""A ZooKeeper member's key and certificate, in its `conf/` folder."""


def keystore_text(tls: TlsFiles) -> str:
    """The key and certificate of `tls` as ZooKeeper's PEM keystore reads them from one file,
    a server's and the Java client's alike (`config.ServerTls`)."""
    return tls.key.read_text() + tls.certificate.read_text()


def write_keystore(tls: TlsFiles, keystore: Path) -> None:
    """`keystore_text` of `tls` in `keystore` (mode 0600), replaced by a rename."""
    write_atomically(keystore, keystore_text(tls), mode=0o600)


class MemberLauncher(abc.ABC):
    """How a store's member process is started: the argv and what it needs on disk first.

    `version` is the store version every member starts with, until `configure` changes it;
    `authority` issues the members' certificates (None: they start in plain text).
    """

    version: str
    authority: LocalAuthority | None
    reloads_certificates = False
    """Whether a running member takes reissued certificates and trust from its files
    (`write_certificates`) instead of restarting onto them."""

    @abc.abstractmethod
    def configure(self, spec: ClusterSpec) -> None:
        """Start members from now on with `spec`'s version and settings of this store."""

    @abc.abstractmethod
    def rendered(self) -> list[str]:
        """What every member's process is started with whatever its place (the settings as
        they reach the process: flags, config file text, JVM options), without its addresses,
        folders, membership or secrets."""

    def refresh(self, data_dir: Path) -> None:  # noqa: B027 (a default, not a stub)
        """Bring the files of the member in `data_dir`, which has data, to the configuration,
        before a start with another configuration than its last. Nothing to do for a store whose
        command line carries all of it; a launcher that writes files rewrites them here."""

    def write_certificates(self, endpoint: Endpoint, data_dir: Path) -> None:  # noqa: B027
        """Put the member's current certificate where its running process reads it anew, for
        a launcher that `reloads_certificates`; nothing for one whose members restart."""

    def fingerprint(self) -> str:
        """A stable hash of the version, `rendered` and, with TLS unless the members reload
        their certificates, the authority's `generation`: 16 hex digits, equal for equal
        configurations across keeper restarts. A new CA, a new trust bundle or a renewal of
        certificates changes it, so members restart onto them in order; a new member's first
        certificate does not."""
        tls = []
        if self.authority is not None and not self.reloads_certificates:
            tls = [f"tls {self.authority.generation()}"]
        text = json.dumps([type(self).__name__, self.version, *self.rendered(), *tls])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @abc.abstractmethod
    def argv(
        self,
        endpoint: Endpoint,
        data_dir: Path,
        peers: list[Peer],
        *,
        bootstrap: bool,
    ) -> list[str]:
        """The command that starts `endpoint` with `peers` (itself included) as its membership.

        `bootstrap` starts a brand-new cluster of this one member; otherwise the member joins a
        membership that already lists it, under the identity its entry in `peers` gives.
        """

    @abc.abstractmethod
    def process_marker(self, data_dir: Path) -> str:
        """An argv element only this member's process carries, so a reused PID is never
        mistaken for it."""

    @abc.abstractmethod
    def has_data(self, data_dir: Path) -> bool:
        """Whether `data_dir` holds this member's state (false after a wipe or before a join)."""

    @abc.abstractmethod
    def database_folders(self, data_dir: Path) -> list[Path]:
        """The folders of `data_dir` that hold the store's database (its snapshots and log),
        as opposed to the member's identity and configuration."""

    @abc.abstractmethod
    def data_position(self, data_dir: Path) -> DataPosition | None:
        """How far the data in `data_dir` reaches, as the store would load it; None when there
        is no data (whenever `has_data` is false).

        Never raises on damaged or unexpected data: what can't be read is the position's
        `damage`. Reads only the store's logs and their headers, so it is fast enough to run for
        every stopped member before a cold start.
        """

    @abc.abstractmethod
    def unusable_data(self, log_text: str) -> str | None:
        """The line of `log_text` (what a member printed since its last start) that shows one of
        the store's known errors for data it can't use, else None. A port in use or a bad flag
        is not one: restarting elsewhere or fixing the setting helps, moving data aside does not.
        """


class EtcdLauncher(MemberLauncher):
    """The etcd command line of one member of the local runtime."""

    def __init__(
        self,
        version: str,
        settings: EtcdSettings,
        cluster_token: str,
        authority: LocalAuthority | None = None,
        token_key: Path | None = None,
    ) -> None:
        """The binary of `version` is looked up when a member starts: observing and stopping
        members needs none, so `status` and `down` work with an empty cache. `authority`
        issues the members' certificates; None starts them in plain text. `token_key` is the
        file of the key members sign authentication tokens with (`config.token_flags`);
        None: etcd's simple tokens."""
        self.version = version
        self.settings = settings
        self.cluster_token = cluster_token
        self.authority = authority
        self.token_key = token_key

    def configure(self, spec: ClusterSpec) -> None:
        self.version, self.settings = spec.version, spec.etcd

    def rendered(self) -> list[str]:
        """The settings' flags, and signed tokens when they are on: a cluster whose members
        run simple tokens restarts onto them in order."""
        tokens = token_flags("<token-key>") if self.token_key else []
        return [*setting_flags(self.settings), *tokens]

    def argv(
        self,
        endpoint: Endpoint,
        data_dir: Path,
        peers: list[Peer],
        *,
        bootstrap: bool,
    ) -> list[str]:
        tls = self.authority.member(endpoint) if self.authority else None
        flags = member_flags(
            endpoint,
            peers,
            self.settings,
            self.cluster_token,
            bootstrap=bootstrap,
            tls=tls,
            token_key=str(self.token_key) if self.token_key else None,
        )
        return [str(distributions.etcd_binary(self.version)), self.process_marker(data_dir), *flags]

    def process_marker(self, data_dir: Path) -> str:
        return f"--data-dir={data_dir}"

    def has_data(self, data_dir: Path) -> bool:
        return (data_dir / "member" / "wal").is_dir()

    def database_folders(self, data_dir: Path) -> list[Path]:
        return [data_dir / "member"]

    def data_position(self, data_dir: Path) -> DataPosition | None:
        """The member's last raft log position from its WAL (`etcd_wal.read_position`); a
        WAL that can't be read at all counts as data etcd can't load."""
        if not self.has_data(data_dir):
            return None
        wal_dir = data_dir / "member" / "wal"
        try:
            return etcd_wal.read_position(wal_dir)
        except OSError as error:
            return DataPosition(0, 0, "unreadable", damage=f"{wal_dir}: {error}", loads=False)

    def unusable_data(self, log_text: str) -> str | None:
        return unusable_data_line(log_text, etcd_wal.UNUSABLE_DATA_ERRORS)


class ZookeeperLauncher(MemberLauncher):
    """The java command line and the files of one member of the local runtime.

    Files live under the member's data directory: `conf/` (zoo.cfg, its dynamic file, logback),
    and the snapshot and transaction-log directories of the settings (with `myid`). A running
    server reloads its keystore and trust bundle when they are replaced (`config.tls_settings`).
    """

    reloads_certificates = True

    def __init__(
        self,
        version: str,
        settings: ZookeeperSettings,
        password: str,
        authority: LocalAuthority | None = None,
        *,
        auth: bool = False,
    ) -> None:
        """The jars of `version` are looked up when a member starts (see `EtcdLauncher`);
        `authority` as there: with one, members serve clients and each other over TLS only.
        `auth`: every client session must authenticate (`config.ENFORCED_AUTH`)."""
        self.version = version
        self.settings = settings
        self.password = password
        self.authority = authority
        self.auth = auth

    def configure(self, spec: ClusterSpec) -> None:
        self.version, self.settings, self.auth = spec.version, spec.zookeeper, spec.auth

    def rendered(self) -> list[str]:
        """zoo.cfg with placeholder folders and addresses, the JVM options with a placeholder
        password, and the logging configuration: TLS and enforced authentication are part of it,
        so turning either on or off changes the fingerprint."""
        settings = self.settings
        tls = self._tls(Path("<conf>"), "<address>")
        folders = config.server_config(settings, "<dataDir>", "<dataLogDir>", "<dynamic>", tls)
        return [
            config.zoo_cfg(folders),
            *config.jvm_options(settings, "<password>", auth=self.auth),
            config.logback_xml(settings),
        ]

    def _tls(self, conf: Path, address: str) -> config.ServerTls | None:
        """Where a member with its files in `conf` finds its TLS material, serving clients on
        `address`; None for a plain-text cluster."""
        if self.authority is None:
            return None
        return config.ServerTls(
            keystore=str(conf / KEYSTORE),
            trust=str(self.authority.trust),
            client_address=address,
            version=self.version,
        )

    def write_certificates(self, endpoint: Endpoint, data_dir: Path) -> None:
        """The member's key and certificate in one PEM file (mode 0600), as ZooKeeper's PEM
        keystore reads them, written at every start and by the keeper after a renewal or a CA
        rotation step. It replaces the file by a rename in its folder, which the running
        server's watcher takes as a new file (`config.tls_settings`); unchanged content is
        left alone."""
        if self.authority is None:
            return
        keystore = self.conf_dir(data_dir) / KEYSTORE
        tls = self.authority.member(endpoint)
        if not keystore.is_file() or keystore.read_text() != keystore_text(tls):
            write_keystore(tls, keystore)

    @property
    def classpath(self) -> list[str]:
        """Raises `DistributionMissing` when the jars are not in the cache."""
        return distributions.zookeeper_classpath(self.version)

    @staticmethod
    def conf_dir(data_dir: Path) -> Path:
        return data_dir / "conf"

    def process_marker(self, data_dir: Path) -> str:
        """A system property naming the data dir: the JVM's argv has no other unique element."""
        return f"-Dquorumkeeper.dataDir={data_dir}"

    def argv(
        self,
        endpoint: Endpoint,
        data_dir: Path,
        peers: list[Peer],
        *,
        bootstrap: bool,
    ) -> list[str]:
        """Write the member's files unless it has data, then return its java command.

        A member with data keeps its zoo.cfg and `myid`: ZooKeeper rewrites zoo.cfg on every
        reconfig to point at the committed `zoo.cfg.dynamic.<version>`, and regenerating it
        would restart the member with a stale membership (new settings reach it by `refresh`,
        which keeps that pointer). One exception is repaired: a joiner
        stopped after it acked the reconfig that added it but before it wrote the new file still
        points at a config without itself, and ZooKeeper refuses to start ("My id N not in the
        peer list"). Then, if `peers` (the committed membership) list its id, only its dynamic
        file is rewritten from them; the leader hands it the versioned config when it syncs.
        `bootstrap` needs no flag of its own: a one-server dynamic config with
        `standaloneEnabled=false` starts a one-voter ensemble as server `FIRST_SERVER_ID`.
        A member whose database was moved aside (`LocalRuntime.refill`) and that is started
        without a server id (no quorum answers to name one) keeps its files too: it rejoins
        under its own identity with an empty database.
        """
        own = next((peer for peer in peers if peer.endpoint == endpoint), None)
        if own is None:
            raise ValueError(f"{endpoint.name} must be one of its own peers")
        if bootstrap and len(peers) != 1:
            raise ValueError(f"a bootstrap starts {endpoint.name} alone, not with {peers}")
        if bootstrap:
            own = Peer(endpoint, own.member_id or str(FIRST_SERVER_ID))
            peers = [own]
        conf = self.conf_dir(data_dir)
        conf.mkdir(parents=True, exist_ok=True)
        self.write_certificates(endpoint, data_dir)
        zoo_cfg = conf / "zoo.cfg"
        refilled = own.member_id is None and zoo_cfg.is_file()
        if not (self.has_data(data_dir) and zoo_cfg.is_file()) and not refilled:
            self._write_config(data_dir, peers, own)
        elif not self.lists_itself(zoo_cfg, data_dir) and self._listed(data_dir, peers):
            self._repoint_dynamic_config(data_dir, peers)
        return self.command(data_dir)

    def refresh(self, data_dir: Path) -> None:
        """Rewrite zoo.cfg from the settings, keeping the dynamic file it points at. ZooKeeper
        itself only moves `dynamicConfigFile` in the static file (and drops membership lines,
        which ours never holds), so nothing it wrote is lost. A zoo.cfg without a dynamic file
        or a member without `myid` (not written by this launcher) is left as it is."""
        zoo_cfg = self.conf_dir(data_dir) / "zoo.cfg"
        if not zoo_cfg.is_file():
            return
        dynamic = self.dynamic_config_path(zoo_cfg)
        server = self.myid(data_dir)
        entry = parse_config(dynamic.read_text()).server(server) if dynamic and server else None
        if dynamic is None or server is None or entry is None:
            return
        self.write_zoo_cfg(data_dir, self.server_config(data_dir, server, dynamic, entry.address))

    def command(self, data_dir: Path) -> list[str]:
        """The java command of a member whose zoo.cfg is in place; writes its logging config."""
        settings = self.settings
        conf = self.conf_dir(data_dir)
        (conf / "logback.xml").write_text(config.logback_xml(settings))
        return [
            "java",
            *config.jvm_options(settings, self.password, auth=self.auth),
            self.process_marker(data_dir),
            f"-Dlogback.configurationFile={conf / 'logback.xml'}",
            "-cp",
            ":".join(self.classpath),
            config.MAIN_CLASS,
            str(conf / "zoo.cfg"),
        ]

    @staticmethod
    def dynamic_config_path(zoo_cfg: Path) -> Path | None:
        """The dynamic file zoo.cfg points at, as ZooKeeper last wrote it."""
        dynamic = config.dynamic_config_file(zoo_cfg.read_text())
        return Path(dynamic) if dynamic else None

    def myid(self, data_dir: Path) -> int | None:
        """The server id this member's data belongs to."""
        try:
            return int((data_dir / self.settings.data_dir / "myid").read_text())
        except (OSError, ValueError):
            return None

    def _listed(self, data_dir: Path, peers: list[Peer]) -> bool:
        """Whether `peers` name this member's data under its own id; data of another identity
        (a former incarnation) is not made to look like a member's."""
        own = self.myid(data_dir)
        return own is not None and any(p.member_id == str(own) for p in peers)

    def lists_itself(self, zoo_cfg: Path, data_dir: Path) -> bool:
        dynamic = self.dynamic_config_path(zoo_cfg)
        server = self.myid(data_dir)
        if dynamic is None or not dynamic.is_file() or server is None:
            return False
        return parse_config(dynamic.read_text()).server(server) is not None

    def _write_dynamic_config(self, data_dir: Path, peers: list[Peer]) -> Path:
        """Our dynamic file, listing `peers` by id; ZooKeeper writes versioned ones later."""
        dynamic = self.conf_dir(data_dir) / "zoo.cfg.dynamic"
        write_atomically(dynamic, dynamic_config(peers, plain_client=self.authority is None))
        return dynamic

    def _repoint_dynamic_config(self, data_dir: Path, peers: list[Peer]) -> None:
        zoo_cfg = self.conf_dir(data_dir) / "zoo.cfg"
        dynamic = self._write_dynamic_config(data_dir, peers)
        kept = [
            line
            for line in zoo_cfg.read_text().splitlines()
            if line.partition("=")[0].strip() != "dynamicConfigFile"
        ]
        write_atomically(zoo_cfg, "\n".join([*kept, f"dynamicConfigFile={dynamic}"]) + "\n")

    def _write_config(self, data_dir: Path, peers: list[Peer], own: Peer) -> None:
        if own.member_id is None:
            raise ValueError(f"{own.endpoint.name} joins without a ZooKeeper server id")
        dynamic = self._write_dynamic_config(data_dir, peers)
        server = int(own.member_id)
        address = own.endpoint.client_host
        self.write_zoo_cfg(data_dir, self.server_config(data_dir, server, dynamic, address))

    def server_config(
        self, data_dir: Path, server: int, dynamic_file: Path | None, address: str
    ) -> dict[str, object]:
        """zoo.cfg's settings (`config.server_config`) for the member in `data_dir` that serves
        clients on `address`; creates its data folders and `myid`."""
        settings = self.settings
        snapshots = data_dir / settings.data_dir
        txn_logs = data_dir / settings.data_log_dir
        snapshots.mkdir(parents=True, exist_ok=True)
        txn_logs.mkdir(parents=True, exist_ok=True)
        (snapshots / "myid").write_text(f"{server}\n")
        dynamic = None if dynamic_file is None else str(dynamic_file)
        tls = self._tls(self.conf_dir(data_dir), address)
        return config.server_config(settings, str(snapshots), str(txn_logs), dynamic, tls)

    def write_zoo_cfg(self, data_dir: Path, settings: dict[str, object]) -> None:
        conf = self.conf_dir(data_dir)
        conf.mkdir(parents=True, exist_ok=True)
        write_atomically(conf / "zoo.cfg", config.zoo_cfg(settings))

    def has_data(self, data_dir: Path) -> bool:
        return all(folder.is_dir() for folder in self.database_folders(data_dir))

    def database_folders(self, data_dir: Path) -> list[Path]:
        """The snapshot and log folders ZooKeeper writes (`version-2`); `myid` stays beside."""
        folders = (self.settings.data_dir, self.settings.data_log_dir)
        return list(dict.fromkeys(data_dir / folder / "version-2" for folder in folders))

    def data_position(self, data_dir: Path) -> DataPosition | None:
        """The zxid the member would load (`files.read_position`) from the snapshot
        and log folders of the settings; folders that can't be read count as data ZooKeeper
        can't load."""
        if not self.has_data(data_dir):
            return None
        snapshots = data_dir / self.settings.data_dir / "version-2"
        logs = data_dir / self.settings.data_log_dir / "version-2"
        try:
            return files.read_position(snapshots, logs)
        except OSError as error:
            return DataPosition(0, 0, "unreadable", damage=str(error), loads=False)

    def unusable_data(self, log_text: str) -> str | None:
        return unusable_data_line(log_text, files.UNUSABLE_DATA_ERRORS)
