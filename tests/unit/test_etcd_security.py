"""etcd's TLS flags, prefix ranges, and the local authority's renewal and generation, on real
files (the clusters themselves are in tests/acceptance/test_security.py)."""

from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from quorumkeeper.certificates import issue, new_token_key
from quorumkeeper.model import Endpoint, Peer
from quorumkeeper.runtimes.local.authority import LocalAuthority
from quorumkeeper.runtimes.local.launchers import EtcdLauncher
from quorumkeeper.runtimes.local.state import ensure_secret
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.stores.etcd.client import _b64_end
from quorumkeeper.stores.etcd.config import member_flags

ONE = Endpoint("c-0", 0, "127.71.250.1")
TWO = Endpoint("c-1", 1, "127.71.250.2")


def _flags(authority: LocalAuthority | None) -> list[str]:
    tls = authority.member(ONE) if authority else None
    peers = [Peer(ONE, None), Peer(TWO, "2")]
    return member_flags(ONE, peers, EtcdSettings(), "token", bootstrap=False, tls=tls)


def test_with_a_certificate_every_url_is_https_and_both_sides_ask_for_one(tmp_path: Path) -> None:
    flags = _flags(LocalAuthority(tmp_path, "c"))
    assert "--listen-client-urls=https://127.71.250.1:2379" in flags
    assert "--initial-advertise-peer-urls=https://127.71.250.1:2380" in flags
    assert "--initial-cluster=c-0=https://127.71.250.1:2380,c-1=https://127.71.250.2:2380" in flags
    for flag in ("--client-cert-auth", "--peer-client-cert-auth"):
        assert flag in flags
    assert f"--cert-file={tmp_path / 'member-c-0.crt'}" in flags
    assert f"--peer-trusted-ca-file={tmp_path / 'trust.pem'}" in flags


def test_without_a_certificate_members_speak_plain_http() -> None:
    flags = _flags(None)
    assert "--listen-client-urls=http://127.71.250.1:2379" in flags
    assert not [flag for flag in flags if "cert" in flag]


def test_a_prefix_range_ends_after_its_last_key() -> None:
    assert base64.b64decode(_b64_end("orders/")) == b"orders0"
    assert base64.b64decode(_b64_end("a")) == b"b"


def test_a_renewal_changes_the_generation_and_a_new_member_does_not(tmp_path: Path) -> None:
    authority = LocalAuthority(tmp_path, "c")
    launcher = EtcdLauncher("3.7.3", EtcdSettings(), "token", authority)
    files = authority.member(ONE)
    before = launcher.fingerprint()
    authority.member(TWO)  # a new member's first certificate
    assert launcher.fingerprint() == before
    assert authority.renew([ONE, TWO]) == []
    assert not authority.expiring(datetime.now(UTC))

    now = datetime.now(UTC)
    short = issue(
        authority.authority(),
        common_name="c-0",
        hosts=[ONE.address],
        server=True,
        client=True,
        now=now,
        lifetime=timedelta(days=10),
    )
    files.key.write_bytes(short.key)
    files.certificate.write_bytes(short.certificate)
    assert [name for name, _ in authority.expiring(now)] == ["member-c-0.crt"]

    assert authority.renew([ONE, TWO]) == ["member-c-0.crt"]
    assert not authority.expiring(now)
    assert files.certificate.read_bytes() != short.certificate
    assert launcher.fingerprint() != before, "members restart onto the renewed certificate"
    assert authority.renew([ONE, TWO]) == []


def test_a_plain_text_launcher_has_no_tls_in_its_fingerprint(tmp_path: Path) -> None:
    plain = EtcdLauncher("3.7.3", EtcdSettings(), "token")
    secure = EtcdLauncher("3.7.3", EtcdSettings(), "token", LocalAuthority(tmp_path, "c"))
    assert plain.fingerprint() != secure.fingerprint(), "a flip of tls is rolled out"


def test_signed_tokens_reach_the_flags_and_the_fingerprint(tmp_path: Path) -> None:
    key = tmp_path / "token-signing.key"
    assert ensure_secret(key, new_token_key) == ensure_secret(key, new_token_key), "made once"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    flags = member_flags(
        ONE, [Peer(ONE, None)], EtcdSettings(), "t", bootstrap=True, token_key=str(key)
    )
    assert f"--auth-token=jwt,priv-key={key},sign-method=ES256,ttl=1h" in flags
    assert not [flag for flag in _flags(None) if flag.startswith("--auth-token")]
    simple = EtcdLauncher("3.7.3", EtcdSettings(), "token")
    signed = EtcdLauncher("3.7.3", EtcdSettings(), "token", token_key=key)
    assert simple.fingerprint() != signed.fingerprint(), "members restart onto signed tokens"
