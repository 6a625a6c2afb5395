"""The cluster CA and its certificates, checked by real TLS handshakes over loopback."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from quorumkeeper.certificates import (
    RENEW_BEFORE,
    ROTATE_AUTHORITY_BEFORE,
    TlsFiles,
    authority_due,
    current,
    issue,
    new_authority,
)
from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.local.authority import KEEPER, LocalAuthority

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@contextmanager
def tls_server(files: TlsFiles) -> Iterator[tuple[int, list[BaseException | None]]]:
    """A one-connection TLS server on 127.0.0.1 that requires a client certificate; yields its
    port and, once the connection is over, the server side's handshake error (None if none)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(files.certificate), str(files.key))
    context.load_verify_locations(str(files.trust))
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    outcome: list[BaseException | None] = []

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with context.wrap_socket(connection, server_side=True) as wrapped:
                wrapped.sendall(b"ok")
            outcome.append(None)
        except (ssl.SSLError, OSError) as error:
            outcome.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], outcome
    finally:
        thread.join(timeout=10)
        listener.close()


def handshake(port: int, context: ssl.SSLContext, host: str = "127.0.0.1") -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as wrapped,
    ):
        return wrapped.recv(2)


def endpoint(ordinal: int, address: str = "127.0.0.1") -> Endpoint:
    return Endpoint(f"orders-{ordinal}", ordinal, address)


def test_a_member_and_the_keeper_shake_hands(tmp_path: Path) -> None:
    authority = LocalAuthority(tmp_path / "tls", "orders")
    with tls_server(authority.member(endpoint(0))) as (port, outcome):
        assert handshake(port, authority.client(KEEPER).client_context()) == b"ok"
    assert outcome == [None]


def test_a_client_of_another_cluster_is_refused_both_ways(tmp_path: Path) -> None:
    ours = LocalAuthority(tmp_path / "ours", "orders")
    theirs = LocalAuthority(tmp_path / "theirs", "orders")
    with (
        tls_server(ours.member(endpoint(0))) as (port, outcome),
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        handshake(port, theirs.client(KEEPER).client_context())
    assert outcome and outcome[0] is not None
    # Trusting our CA but presenting their certificate: the server refuses it.
    stranger = theirs.client("mallory")
    context = TlsFiles(ours.trust, stranger.certificate, stranger.key).client_context()
    with (
        tls_server(ours.member(endpoint(0))) as (port, outcome),
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        handshake(port, context)  # with TLS 1.3 the refusal arrives at the first read
    assert isinstance(outcome[0], ssl.SSLError)


def test_a_member_certificate_names_its_addresses_only(tmp_path: Path) -> None:
    authority = LocalAuthority(tmp_path / "tls", "orders")
    files = authority.member(endpoint(1, "127.0.9.2"))
    with (
        tls_server(files) as (port, _),
        pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"),
    ):
        handshake(port, authority.client(KEEPER).client_context(), host="127.0.9.3")


def test_keys_are_private_and_the_keeper_has_no_common_name(tmp_path: Path) -> None:
    authority = LocalAuthority(tmp_path / "tls", "orders")
    keeper, user = authority.client(KEEPER), authority.client("app")
    for key in (keeper.key, user.key, tmp_path / "tls" / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    subject = x509.load_pem_x509_certificate(keeper.certificate.read_bytes()).subject
    assert subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME) == []
    user_subject = x509.load_pem_x509_certificate(user.certificate.read_bytes()).subject
    assert user_subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "app"


def test_certificates_are_kept_until_they_need_renewal(tmp_path: Path) -> None:
    authority = LocalAuthority(tmp_path / "tls", "orders")
    member = endpoint(0)
    first = authority.member(member).certificate.read_bytes()
    assert authority.member(member).certificate.read_bytes() == first
    assert authority.expiring(datetime.now(UTC)) == []

    # A certificate close to its end is listed, then made again at its next use.
    short = issue(
        authority.authority(),
        common_name="",
        hosts=[member.address],
        server=True,
        client=True,
        now=datetime.now(UTC),
        lifetime=RENEW_BEFORE - timedelta(days=1),
    )
    files = authority.member(member)
    files.certificate.write_bytes(short.certificate)
    files.key.write_bytes(short.key)
    assert [name for name, _ in authority.expiring(datetime.now(UTC))] == ["member-orders-0.crt"]
    renewed = authority.member(member).certificate.read_bytes()
    assert renewed not in (first, short.certificate)
    assert authority.expiring(datetime.now(UTC)) == []


def test_a_moved_member_gets_a_certificate_for_its_new_address(tmp_path: Path) -> None:
    authority = LocalAuthority(tmp_path / "tls", "orders")
    before = authority.member(endpoint(0, "127.0.9.1")).certificate.read_bytes()
    files = authority.member(endpoint(0, "127.0.9.7"))
    assert files.certificate.read_bytes() != before
    with tls_server(files) as (port, outcome):
        assert handshake(port, authority.client(KEEPER).client_context(), "127.0.9.7") == b"ok"
    assert outcome == [None]


def test_a_leaf_never_outlives_its_authority() -> None:
    authority = new_authority("orders", now=NOW, lifetime=timedelta(days=10))
    leaf = issue(authority, common_name="", hosts=["x.example"], server=True, client=True, now=NOW)
    assert leaf.not_after() == authority.not_after()
    assert leaf.fingerprint() != authority.fingerprint()
    with pytest.raises(ValueError, match="names the hosts"):
        issue(authority, common_name="", hosts=[], server=True, client=False, now=NOW)


def test_a_leaf_ending_with_its_authority_is_kept_and_the_authority_rotated_first() -> None:
    """Leaves issued in a CA's last weeks end with it: they are not reissued pass after pass
    (which would restart every member each time), since only a new CA gives them longer; a CA
    is rotated a leaf's lifetime before its end, so that never happens to a healthy cluster."""
    authority = new_authority("orders", now=NOW, lifetime=timedelta(days=20))
    leaf = issue(authority, common_name="", hosts=["x.example"], server=True, client=True, now=NOW)
    assert leaf.not_after() == authority.not_after()
    assert current(leaf, authority, ["x.example"], now=NOW)
    assert not current(leaf, authority, ["x.example"], now=NOW + timedelta(days=21))
    longer = new_authority("orders", now=NOW, lifetime=timedelta(days=300))
    short = issue(
        longer,
        common_name="",
        hosts=["x.example"],
        server=True,
        client=True,
        now=NOW,
        lifetime=timedelta(days=20),
    )
    assert not current(short, longer, ["x.example"], now=NOW), "it can be issued for longer"
    assert authority_due(authority, NOW) and authority_due(longer, NOW)
    fresh = new_authority("orders", now=NOW)
    assert not authority_due(fresh, NOW)
    assert authority_due(fresh, fresh.not_after() - ROTATE_AUTHORITY_BEFORE)


def test_the_keeper_renews_users_certificates_in_place_and_rotates_a_ca_near_its_end(
    tmp_path: Path,
) -> None:
    authority = LocalAuthority(tmp_path / "tls", "orders")
    member = endpoint(0)
    authority.member(member)
    user = authority.client("orders")
    short = issue(
        authority.authority(),
        common_name="orders",
        hosts=[],
        server=False,
        client=True,
        now=datetime.now(UTC),
        lifetime=timedelta(days=10),
    )
    user.certificate.write_bytes(short.certificate)
    user.key.write_bytes(short.key)
    generation = authority.generation()
    assert authority.renew([member]) == ["client-orders.crt"]
    assert authority.generation() == generation, "a user's certificate restarts no member"
    leaf = x509.load_pem_x509_certificate(user.certificate.read_bytes())
    assert leaf.not_valid_after_utc > datetime.now(UTC) + timedelta(days=300)
    assert authority.renew([member]) == []

    # A CA within a year of its end: a rotation begins, its first phase trusting both.
    ending = new_authority("orders", now=datetime.now(UTC), lifetime=timedelta(days=300))
    (tmp_path / "tls" / "ca.key").write_bytes(ending.key)
    (tmp_path / "tls" / "ca.crt").write_bytes(ending.certificate)
    (tmp_path / "tls" / "trust.pem").write_bytes(ending.certificate)
    renewed = authority.renew([member])
    assert renewed[-1].startswith("CA rotation: trusting-both (the CA ends "), renewed
    assert authority.rotation() == "trusting-both"
    assert authority.trust.read_bytes().count(b"BEGIN CERTIFICATE") == 2
    assert not any(r.startswith("CA rotation") for r in authority.renew([member]))


def test_two_authorities_made_in_the_same_second_are_told_apart(tmp_path: Path) -> None:
    """A rotation's new CA can be made in the second `up` made the old one: with both in the
    trust bundle, each leaf still verifies against its own issuer, found by name."""
    first, second = (new_authority("orders", now=NOW) for _ in range(2))
    names = [x509.load_pem_x509_certificate(ca.certificate).subject for ca in (first, second)]
    assert names[0] != names[1]
    trust = tmp_path / "trust.pem"
    trust.write_bytes(first.certificate + second.certificate)
    for n, authority in enumerate((first, second)):
        leaf = issue(
            authority,
            common_name="orders-0",
            hosts=["127.0.0.1"],
            server=True,
            client=True,
            now=NOW,
        )
        files = TlsFiles(trust, tmp_path / f"leaf-{n}.crt", tmp_path / f"leaf-{n}.key")
        files.certificate.write_bytes(leaf.certificate)
        files.key.write_bytes(leaf.key)
        with tls_server(files) as (port, outcome):
            assert handshake(port, files.client_context()) == b"ok"
        assert outcome == [None]
