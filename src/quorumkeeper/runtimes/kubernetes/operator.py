"""The operator: one kopf daemon per cluster resource running the shared `Reconciler` on a
`KubernetesRuntime`, woken early by watches on the cluster's pods, PVCs and StatefulSet.

It has no create or update handlers for membership (kopf's own documentation calls them
edge-triggered; a daemon observing afresh every pass resumes wherever it was stopped). A spec it
can't parse is reported in status (Degraded, reason InvalidSpec) and never acted on. Every
membership change is an Event on the resource. Deleting a resource applies
`pvcRetention.whenDeleted` through a finalizer.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from quorumkeeper.certificates import ROTATION_PHASES, ROTATION_ROUNDS, authority_due
from quorumkeeper.model import Role
from quorumkeeper.planner import Done, Phase, Step, Wait
from quorumkeeper.reconciler import Reconciler
from quorumkeeper.runtimes.kubernetes.api import KubeApi
from quorumkeeper.runtimes.kubernetes.authority import ROTATE_CA, InMemoryTlsFiles, SecretAuthority
from quorumkeeper.runtimes.kubernetes.metrics import ClusterKey, OperatorMetrics, Outcome
from quorumkeeper.runtimes.kubernetes.objects import (
    LABEL_INSTANCE,
    LABEL_NAME,
    SECRET_REFRESH_SECONDS,
    TRUST_KEY,
    Names,
    Obj,
    object_metadata,
)
from quorumkeeper.runtimes.kubernetes.progress import ProgressWatch
from quorumkeeper.runtimes.kubernetes.render import reloads_certificates
from quorumkeeper.runtimes.kubernetes.resources import (
    GROUP,
    VERSION,
    ClusterResource,
    Kind,
    ResourceError,
    ResourceStatus,
    parse_resource,
)
from quorumkeeper.runtimes.kubernetes.runtime import (
    RELEASED,
    KubernetesRuntime,
    kubernetes_rules,
)
from quorumkeeper.runtimes.kubernetes.users import UserSecrets
from quorumkeeper.runtimes.kubernetes.zookeeper_pod import superuser_secret
from quorumkeeper.spec import ClusterSpec
from quorumkeeper.status import (
    CertificateExpiry,
    ClusterStatus,
    Condition,
    ConditionType,
    StepStatus,
    rfc3339,
)
from quorumkeeper.stores import backend_for
from quorumkeeper.stores.etcd.client import ROOT
from quorumkeeper.stores.zookeeper.words import four_letter_word

LOG = logging.getLogger("quorumkeeper.operator")

BUSY_INTERVAL = 1.0
"""Seconds between passes while a step is in progress; a watch event wakes the daemon sooner."""
IDLE_INTERVAL = 5.0
"""Seconds between passes of a cluster that matches its spec (or waits on something else than
a change in progress); a spec change or a watch event wakes the daemon sooner."""
RETRY_INTERVAL = 0.25
"""Seconds before a membership step the store refused for now is tried again: nothing but the
store tells when a learner has caught up (0.1-0.25 s after its start on a small database,
FIELD-NOTES) or when etcd's reconfiguration grace ends, and no watch fires for either."""
QUICK_RETRIES = 20
"""Passes in a row that retry after `RETRY_INTERVAL` (5 s); a refusal lasting longer (a learner
catching up on a large database) is tried again every `BUSY_INTERVAL`, so it does not keep
four status writes a second going."""

RENEWAL_CHECK_SECONDS = 60.0
"""How often the operator looks for certificates within `RENEW_BEFORE` of their end."""
PHASE_CHECK_TIMEOUT = 2.0
"""Seconds `ClusterDaemon.members_took_phase` gives one member's TLS handshake and answer."""

MAX_CLUSTERS = 256
"""Cluster resources one operator serves at once. Each cluster's daemon is synchronous and holds
one of kopf's executor threads for its whole life; kopf's default pool, min(32, CPUs + 4)
threads, left a 7th cluster on a 2-core machine never reconciled (measured: 6 of 10 settled)."""
HANDLER_THREADS = 16
"""Threads beside the daemons for the short handlers: watch events, finalizers."""

registry = kopf.OperatorRegistry()


@dataclass
class _Wakes:
    """One event per cluster resource, set by the watches on its children and on the resource
    itself when its spec changes."""

    events: dict[tuple[str, str], threading.Event] = field(default_factory=dict)
    generations: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, namespace: str, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault((namespace, name), threading.Event())

    def spec_seen(self, namespace: str, name: str, generation: int | None) -> None:
        """Wake the resource's daemon when `generation` (its `metadata.generation`) is one this
        has not seen: a `kubectl scale` is acted on at once, not at the next idle pass. The
        status the daemon writes every pass leaves the generation as it is, so it wakes
        nothing."""
        if generation is None:
            return
        with self.lock:
            if self.generations.get((namespace, name)) == generation:
                return
            self.generations[(namespace, name)] = generation
        self.of(namespace, name).set()

    def forget(self, namespace: str, name: str) -> None:
        with self.lock:
            self.events.pop((namespace, name), None)
            self.generations.pop((namespace, name), None)


WAKES = _Wakes()


class ResourceSource:
    """The desired state: the custom resource as the API server has it now, parsed by
    `parse_resource` (raises `ResourceError` naming the field)."""

    def __init__(self, api: client.ApiClient, kind: Kind, namespace: str, name: str) -> None:
        self._objects = KubeApi(api)
        self.kind, self.namespace, self.name = kind, namespace, name
        self.body: dict[str, Any] = {}
        self.resource: ClusterResource | None = None

    def fetch(self) -> ClusterResource:
        """Read and parse the resource; raises `ApiException` (404 once deleted) or
        `ResourceError`."""
        self.body = self._objects.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, self.kind.plural, self.name
        )
        self.resource = parse_resource(self.body)
        return self.resource

    def parsed(self) -> ClusterResource:
        if self.resource is None:
            return self.fetch()
        return self.resource

    def current(self) -> ClusterSpec:
        resource = self.fetch()
        return resource.spec.cluster_spec(resource.name)

    @property
    def generation(self) -> int | None:
        generation = (self.body.get("metadata") or {}).get("generation")
        return int(generation) if generation is not None else None


class ResourceStatusSink:
    """Each pass's status, patched into the resource's `/status` (camelCase), with what the
    operator remembers across passes (`ProgressWatch`); its Warnings are Events."""

    def __init__(self, source: ResourceSource) -> None:
        self.source = source
        self._objects = source._objects
        self.progress = ProgressWatch()
        self.certificates_expiring: list[CertificateExpiry] = []
        """As the daemon's last certificate check found them (`renew_certificates`)."""
        self.ca_rotation: str | None = None
        """The phase of the CA rotation under way, as the last check found it."""

    def record(self, status: ClusterStatus) -> None:
        voters = [m for m in status.members if m.role in (Role.LEADER, Role.FOLLOWER)]
        full = ResourceStatus.model_validate(
            {
                **status.model_dump(),
                "ready_members": sum(1 for m in voters if m.healthy),
                "leader": next((m.name for m in voters if m.role == Role.LEADER), None),
                "observed_generation": self.source.generation,
                "certificates_expiring": self.certificates_expiring,
                "ca_rotation": self.ca_rotation,
            }
        )
        full, notices = self.progress.judge(
            full, self.source.generation, self.source.parsed().spec.progress_deadline_seconds
        )
        self.patch(full)
        for notice in notices:
            try:
                _post_event(
                    self._objects.api_client,
                    self.source.body,
                    notice.reason,
                    notice.message,
                    "Warning",
                )
            except ApiException as error:
                LOG.warning("%s: Event %s not posted: %s", full.name, notice.reason, error.reason)

    def patch(self, status: ResourceStatus) -> None:
        """Raises OSError when the API server refuses it, as the reconciler's sink contract
        asks."""
        body = {"status": status.model_dump(mode="json", by_alias=True)}
        try:
            self._objects.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self.source.namespace,
                self.source.kind.plural,
                self.source.name,
                body,
            )
        except ApiException as error:
            raise OSError(f"status of {self.source.name} not written: {error.reason}") from error


def invalid_status(
    body: dict[str, Any], error: ResourceError, generation: int | None
) -> ResourceStatus:
    """The status of a resource whose spec can't be parsed: Degraded, reason InvalidSpec, the
    parse error as the message; the members last reported are kept."""
    last = body.get("status") or {}
    spec = body.get("spec") or {}
    now = time.time()
    message = str(error)
    return ResourceStatus.model_validate(
        {
            **last,
            "name": body["metadata"]["name"],
            "store": "etcd" if body.get("kind") == Kind.ETCD.value else "zookeeper",
            "version": str(last.get("version") or spec.get("version") or ""),
            "members": last.get("members") or [],
            "desiredMembers": last.get("desiredMembers") or 0,
            "phase": "Degraded",
            "quorum": bool(last.get("quorum")),
            "connectString": last.get("connectString") or "",
            "step": StepStatus(kind="Wait", reason=f"the spec can't be acted on: {message}"),
            "error": message,
            "conditions": [
                c
                for c in last.get("conditions") or []
                if c.get("type") != ConditionType.DEGRADED.value
            ]
            + [
                Condition(
                    type=ConditionType.DEGRADED,
                    status="True",
                    reason="InvalidSpec",
                    message=message,
                    last_transition_time=rfc3339(now),
                )
            ],
            "updatedAt": now,
            "observedGeneration": generation,
        }
    )


def _kept_password(api: client.ApiClient, name: str, body: Callable[[str], Obj]) -> str:
    """The password in Secret `name` (key `password`): created once with a fresh random one
    (`body` makes the Secret for it) and never rewritten."""
    core = KubeApi(api)
    namespace = body("")["metadata"]["namespace"]
    try:
        secret: Any = core.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status != 404:
            raise
        try:
            core.create_namespaced_secret(namespace, body(secrets.token_urlsafe(24)))
        except ApiException as exists:
            if exists.status != 409:
                raise
        secret = core.read_namespaced_secret(name, namespace)
    return base64.b64decode(secret.data["password"]).decode()


def _superuser_password(api: client.ApiClient, resource: ClusterResource) -> str:
    """The ZooKeeper superuser's password, from its Secret (`zookeeper_pod.superuser_secret`)."""
    name = Names(resource.name).superuser_secret
    return _kept_password(api, name, lambda password: superuser_secret(resource, password))


def root_secret(resource: ClusterResource, password: str) -> Obj:
    """etcd's root user, whose password only the operator reads: it turns authentication on
    with it (`CoordinationStore.secure`) and authenticates every call it makes."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_metadata(resource, Names(resource.name).root_secret),
        "type": "Opaque",
        "stringData": {"username": ROOT, "password": password},
    }


def _root_password(api: client.ApiClient, resource: ClusterResource) -> str:
    """etcd's root password, from Secret `<cluster>-root`."""
    name = Names(resource.name).root_secret
    return _kept_password(api, name, lambda password: root_secret(resource, password))


def _post_event(
    api: client.ApiClient, body: dict[str, Any], reason: str, message: str, kind: str
) -> None:
    """An Event of `kind` (Normal or Warning) on the resource."""
    metadata = body["metadata"]
    now = datetime.now(UTC)
    event = {
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": "quorumkeeper-operator"},
    }
    KubeApi(api).create_namespaced_event(metadata["namespace"], event)


class ClusterDaemon:
    """One cluster resource's loop: parse, reconcile one step, sleep until woken."""

    def __init__(
        self,
        api: client.ApiClient,
        kind: Kind,
        namespace: str,
        name: str,
        metrics: OperatorMetrics,
        secret_refresh: float = SECRET_REFRESH_SECONDS,
    ) -> None:
        self.api = api
        self.source = ResourceSource(api, kind, namespace, name)
        self.secret_refresh = secret_refresh
        """Seconds the kubelets may take to bring a changed Secret into the pods mounting it."""
        self.sink = ResourceStatusSink(self.source)
        self.reconciler: Reconciler | None = None
        self.wake = WAKES.of(namespace, name)
        self.metrics = metrics
        self.key = ClusterKey(namespace, name, kind.value)
        self.deferrals = 0
        """Passes in a row whose step the store refused for now (`Reconciler.deferred`)."""
        self.authority: SecretAuthority | None = None
        self.users: UserSecrets | None = None
        """The users' Secrets and grants, with TLS and authentication on (`spec.users` needs
        both)."""
        self.renewal_due = 0.0
        self.phase_files: InMemoryTlsFiles | None = None
        """`members_took_phase`'s client files, in memory as the operator's own."""

    def _reconciler(self, resource: ClusterResource) -> Reconciler:
        """The cluster's reconciler, made at the first pass: with TLS, the certificate
        authority in the cluster's Secrets and the operator's client certificate; with etcd's
        authentication, the root password."""
        if self.reconciler is None:
            zookeeper = resource.kind is Kind.ZOOKEEPER
            password = _superuser_password(self.api, resource) if zookeeper else None
            spec = resource.spec.cluster_spec(resource.name)
            self.authority = SecretAuthority(self.api, self.source.parsed) if spec.tls else None
            root = _root_password(self.api, resource) if spec.auth and not zookeeper else None
            if self.authority is not None and spec.auth:
                self.users = UserSecrets(self.api, self.authority, self.source.parsed)
            backend = backend_for(
                spec,
                password or "",
                self.authority.client() if self.authority else None,
                root_password=root,
            )
            backend = dataclasses.replace(backend, rules=kubernetes_rules(backend.rules))
            runtime = KubernetesRuntime(self.api, self.source.parsed, password, self.authority)
            self.reconciler = Reconciler(self.source, backend, runtime, self.sink, hold_store=True)
        return self.reconciler

    def renew_certificates(self, reconciler: Reconciler) -> None:
        """Every pass, move a CA rotation on (`rotate_authority`); every
        `RENEWAL_CHECK_SECONDS`, and right after a rotation's step: bring the TLS Secret and
        the users' Secrets up to the CA (`SecretAuthority.renew`, `UserSecrets.renew`:
        certificates within `RENEW_BEFORE` of their end or of another CA, the trust bundle).
        A rotation's step or a member's certificate moves the authority's generation, so the
        configuration is taken again and etcd's ordered restarts roll it out; ZooKeeper's
        running members take the rewritten Secret's files from their sidecar instead
        (`render.reloads_certificates`). What is still within `RENEW_BEFORE` of its end
        afterwards goes into status from the next pass on (`certificatesExpiring`)."""
        if self.authority is None:
            return
        entered = self.rotate_authority(reconciler)
        now = time.monotonic()
        if entered is None and now < self.renewal_due:
            return
        self.renewal_due = now + RENEWAL_CHECK_SECONDS
        renewed = self.authority.renew(list(reconciler.runtime.endpoints()))
        users = self.users.renew() if self.users is not None else []
        if renewed or users:
            LOG.info("%s/%s: renewed %s", self.source.namespace, self.source.name, renewed + users)
        if entered is not None or any(key != TRUST_KEY for key in renewed):
            reconciler.reconfigure()
        self.sink.ca_rotation = self.authority.rotation()
        self.sink.certificates_expiring = [
            CertificateExpiry(file=name, not_after=end.isoformat())
            for name, end in self.authority.expiring(datetime.now(UTC))
        ]

    def rotate_authority(self, reconciler: Reconciler) -> str | None:
        """Begin a CA rotation when the resource's `ROTATE_CA` annotation holds a value not
        acted on yet, or the CA is within `ROTATE_AUTHORITY_BEFORE` of its end; move one under
        way to its next phase once the last pass saw every member run the current one (and
        the cluster Ready; for ZooKeeper, whose members take the phase's files without a
        restart, once each answers as one that took them, `members_took_phase`) and, before
        members serve the new CA's certificates or stop trusting the old one, once the users'
        Secrets had `secret_refresh` seconds to reach their pods. Each step is a Normal Event
        `CARotation`. Returns the phase entered ("done" at the end), None when nothing moved."""
        assert self.authority is not None
        authority = self.authority
        phase = authority.rotation()
        now = datetime.now(UTC)
        if phase is None:
            annotations = (self.source.body.get("metadata") or {}).get("annotations") or {}
            request = annotations.get(ROTATE_CA)
            ca = authority.authority()
            if request and authority.start_rotation(request):
                why = f"asked for ({ROTATE_CA}={request})"
            elif authority_due(ca, now) and authority.start_rotation(None):
                why = f"the CA ends {ca.not_after():%Y-%m-%d}"
            else:
                return None
            entered = ROTATION_PHASES[0]
        else:
            last = reconciler.last_status
            if last is None or not last.rolled_out():
                return None
            since = authority.rotation_since() or now
            if phase != ROTATION_PHASES[-1] and (now - since).total_seconds() < self.secret_refresh:
                return None
            if reloads_certificates(self.source.kind) and not self.members_took_phase(reconciler):
                return None
            entered = str(authority.advance_rotation())
            why = f"{phase} rolled out"
        message = f"CA rotation: {entered}: {ROTATION_ROUNDS[entered]} ({why})"
        LOG.info("%s/%s: %s", self.source.namespace, self.source.name, message)
        _post_event(self.api, self.source.body, "CARotation", message, "Normal")
        return entered

    def members_took_phase(self, reconciler: Reconciler) -> bool:
        """Whether every member answers `srvr` to a TLS client that reaches only a member that
        took the files of the rotation's phase (`SecretAuthority.phase_check`: one trusting
        the CA to come, then one serving its new certificate). Where members take their files
        without a restart (`render.reloads_certificates`), no restart tells that they did."""
        assert self.authority is not None
        check = self.authority.phase_check()
        if check is None:
            return True
        if self.phase_files is None:
            self.phase_files = InMemoryTlsFiles()
        self.phase_files.write(*check)
        context = self.phase_files.files.client_context()
        for endpoint in reconciler.runtime.endpoints():
            host = endpoint.client_host
            try:
                answer = four_letter_word(host, "srvr", PHASE_CHECK_TIMEOUT, context)
                why = "" if answer else "no answer"
            except OSError as refused:
                why = str(refused)
            if why:
                where = f"{self.source.namespace}/{self.source.name}"
                LOG.info("%s: %s has not taken the CA rotation's phase: %s", where, host, why)
                return False
        return True

    def grant_users(self, reconciler: Reconciler) -> None:
        """Once the cluster is Secured and a quorum answers, each user of the spec gets its
        Secret and its grant through the store client the reconciler holds (`UserSecrets`):
        a grant made is a Normal Event, a failure a Warning once (it is tried every pass)."""
        store = reconciler.held_store
        status = reconciler.last_status
        quorum = status is not None and status.quorum
        if self.users is None or store is None or not (reconciler.secured and quorum):
            return
        granted, failed = self.users.grant(store)
        for name in granted:
            _post_event(self.api, self.source.body, "UserGranted", f"user {name}", "Normal")
        for name, why in failed.items():
            LOG.warning("%s/%s: user %s: %s", self.source.namespace, self.source.name, name, why)
            message = f"user {name}: {why}; tried again every pass"
            _post_event(self.api, self.source.body, "UserNotGranted", message, "Warning")

    def pass_once(self) -> float:
        """One pass; returns the seconds until the next unless woken."""
        try:
            resource = self.source.fetch()
        except ResourceError as error:
            LOG.warning(
                "%s/%s: spec not acted on: %s", self.source.namespace, self.source.name, error
            )
            self.metrics.passed(self.key, Outcome.INVALID_SPEC)
            try:
                self.sink.patch(invalid_status(self.source.body, error, self.source.generation))
            except OSError as failed:
                LOG.warning("%s", failed)
            return IDLE_INTERVAL
        reconciler = self._reconciler(resource)
        try:
            self.renew_certificates(reconciler)
            step = reconciler.run_once()
            self.grant_users(reconciler)
        except Exception as error:
            self.metrics.failed(self.key, error)
            LOG.exception("%s/%s: pass failed", self.source.namespace, self.source.name)
            return BUSY_INTERVAL
        changed = step.changes_membership and reconciler.acted
        self.metrics.passed(
            self.key,
            _outcome(step, reconciler.acted),
            reconciler.last_status,
            type(step).__name__ if changed else None,
        )
        if changed:
            _post_event(self.api, self.source.body, type(step).__name__, step.reason, "Normal")
        LOG.info(
            "%s/%s: %s: %s", resource.namespace, resource.name, type(step).__name__, step.reason
        )
        status = reconciler.last_status
        resizing = status is not None and len(status.members) != status.desired_members
        self.deferrals = self.deferrals + 1 if reconciler.deferred else 0
        deferred = 0 < self.deferrals <= QUICK_RETRIES
        return next_pass_in(step, acted=reconciler.acted, deferred=deferred, resizing=resizing)

    def run(self, stopped: kopf.DaemonStopped) -> None:
        try:
            while not stopped:
                try:
                    interval = self.pass_once()
                except ApiException as error:
                    if error.status == 404:
                        return  # deleted: the finalizer takes over
                    LOG.warning("%s: API error %s", self.source.name, error.reason)
                    interval = BUSY_INTERVAL
                self.wake.wait(interval)
                self.wake.clear()
        finally:
            self.metrics.forget(self.key)
            WAKES.forget(self.source.namespace, self.source.name)
            if self.reconciler is not None:
                self.reconciler.close()
            if self.authority is not None:
                self.authority.close()
            if self.phase_files is not None:
                self.phase_files.close()


def next_pass_in(
    step: Step, *, acted: bool, deferred: bool = False, resizing: bool = False
) -> float:
    """Seconds until the next pass unless a watch wakes the daemon first, after a pass that
    took `step` (`acted`: it went through; `deferred`: the store refused it for now,
    `Reconciler.deferred`; `resizing`: the membership is not the spec's size yet).

    A membership change that went through is followed at once by the next step of the change
    (an added learner's pod is made in the same second, a promotion is followed by the next
    add), each planned on a fresh observation; one the store refused for now is tried again
    after `RETRY_INTERVAL`. Any other step in progress, a step that failed, and a wait during a
    scale (for a new voter to answer, the store's reconfiguration grace to end) come back after
    `BUSY_INTERVAL`; a cluster that matches its spec, or waits for something a person or a
    watch event brings, after `IDLE_INTERVAL`."""
    if deferred:
        return RETRY_INTERVAL
    if step.changes_membership and acted:
        return 0.0
    if isinstance(step, Done):
        return IDLE_INTERVAL
    if isinstance(step, Wait) and step.phase is not Phase.SCALING and not resizing:
        return IDLE_INTERVAL
    return BUSY_INTERVAL


def _outcome(step: Step, acted: bool) -> Outcome:
    if isinstance(step, Done):
        return Outcome.SETTLED
    return Outcome.ACTED if acted and not isinstance(step, Wait) else Outcome.WAITING


def _api() -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


@kopf.on.login(registry=registry)
def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_via_client(**kwargs)


@kopf.on.startup(registry=registry)
def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf keeps its own progress in annotations: the status belongs to the reconciler, and a
    structural schema would prune kopf's fields from it anyway."""
    settings.persistence.finalizer = f"{GROUP}/pvc-retention"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.enabled = False  # kopf's log lines are no Events; membership changes are
    settings.execution.max_workers = MAX_CLUSTERS + HANDLER_THREADS


def _daemon(kind: Kind) -> None:
    @kopf.daemon(GROUP, VERSION, kind.plural, registry=registry, cancellation_timeout=30)
    def run_cluster(
        *, name: str, namespace: str | None, stopped: kopf.DaemonStopped, memo: Any, **_: Any
    ) -> None:
        ClusterDaemon(
            _api(), kind, namespace or "default", name, memo.metrics, memo.secret_refresh
        ).run(stopped)

    @kopf.on.delete(GROUP, VERSION, kind.plural, registry=registry)
    def retain_or_delete(*, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
        """`pvcRetention.whenDeleted`: Delete removes the members' PVCs; Retain keeps them,
        marked released so a later cluster of the same name never starts on them."""
        policy = (body.get("spec") or {}).get("pvcRetention") or {}
        core = KubeApi(_api())
        namespace = namespace or "default"
        labels = selector_of(kind, name)
        claims: Any = core.list_namespaced_persistent_volume_claim(namespace, label_selector=labels)
        for claim in claims.items:
            if policy.get("whenDeleted") == "Delete":
                core.delete_namespaced_persistent_volume_claim(claim.metadata.name, namespace)
            else:
                why = f"cluster {namespace}/{name} deleted; kept by pvcRetention.whenDeleted"
                patch = {"metadata": {"annotations": {RELEASED: why}}}
                core.patch_namespaced_persistent_volume_claim(claim.metadata.name, namespace, patch)


def selector_of(kind: Kind, name: str) -> str:
    """The label selector of cluster `name`'s pods and PVCs (`objects.selector`'s labels)."""
    return f"{LABEL_NAME}={kind.spec_model.store.value},{LABEL_INSTANCE}={name}"


for _kind in Kind:
    _daemon(_kind)


async def _wake(labels: kopf.Labels, namespace: str | None, **_: Any) -> None:
    """Wake the daemon of the cluster whose child changed. A coroutine: kopf runs it on its
    event loop, where a synchronous handler would take an executor thread per event burst."""
    instance = labels.get(LABEL_INSTANCE)
    if instance and namespace:
        WAKES.of(namespace, instance).set()


_CHILD = {LABEL_INSTANCE: kopf.PRESENT}
for _resource in ("pods", "persistentvolumeclaims"):
    kopf.on.event("", "v1", _resource, labels=_CHILD, registry=registry)(_wake)
kopf.on.event("apps", "v1", "statefulsets", labels=_CHILD, registry=registry)(_wake)


async def _spec_changed(body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    WAKES.spec_seen(namespace or "default", name, body.metadata.get("generation"))


for _kind in Kind:
    kopf.on.event(GROUP, VERSION, _kind.plural, registry=registry)(_spec_changed)


def run(
    namespaces: list[str],
    metrics_port: int,
    metrics_address: str,
    secret_refresh: float = SECRET_REFRESH_SECONDS,
) -> None:
    """Run the operator until stopped: every namespace, or only `namespaces`; `/metrics` on
    `metrics_address:metrics_port` (port 0: not served); `secret_refresh` as
    `SECRET_REFRESH_SECONDS`. Raises OSError when it can't bind."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per store request
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # a line per watch event
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    metrics = OperatorMetrics()
    server = metrics.serve(metrics_port, metrics_address) if metrics_port else None
    try:
        kopf.run(
            registry=registry,
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            memo=kopf.Memo(metrics=metrics, secret_refresh=secret_refresh),
        )
    finally:
        if server is not None:
            server.shutdown()
