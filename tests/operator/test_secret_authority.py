"""The operator's certificate authority in Secrets, against a real API server: the CA made once,
a member's certificate for its pod's and the client Service's DNS names before its pod exists,
ZooKeeper's keystores, the operator's own client certificate only in memory, and renewal of a
certificate near its end moving the generation the pod template's fingerprint includes; the
daemon's reconciler connecting with the operator's certificate and etcd's root password."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import create_autospec

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID
from kubernetes import client

from quorumkeeper.certificates import KeyPair, issue, new_authority, subject_hosts
from quorumkeeper.runtimes.kubernetes.authority import (
    ROTATE_CA,
    ROTATION_REQUEST,
    SecretAuthority,
    encoded,
    member_hosts,
)
from quorumkeeper.runtimes.kubernetes.metrics import OperatorMetrics
from quorumkeeper.runtimes.kubernetes.objects import placement
from quorumkeeper.runtimes.kubernetes.operator import ClusterDaemon
from quorumkeeper.runtimes.kubernetes.render import fingerprint
from quorumkeeper.runtimes.kubernetes.resources import (
    API_VERSION,
    ClusterResource,
    Kind,
    parse_resource,
)
from quorumkeeper.runtimes.kubernetes.users import UserSecrets
from quorumkeeper.status import ClusterStatus, StepStatus
from quorumkeeper.stores.base import CoordinationStore, StoreError
from testbed.kube import ns_path
from tests.operator.conftest import ApiServer

pytestmark = pytest.mark.operator


def _resource(kind: str, namespace: str) -> ClusterResource:
    return parse_resource(
        {
            "apiVersion": "quorumkeeper.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": "c", "namespace": namespace},
            "spec": {
                "members": 3,
                "version": "3.7.3" if kind == "EtcdCluster" else "3.9.5",
                "storage": {"size": "1Gi"},
            },
        }
    )


def _secret(api_server: ApiServer, namespace: str, name: str) -> dict[str, bytes]:
    data: dict[str, Any] = api_server.kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    return {key: base64.b64decode(value) for key, value in data["data"].items()}


def _signed_by(leaf: bytes, authority: bytes) -> bool:
    try:
        KeyPair(leaf, b"").loaded().verify_directly_issued_by(KeyPair(authority, b"").loaded())
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def test_a_members_certificate_is_in_the_tls_secret_before_its_pod_with_its_dns_names(
    api_server: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    resource = _resource("EtcdCluster", namespace)
    authority = SecretAuthority(api, lambda: resource)
    member = placement(resource).endpoint(1)
    authority.member(member)
    ca = _secret(api_server, namespace, "c-ca")
    tls = _secret(api_server, namespace, "c-tls")
    assert tls["ca.crt"] == ca["ca.crt"]
    assert "ca.key" not in tls, "the CA's key stays in the CA Secret"
    assert {"c-1.crt", "c-1.key"} <= tls.keys() and "c-1.pem" not in tls  # etcd needs no keystore
    assert _signed_by(tls["c-1.crt"], ca["ca.crt"])
    hosts = subject_hosts(KeyPair(tls["c-1.crt"], b"").loaded())
    assert hosts == set(member_hosts(resource, member))
    for name in (
        member.address,  # c-1.c-peers.<ns>.svc.cluster.local, as peers and the operator dial
        f"c-1.c-peers.{namespace}",
        "c",
        f"c.{namespace}.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ):
        assert name in hosts, name

    # Asked again, nothing is issued anew: the CA and the member's certificate stay.
    generation = authority.generation()
    SecretAuthority(api, lambda: resource).member(member)
    assert _secret(api_server, namespace, "c-tls")["c-1.crt"] == tls["c-1.crt"]
    assert _secret(api_server, namespace, "c-ca") == ca
    assert SecretAuthority(api, lambda: resource).generation() == generation


def test_the_operators_client_certificate_lives_in_memory_and_zookeeper_gets_keystores(
    api_server: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    resource = _resource("ZookeeperCluster", namespace)
    authority = SecretAuthority(api, lambda: resource)
    files = authority.client()
    authority.member(placement(resource).endpoint(0))
    tls = _secret(api_server, namespace, "c-tls")
    assert str(files.key).startswith("/proc/self/fd/")
    assert files.key.read_bytes() == tls["operator.key"]
    assert files.certificate.read_bytes() == tls["operator.crt"]
    assert files.trust.read_bytes() == tls["ca.crt"]
    files.client_context()  # loads as a client certificate with its key
    assert tls["c-0.pem"] == tls["c-0.key"] + tls["c-0.crt"]
    authority.close()


def test_a_certificate_near_its_end_is_renewed_and_moves_the_fingerprint(
    api_server: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    resource = _resource("EtcdCluster", namespace)
    authority = SecretAuthority(api, lambda: resource)
    members = [placement(resource).endpoint(n) for n in range(2)]
    for member in members:
        authority.member(member)
    before = fingerprint(resource, authority.generation())
    assert authority.renew(members) == []
    assert fingerprint(resource, authority.generation()) == before

    # c-1's certificate ends in 10 days: within the 30 days ahead of its end.
    now = datetime.now(UTC)
    short = issue(
        authority.authority(),
        common_name="",
        hosts=member_hosts(resource, members[1]),
        server=True,
        client=True,
        now=now,
        lifetime=timedelta(days=10),
    )
    body = {"data": {"c-1.crt": base64.b64encode(short.certificate).decode()}}
    api_server.kube.patch(f"/api/v1/namespaces/{namespace}/secrets/c-tls", body)
    kept = _secret(api_server, namespace, "c-tls")["c-0.crt"]
    warned = [(name, end.date()) for name, end in authority.expiring(now)]
    assert warned == [("c-tls/c-1.crt", (now + timedelta(days=10)).date())]
    assert authority.renew(members[:1]) == [], "only the members asked for are renewed"
    assert [name for name, _ in authority.expiring(now)] == ["c-tls/c-1.crt"]
    assert authority.renew(members) == ["c-1.crt"]
    assert authority.expiring(now) == []
    tls = _secret(api_server, namespace, "c-tls")
    assert KeyPair(tls["c-1.crt"], b"").not_after() > now + timedelta(days=300)
    assert tls["c-0.crt"] == kept, "a current certificate is not reissued"
    assert fingerprint(resource, authority.generation()) != before
    assert authority.renew(members) == []


def test_the_daemons_reconciler_holds_the_operators_certificate_and_etcds_root_password(
    installed: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    """What the operator's daemon makes before its first pass: the CA and TLS Secrets and the
    root password's, all owned by the resource, and a backend that connects with TLS and
    authenticates (the reconciler then turns etcd's authentication on)."""
    body = {
        "apiVersion": API_VERSION,
        "kind": Kind.ETCD.value,
        "metadata": {"name": "c", "namespace": namespace},
        "spec": {"members": 3, "version": "3.7.3", "storage": {"size": "1Gi"}},
    }
    created = installed.kube.create(ns_path(namespace, Kind.ETCD.plural, group=API_VERSION), body)
    daemon = ClusterDaemon(api, Kind.ETCD, namespace, "c", OperatorMetrics())
    reconciler = daemon._reconciler(daemon.source.fetch())
    try:
        assert reconciler.backend.auth and reconciler.backend.tls is not None
        assert str(reconciler.backend.tls.key).startswith("/proc/self/fd/")
        tls = _secret(installed, namespace, "c-tls")
        assert reconciler.backend.tls.certificate.read_bytes() == tls["operator.crt"]
        assert len(_secret(installed, namespace, "c-root")["password"]) >= 24
        for name in ("c-ca", "c-tls", "c-root"):
            secret = installed.kube.get(ns_path(namespace, "secrets", name))
            owners = secret["metadata"]["ownerReferences"]
            assert [o["uid"] for o in owners] == [created["metadata"]["uid"]], name
    finally:
        reconciler.close()
        if daemon.authority is not None:
            daemon.authority.close()


def test_a_certificate_the_operator_does_not_renew_is_warned_about_in_the_resources_status(
    installed: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    """A certificate within 30 days of its end that no renewal reissues (here one of a member
    that has no pod or volume yet) is listed in the resource's `status.certificatesExpiring`,
    named by Secret and key, with its end."""
    body = {
        "apiVersion": API_VERSION,
        "kind": Kind.ETCD.value,
        "metadata": {"name": "c", "namespace": namespace},
        "spec": {"members": 3, "version": "3.7.3", "storage": {"size": "1Gi"}},
    }
    path = ns_path(namespace, Kind.ETCD.plural, group=API_VERSION)
    installed.kube.create(path, body)
    daemon = ClusterDaemon(api, Kind.ETCD, namespace, "c", OperatorMetrics())
    reconciler = daemon._reconciler(daemon.source.fetch())
    try:
        assert daemon.authority is not None
        resource = daemon.source.parsed()
        now = datetime.now(UTC)
        short = issue(
            daemon.authority.authority(),
            common_name="",
            hosts=member_hosts(resource, placement(resource).endpoint(2)),
            server=True,
            client=True,
            now=now,
            lifetime=timedelta(days=10),
        )
        patch = {"data": {"c-2.crt": base64.b64encode(short.certificate).decode()}}
        installed.kube.patch(ns_path(namespace, "secrets", "c-tls"), patch)
        daemon.renew_certificates(reconciler)
        daemon.sink.record(
            ClusterStatus(
                name="c",
                store="etcd",
                version="3.7.3",
                members=[],
                desired_members=3,
                phase="Bootstrapping",
                quorum=False,
                connect_string="",
                step=StepStatus(kind="Bootstrap", reason="a test's status"),
            )
        )
        status = installed.kube.get(f"{path}/c")["status"]
        (entry,) = status["certificatesExpiring"]
        assert entry["file"] == "c-tls/c-2.crt"
        assert datetime.fromisoformat(entry["notAfter"]).date() == (now + timedelta(10)).date()
    finally:
        reconciler.close()
        if daemon.authority is not None:
            daemon.authority.close()


def test_a_users_secret_is_made_once_and_its_prefix_granted_only_when_it_changes(
    installed: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    """`spec.users` on a real API server (the CRD takes it): Secret `c-user-app` owned by the
    resource with a password made once, the trust bundle, a client certificate of the
    cluster's CA named after the user and ZooKeeper's keystore; the grant made once, again only
    for a new prefix with the same password, and a store's refusal reported once, not
    raised, with the recorded prefix left as it was."""
    body = {
        "apiVersion": API_VERSION,
        "kind": Kind.ZOOKEEPER.value,
        "metadata": {"name": "c", "namespace": namespace},
        "spec": {
            "members": 3,
            "version": "3.9.5",
            "storage": {"size": "1Gi"},
            "users": [{"name": "app", "prefix": "/app"}],
        },
    }
    path = ns_path(namespace, Kind.ZOOKEEPER.plural, group=API_VERSION)
    created = installed.kube.create(path, body)
    current = [parse_resource(created)]

    def with_prefix(prefix: str) -> ClusterResource:
        return parse_resource(
            {**created, "spec": {**created["spec"], "users": [{"name": "app", "prefix": prefix}]}}
        )

    authority = SecretAuthority(api, lambda: current[0])
    authority.client()  # the trust bundle in the TLS Secret, as the daemon's first pass makes it
    users = UserSecrets(api, authority, lambda: current[0])
    store = create_autospec(CoordinationStore, instance=True)
    assert users.grant(store) == (["app"], {})
    secret = _secret(installed, namespace, "c-user-app")
    password = secret["password"].decode()
    assert len(password) >= 24 and secret["prefix"] == b"/app"
    store.grant_prefix.assert_called_once_with("app", password, "/app")
    assert secret["ca.crt"] == _secret(installed, namespace, "c-tls")["ca.crt"]
    assert _signed_by(secret["tls.crt"], _secret(installed, namespace, "c-ca")["ca.crt"])
    leaf = KeyPair(secret["tls.crt"], secret["tls.key"]).loaded()
    assert [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["app"]
    assert secret["keystore.pem"] == secret["tls.key"] + secret["tls.crt"]
    owners = installed.kube.get(ns_path(namespace, "secrets", "c-user-app"))["metadata"]
    assert [o["uid"] for o in owners["ownerReferences"]] == [created["metadata"]["uid"]]

    assert users.grant(store) == ([], {}), "a recorded prefix is not granted again"
    current[0] = with_prefix("/app2")
    assert users.grant(store) == (["app"], {})
    store.grant_prefix.assert_called_with("app", password, "/app2")
    assert _secret(installed, namespace, "c-user-app")["password"].decode() == password

    store.grant_prefix.side_effect = StoreError("no quorum", retryable=True)
    current[0] = with_prefix("/app3")
    assert users.grant(store) == ([], {"app": "StoreError: no quorum"})
    assert users.grant(store) == ([], {}), "the same failure is reported once"
    assert store.grant_prefix.call_count == 4
    assert _secret(installed, namespace, "c-user-app")["prefix"] == b"/app2"
    authority.close()


def test_a_ca_rotation_trusts_both_then_reissues_everything_then_trusts_the_new_ca_alone(
    installed: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    """Each phase is one write of the CA Secret; the TLS Secret, the operator's files in memory
    and a user's Secret follow it at the next `renew`: members' certificates stay until the new
    CA signs, the user keeps its password and prefix, and every phase moves the generation
    the pod template's fingerprint includes."""
    body = {
        "apiVersion": API_VERSION,
        "kind": Kind.ZOOKEEPER.value,
        "metadata": {"name": "c", "namespace": namespace},
        "spec": {
            "members": 2,
            "version": "3.9.5",
            "storage": {"size": "1Gi"},
            "users": [{"name": "app", "prefix": "/app"}],
        },
    }
    resource = parse_resource(
        installed.kube.create(ns_path(namespace, Kind.ZOOKEEPER.plural, group=API_VERSION), body)
    )
    authority = SecretAuthority(api, lambda: resource)
    operator = authority.client()
    members = [placement(resource).endpoint(n) for n in range(2)]
    for member in members:
        authority.member(member)
    users = UserSecrets(api, authority, lambda: resource)
    users.grant(create_autospec(CoordinationStore, instance=True))
    user = _secret(installed, namespace, "c-user-app")
    old = _secret(installed, namespace, "c-ca")["ca.crt"]
    tls = _secret(installed, namespace, "c-tls")
    generations = [authority.generation()]
    assert authority.rotation() is None and authority.renew(members) == []
    assert authority.phase_check() is None

    assert authority.start_rotation("first")
    assert not authority.start_rotation("second"), "one rotation at a time"
    assert authority.rotation() == "trusting-both"
    new = _secret(installed, namespace, "c-ca")["next.crt"]
    assert authority.renew(members) == ["ca.crt"]
    trusting = _secret(installed, namespace, "c-tls")
    assert x509.load_pem_x509_certificates(trusting["ca.crt"]) == [
        x509.load_pem_x509_certificate(pem) for pem in (old, new)
    ]
    assert all(trusting[k] == tls[k] for k in ("c-0.crt", "c-1.pem", "operator.crt"))
    assert operator.trust.read_bytes() == trusting["ca.crt"]
    assert users.renew() == ["app"] and users.renew() == []
    assert _secret(installed, namespace, "c-user-app")["ca.crt"] == trusting["ca.crt"]
    generations.append(authority.generation())
    # A ZooKeeper member took this phase once it accepts a client of the CA to come.
    check = authority.phase_check()
    assert check is not None and check[0] == old
    assert _signed_by(check[1].certificate, new) and not _signed_by(check[1].certificate, old)
    assert authority.phase_check() == check, "one client certificate for the phase"

    assert authority.advance_rotation() == "new-certificates"
    assert authority.rotation() == "new-certificates"
    assert _secret(installed, namespace, "c-ca")["ca.crt"] == new
    assert authority.renew(members) == ["c-0.crt", "c-1.crt", "operator.crt"]
    signing = _secret(installed, namespace, "c-tls")
    assert signing["ca.crt"] == trusting["ca.crt"], "the bundle is the same in both phases"
    for key in ("c-0.crt", "c-1.crt", "operator.crt"):
        assert _signed_by(signing[key], new) and not _signed_by(signing[key], old), key
    assert signing["c-1.pem"] == signing["c-1.key"] + signing["c-1.crt"]
    assert operator.certificate.read_bytes() == signing["operator.crt"]
    assert users.renew() == ["app"]
    renewed_user = _secret(installed, namespace, "c-user-app")
    assert _signed_by(renewed_user["tls.crt"], new)
    assert renewed_user["keystore.pem"] == renewed_user["tls.key"] + renewed_user["tls.crt"]
    assert {k: renewed_user[k] for k in ("password", "prefix")} == {
        k: user[k] for k in ("password", "prefix")
    }
    generations.append(authority.generation())
    # ... and this one once it serves its new certificate to a client trusting the new CA alone.
    operator_leaf = KeyPair(signing["operator.crt"], signing["operator.key"])
    assert authority.phase_check() == (new, operator_leaf)

    assert authority.advance_rotation() == "trusting-new"
    assert authority.renew(members) == ["ca.crt"]
    assert _secret(installed, namespace, "c-tls")["ca.crt"] == new
    assert "previous.crt" not in _secret(installed, namespace, "c-ca")
    assert operator.trust.read_bytes() == new
    assert users.renew() == ["app"]
    assert _secret(installed, namespace, "c-user-app")["ca.crt"] == new
    generations.append(authority.generation())
    assert len(set(generations)) == 4, generations
    assert authority.phase_check() is None

    assert authority.advance_rotation() == "done"
    assert authority.rotation() is None and authority.advance_rotation() is None
    assert authority.renew(members) == [] and users.renew() == []
    assert authority.generation() == generations[-1], "the end restarts no member"

    assert not authority.start_rotation("first"), "a request is acted on once"
    assert SecretAuthority(api, lambda: resource).rotation() is None
    assert authority.start_rotation("second")
    assert SecretAuthority(api, lambda: resource).rotation() == "trusting-both", "resumable"
    authority.close()


def _daemon_of(
    installed: ApiServer,
    api: client.ApiClient,
    namespace: str,
    annotations: dict[str, str],
    secret_refresh: float = 0.0,
) -> ClusterDaemon:
    body = {
        "apiVersion": API_VERSION,
        "kind": Kind.ETCD.value,
        "metadata": {"name": "c", "namespace": namespace, "annotations": annotations},
        "spec": {"members": 3, "version": "3.7.3", "storage": {"size": "1Gi"}},
    }
    installed.kube.create(ns_path(namespace, Kind.ETCD.plural, group=API_VERSION), body)
    return ClusterDaemon(api, Kind.ETCD, namespace, "c", OperatorMetrics(), secret_refresh)


def _rolled_out() -> ClusterStatus:
    return ClusterStatus(
        name="c",
        store="etcd",
        version="3.7.3",
        members=[],
        desired_members=0,
        phase="Ready",
        quorum=True,
        connect_string="",
        step=StepStatus(kind="Done", reason="a test's status: every member runs the phase"),
    )


def test_the_daemon_rotates_the_ca_when_asked_stepping_on_once_every_member_runs_the_phase(
    installed: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    """Each phase moves on once a pass saw every member run it and, before members serve the
    new CA's certificates or stop trusting the old one, once users' pods had the Secret
    refresh time to get their rewritten Secrets; a request is acted on once."""
    daemon = _daemon_of(installed, api, namespace, {ROTATE_CA: "2026-12-02"}, 3600.0)
    reconciler = daemon._reconciler(daemon.source.fetch())
    try:
        assert daemon.authority is not None
        daemon.renew_certificates(reconciler)
        assert daemon.sink.ca_rotation == "trusting-both"
        config = reconciler.config
        daemon.renew_certificates(reconciler)  # no pass saw the members run it yet
        reconciler.last_status = _rolled_out()
        daemon.renew_certificates(reconciler)  # users' pods may still trust the old CA alone
        assert daemon.authority.rotation() == "trusting-both"
        daemon.secret_refresh = 0.0
        phases = []
        for _ in range(4):
            daemon.renew_certificates(reconciler)
            phases.append(daemon.sink.ca_rotation)
        assert phases == ["new-certificates", "trusting-new", None, None]
        assert reconciler.config != config, "the configuration was taken again"
        events = installed.kube.get(f"/api/v1/namespaces/{namespace}/events")["items"]
        steps = {e["message"].split(":")[1].strip() for e in events if e["reason"] == "CARotation"}
        assert steps == {"trusting-both", "new-certificates", "trusting-new", "done"}, steps
    finally:
        reconciler.close()
        if daemon.authority is not None:
            daemon.authority.close()


def test_the_daemon_begins_a_rotation_by_itself_for_a_ca_within_a_year_of_its_end(
    installed: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    """Also when the resource still carries a request acted on before."""
    ending = new_authority("c", now=datetime.now(UTC), lifetime=timedelta(days=300))
    data = {"ca.crt": ending.certificate, "ca.key": ending.key}
    installed.kube.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "metadata": {"name": "c-ca", "annotations": {ROTATION_REQUEST: "old"}},
            "data": encoded(data),
        },
    )
    daemon = _daemon_of(installed, api, namespace, {ROTATE_CA: "old"})
    reconciler = daemon._reconciler(daemon.source.fetch())
    try:
        daemon.renew_certificates(reconciler)
        assert daemon.sink.ca_rotation == "trusting-both"
        secret = installed.kube.get(ns_path(namespace, "secrets", "c-ca"))
        assert secret["metadata"]["annotations"][ROTATION_REQUEST] == "old"
        events = installed.kube.get(f"/api/v1/namespaces/{namespace}/events")["items"]
        (started,) = [e["message"] for e in events if e["reason"] == "CARotation"]
        assert f"(the CA ends {ending.not_after():%Y-%m-%d})" in started, started
    finally:
        reconciler.close()
        if daemon.authority is not None:
            daemon.authority.close()
