"""The ZooKeeper pod's init container, run by real bash on the files the kubelet would project
from the ConfigMap: a member's first start gets the operator's membership and server id; later
starts keep their membership and server id and take the ConfigMap's settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from quorumkeeper.runtimes.kubernetes.objects import TLS_MOUNT, TRUST_KEY, Membership, placement
from quorumkeeper.runtimes.kubernetes.render import cluster_objects, sealed_config
from quorumkeeper.runtimes.kubernetes.resources import Kind, parse_resource
from quorumkeeper.runtimes.kubernetes.zookeeper_pod import (
    ZOOKEEPER_CONFIG_MOUNT,
    ZOOKEEPER_KEYSTORE,
    ZOOKEEPER_MOUNT,
    ZOOKEEPER_TRUST,
)

pytestmark = pytest.mark.operator

Obj = dict[str, Any]


def render(members: int, **settings: object) -> tuple[Obj, Obj]:
    """(ConfigMap data, init container) of a `members`-member ZooKeeper cluster `c` with
    `settings` under `zookeeper:`."""
    resource = parse_resource(
        {
            "apiVersion": "quorumkeeper.io/v1alpha1",
            "kind": "ZookeeperCluster",
            "metadata": {"name": "c", "namespace": "apps"},
            "spec": {
                "members": 3,
                "version": "3.9.5",
                "storage": {"size": "1Gi"},
                "zookeeper": settings,
            },
        }
    )
    objects = cluster_objects(resource, Membership.steady(placement(resource), members), "pw")
    data = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    sts = next(o for o in objects if o["kind"] == "StatefulSet")
    return data, sts["spec"]["template"]["spec"]["initContainers"][0]


def project(data: dict[str, str], folder: Path) -> None:
    """The ConfigMap's keys as files, as the kubelet mounts them."""
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for key, value in data.items():
        (folder / key).write_text(value)


def run_init(init: Obj, pod: str, volume: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """The init container's command with its mounts moved under `volume` and `config`, the TLS
    Secret's next to `config` (holding a keystore for `pod` and the trust bundle)."""
    tls = config.parent / "tls"
    tls.mkdir(exist_ok=True)
    (tls / f"{pod}.pem").write_text(f"key and certificate of {pod}\n")
    (tls / TRUST_KEY).write_text("the trust bundle\n")
    command = [
        part.replace(str(TLS_MOUNT), str(tls)).replace(ZOOKEEPER_CONFIG_MOUNT, str(config))
        for part in init["command"]
    ]
    env = {e["name"]: e.get("value", "") for e in init["env"]}
    env = {k: v.replace(ZOOKEEPER_MOUNT, str(volume)) for k, v in env.items()}
    env.update(POD_NAME=pod, PATH=os.environ["PATH"])
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def test_first_start_writes_the_operators_files_and_later_starts_keep_zookeepers(
    tmp_path: Path,
) -> None:
    data, init = render(3)
    config, volume = tmp_path / "config", tmp_path / "volume"
    project(data, config)
    first = run_init(init, "c-1", volume, config)
    assert first.returncode == 0, first.stderr
    conf = volume / "conf"
    assert (conf / "zoo.cfg").read_text() == data["zoo.cfg"]
    assert (conf / "zoo.cfg.dynamic").read_text() == data["zoo.cfg.dynamic"]
    assert (volume / "data" / "myid").read_text() == "2\n"
    assert "reconfigEnabled=true" in data["zoo.cfg"]
    assert "standaloneEnabled=false" in data["zoo.cfg"]
    assert "admin.enableServer=false" in data["zoo.cfg"]
    assert f"dynamicConfigFile={ZOOKEEPER_MOUNT}/conf/zoo.cfg.dynamic" in data["zoo.cfg"]
    # Secure by default: TLS only, from the pod's own keystore and the trust bundle copied
    # owner-only to one path each, in the folder the server watches.
    assert f"ssl.keyStore.location={ZOOKEEPER_KEYSTORE}" in data["zoo.cfg"]
    assert f"ssl.trustStore.location={ZOOKEEPER_TRUST}" in data["zoo.cfg"]
    assert "secureClientPort=2181" in data["zoo.cfg"] and "clientPort=" not in data["zoo.cfg"]
    assert ";" not in data["zoo.cfg.dynamic"], "no plain client address"
    keystore = volume / "conf" / "keystore.pem"
    assert keystore.read_text() == "key and certificate of c-1\n"
    assert keystore.stat().st_mode & 0o777 == 0o600
    trust = volume / "conf" / "trust.pem"
    assert trust.read_text() == "the trust bundle\n"
    assert trust.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in conf.iterdir() if p.name.startswith(".")) == []

    # A reconfig makes ZooKeeper point zoo.cfg at its committed dynamic file (it drops the
    # line and appends its own, `QuorumPeerConfig.editStaticConfig`). A later membership and
    # settings change rewrites the ConfigMap: a restart of this member takes the settings and
    # keeps the membership ZooKeeper committed.
    committed = f"dynamicConfigFile={ZOOKEEPER_MOUNT}/conf/zoo.cfg.dynamic.100000003"
    kept = [line for line in data["zoo.cfg"].splitlines() if "dynamicConfigFile" not in line]
    (conf / "zoo.cfg").write_text("\n".join([*kept, committed]) + "\n")
    grown, _ = render(5, max_client_cnxns=100)
    project({**grown, "logback.xml": "<configuration/>\n"}, config)
    again = run_init(init, "c-1", volume, config)
    assert again.returncode == 0, again.stderr
    rewritten = (conf / "zoo.cfg").read_text().splitlines()
    settings = [line for line in grown["zoo.cfg"].splitlines() if "dynamicConfigFile" not in line]
    assert rewritten == [*settings, committed]
    assert "maxClientCnxns=100" in rewritten
    assert not list(conf.glob("zoo.cfg.next"))
    assert (conf / "zoo.cfg.dynamic").read_text() == data["zoo.cfg.dynamic"]
    assert (volume / "data" / "myid").read_text() == "2\n"
    assert (conf / "logback.xml").read_text() == "<configuration/>\n"


def test_a_member_without_a_server_id_waits_writing_nothing(tmp_path: Path) -> None:
    data, init = render(3)
    config, volume = tmp_path / "config", tmp_path / "volume"
    project(data, config)
    refused = run_init(init, "c-3", volume, config)
    assert refused.returncode == 1
    assert "no ZooKeeper server id for c-3 in ConfigMap c-config yet" in refused.stderr
    assert not (volume / "conf" / "zoo.cfg").exists()  # no stale membership left behind
    grown, _ = render(4)
    project(grown, config)
    joined = run_init(init, "c-3", volume, config)
    assert joined.returncode == 0, joined.stderr
    assert (volume / "conf" / "zoo.cfg.dynamic").read_text() == grown["zoo.cfg.dynamic"]
    assert (volume / "data" / "myid").read_text() == "4\n"


def test_a_sealed_config_map_lets_a_member_restart_but_none_start_on_an_empty_volume(
    tmp_path: Path,
) -> None:
    """After a join the operator seals the ConfigMap (`render.sealed_config`): a member whose
    volume was replaced finds no server id and waits, instead of rejoining under its old id
    with an empty log; one restarting from its volume starts as before."""
    data, init = render(3)
    config, kept, replaced = tmp_path / "config", tmp_path / "kept", tmp_path / "replaced"
    project(data, config)
    assert run_init(init, "c-1", kept, config).returncode == 0

    patch = sealed_config(Kind.ZOOKEEPER, data)
    assert patch == {key: None for key in data if key.startswith("myid.")} and patch
    sealed = {key: value for key, value in data.items() if key not in patch}
    assert sealed_config(Kind.ZOOKEEPER, sealed) == {}  # sealing again changes nothing
    project(sealed, config)

    restarted = run_init(init, "c-1", kept, config)
    assert restarted.returncode == 0, restarted.stderr
    assert (kept / "data" / "myid").read_text() == data["myid.c-1"]
    refused = run_init(init, "c-1", replaced, config)
    assert refused.returncode == 1
    assert "no ZooKeeper server id for c-1" in refused.stderr
    assert not (replaced / "data" / "myid").exists()
