"""What a ZooKeeper server is started with, rendered from the spec: zoo.cfg, its dynamic file,
the logging configuration and the JVM options. Pure text and values; writing them where a server
reads them is its runtime's job (files locally, a ConfigMap on Kubernetes)."""

from __future__ import annotations

from quorumkeeper.spec import ZookeeperSettings
from quorumkeeper.stores.zookeeper.ensemble import superuser_digest_flag
from quorumkeeper.stores.zookeeper.words import FOUR_LETTER_WORDS

MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

_LOGBACK = """<configuration>
  <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">
    <encoder>
      <pattern>%d{{ISO8601}} [myid:%X{{myid}}] %-5p [%t:%C{{1}}@%L] - %m%n</pattern>
    </encoder>
  </appender>
  <logger name="org.apache.zookeeper.server.NIOServerCnxn" level="{four_letter_words}"/>
  <root level="{level}"><appender-ref ref="CONSOLE"/></root>
</configuration>
"""
"""At INFO, the keeper's four-letter words (`srvr`, `mntr` every pass) would be most of a member's
log: their connection class logs from WARN up unless a more verbose level is asked for."""


def logback_xml(settings: ZookeeperSettings) -> str:
    """The logging configuration: the spec's level, four-letter-word connections from WARN."""
    return _LOGBACK.format(
        level=settings.log_level,
        four_letter_words="WARN" if settings.log_level == "INFO" else settings.log_level,
    )


def jvm_options(settings: ZookeeperSettings, password: str) -> list[str]:
    """JVM options of a server: heap, GC, exit on OOM, the superuser's digest, log level."""
    return [
        f"-Xmx{settings.heap}",
        "-XX:+UseSerialGC",  # small heaps on shared cores: one GC thread, least overhead
        "-XX:+ExitOnOutOfMemoryError",  # a dead member gets restarted, a wedged one does not
        superuser_digest_flag(password),
        f"-Dorg.slf4j.simpleLogger.defaultLogLevel={settings.log_level.lower()}",
    ]


def server_config(
    settings: ZookeeperSettings, snapshots: str, txn_logs: str, dynamic_file: str | None
) -> dict[str, object]:
    """zoo.cfg's settings for a server keeping snapshots and txn logs in those folders and its
    membership in `dynamic_file` (reconfig on); standalone mode and the AdminServer off. Without
    a dynamic file reconfig is off and the caller lists the servers (a static ensemble)."""
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
