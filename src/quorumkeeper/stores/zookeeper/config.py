"""What a ZooKeeper server is started with, rendered from the spec: zoo.cfg, its dynamic file,
the logging configuration and the JVM options. Pure text and values; writing them where a server
reads them is its runtime's job (files locally, a ConfigMap on Kubernetes)."""

from __future__ import annotations

from dataclasses import dataclass

from quorumkeeper.spec import ZookeeperSettings
from quorumkeeper.stores.zookeeper.ensemble import CLIENT_PORT, superuser_digest_flag
from quorumkeeper.stores.zookeeper.words import FOUR_LETTER_WORDS

MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

_LOGBACK = """<configuration>
  <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">
    <encoder>
      <pattern>%d{{ISO8601}} [myid:%X{{myid}}] %-5p [%t:%C{{1}}@%L] - %m%n</pattern>
    </encoder>
  </appender>
  <logger name="org.apache.zookeeper.server.NIOServerCnxn" level="{four_letter_words}"/>
  <logger name="org.apache.zookeeper.server.NettyServerCnxn" level="{four_letter_words}"/>
  <root level="{level}"><appender-ref ref="CONSOLE"/></root>
</configuration>
"""
"""At INFO, the keeper's four-letter words (`srvr`, `mntr` every pass) would be most of a member's
log: their connection classes (NIO on the plain port, Netty on the TLS one) log from WARN up
unless a more verbose level is asked for."""


def logback_xml(settings: ZookeeperSettings) -> str:
    """The logging configuration: the spec's level, four-letter-word connections from WARN."""
    return _LOGBACK.format(
        level=settings.log_level,
        four_letter_words="WARN" if settings.log_level == "INFO" else settings.log_level,
    )


ENFORCED_AUTH = (
    "-Dzookeeper.enforce.auth.enabled=true",
    "-Dzookeeper.enforce.auth.schemes=digest",
)
"""A session must `addauth digest user:password` before any other request; ZooKeeper answers the
first request of one that did not with SESSIONCLOSEDREQUIRESASLAUTH and closes the session
(`server.AuthenticationHelper.enforceAuthentication`, 3.7.0 and later; measured on 3.8.6 and
3.9.5). A TLS client is also authenticated as `x509:<subject>`, which does not count: the
scheme enforced is digest."""


def jvm_options(settings: ZookeeperSettings, password: str, *, auth: bool = False) -> list[str]:
    """JVM options of a server: heap, GC, exit on OOM, the superuser's digest, log level, with
    `auth` the enforced digest authentication of every session (`ENFORCED_AUTH`), then the
    spec's `jvm_flags`."""
    return [
        f"-Xmx{settings.heap}",
        "-XX:+UseSerialGC",  # small heaps on shared cores: one GC thread, least overhead
        "-XX:+ExitOnOutOfMemoryError",  # a dead member gets restarted, a wedged one does not
        superuser_digest_flag(password),
        *(ENFORCED_AUTH if auth else ()),
        f"-Dorg.slf4j.simpleLogger.defaultLogLevel={settings.log_level.lower()}",
        *settings.jvm_flags,
    ]


@dataclass(frozen=True)
class ServerTls:
    """A server's TLS material and where it serves clients over TLS.

    `keystore` is one PEM file holding the server's unencrypted PKCS#8 key and its certificate:
    ZooKeeper's PEM keystore reads both from the one `ssl.keyStore.location`
    (`util.PemReader.loadKeyStore`: PKCS#8 keys only, encrypted ones with
    `ssl.keyStore.password`). `trust` is the PEM bundle of CA certificates; `client_address` the
    address the TLS client port binds. `version` is the ZooKeeper release the server runs."""

    keystore: str
    trust: str
    client_address: str
    version: str


def tls_settings(tls: ServerTls, client_port: int) -> dict[str, object]:
    """zoo.cfg's TLS settings: clients only on the TLS port (Netty, mutual TLS) and TLS between
    servers, both with the server's own certificate and the cluster's trust bundle.

    Keys without a `zookeeper.` prefix become system properties with it (`QuorumPeerConfig`).
    A server checks the certificate of a server it connects to against that server's address
    (`ssl.quorum.hostnameVerification`, on by default). The certificate of a server connecting
    in is not checked against the connection's source address: on one host that address is
    127.0.0.1 whatever address the server binds (measured: 3.8.6 refuses every quorum
    connection with "Certificate for <127.0.0.1> doesn't match"); 3.9 turns just that check off
    (`ssl.quorum.clientHostnameVerification`), 3.8 has no such key, so there host names are not
    checked between servers; either way a peer needs a certificate of the cluster's own CA.

    A running server takes a replaced keystore or trust bundle for its next connections, so
    certificates are renewed and a CA rotated without a restart: `sslQuorumReloadCertFiles`
    and `client.certReload` have a `FileChangeWatcher` on each file's folder reset the quorum's
    and the client port's SSL context when a file of that name is created or modified
    (`X509Util.handleWatchEvent`; a rename into place is a create). The client port of 3.9
    reads the files for every connection anyway; that of 3.8 keeps its context without the
    key. Connections made before keep their session."""
    series = tuple(int(part) for part in tls.version.split(".")[:2])
    hostnames = (
        {"ssl.quorum.clientHostnameVerification": "false"}
        if series >= (3, 9)
        else {"ssl.quorum.hostnameVerification": "false"}
    )
    return {
        "serverCnxnFactory": "org.apache.zookeeper.server.NettyServerCnxnFactory",
        "secureClientPort": client_port,
        "secureClientPortAddress": tls.client_address,
        "ssl.keyStore.location": tls.keystore,
        "ssl.keyStore.type": "PEM",
        "ssl.trustStore.location": tls.trust,
        "ssl.trustStore.type": "PEM",
        "ssl.clientAuth": "need",
        "sslQuorum": "true",
        "ssl.quorum.keyStore.location": tls.keystore,
        "ssl.quorum.keyStore.type": "PEM",
        "ssl.quorum.trustStore.location": tls.trust,
        "ssl.quorum.trustStore.type": "PEM",
        "ssl.quorum.clientAuth": "need",
        "sslQuorumReloadCertFiles": "true",
        "client.certReload": "true",
        **hostnames,
    }


CLIENT_SOCKET = "org.apache.zookeeper.ClientCnxnSocketNetty"
"""The Java client's connection class that speaks TLS; its default (NIO) speaks plain text only."""


def client_tls_properties(keystore: str, trust: str) -> dict[str, str]:
    """The Java client's settings for a TLS ensemble (zkCli.sh and any program on the ZooKeeper
    library): Netty, TLS, the client's PEM keystore (key and certificate in one file, as a
    server's, `ServerTls`) and the cluster's PEM trust bundle. They are `ZKClientConfig` keys,
    read from a file (`zkCli.sh -client-configuration FILE`, `new ZKClientConfig(FILE)`) or as
    the system properties of the same names (`-D`, zkCli.sh's `CLIENT_JVMFLAGS`). The client
    checks the server's certificate against the address it connects to
    (`zookeeper.ssl.hostnameVerification`, on by default). A server enables one TLS version
    unless told otherwise (3.9: TLSv1.3, 3.8: TLSv1.2) and a 3.8 client offers TLSv1.2 alone
    (measured: a 3.8.0 zkCli gets "protocol_version" from a 3.9.5 server), so the client offers
    both."""
    return {
        "zookeeper.clientCnxnSocket": CLIENT_SOCKET,
        "zookeeper.client.secure": "true",
        "zookeeper.ssl.protocol": "TLSv1.3",
        "zookeeper.ssl.enabledProtocols": "TLSv1.3,TLSv1.2",
        "zookeeper.ssl.keyStore.location": keystore,
        "zookeeper.ssl.keyStore.type": "PEM",
        "zookeeper.ssl.trustStore.location": trust,
        "zookeeper.ssl.trustStore.type": "PEM",
    }


def server_config(
    settings: ZookeeperSettings,
    snapshots: str,
    txn_logs: str,
    dynamic_file: str | None,
    tls: ServerTls | None = None,
) -> dict[str, object]:
    """zoo.cfg's settings for a server keeping snapshots and txn logs in those folders and its
    membership in `dynamic_file` (reconfig on); standalone mode and the AdminServer off. Without
    a dynamic file reconfig is off and the caller lists the servers (a static ensemble). With
    `tls`, clients and servers talk TLS only (`tls_settings`); the dynamic file then names no
    plain client port (`ensemble.server_spec`)."""
    return {
        "tickTime": settings.tick_time_ms,
        "initLimit": settings.init_limit,
        "syncLimit": settings.sync_limit,
        "dataDir": snapshots,
        "dataLogDir": txn_logs,
        "maxClientCnxns": settings.max_client_cnxns,
        "autopurge.snapRetainCount": settings.snap_retain_count,
        "autopurge.purgeInterval": settings.purge_interval_hours,
        "standaloneEnabled": "false",
        "4lw.commands.whitelist": ",".join(FOUR_LETTER_WORDS),
        "admin.enableServer": "false",  # it would bind 0.0.0.0:8080; 4lw covers our needs
        **{
            key: value
            for key, value in (
                ("minSessionTimeout", settings.min_session_timeout_ms),
                ("maxSessionTimeout", settings.max_session_timeout_ms),
            )
            if value is not None  # unset: ZooKeeper derives them from tickTime
        },
        "reconfigEnabled": "false" if dynamic_file is None else "true",
        **({} if dynamic_file is None else {"dynamicConfigFile": dynamic_file}),
        **({} if tls is None else tls_settings(tls, CLIENT_PORT)),
    }


def zoo_cfg(config: dict[str, object]) -> str:
    """zoo.cfg's text for `config`."""
    body = "".join(f"{key}={value}\n" for key, value in config.items())
    header = "# Written by quorumkeeper at its first start and on each change of settings;"
    return f"{header} ZooKeeper rewrites it.\n{body}"


def dynamic_config_file(zoo_cfg_text: str) -> str | None:
    """The dynamic file a zoo.cfg points at, as ZooKeeper last wrote it."""
    for line in zoo_cfg_text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "dynamicConfigFile":
            return value.strip()
    return None
