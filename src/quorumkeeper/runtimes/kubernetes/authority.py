"""A Kubernetes cluster's certificate authority and certificates, kept in Secrets the cluster
resource owns, as `runtimes.local.authority` keeps them in files:

    <cluster>-ca    ca.crt, ca.key: the cluster's CA (the key is read by the operator only);
                    during a CA rotation next.crt/.key (the CA to come) or previous.crt (the
                    one going), the phase and the request acted on as annotations
    <cluster>-tls   ca.crt, the trust bundle; operator.crt/.key, the operator's client
                    certificate; per member pod <pod>.crt/.key (and for ZooKeeper <pod>.pem,
                    key and certificate in one keystore file), mounted read-only into every pod

Certificates come from the shared `certificates` functions: a member's is issued before its pod
is made (`member`, called by the runtime's `start`), and every certificate is issued again when
it comes within `RENEW_BEFORE` of its end or another CA signed it (`renew`), which also moves
the `generation` etcd's pod template's fingerprint includes, so the ordered restarts roll the
new certificates out (ZooKeeper's pods take them from the Secret where they run). A CA rotation
(`start_rotation`, asked for with the resource's `ROTATE_CA` annotation or begun when the CA
nears its end) goes through the local runtime's phases: the trust bundle holds the old and the
new CA, then the new one signs every certificate, then the bundle holds it alone; each phase is
one write of the CA Secret, from which the trust bundle is derived, so an operator restarted in
between resumes it. Keys never leave the Secrets and the operator's memory: the operator's own
client files are anonymous in-memory files (`InMemoryTlsFiles`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from quorumkeeper.certificates import (
    ROTATION_PHASES,
    KeyPair,
    TlsFiles,
    current,
    ending_soon,
    issue,
    new_authority,
)
from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.kubernetes.api import KubeApi
from quorumkeeper.runtimes.kubernetes.objects import (
    OPERATOR_CLIENT,
    TRUST_KEY,
    Names,
    Obj,
    object_metadata,
    placement,
)
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, Kind

RENEWED = "quorumkeeper.io/renewed"
"""On the CA Secret: when `renew` last reissued a member's certificate ahead of its end."""
ROTATE_CA = "quorumkeeper.io/rotate-ca"
"""On the cluster resource: set it to a new value (a time, say) to ask for a CA rotation. The
value acted on is kept on the CA Secret (`ROTATION_REQUEST`), so each value starts one."""
ROTATION_REQUEST = "quorumkeeper.io/ca-rotation-request"
ROTATION = "quorumkeeper.io/ca-rotation"
"""On the CA Secret: the phase of the CA rotation under way (`ROTATION_PHASES`)."""
ROTATION_SINCE = "quorumkeeper.io/ca-rotation-since"
"""On the CA Secret: when that phase began (ISO 8601, UTC)."""

NEXT, PREVIOUS = "next", "previous"
"""The CA Secret's stems for the CA to come (with its key, first phase) and the one going
(certificate only, second phase)."""


def member_hosts(resource: ClusterResource, endpoint: Endpoint) -> list[str]:
    """The names a member's certificate serves: its pod's DNS names under the peer Service,
    short to fully qualified (peers and the operator dial the last), the client Service's, and
    the pod's own loopback (a probe or a tool inside the pod)."""
    where = placement(resource)
    client_service = Names(resource.name).client_service
    peer = f"{endpoint.name}.{where.service}"
    names = []
    for host in (peer, client_service):
        names += [host, f"{host}.{where.namespace}", f"{host}.{where.namespace}.svc"]
        names.append(f"{host}.{where.namespace}.svc.{where.domain}")
    return [*names, "localhost", "127.0.0.1"]


def secret_data(secret: Any) -> dict[str, bytes]:
    """A Secret's data, decoded."""
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def encoded(data: dict[str, bytes]) -> dict[str, str]:
    """`data` as a Secret holds it."""
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


class InMemoryTlsFiles:
    """TLS files that exist only in this process's memory (`memfd_create`), reached through
    `/proc/self/fd`: what `ssl` and kazoo load a client certificate from, with no copy of the
    key on any disk. `write` replaces the contents in place; a `ReloadingContext` sees the
    change by its modification time."""

    def __init__(self) -> None:
        self._fds = {
            part: os.memfd_create(f"quorumkeeper-{part}") for part in ("trust", "crt", "key")
        }
        self.files = TlsFiles(*(Path(f"/proc/self/fd/{fd}") for fd in self._fds.values()))

    def write(self, trust: bytes, leaf: KeyPair) -> None:
        for part, data in (("trust", trust), ("crt", leaf.certificate), ("key", leaf.key)):
            fd = self._fds[part]
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)


class SecretAuthority:
    """The CA of cluster resource `resource()` and the certificates it issued, in its Secrets.
    Only the operator's daemon for this resource writes them, one call at a time."""

    def __init__(self, api: client.ApiClient, resource: Callable[[], ClusterResource]) -> None:
        self._core = KubeApi(api)
        self._resource = resource
        first = resource()
        self.namespace = first.namespace
        self.names = Names(first.name)
        self.keystores = first.kind is Kind.ZOOKEEPER
        self._generation: str | None = None
        self._ca: Any | None = None
        self._client: InMemoryTlsFiles | None = None
        self._newcomer: tuple[bytes, KeyPair] | None = None
        """The CA to come and a client certificate it signed, for `phase_check`."""

    def _read(self, name: str) -> Any | None:
        try:
            return self._core.read_namespaced_secret(name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _create(self, name: str, data: dict[str, bytes]) -> bool:
        """Create Secret `name` holding `data`; False (nothing written) when it exists."""
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": object_metadata(self._resource(), name),
            "type": "Opaque",
            "data": encoded(data),
        }
        try:
            self._core.create_namespaced_secret(self.namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise
            return False
        return True

    def kept(self, name: str, make: Callable[[], dict[str, bytes]]) -> dict[str, bytes]:
        """Secret `name`'s data, the Secret made with `make()`'s first when missing (a user's,
        `users.UserSecrets`): owned by the resource like the CA's."""
        found = self._read(name)
        if found is None:
            self._create(name, make())
            found = self._core.read_namespaced_secret(name, self.namespace)
        return secret_data(found)

    def _ca_secret(self) -> Any:
        """The CA Secret, made on first use; read once, then kept: only this object writes it
        (`_write_ca` forgets the copy)."""
        if self._ca is None:
            found = self._read(self.names.ca_secret)
            if found is None:
                made = new_authority(self.names.cluster, now=datetime.now(UTC))
                data = {"ca.crt": made.certificate, "ca.key": made.key}
                self._create(self.names.ca_secret, data)
                found = self._core.read_namespaced_secret(self.names.ca_secret, self.namespace)
            self._ca = found
        return self._ca

    def _write_ca(self, data: dict[str, bytes | None], annotations: dict[str, str | None]) -> None:
        """Patch the CA Secret as last read (a key mapped to None is removed): one write, so a
        rotation's phase and its certificates change together. Raises ApiException 409 when
        someone else changed it since."""
        secret = self._ca_secret()
        body = {
            "metadata": {
                "resourceVersion": secret.metadata.resource_version,
                "annotations": annotations,
            },
            "data": {
                key: None if value is None else base64.b64encode(value).decode()
                for key, value in data.items()
            },
        }
        try:
            self._core.patch_namespaced_secret(self.names.ca_secret, self.namespace, body)
        finally:  # written or refused, it is read afresh next time
            self._ca = None
            self._generation = None

    def authority(self) -> KeyPair:
        """The cluster's CA, the one that signs, made on first use."""
        data = secret_data(self._ca_secret())
        return KeyPair(data["ca.crt"], data["ca.key"])

    def rotation(self) -> str | None:
        """The phase of the CA rotation under way (`certificates.ROTATION_PHASES`), None when
        there is none."""
        return (self._ca_secret().metadata.annotations or {}).get(ROTATION)

    def rotation_since(self) -> datetime | None:
        """When the phase under way began, None when there is none."""
        since = (self._ca_secret().metadata.annotations or {}).get(ROTATION_SINCE)
        return datetime.fromisoformat(since) if since else None

    def trust(self) -> bytes:
        """The trust bundle members and clients are given now: the CA, and during a rotation
        the one to come or the one going as well."""
        data = secret_data(self._ca_secret())
        # Oldest first: the same bundle in both phases of a rotation, so the second does not
        # rewrite it.
        return data.get(f"{PREVIOUS}.crt", b"") + data["ca.crt"] + data.get(f"{NEXT}.crt", b"")

    def generation(self) -> str:
        """What members' certificates come from now: the CA's fingerprint, when `renew` last
        reissued any and, while the trust bundle holds more than the CA (a rotation's first
        two phases), its digest. etcd's pod template's fingerprint includes it, so a renewal
        or a rotation's phase is rolled out by ordered restarts, while a new member's first
        certificate, and a rotation's end, change nothing (ZooKeeper's pod template leaves it
        out: `render.reloads_certificates`)."""
        if self._generation is None:
            secret = self._ca_secret()
            data = secret_data(secret)
            ca = KeyPair(data["ca.crt"], b"").fingerprint()[:16]
            renewed = (secret.metadata.annotations or {}).get(RENEWED, "never")
            self._generation = f"{ca} renewed {renewed}"
            if self.trust() != data["ca.crt"]:
                digest = hashlib.sha256(self.trust()).hexdigest()[:16]
                self._generation += f" trust {digest}"
        return self._generation

    def start_rotation(self, request: str | None) -> bool:
        """Begin a CA rotation: a new CA to come, trusted beside the current one from now on.
        `request` is the `ROTATE_CA` value asked for, recorded as acted on (None: one the
        operator begins by itself, which leaves the record as it is). False, and nothing
        changed, when a rotation is under way or `request` was acted on already."""
        annotations = self._ca_secret().metadata.annotations or {}
        if self.rotation() is not None or (
            request is not None and annotations.get(ROTATION_REQUEST) == request
        ):
            return False
        made = new_authority(self.names.cluster, now=datetime.now(UTC))
        data: dict[str, bytes | None] = {f"{NEXT}.crt": made.certificate, f"{NEXT}.key": made.key}
        phase = self._phase(ROTATION_PHASES[0])
        self._write_ca(data, phase | ({ROTATION_REQUEST: request} if request else {}))
        return True

    @staticmethod
    def _phase(phase: str | None) -> dict[str, str | None]:
        """The CA Secret's annotations for entering `phase` (None: the rotation's end)."""
        since = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S+00:00}" if phase else None
        return {ROTATION: phase, ROTATION_SINCE: since}

    def advance_rotation(self) -> str | None:
        """Move the rotation under way one phase on, once every member runs with the last:
        from trusting both to the new CA signing (`renew` then reissues every certificate),
        to trusting the new CA alone, to its end. Returns the phase entered ("done" at the
        end), None when there is no rotation."""
        phase = self.rotation()
        if phase is None:
            return None
        data = secret_data(self._ca_secret())
        if phase == ROTATION_PHASES[0]:
            self._write_ca(
                {
                    "ca.crt": data[f"{NEXT}.crt"],
                    "ca.key": data[f"{NEXT}.key"],
                    f"{PREVIOUS}.crt": data["ca.crt"],
                    f"{NEXT}.crt": None,
                    f"{NEXT}.key": None,
                },
                self._phase(ROTATION_PHASES[1]),
            )
            return ROTATION_PHASES[1]
        if phase == ROTATION_PHASES[1]:
            self._write_ca({f"{PREVIOUS}.crt": None}, self._phase(ROTATION_PHASES[2]))
            return ROTATION_PHASES[2]
        self._write_ca({}, self._phase(None))
        return "done"

    def phase_check(self) -> tuple[bytes, KeyPair] | None:
        """(trust bundle, client certificate) with which a TLS client reaches a member that
        took the files of the rotation's phase, and not one that did not: in the first phase
        a client certificate of the CA to come (the member trusts it), trusting the current
        CA; in the second the operator's own, trusting the new CA alone (the member serves
        its new certificate). None in the last phase and outside a rotation, where nothing
        that follows needs a member to have taken anything."""
        phase = self.rotation()
        data = secret_data(self._ca_secret())
        if phase == ROTATION_PHASES[0]:
            next_ca = KeyPair(data[f"{NEXT}.crt"], data[f"{NEXT}.key"])
            if self._newcomer is None or self._newcomer[0] != next_ca.certificate:
                now = datetime.now(UTC)
                leaf = issue(next_ca, common_name="", hosts=[], server=False, client=True, now=now)
                self._newcomer = next_ca.certificate, leaf
            return data["ca.crt"], self._newcomer[1]
        if phase == ROTATION_PHASES[1]:
            tls = self._tls_data()
            leaf = KeyPair(tls[f"{OPERATOR_CLIENT}.crt"], tls[f"{OPERATOR_CLIENT}.key"])
            return data["ca.crt"], leaf
        return None

    def _tls_data(self) -> dict[str, bytes]:
        found = self._read(self.names.tls_secret)
        return {} if found is None else secret_data(found)

    @staticmethod
    def _due(data: dict[str, bytes], authority: KeyPair, stem: str, hosts: Sequence[str]) -> bool:
        """Whether the certificate `stem` of a Secret's `data` (`stem.crt`, `stem.key`) must
        be issued (again)."""
        if f"{stem}.crt" not in data or f"{stem}.key" not in data:
            return True
        leaf = KeyPair(data[f"{stem}.crt"], data[f"{stem}.key"])
        return not current(leaf, authority, hosts, now=datetime.now(UTC))

    def _issue(self, authority: KeyPair, stem: str, hosts: Sequence[str]) -> dict[str, bytes]:
        """A new certificate `stem` as the TLS Secret's keys: a member's (`hosts`, both key
        usages, its keystore for ZooKeeper) or the operator's (no hosts, client only)."""
        made = issue(
            authority,
            common_name="",
            hosts=hosts,
            server=bool(hosts),
            client=True,
            now=datetime.now(UTC),
        )
        data = {f"{stem}.crt": made.certificate, f"{stem}.key": made.key}
        if hosts and self.keystores:
            data[f"{stem}.pem"] = made.key + made.certificate
        return data

    def _write(self, data: dict[str, bytes], changes: dict[str, bytes]) -> None:
        """Merge `changes` into the TLS Secret as last read (`data`; made when missing)."""
        if data or not self._create(self.names.tls_secret, changes):
            body = {"data": encoded(changes)}
            self._core.patch_namespaced_secret(self.names.tls_secret, self.namespace, body)

    def _trust_changes(self, data: dict[str, bytes]) -> dict[str, bytes]:
        """The TLS Secret's trust bundle, where its `data` does not hold the current one."""
        trust = self.trust()
        return {} if data.get(TRUST_KEY) == trust else {TRUST_KEY: trust}

    def member(self, endpoint: Endpoint) -> None:
        """Make sure member `endpoint`'s certificate is in the TLS Secret and current, before
        its pod is made (the kubelet mounts the Secret as it is then)."""
        authority = self.authority()
        data = self._tls_data()
        hosts = member_hosts(self._resource(), endpoint)
        changes = self._trust_changes(data)
        if self._due(data, authority, endpoint.name, hosts):
            changes.update(self._issue(authority, endpoint.name, hosts))
        if changes:
            self._write(data, changes)

    def client(self) -> TlsFiles:
        """The operator's client certificate, issued into the TLS Secret when missing or due,
        as files in this process's memory."""
        authority = self.authority()
        data = self._tls_data()
        changes = self._trust_changes(data)
        if self._due(data, authority, OPERATOR_CLIENT, []):
            changes.update(self._issue(authority, OPERATOR_CLIENT, []))
        if changes:
            self._write(data, changes)
            data.update(changes)
        if self._client is None:
            self._client = InMemoryTlsFiles()
        leaf = KeyPair(data[f"{OPERATOR_CLIENT}.crt"], data[f"{OPERATOR_CLIENT}.key"])
        self._client.write(data[TRUST_KEY], leaf)
        return self._client.files

    def user(self, name: str) -> dict[str, bytes]:
        """A new client certificate for user `name` as its Secret's keys (`users.UserSecrets`):
        `ca.crt`, the trust bundle; `tls.crt`/`tls.key`, with `name` as common name, which
        etcd takes as the user when a client sends no token; for ZooKeeper `keystore.pem`,
        key and certificate in one file, as the local runtime writes a user's."""
        authority = self.authority()
        made = issue(
            authority, common_name=name, hosts=[], server=False, client=True, now=datetime.now(UTC)
        )
        data = {TRUST_KEY: self.trust(), "tls.crt": made.certificate, "tls.key": made.key}
        if self.keystores:
            data["keystore.pem"] = made.key + made.certificate
        return data

    def user_changes(self, name: str, data: dict[str, bytes]) -> dict[str, bytes]:
        """What user `name`'s Secret (`data`, as `user` made it) needs rewritten: the trust
        bundle where it is not the current one, a new certificate where its own can't be
        served as it is (within `RENEW_BEFORE` of its end, from another CA). Empty when
        nothing does."""
        if self._due(data, self.authority(), "tls", []):
            return self.user(name)
        return self._trust_changes(data)

    def renew(self, endpoints: Sequence[Endpoint]) -> list[str]:
        """Bring the TLS Secret up to the CA Secret: the trust bundle, and the operator's
        certificate and those of `endpoints`, each where it exists but can't be served as it
        is (within `RENEW_BEFORE` of its end, from another CA, for other names); record the
        renewal (`generation`) when a member's was reissued. Returns the keys rewritten."""
        authority = self.authority()
        data = self._tls_data()
        resource = self._resource()
        changes = self._trust_changes(data)
        for endpoint in endpoints:
            hosts = member_hosts(resource, endpoint)
            if f"{endpoint.name}.crt" in data and self._due(data, authority, endpoint.name, hosts):
                changes.update(self._issue(authority, endpoint.name, hosts))
        rewritten = sorted(key for key in changes if key.endswith(".crt"))
        if changes:
            self._write(data, changes)
        if any(key != TRUST_KEY for key in rewritten):
            self._write_ca({}, {RENEWED: f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"})
        operator = f"{OPERATOR_CLIENT}.crt" in data
        operator_due = operator and self._due(data, authority, OPERATOR_CLIENT, [])
        if operator_due or (operator and TRUST_KEY in changes):
            self.client()  # into the files in memory as well
        return rewritten + [f"{OPERATOR_CLIENT}.crt"] * operator_due

    def expiring(self, now: datetime) -> list[tuple[str, datetime]]:
        """The cluster's certificates that end within `RENEW_BEFORE` of `now`, each named
        `<Secret>/<key>` (the CA's, and every one in the TLS Secret but the trust bundle), with
        its end, soonest first: what `renew` has not reissued yet, or can't (the CA itself)."""
        found = {f"{self.names.ca_secret}/ca.crt": secret_data(self._ca_secret())["ca.crt"]}
        for key, pem in self._tls_data().items():
            if key.endswith(".crt") and key != TRUST_KEY:
                found[f"{self.names.tls_secret}/{key}"] = pem
        return ending_soon(found, now)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
