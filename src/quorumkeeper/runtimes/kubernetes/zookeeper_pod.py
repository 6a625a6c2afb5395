"""The ZooKeeper member's containers, from the official image as it is: an init container puts
our zoo.cfg, its dynamic file and `myid` in place before the image's entrypoint would write its
own, then the image's own entrypoint and `zkServer.sh start-foreground` run the server. The files
come from the store's own `server_config`, `dynamic_config` and `logback_xml`. With TLS a
sidecar hands the server renewed certificates and each CA rotation phase where it runs
(`_TAKE_TLS`), so no pod restarts for them."""

from __future__ import annotations

from quorumkeeper.runtimes.kubernetes.objects import (
    RESTRICTED_CONTAINER,
    TLS_MOUNT,
    TLS_VOLUME_MOUNT,
    TRUST_KEY,
    Membership,
    Names,
    Obj,
    container_resources,
    field_env,
    image,
    member_tls,
    object_metadata,
    store_ports,
)
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, ZookeeperClusterSpec
from quorumkeeper.stores.zookeeper import config as zookeeper_config
from quorumkeeper.stores.zookeeper import ensemble

ZOOKEEPER_IMAGE = "docker.io/library/zookeeper"
"""ZooKeeper's Docker official image (docker-library `zookeeper`, 3.9.5/Dockerfile): user and
group `zookeeper` (uid/gid 1000), `ZOOCFGDIR` set from `ZOO_CONF_DIR` at build time, an
entrypoint writing zoo.cfg and myid only where absent, then `zkServer.sh start-foreground`."""
ZOOKEEPER_MOUNT = "/var/lib/zookeeper"
ZOOKEEPER_CONF_DIR = f"{ZOOKEEPER_MOUNT}/conf"
"""On the volume: ZooKeeper rewrites zoo.cfg and its dynamic file on every reconfig."""
ZOOKEEPER_UID = 1000
ZOOKEEPER_CONFIG_MOUNT = "/etc/quorumkeeper"
KEYSTORE_NAME = "keystore.pem"
ZOOKEEPER_KEYSTORE = f"{ZOOKEEPER_CONF_DIR}/{KEYSTORE_NAME}"
"""The member's PEM keystore, as zoo.cfg names it for every pod (`_TAKE_TLS`)."""
TRUST_NAME = "trust.pem"
ZOOKEEPER_TRUST = f"{ZOOKEEPER_CONF_DIR}/{TRUST_NAME}"
"""The trust bundle zoo.cfg names: a copy of the TLS Secret's, in a folder the server watches
(`_TAKE_TLS`)."""
TLS_COPY_SECONDS = 5
"""How often the sidecar compares the TLS Secret's keystore and trust bundle with the server's
copies: a change reaches a running server within the kubelet's Secret sync and this. A CA
rotation's phase moves on once every member shows it took its files
(`operator.ClusterDaemon.members_took_phase`)."""


def zookeeper_paths(spec: ZookeeperClusterSpec) -> tuple[str, str]:
    """(snapshots, transaction logs) of a member: the settings' folders under its volume."""
    settings = spec.zookeeper
    return f"{ZOOKEEPER_MOUNT}/{settings.data_dir}", f"{ZOOKEEPER_MOUNT}/{settings.data_log_dir}"


def zookeeper_settings_data(spec: ZookeeperClusterSpec) -> dict[str, str]:
    """The ConfigMap's keys every member starts with, whatever the membership: zoo.cfg (every
    start copies it, keeping the dynamic file ZooKeeper last pointed it at) and the logging
    configuration."""
    snapshots, txn_logs = zookeeper_paths(spec)
    dynamic_file = f"{ZOOKEEPER_CONF_DIR}/zoo.cfg.dynamic"
    tls = None
    if spec.tls:
        # One zoo.cfg for every pod: the pod's own keystore and the trust bundle are copied to
        # one path each, and the TLS client port binds every address (the probes ask the pod's
        # IP).
        tls = zookeeper_config.ServerTls(
            keystore=ZOOKEEPER_KEYSTORE,
            trust=ZOOKEEPER_TRUST,
            client_address="0.0.0.0",
            version=spec.version,
        )
    settings = zookeeper_config.server_config(
        spec.zookeeper, snapshots, txn_logs, dynamic_file, tls
    )
    return {
        "zoo.cfg": zookeeper_config.zoo_cfg(settings),
        "logback.xml": zookeeper_config.logback_xml(spec.zookeeper),
    }


def zookeeper_config_data(spec: ZookeeperClusterSpec, membership: Membership) -> dict[str, str]:
    """The ConfigMap's data: the settings (`zookeeper_settings_data`), the dynamic file a
    member's first start copies, and each member's server id (`myid.<pod>`)."""
    return {
        **zookeeper_settings_data(spec),
        "zoo.cfg.dynamic": ensemble.dynamic_config(
            list(membership.peers), plain_client=not spec.tls
        ),
        **{
            f"myid.{peer.endpoint.name}": f"{peer.member_id}\n"
            for peer in membership.peers
            if peer.member_id is not None
        },
    }


_ZOOKEEPER_INIT = """set -eu
mkdir -p "$ZOO_CONF_DIR" "$ZOO_DATA_DIR" "$ZOO_DATA_LOG_DIR"
if [ ! -f "$ZOO_DATA_DIR/myid" ]; then
  if [ ! -f "{config}/myid.$POD_NAME" ]; then
    echo "no ZooKeeper server id for $POD_NAME in ConfigMap {config_map} yet" >&2
    exit 1
  fi
  cp {config}/zoo.cfg.dynamic "$ZOO_CONF_DIR/zoo.cfg.dynamic"
  cp {config}/zoo.cfg "$ZOO_CONF_DIR/zoo.cfg"
  cp "{config}/myid.$POD_NAME" "$ZOO_DATA_DIR/myid"
else
  key='^[[:space:]]*dynamicConfigFile[[:space:]]*='
  dynamic="$(grep -E "$key" "$ZOO_CONF_DIR/zoo.cfg" || true)"
  if [ -n "$dynamic" ]; then
    next="$ZOO_CONF_DIR/zoo.cfg.next"
    grep -vE "$key" {config}/zoo.cfg > "$next"
    printf '%s\\n' "$dynamic" >> "$next"
    mv "$next" "$ZOO_CONF_DIR/zoo.cfg"
  fi
fi
cp {config}/logback.xml "$ZOO_CONF_DIR/logback.xml"
{tls}"""
"""Our zoo.cfg, its dynamic file and myid in place before the image's entrypoint runs (which
writes its own only where they are absent). A member without `myid` has never started on this
volume: it gets the membership and server id the operator set for its join, `myid` written last
so an interrupted copy is redone. A member with `myid` keeps its membership: ZooKeeper's
reconfig rewrites zoo.cfg only to point `dynamicConfigFile` at the committed dynamic file
(`QuorumPeerConfig.editStaticConfig`, which drops membership lines, never ours), so its zoo.cfg is
the ConfigMap's settings with that one line kept, renamed into place whole: a pod restarted for
new settings starts with them, as the local launcher's `refresh` does. With TLS, the pod's own
keystore and the trust bundle are put in place (`_TAKE_TLS`) before the server starts."""

_TAKE_TLS = """umask 077
take() {{
  target="$ZOO_CONF_DIR/$2"
  if [ -f "$target" ] && [ "$(cat "$1")" = "$(cat "$target")" ]; then return 0; fi
  next="$(mktemp "$ZOO_CONF_DIR/.$2.XXXXXX")" || return 1
  if cat "$1" > "$next" && mv -f "$next" "$target"; then return 0; fi
  rm -f "$next"
  return 1
}}
take_tls() {{
  take "{tls}/$POD_NAME.pem" {keystore} && take "{tls}/{trust}" {trust_copy}
}}
"""
"""`take_tls`: the pod's keystore (`<pod>.pem`) and the trust bundle from the TLS Secret's
mount into `$ZOO_CONF_DIR` (`ZOOKEEPER_KEYSTORE`, `ZOOKEEPER_TRUST`), each where its content
differs, owner-only: written to a new file of that folder, then renamed onto its name. The
kubelet updates a Secret volume by swapping a `..data` link, of which a server's watcher sees
nothing; the rename is an event for the very name zoo.cfg gives, on which ZooKeeper takes the
file for its next connections (`config.tls_settings`). Plain bash and coreutils, as in the
image."""

_TLS_SIDECAR = """{take}trap 'exit 0' TERM
while :; do
  take_tls || echo "TLS files not taken; again in {period} s" >&2
  sleep {period} & wait $!
done
"""
"""The sidecar: `take_tls` every `TLS_COPY_SECONDS`, so renewed certificates and a CA
rotation's phases reach the running server. It stops at once on SIGTERM (the wait, unlike a
foreground sleep, lets the trap run), so a pod's deletion does not wait for its grace period."""

TLS_SIDECAR_RESOURCES: Obj = {"requests": {"cpu": "5m", "memory": "16Mi"}}
"""A shell that wakes every few seconds to compare two small files."""


_FOUR_LETTER_WORD = (
    'exec 3<>"/dev/tcp/$POD_IP/{port}"; printf {word} >&3; grep -q{flags} "{match}" <&3'
)
_FOUR_LETTER_WORD_TLS = (
    'printf {word} | openssl s_client -quiet -connect "$POD_IP:{port}" -CAfile {trust} '
    '-cert {certificate} -key {key} 2>/dev/null | grep -q{flags} "{match}"'
)


def _four_letter_probe(word: str, match: str, flags: str = "", *, tls: bool = False) -> Obj:
    """A probe asking the server's client port one four-letter word through bash's /dev/tcp,
    or with TLS through `openssl s_client` with the member's own certificate (the TLS port
    needs a client certificate of the cluster's CA): bash and openssl are in the official
    image (and in the test bed's), no JVM starts for a probe. It asks the pod's IP: the
    dynamic file's `;<pod DNS name>:2181` binds the plain client port there only."""
    template = _FOUR_LETTER_WORD_TLS if tls else _FOUR_LETTER_WORD
    files = member_tls("$POD_NAME")
    script = template.format(
        port=ensemble.CLIENT_PORT,
        word=word,
        match=match,
        flags=flags,
        trust=files.trust,
        certificate=f'"{files.certificate}"',
        key=f'"{files.key}"',
    )
    return {"exec": {"command": ["bash", "-c", script]}}


def _zookeeper_env(spec: ZookeeperClusterSpec) -> list[Obj]:
    snapshots, txn_logs = zookeeper_paths(spec)
    return [
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_IP", "status.podIP"),
        # ZOOCFGDIR is what zkServer.sh reads; the image sets it from ZOO_CONF_DIR at build.
        {"name": "ZOO_CONF_DIR", "value": ZOOKEEPER_CONF_DIR},
        {"name": "ZOOCFGDIR", "value": ZOOKEEPER_CONF_DIR},
        {"name": "ZOO_DATA_DIR", "value": snapshots},
        {"name": "ZOO_DATA_LOG_DIR", "value": txn_logs},
    ]


def zookeeper_containers(
    resource: ClusterResource, spec: ZookeeperClusterSpec
) -> tuple[Obj, list[Obj]]:
    """(init container writing zoo.cfg and myid when absent, the pod's containers: the server
    and, with TLS, the sidecar handing it renewed certificates and trust, `_TLS_SIDECAR`)."""
    names = Names(resource.name)
    env = _zookeeper_env(spec)
    data = {"name": "data", "mountPath": ZOOKEEPER_MOUNT}
    mounts = [
        data,
        {"name": "config", "mountPath": ZOOKEEPER_CONFIG_MOUNT, "readOnly": True},
        *([TLS_VOLUME_MOUNT] if spec.tls else []),
    ]
    take = _TAKE_TLS.format(
        tls=TLS_MOUNT, keystore=KEYSTORE_NAME, trust=TRUST_KEY, trust_copy=TRUST_NAME
    )
    init = {
        "name": "config",
        "image": image(resource, ZOOKEEPER_IMAGE, spec.version),
        "imagePullPolicy": spec.image.pull_policy,
        "command": [
            "bash",
            "-c",
            _ZOOKEEPER_INIT.format(
                config=ZOOKEEPER_CONFIG_MOUNT,
                config_map=names.config_map,
                tls=f"{take}take_tls\n" if spec.tls else "",
            ),
        ],
        "env": env,
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": mounts,
    }
    # The digest in the JVM options comes from the Secret: only the Secret changes with it.
    digest_flag = ensemble.superuser_digest_flag("")
    options = [
        "$(QK_SUPERUSER_DIGEST_FLAG)" if option == digest_flag else option
        for option in zookeeper_config.jvm_options(spec.zookeeper, "", auth=spec.auth)
    ]
    server = {
        "name": "zookeeper",
        "image": image(resource, ZOOKEEPER_IMAGE, spec.version),
        "imagePullPolicy": spec.image.pull_policy,
        "env": [
            *env,
            {
                "name": "QK_SUPERUSER_DIGEST_FLAG",
                "valueFrom": {
                    "secretKeyRef": {"name": names.superuser_secret, "key": "digest-flag"}
                },
            },
            {"name": "SERVER_JVMFLAGS", "value": " ".join(options)},
        ],
        "ports": [
            {"name": name, "containerPort": port}
            for name, port in store_ports(resource.kind).items()
        ],
        "readinessProbe": {
            **_four_letter_probe(
                "srvr", "^Mode: (leader|follower|observer)", flags="E", tls=spec.tls
            ),
            "periodSeconds": 2,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            **_four_letter_probe("ruok", "imok", tls=spec.tls),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": container_resources(resource),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": mounts,
    }
    if not spec.tls:
        return init, [server]
    sidecar = {
        "name": "tls-files",
        "image": image(resource, ZOOKEEPER_IMAGE, spec.version),
        "imagePullPolicy": spec.image.pull_policy,
        "command": ["bash", "-c", _TLS_SIDECAR.format(take=take, period=TLS_COPY_SECONDS)],
        "env": [
            field_env("POD_NAME", "metadata.name"),
            {"name": "ZOO_CONF_DIR", "value": ZOOKEEPER_CONF_DIR},
        ],
        "resources": TLS_SIDECAR_RESOURCES,
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [data, TLS_VOLUME_MOUNT],
    }
    return init, [server, sidecar]


def superuser_secret(resource: ClusterResource, password: str) -> Obj:
    """The ZooKeeper superuser: its password (for the operator's reconfigs) and the JVM flag
    carrying its digest (for the servers). The operator creates it once and never rewrites it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_metadata(resource, Names(resource.name).superuser_secret),
        "type": "Opaque",
        "stringData": {
            "username": ensemble.SUPERUSER,
            "password": password,
            "digest-flag": ensemble.superuser_digest_flag(password),
        },
    }
