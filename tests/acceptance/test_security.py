"""etcd secure by default, on real processes: TLS for clients and peers with the cluster's own
CA, authentication with a root user only the keeper holds, least-privilege users, membership
changes and certificate renewal with a writer running, and the visible plain-text opt-out."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import signal
import ssl
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from kazoo.exceptions import NoAuthError  # type: ignore[import-untyped]
from kazoo.security import CREATOR_ALL_ACL  # type: ignore[import-untyped]

from quorumkeeper.certificates import TlsFiles, issue, new_authority
from quorumkeeper.runtimes.local import distributions
from quorumkeeper.runtimes.local.authority import LocalAuthority
from quorumkeeper.stores.etcd.client import CLIENT_PORT as ETCD_CLIENT_PORT
from quorumkeeper.stores.etcd.client import Connections, Tokens
from quorumkeeper.stores.users import KEEPER
from quorumkeeper.stores.zookeeper.ensemble import CLIENT_PORT as ZOOKEEPER_CLIENT_PORT
from tests.acceptance.harness import (
    LocalClusterUnderTest,
    PidWatch,
    Writer,
    etcd_access,
    etcd_post,
    served_certificate,
    spec_file,
)
from tests.polling import wait_until

pytestmark = pytest.mark.acceptance
ETCD = pytest.mark.parametrize("store", ["etcd"])
ZOOKEEPER = pytest.mark.parametrize("store", ["zookeeper"])
"""ZooKeeper's security on the store's own terms is tests/zookeeper/test_security.py; here it
is the CLI's (users, connect, status)."""

COMMONS_CLI = Path("/usr/share/java/commons-cli.jar")
"""What zkCli's commands parse their options with, which the distribution's jars in the cache
lack; Debian's (Maven depends on it)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _put(address: str, key: str, context: ssl.SSLContext | None, tokens: Tokens | None) -> int:
    """A put through the gateway of the member at `address`: its HTTP status."""
    connections = Connections(5.0, context, tokens)
    try:
        body = json.dumps({"key": _b64(key), "value": _b64("v")}).encode()
        status, _ = connections.post(address, "/v3/kv/put", body)
    finally:
        connections.close()
    return status


def _etcdctl(
    cluster: LocalClusterUnderTest, user: str, *args: str
) -> subprocess.CompletedProcess[str]:
    flags = cluster.cli("connect", cluster.name, "--user", user).stdout.split()
    etcdctl = distributions.etcd_binary(cluster.status()["version"]).with_name("etcdctl")
    return subprocess.run(
        [str(etcdctl), *flags, "--command-timeout=5s", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


RESTARTS_PER_ROUND = {"etcd": 1, "zookeeper": 0}
"""How often each member restarts for a renewal or a round of a CA rotation: etcd's restart in
order; ZooKeeper's reload their files where they run (`config.tls_settings`)."""


def _renewed(cluster: LocalClusterUnderTest, watch: PidWatch, store: str) -> dict[str, Any] | None:
    """The status once no certificate is near its end and the members took the new one."""
    status = cluster.status()
    done = not status["certificates_expiring"] and status["rollout"] is None
    restarted = len(watch.changed) == 3 * RESTARTS_PER_ROUND[store]
    return status if done and restarted and status["phase"] == "Ready" else None


def _secured(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Secured")


@ETCD
def test_strangers_are_refused_and_a_user_reaches_its_prefix_only(
    cluster: LocalClusterUnderTest, tmp_path: Path
) -> None:
    cluster.up(3)  # returns once the keeper turned authentication on

    status = cluster.wait_ready(3)
    assert _secured(status)["status"] == "True", status["conditions"]
    assert all(m["client_url"].startswith("https://") for m in status["members"]), status
    assert all(url.startswith("https://") for url in status["connect_string"].split(","))
    root_password = cluster.paths.root / "root-password"
    assert stat.S_IMODE(root_password.stat().st_mode) == 0o600
    keys = sorted(cluster.paths.tls_dir.glob("*.key"))
    assert keys and all(stat.S_IMODE(key.stat().st_mode) == 0o600 for key in keys)
    address = cluster.member(status, "leader")["address"]
    keeper_tls, password = etcd_access(cluster.paths)
    assert keeper_tls is not None and password is not None

    # Plain text: the TLS listener answers no gateway call.
    try:
        plain = httpx.post(f"http://{address}:2379/v3/kv/put", json={"key": _b64("p")}, timeout=5)
        assert plain.status_code != 200, plain.text
    except httpx.HTTPError:
        pass
    # No certificate, and a certificate of another CA: refused at the handshake.
    foreign_ca = new_authority("elsewhere", now=datetime.now(UTC))
    foreign = issue(
        foreign_ca, common_name="", hosts=[], server=False, client=True, now=datetime.now(UTC)
    )
    (tmp_path / "foreign.crt").write_bytes(foreign.certificate)
    (tmp_path / "foreign.key").write_bytes(foreign.key)
    foreign_files = TlsFiles(keeper_tls.trust, tmp_path / "foreign.crt", tmp_path / "foreign.key")
    no_certificate = ssl.create_default_context(cafile=str(keeper_tls.trust))
    for context in (no_certificate, foreign_files.client_context()):
        with pytest.raises(OSError):
            _put(address, "stranger", context, None)
    # The cluster's certificate without a user: refused by authentication.
    assert _put(address, "anonymous", keeper_tls.client_context(), None) in (400, 401, 403)
    _, found = etcd_post(cluster.paths, address, "/v3/kv/range", {"key": _b64("anonymous")})
    assert "kvs" not in found, found

    cluster.cli("user", "add", cluster.name, "orders", "--prefix", "orders/")
    # By certificate (etcdctl, gRPC: the common name is the user) ...
    assert _etcdctl(cluster, "orders", "put", "orders/1", "a").returncode == 0
    outside = _etcdctl(cluster, "orders", "put", "billing/1", "a")
    assert outside.returncode != 0 and "permission denied" in outside.stderr, outside.stderr
    got = _etcdctl(cluster, "orders", "get", "orders/1", "--print-value-only")
    assert got.stdout.strip() == "a", got
    # ... and by password through the gateway (which answers 400 to any certificate with a
    # common name, so the password goes with a certificate without one).
    user_password = (cluster.paths.tls_dir / "orders.password").read_text().strip()
    tokens = Tokens("orders", user_password)
    assert _put(address, "orders/2", keeper_tls.client_context(), tokens) == 200
    assert _put(address, "billing/2", keeper_tls.client_context(), tokens) == 403
    # Adding the user again changes nothing it had.
    cluster.cli("user", "add", cluster.name, "orders", "--prefix", "orders/")
    assert _etcdctl(cluster, "orders", "put", "orders/3", "a").returncode == 0


@ETCD
def test_scale_replace_and_roll_out_with_tls_and_auth_lose_nothing(
    cluster: LocalClusterUnderTest,
) -> None:
    cluster.up(3)
    cluster.wait_ready(3)
    with Writer(cluster) as writer:
        cluster.scale(5)
        cluster.wait_ready(5)
        cluster.scale(3)
        status = cluster.wait_ready(3)
        victim = cluster.member(status, "follower")
        cluster.kill_keeper()
        os.kill(victim["pid"], signal.SIGKILL)
        shutil.rmtree(cluster.member_data(victim["name"]))
        cluster.spawn_keeper()
        status = cluster.wait_ready(3)
        assert cluster.named(status, victim["name"])["id"] != victim["id"]
        changes = spec_file(cluster, {"etcd": {"snapshot_count": 5000}})
        cluster.cli("apply", cluster.name, "--spec-file", str(changes))
        status = cluster.wait_ready(3)
    assert [m["config"] for m in status["members"]] == ["updated"] * 3
    assert _secured(status)["status"] == "True"
    print(
        f"etcd with TLS and auth: {writer.failed} failed writes, longest gap "
        f"{writer.longest_gap:.2f}s over {len(writer.acknowledged)} writes"
    )
    writer.assert_nothing_lost()


@pytest.mark.parametrize("store", ["etcd", "zookeeper"])
def test_a_certificate_near_its_end_is_warned_about_then_renewed_losing_nothing(
    cluster: LocalClusterUnderTest, store: str
) -> None:
    """etcd restarts its members onto the renewed certificate in order, leader last; a
    ZooKeeper member serves it where it runs."""
    cluster.up(3)
    before = cluster.wait_ready(3)
    leader = cluster.member(before, "leader")["name"]
    follower = cluster.member(before, "follower")["name"]
    authority = LocalAuthority(cluster.paths.tls_dir, cluster.name)
    endpoint = next(e for e in map(cluster.desired(3).endpoint, range(3)) if e.name == follower)
    files = authority.member(endpoint)
    short = issue(
        authority.authority(),
        common_name=follower,
        hosts=[endpoint.address, endpoint.client_host],
        server=True,
        client=True,
        now=datetime.now(UTC),
        lifetime=timedelta(days=10),
    )
    keeper = cluster.freeze_keeper()  # the warning shows before the keeper renews it
    try:
        files.key.write_bytes(short.key)
        files.certificate.write_bytes(short.certificate)
        warned = cluster.status()
        assert [e["file"] for e in warned["certificates_expiring"]] == [files.certificate.name]
        table = cluster.cli("status", cluster.name).stdout
        assert f"warning: certificate {files.certificate.name} ends" in " ".join(table.split())
    finally:
        os.kill(keeper, signal.SIGCONT)
    watch = PidWatch(cluster, cluster.pids(before))
    with Writer(cluster) as writer, watch.running():
        status = wait_until(lambda: _renewed(cluster, watch, store), 120, "the renewal")
    if store == "etcd":
        assert watch.changed[-1] == leader, f"the leader {leader} restarts last: {watch.changed}"
    assert watch.most_down <= 1, "never two members down at once"
    assert authority.member(endpoint) == files
    assert short.certificate != files.certificate.read_bytes(), "the certificate was reissued"
    port = ETCD_CLIENT_PORT if store == "etcd" else ZOOKEEPER_CLIENT_PORT
    served = served_certificate(endpoint.client_host, port, authority.client(KEEPER))
    reissued = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    assert served.serial_number == reissued.serial_number, "the member serves the reissued one"
    assert "certificates reissued: member-" in cluster.paths.keeper_log.read_text()
    print(
        f"{store} renewal: restart order {watch.changed}, {writer.failed} failed writes, longest "
        f"gap {writer.longest_gap:.2f}s over {len(writer.acknowledged)} writes"
    )
    writer.assert_nothing_lost()
    assert writer.failed == 0, writer.failures[:5]
    assert [m["config"] for m in status["members"]] == ["updated"] * 3


@ETCD
def test_plain_text_is_an_explicit_warned_opt_out(cluster: LocalClusterUnderTest) -> None:
    result = cluster.cli(
        "up", cluster.name, "--members", "1", "--subnet", cluster.subnet, "--no-tls", "--no-auth"
    )
    said = " ".join(result.stderr.split())
    assert "warning: tls: false: clients and members talk in plain text" in said
    assert "warning: auth: false:" in said
    status = cluster.wait_ready(1)
    assert status["members"][0]["client_url"].startswith("http://")
    secured = _secured(status)
    assert (secured["status"], secured["reason"]) == ("False", "PlainText")
    assert "open: clients and members talk in plain text" in " ".join(
        cluster.cli("status", cluster.name).stdout.split()
    )
    assert not cluster.paths.tls_dir.exists()
    assert not (cluster.paths.root / "root-password").exists()
    address = status["members"][0]["address"]
    answer = httpx.post(
        f"http://{address}:2379/v3/kv/put", json={"key": _b64("open"), "value": _b64("v")}
    )
    assert answer.status_code == 200, answer.text


@ETCD
def test_plain_text_with_auth_says_how_a_client_could_get_in(
    cluster: LocalClusterUnderTest,
) -> None:
    """Users need TLS, so with tls: false and auth: true only the keeper connects: `connect`
    and `user add` both say so and name the same ways out, not each other."""
    cluster.cli("up", cluster.name, "--members", "1", "--subnet", cluster.subnet, "--no-tls")
    cluster.wait_ready(1)
    for command in (["connect"], ["user", "add"]):
        args = [*command, cluster.name] + (["app", "--prefix", "app/"] if "add" in command else [])
        refused = cluster.cli(*args, check=False)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 2, said
        assert "or with `--no-tls --no-auth` for one any client may use" in said, said
        assert "quorumkeeper user add" not in said, said


def _pem_certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


@pytest.mark.parametrize("store", ["etcd", "zookeeper"])
def test_a_ca_rotation_rolls_out_in_three_rounds_failing_no_write(
    cluster: LocalClusterUnderTest, store: str
) -> None:
    """etcd restarts its members each round, handing leadership over before its leader's
    restart; ZooKeeper takes each round's files where it runs. After it, a member restarted
    (trusting the new CA alone) rejoins: the others took the new trust bundle and serve their
    new certificates between servers too."""
    cluster.up(3)
    before = cluster.wait_ready(3)
    prefix = "orders/" if store == "etcd" else "/orders"
    added = cluster.cli("user", "add", cluster.name, "orders", "--prefix", prefix)
    tls_dir = cluster.paths.tls_dir
    old_ca = x509.load_pem_x509_certificate((tls_dir / "ca.crt").read_bytes())
    watch = PidWatch(cluster, cluster.pids(before))
    with Writer(cluster) as writer, watch.running():
        cluster.cli("rotate-ca", cluster.name, "--timeout", "400", timeout=420)
        status = cluster.status()  # rotate-ca returns once the last round is rolled out
    new_ca = x509.load_pem_x509_certificate((tls_dir / "ca.crt").read_bytes())
    assert new_ca.subject != old_ca.subject
    assert [c.subject for c in _pem_certificates(tls_dir / "trust.pem")] == [new_ca.subject]
    leaves = sorted(tls_dir.glob("member-*.crt")) + sorted(tls_dir.glob("client-*.crt"))
    assert all(_pem_certificates(leaf)[0].issuer == new_ca.subject for leaf in leaves), leaves
    starts = 1 + 3 * RESTARTS_PER_ROUND[store]  # three rounds
    assert [m["starts"] for m in status["members"]] == [starts] * 3
    assert watch.most_down <= 1, "never two members down at once"
    assert "CA rotation: done" in cluster.paths.keeper_log.read_text()
    print(
        f"{store} CA rotation: {writer.failed} failed writes, longest gap "
        f"{writer.longest_gap:.2f}s over {len(writer.acknowledged)} writes"
    )
    writer.assert_nothing_lost()
    assert writer.failed == 0, writer.failures[:5]
    follower = cluster.member(status, "follower")
    with Writer(cluster) as after:
        os.kill(follower["pid"], signal.SIGKILL)
        wait_until(lambda: _rejoined(cluster, follower), 90, f"{follower['name']} rejoined")
    after.assert_nothing_lost()
    if store == "etcd":
        assert _etcdctl(cluster, "orders", "put", "orders/after", "a").returncode == 0
    else:  # the arguments printed before the rotation: the keeper rewrote the user's keystore
        password = (tls_dir / "orders.password").read_text().strip()
        commands = f"addauth digest orders:{password}\ncreate /orders/after a\nquit\n"
        said = _zkcli(cluster, added.stdout.split(), commands, {})
        assert "Created /orders/after" in said.splitlines(), said


def _rejoined(cluster: LocalClusterUnderTest, member: dict[str, Any]) -> bool:
    """Whether `member` (as status showed it) runs as another process, every member a healthy
    voter under one leader."""
    status = cluster.status()
    now = next(m for m in status["members"] if m["name"] == member["name"])
    voters = all(m["healthy"] and m["role"] != "learner" for m in status["members"])
    leaders = [m for m in status["members"] if m["role"] == "leader"]
    return now["pid"] not in (None, member["pid"]) and voters and len(leaders) == 1


def _zkcli(
    cluster: LocalClusterUnderTest, args: list[str], commands: str, env: dict[str, str]
) -> str:
    """ZooKeeper's shell run as its bin/zkCli.sh runs it (`java -cp <the distribution's jars>
    $CLIENT_JVMFLAGS org.apache.zookeeper.ZooKeeperMain "$@"`), reading `commands` from its
    standard input: its output."""
    classpath = [*distributions.zookeeper_classpath(cluster.status()["version"]), str(COMMONS_CLI)]
    java = [
        "java",
        "-cp",
        ":".join(classpath),
        *shlex.split(env.get("CLIENT_JVMFLAGS", "")),
        "org.apache.zookeeper.ZooKeeperMain",
        *args,
    ]
    shell = subprocess.run(
        java, input=commands, capture_output=True, text=True, timeout=60, check=False
    )
    return shell.stdout + shell.stderr


def _exports(text: str) -> dict[str, str]:
    """The variables of `export NAME=VALUE` lines, as a shell would set them."""
    lines = [shlex.split(line.removeprefix("export ")) for line in text.splitlines()]
    return dict(line[0].split("=", 1) for line in lines if line)


@ZOOKEEPER
def test_a_zookeeper_user_reaches_its_znode_only_through_zkcli_and_kazoo(
    cluster: LocalClusterUnderTest,
) -> None:
    cluster.up(1)  # returns once the keeper closed the root znode
    assert _secured(cluster.wait_ready(1))["status"] == "True"
    name = cluster.name
    nobody = cluster.cli("connect", name, check=False)
    assert nobody.returncode == 2 and "has no users yet" in nobody.stderr, nobody.stderr
    wrong = cluster.cli("user", "add", name, "orders", "--prefix", "orders/", check=False)
    assert wrong.returncode == 2 and "fix: a znode such as /orders" in wrong.stderr, wrong.stderr
    assert not (cluster.paths.tls_dir / "orders.password").exists(), "a refusal makes nothing"

    added = cluster.cli("user", "add", name, "orders", "--prefix", "/orders")
    for secret in ("orders.password", "keystore-orders.pem", "client-orders.key"):
        assert stat.S_IMODE((cluster.paths.tls_dir / secret).stat().st_mode) == 0o600, secret
    listed = cluster.cli("connect", name, check=False)
    assert listed.returncode == 2 and "its users: orders" in listed.stderr, listed.stderr
    args = cluster.cli("connect", name, "--user", "orders").stdout.split()
    assert args == added.stdout.split() and args[0] == "-client-configuration", args
    password = (cluster.paths.tls_dir / "orders.password").read_text().strip()

    # zkCli.sh with the printed arguments: authenticated, the user creates, reads, changes and
    # deletes under its znode, and is refused anywhere else.
    said = _zkcli(
        cluster,
        args,
        f"addauth digest orders:{password}\n"
        "create /orders/a v1 auth::cdrwa\nget /orders/a\nset /orders/a v2\nget /orders/a\n"
        "create /outside x\nls /\ncreate /orders/gone x auth::cdrwa\n"
        "delete /orders/gone\nls /orders\nquit\n",
        {},
    )
    lines = said.splitlines()
    assert "Created /orders/a" in lines and "v1" in lines and "v2" in lines, said
    assert "Insufficient permission : /outside" in lines, said
    assert "Insufficient permission : /" in lines, said
    assert "[a]" in lines, said  # /orders/gone was deleted
    # Without `addauth` the session is closed at its first request: nothing is read.
    anonymous = _zkcli(cluster, args, "get /orders/a\nquit\n", {})
    assert "v2" not in anonymous.splitlines(), anonymous

    # The same through zkCli.sh's environment (`--env`: CLIENT_JVMFLAGS and the servers).
    env = _exports(cluster.cli("connect", name, "--user", "orders", "--env").stdout)
    assert env["ZOOKEEPER_PASSWORD_FILE"] == str(cluster.paths.tls_dir / "orders.password")
    by_env = _zkcli(
        cluster,
        ["-server", env["ZOOKEEPER_SERVERS"]],
        f"addauth digest orders:{password}\nget /orders/a\nquit\n",
        env,
    )
    assert "v2" in by_env.splitlines(), by_env

    # kazoo with the printed snippet.
    snippet = added.stderr.split("kazoo (Python):\n", 1)[1]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # connects, as printed
    client = namespace["client"]
    try:
        assert client.connected
        client.create("/orders/b", b"kazoo", acl=CREATOR_ALL_ACL)
        assert client.get("/orders/b")[0] == b"kazoo"
        assert client.get("/orders/a")[0] == b"v2"
        with pytest.raises(NoAuthError):
            client.create("/elsewhere", b"x")
        with pytest.raises(NoAuthError):
            client.get_children("/")
    finally:
        client.stop()
        client.close()

    # status: the Secured condition in the table, and a user's certificate near its end warned
    # about until the keeper reissues it in place (its keystore too).
    table = " ".join(cluster.cli("status", name).stdout.split())
    assert "secured: TLS for clients and members; clients authenticate (Secured True" in table
    authority = LocalAuthority(cluster.paths.tls_dir, name)
    user_files = authority.client("orders")
    short = issue(
        authority.authority(),
        common_name="orders",
        hosts=[],
        server=False,
        client=True,
        now=datetime.now(UTC),
        lifetime=timedelta(days=10),
    )
    keeper = cluster.freeze_keeper()  # the warning shows before the keeper renews it
    try:
        user_files.key.write_bytes(short.key)
        user_files.certificate.write_bytes(short.certificate)
        warned = " ".join(cluster.cli("status", name).stdout.split())
    finally:
        os.kill(keeper, signal.SIGCONT)
    assert (
        "warning: certificate client-orders.crt ends" in warned
        and "the keeper reissues it in place" in warned
    ), warned

    def renewed() -> bool:
        status = cluster.paths.load_status() or {}
        reissued = user_files.certificate.read_bytes() != short.certificate
        return reissued and status.get("certificates_expiring") == []

    wait_until(renewed, 30, "the keeper reissues the user's certificate")
    leaf = x509.load_pem_x509_certificate(user_files.certificate.read_bytes())
    assert leaf.not_valid_after_utc > datetime.now(UTC) + timedelta(days=300)
    again = _zkcli(cluster, args, f"addauth digest orders:{password}\nget /orders/b\nquit\n", {})
    assert "kazoo" in again.splitlines(), "the keystore was written again"
