"""Members as the pods of one cluster resource's StatefulSet, their data as its PVCs.

`KubernetesRuntime` is the `Runtime` the shared reconciler drives on Kubernetes: it renders the
cluster's objects (`render.cluster_objects`) and applies them server-side, raises or lowers the
StatefulSet's replicas, and reads pods and PVCs back. It decides nothing: the planner picks each
step. A StatefulSet only ever adds or removes its highest ordinal, which the planner is told
through `JoinRules.removes_highest_ordinal_only` (`kubernetes_rules`). The PodDisruptionBudget
is sized before every step by `limit_disruptions`, never by a start after the bootstrap's.

Data identity: once a member has joined (the store saw it healthy), its PVC gets the annotation
`quorumkeeper.io/identity` = `<cluster uid>/<pod>` and the StatefulSet lists the pod under
`quorumkeeper.io/joined`. A PVC missing, or present without that identity for a pod that has
joined, is a member whose data is gone (replaced under a new identity); a pod restart keeps both
and reads as data kept. A PVC annotated for another cluster UID (left from an older cluster of the
same name) or marked released by this one is never started on: `start` releases it first.

Configuration: `configure` writes the rendered pod template (annotated with the configuration
fingerprint and the version) and the ConfigMap's settings before any member restarts; the
StatefulSet is `OnDelete`, so that restarts no pod. `restart` evicts a stale member's pod through
the Eviction API, so a rolling restart and a node drain share the PodDisruptionBudget, and the
StatefulSet makes the pod again from the new template.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence, Set
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from quorumkeeper.model import Endpoint, JoinRules, Peer, Placement, Slot
from quorumkeeper.runtime import ConfigurationRefused, DisruptionRefused
from quorumkeeper.runtimes.kubernetes.api import KubeApi
from quorumkeeper.runtimes.kubernetes.authority import SecretAuthority
from quorumkeeper.runtimes.kubernetes.objects import (
    Membership,
    Names,
    max_unavailable,
    placement,
    selector,
)
from quorumkeeper.runtimes.kubernetes.render import (
    CONFIG_ANNOTATION,
    SECURITY_ANNOTATION,
    VERSION_ANNOTATION,
    cluster_objects,
    disruption_budget,
    fingerprint,
    sealed_config,
    security,
    settings_data,
    statefulset,
)
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, Kind
from quorumkeeper.runtimes.kubernetes.volume_locks import REASON, announce, volume_lock
from quorumkeeper.spec import ClusterSpec
from quorumkeeper.stores.zookeeper.ensemble import FIRST_SERVER_ID
from quorumkeeper.upgrades import check_upgrade

FIELD_MANAGER = "quorumkeeper-operator"
IDENTITY = "quorumkeeper.io/identity"
"""On a member's PVC once it has joined: `<cluster uid>/<pod>`."""
RELEASED = "quorumkeeper.io/released"
"""On a PVC whose member left or lost it: why. Such a PVC is never started on again."""
JOINED = "quorumkeeper.io/joined"
"""On the StatefulSet: the pods whose member has joined, comma-separated."""
RESYNC = "quorumkeeper.io/resync"
"""On the StatefulSet: when the operator last woke its controller (`_resync`)."""
RESYNC_SECONDS = 10.0
CLAIM_TEMPLATE = "data"
BOOT_GRACE_SECONDS = 30.0
"""A container started this recently that does not answer yet is still loading its data."""


def kubernetes_rules(rules: JoinRules) -> JoinRules:
    """A store's join rules on a StatefulSet, which shrinks from its highest ordinal only; the
    operator has no pod of its own to move data aside inside a member's volume, so it never
    refills one (`JoinRules.refills_emptied_voter`)."""
    return dataclasses.replace(
        rules, removes_highest_ordinal_only=True, refills_emptied_voter=False
    )


def claim_name(endpoint: Endpoint) -> str:
    """The PVC the StatefulSet makes for `endpoint`'s pod: `<template>-<pod>` (StatefulSet
    controller, `getPersistentVolumeClaimName`)."""
    return f"{CLAIM_TEMPLATE}-{endpoint.name}"


def _container(kind: Kind) -> str:
    return "etcd" if kind is Kind.ETCD else "zookeeper"


def _annotations(obj: Any) -> dict[str, str]:
    return dict(obj.metadata.annotations or {})


def _template_annotations(statefulset: Any) -> dict[str, str]:
    return dict(statefulset.spec.template.metadata.annotations or {})


def _message(error: ApiException) -> str:
    """The API server's own words in an error's Status body (its `message`), else the reason."""
    try:
        return str(json.loads(error.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return str(error.reason)


def _only_joiner_ids(data: dict[str, str], endpoint: Endpoint) -> dict[str, str]:
    """The ConfigMap's data with ZooKeeper's server id (`myid.<pod>`) for the starting member
    alone: a member that has joined keeps its id on its volume, so a pod whose volume was
    replaced finds none, never starts under its old id with an empty log, and reads as data
    lost until the operator gives it a new identity."""
    own = f"myid.{endpoint.name}"
    return {key: value for key, value in data.items() if not key.startswith("myid.") or key == own}


class KubernetesRuntime:
    """The `Runtime` of one cluster resource. `resource` gives the resource as last parsed (the
    desired-state source re-reads it every pass); `superuser_password` is ZooKeeper's (None for
    etcd); `authority` issues the members' certificates (None: a plain-text cluster)."""

    def __init__(
        self,
        api: client.ApiClient,
        resource: Callable[[], ClusterResource],
        superuser_password: str | None = None,
        authority: SecretAuthority | None = None,
    ) -> None:
        self._resource = resource
        self._password = superuser_password
        self.authority = authority
        self._core = self._apps = self._policy = KubeApi(api)
        first = resource()
        self.namespace = first.namespace
        self.name = first.name
        self.placement: Placement = placement(first)
        self._accepted: ClusterResource | None = None
        """The resource as `configure` last took it: what members start from."""
        self._written: str | None = None
        """The fingerprint `configure` last found or wrote on the StatefulSet."""

    # What is there.

    def _selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in selector(self._resource()).items())

    def _pods(self) -> dict[str, Any]:
        pods: Any = self._core.list_namespaced_pod(self.namespace, label_selector=self._selector())
        return {pod.metadata.name: pod for pod in pods.items}

    def _claims(self) -> dict[str, Any]:
        claims: Any = self._core.list_namespaced_persistent_volume_claim(
            self.namespace, label_selector=self._selector()
        )
        return {claim.metadata.name: claim for claim in claims.items}

    def _statefulset(self) -> Any | None:
        try:
            return self._apps.read_namespaced_stateful_set(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _joined(self, statefulset: Any | None) -> set[str]:
        if statefulset is None:
            return set()
        listed = _annotations(statefulset).get(JOINED, "")
        return {name for name in listed.split(",") if name}

    def _set_joined(self, joined: set[str]) -> None:
        body = {"metadata": {"annotations": {JOINED: ",".join(sorted(joined))}}}
        self._apps.patch_namespaced_stateful_set(self.name, self.namespace, body)

    def identity(self, endpoint: Endpoint) -> str:
        return f"{self._resource().uid}/{endpoint.name}"

    def _usable(self, claim: Any | None, endpoint: Endpoint, joined: Set[str]) -> bool:
        """Whether `claim` holds `endpoint`'s member's own data (or a joiner's fresh volume)."""
        if claim is None or claim.metadata.deletion_timestamp is not None:
            return False
        annotations = _annotations(claim)
        if RELEASED in annotations:
            return False
        owner = annotations.get(IDENTITY)
        if owner is None:
            return endpoint.name not in joined  # a joined member's volume was replaced
        return owner == self.identity(endpoint)

    def configure(self, spec: ClusterSpec, reported: Set[str] = frozenset()) -> str:
        """Take the resource as last parsed (`spec` is its store-level part) and return its
        configuration fingerprint (`render.fingerprint`). For a cluster whose StatefulSet
        exists, first the ConfigMap's settings then the pod template with the fingerprint are
        written, unless already there (`OnDelete`: no pod restarts); a new cluster gets them
        with its first `start`.

        Raises `upgrades.UpgradeRefused` for a version off the checked path from any version
        the members `reported` running or its pods or template were written for
        (`VERSION_ANNOTATION`: a pod whose image was overridden may run another), writing
        nothing."""
        resource = self._resource()
        wanted = fingerprint(resource, self._generation())
        if wanted != self._written:
            current = self._statefulset()
            if current is not None:
                self._check_security(resource, current)
                self._check_upgrade(resource, current, reported)
                if _template_annotations(current).get(CONFIG_ANNOTATION) != wanted:
                    self._write_configuration(resource, current.spec.replicas or 0)
                self._written = wanted
        self._accepted = resource
        return wanted

    def _generation(self) -> str:
        """The certificate authority's generation, part of the pod template's fingerprint."""
        return self.authority.generation() if self.authority is not None else ""

    @staticmethod
    def _check_security(resource: ClusterResource, current: Any) -> None:
        """Refuse `tls` or `auth` other than the cluster's StatefulSet was created with (the
        CRD's rules refuse a change; this catches a resource stored before the fields existed,
        whose members run in plain text, now read as the secure defaults)."""
        made = _annotations(current).get(SECURITY_ANNOTATION, security(False, False))
        wanted = security(resource.spec.tls, resource.spec.auth)
        if made != wanted:
            kept = dict(part.split("=") for part in made.split(","))
            raise ConfigurationRefused(
                f"spec.tls/spec.auth: {wanted.replace(',', ', ')}; rule: a cluster keeps the "
                f"TLS and authentication it was created with ({made.replace(',', ', ')}), since "
                f"its members know each other by https or http peer URLs; fix: set spec.tls: "
                f"{kept['tls']} and spec.auth: {kept['auth']}",
                field="spec.tls",
            )

    def _check_upgrade(self, resource: ClusterResource, current: Any, reported: Set[str]) -> None:
        versions = {_template_annotations(current).get(VERSION_ANNOTATION), *reported}
        versions.update(_annotations(pod).get(VERSION_ANNOTATION) for pod in self._pods().values())
        running = {version for version in versions if version}
        check_upgrade(resource.spec.store, running, resource.spec.version)

    def _write_configuration(self, resource: ClusterResource, replicas: int) -> None:
        """The ConfigMap's settings (a merge of those keys alone: the membership keys stay as
        the last join set them), then the StatefulSet's template, so a pod made from the new
        template reads the new settings."""
        settings = settings_data(resource)
        if settings:
            body = {"data": settings}
            self._core.patch_namespaced_config_map(
                Names(resource.name).config_map, self.namespace, body
            )
        self._apply(statefulset(resource, replicas, self._generation()))

    def endpoints(self) -> Iterable[Endpoint]:
        names = set(self._pods())
        names.update(
            name.removeprefix(f"{CLAIM_TEMPLATE}-")
            for name, claim in self._claims().items()
            if RELEASED not in _annotations(claim)
        )
        return [e for name in names if (e := self.placement.named(name)) is not None]

    def observe(
        self, endpoints: Sequence[Endpoint], answered: Set[Endpoint], *, quorum: bool, judge: bool
    ) -> tuple[Slot, ...]:
        """Running = the store's container is running in a pod not being deleted; has_data =
        the PVC holds this member's own data. A pod that can't mount its volume because
        another Ceph client holds the image's lock is blocked by it (`volume_locks`). With
        `judge`, a member the store saw healthy gets its identity written on its PVC and joins
        the StatefulSet's joined list, and each such lock gets one Warning Event on the
        resource with the command that fences its holder."""
        pods, claims = self._pods(), self._claims()
        statefulset = self._statefulset()
        joined = self._joined(statefulset)
        container = _container(self._resource().kind)
        slots = []
        newly_joined = set()
        for endpoint in endpoints:
            pod = pods.get(endpoint.name)
            claim = claims.get(claim_name(endpoint))
            status = self._container_status(pod, container)
            running = status is not None and status.state.running is not None
            has_data = self._usable(claim, endpoint, joined)
            if judge and running and claim is not None and has_data and endpoint in answered:
                if IDENTITY not in _annotations(claim):
                    self._annotate_claim(claim.metadata.name, {IDENTITY: self.identity(endpoint)})
                if endpoint.name not in joined:
                    newly_joined.add(endpoint.name)
            slot = self._slot(endpoint, pod, status, running, has_data, answered)
            lock = volume_lock(self._core, pod, claim) if pod is not None and not running else None
            if lock is not None:
                slot = dataclasses.replace(slot, blocked_by=lock.describe(), blocked_reason=REASON)
                if judge:
                    announce(self._core, self._resource(), lock)
            if pod is not None:
                slot = dataclasses.replace(slot, config=_annotations(pod).get(CONFIG_ANNOTATION))
            slots.append(slot)
        if newly_joined and statefulset is not None:
            self._seal()  # first: a crash before the joined list is written seals again
            self._set_joined(joined | newly_joined)
        return tuple(slots)

    def _config_data(self) -> dict[str, str]:
        """The cluster's ConfigMap data; empty before the first start wrote it."""
        try:
            config: Any = self._core.read_namespaced_config_map(
                Names(self.name).config_map, self.namespace
            )
        except ApiException as error:
            if error.status == 404:
                return {}
            raise
        return dict(config.data or {})

    def _sealed(self, kind: Kind) -> bool:
        return not sealed_config(kind, self._config_data())

    def _seal(self) -> None:
        """Once the member started last has joined, the ConfigMap stops offering a join
        (`render.sealed_config`): a pod that comes back on an empty volume (its PVC replaced)
        then can't rejoin under its old identity before the operator gives it a new one."""
        data = self._config_data()
        patch = sealed_config(self._resource().kind, data) if data else {}
        if patch:
            body = {"data": patch}
            self._core.patch_namespaced_config_map(
                Names(self.name).config_map, self.namespace, body
            )

    @staticmethod
    def _container_status(pod: Any | None, container: str) -> Any | None:
        if pod is None or pod.metadata.deletion_timestamp is not None:
            return None
        statuses = pod.status.container_statuses or []
        return next((s for s in statuses if s.name == container), None)

    @staticmethod
    def _slot(
        endpoint: Endpoint,
        pod: Any | None,
        status: Any | None,
        running: bool,
        has_data: bool,
        answered: Set[Endpoint],
    ) -> Slot:
        """The slot as the kubelet reports it: restarts are its own (and so is the backoff),
        a pod the scheduler can't place is blocked."""
        last_error = None
        failed = 0
        booting = False
        if status is not None:
            if status.state.running is not None:
                started = status.state.running.started_at
                age = (datetime.now(UTC) - started).total_seconds() if started else 0.0
                booting = endpoint not in answered and age < BOOT_GRACE_SECONDS
            else:
                failed = status.restart_count or 0
            waiting = status.state.waiting
            terminated = status.last_state.terminated if status.last_state else None
            if waiting is not None and waiting.reason:
                last_error = f"{waiting.reason}: {waiting.message or ''}".rstrip(": ")
            elif terminated is not None:
                last_error = f"exited {terminated.exit_code} ({terminated.reason})"
        blocked = None
        if pod is not None and not running:
            scheduled = next(
                (c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None
            )
            if scheduled is not None and scheduled.status == "False":
                blocked = f"pod {endpoint.name} can't be scheduled: {scheduled.message}"
        return Slot(
            endpoint,
            running=running,
            has_data=has_data,
            booting=booting,
            starts=(status.restart_count or 0) + 1 if status is not None else 0,
            failed_starts=failed,
            last_error=last_error,
            blocked_by=blocked,
        )

    # What changes.

    def _annotate_claim(self, name: str, annotations: dict[str, str]) -> None:
        body = {"metadata": {"annotations": annotations}}
        self._core.patch_namespaced_persistent_volume_claim(name, self.namespace, body)

    def _apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply of one rendered object, owned by the operator's field manager."""
        name, kind = obj["metadata"]["name"], obj["kind"]
        arguments: dict[str, Any] = {
            "field_manager": FIELD_MANAGER,
            "force": True,
            "_content_type": "application/apply-patch+yaml",
        }
        if kind == "StatefulSet":
            self._apps.patch_namespaced_stateful_set(name, self.namespace, obj, **arguments)
        elif kind == "ConfigMap":
            self._core.patch_namespaced_config_map(name, self.namespace, obj, **arguments)
        elif kind == "Service":
            self._core.patch_namespaced_service(name, self.namespace, obj, **arguments)
        elif kind == "PodDisruptionBudget":
            self._policy.patch_namespaced_pod_disruption_budget(
                name, self.namespace, obj, **arguments
            )
        elif kind != "Secret":  # the superuser Secret is created once, never rewritten
            raise ValueError(f"no way to apply a {kind}")

    def start(self, endpoint: Endpoint, peers: list[Peer], *, bootstrap: bool) -> None:
        """Write the membership `endpoint` joins with into the ConfigMap and raise the
        StatefulSet's replicas to cover it. A pod the replicas already cover is the kubelet's
        to restart, from its volume or with the join written when it was made, unless the
        ConfigMap was sealed since and its member has not joined (made again by the StatefulSet
        on a fresh volume): then the join is written again and a pod that already failed on the
        sealed ConfigMap is deleted, so the next starts with it at once instead of after the
        kubelet's backoff. A PVC that is not this member's own is released first, so the pod
        starts on a fresh volume. Renders the resource as `configure` last took it (a refused
        version never reaches a pod)."""
        resource = self._accepted or self._resource()
        claim = self._claims().get(claim_name(endpoint))
        statefulset = self._statefulset()
        joined = self._joined(statefulset)
        replicas = statefulset.spec.replicas or 0 if statefulset is not None else 0
        usable = claim is not None and self._usable(claim, endpoint, joined)
        covered = replicas > endpoint.ordinal
        pod = self._pods().get(endpoint.name) if covered else None
        if covered and statefulset is not None and pod is None:
            self._resync(statefulset)
        made = covered and (usable or claim is None)
        if made and (endpoint.name in joined or not self._sealed(resource.kind)):
            return
        if bootstrap and resource.kind is Kind.ZOOKEEPER:
            # A one-server dynamic config starts a one-voter ensemble as the first server id,
            # as the local launcher does; the store assigns every later id.
            peers = [
                dataclasses.replace(p, member_id=p.member_id or str(FIRST_SERVER_ID)) for p in peers
            ]
        if self.authority is not None:  # before its pod is made: the kubelet mounts it then
            self.authority.member(endpoint)
        voters = max(1, len(peers) - (0 if bootstrap else 1))
        membership = Membership(
            tuple(peers),
            replicas=max(replicas, endpoint.ordinal + 1),
            voters_now=voters,
            voters_after=resource.spec.members,
            bootstrap=bootstrap,
        )
        for obj in cluster_objects(resource, membership, self._password, self._generation()):
            if obj["kind"] == "PodDisruptionBudget" and not bootstrap:
                continue  # `limit_disruptions` sizes it before every step; a start never raises it
            if obj["kind"] == "ConfigMap":
                obj["data"] = _only_joiner_ids(obj["data"], endpoint)
            self._apply(obj)
        if claim is not None and not usable:  # after the ConfigMap: the new pod reads it
            if claim.metadata.deletion_timestamp is None:
                self._release(claim, "not this member's data: a fresh volume is made")
            self._delete_pod(endpoint)
            self._forget(endpoint)
        elif covered and self._failed(pod, resource.kind):
            self._delete_pod(endpoint)

    def _resync(self, statefulset: Any) -> None:
        """Wake the StatefulSet controller when it has seen the replicas that cover a member
        but made no pod for it: on the test bed its sync once stopped for minutes after a
        failed stale-cache check ("read version ... is not as new as written version"), and any
        update of the StatefulSet queues it again. At most once per `RESYNC_SECONDS`."""
        observed = statefulset.status.observed_generation if statefulset.status else None
        made = statefulset.status.replicas or 0 if statefulset.status else 0
        if observed != statefulset.metadata.generation or made >= statefulset.spec.replicas:
            return  # the controller has not seen the change yet, or made every pod
        now = datetime.now(UTC)
        last = _annotations(statefulset).get(RESYNC)
        if last and (now - datetime.fromisoformat(last)).total_seconds() < RESYNC_SECONDS:
            return
        body = {"metadata": {"annotations": {RESYNC: now.isoformat()}}}
        self._apps.patch_namespaced_stateful_set(self.name, self.namespace, body)

    @staticmethod
    def _failed(pod: Any | None, kind: Kind) -> bool:
        """Whether the pod's store container exited and waits for the kubelet to restart it."""
        status = KubernetesRuntime._container_status(pod, _container(kind))
        if status is None:
            return False
        waiting = status.state.waiting
        crash_looping = waiting is not None and waiting.reason == "CrashLoopBackOff"
        return crash_looping or status.state.terminated is not None

    def limit_disruptions(self, voters_now: int, voters_after: int) -> None:
        """Put the PodDisruptionBudget's `maxUnavailable` for these voters in force before the
        step: written only when it differs (one read per pass otherwise), and made again if it
        is missing. The Eviction API refuses every eviction while the budget's status has not
        caught up with its new generation (`pkg/registry/core/pod/storage/eviction.go`), so no
        drain evicts by the old number once this returns. Raises `ApiException` when the API
        server refuses: the reconciler then takes no step."""
        wanted = max_unavailable(voters_now, voters_after)
        try:
            current: Any = self._policy.read_namespaced_pod_disruption_budget(
                self.name, self.namespace
            )
        except ApiException as error:
            if error.status != 404:
                raise
            current = None
        if current is None or current.spec.max_unavailable != wanted:
            self._apply(disruption_budget(self._resource(), voters_now, voters_after))

    def stop(self, endpoint: Endpoint) -> None:
        """Lower the replicas below `endpoint`, which must be the highest pod: a StatefulSet
        removes its highest ordinal only (the planner's `removes_highest_ordinal_only`)."""
        statefulset = self._statefulset()
        if statefulset is None or (statefulset.spec.replicas or 0) <= endpoint.ordinal:
            return  # already lowered: the kubelet is stopping it
        if statefulset.spec.replicas > endpoint.ordinal + 1:
            raise RuntimeError(
                f"can't stop {endpoint.name} while the StatefulSet keeps "
                f"{statefulset.spec.replicas} pods: it removes its highest ordinal only"
            )
        body = {"spec": {"replicas": endpoint.ordinal}}
        self._apps.patch_namespaced_stateful_set(self.name, self.namespace, body)

    def restart(self, endpoint: Endpoint, peers: list[Peer]) -> None:
        """Evict the member's pod (policy/v1 Eviction on its `eviction` subresource): the API
        server deletes it only while the PodDisruptionBudget allows a disruption, as it does for
        a node drain, and the StatefulSet makes it again from the template `configure` wrote.
        The member restarts from its own data (`peers` are not needed: its pod starts from its
        volume), under the budget `limit_disruptions` sized for the voters before this step. A
        pod already gone is no failure; the budget refusing (429 Too Many Requests) raises
        `DisruptionRefused`."""
        body = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=endpoint.name, namespace=self.namespace)
        )
        try:
            self._core.create_namespaced_pod_eviction(endpoint.name, self.namespace, body)
        except ApiException as error:
            if error.status == 429:
                raise DisruptionRefused(
                    f"{endpoint.name}: the PodDisruptionBudget {self.name} allows no "
                    f"disruption now ({_message(error)}); retried on the next pass"
                ) from None
            if error.status != 404:
                raise

    def _delete_pod(self, endpoint: Endpoint) -> None:
        try:
            self._core.delete_namespaced_pod(endpoint.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    def _release(self, claim: Any, why: str) -> str:
        """Keep the claim's volume (reclaim policy Retain) and delete the claim, so no member
        starts on it again and a person can still reach the data; returns where it is."""
        volume = claim.spec.volume_name
        if volume:
            self._core.patch_persistent_volume(
                volume, {"spec": {"persistentVolumeReclaimPolicy": "Retain"}}
            )
        self._annotate_claim(claim.metadata.name, {RELEASED: why})
        self._delete_claim(claim.metadata.name)
        return f"PersistentVolume {volume or '(unbound)'}, reclaim policy Retain"

    def _delete_claim(self, name: str) -> None:
        """Delete the PVC `name`; one already gone is no failure."""
        try:
            self._core.delete_namespaced_persistent_volume_claim(name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    def _forget(self, endpoint: Endpoint) -> None:
        statefulset = self._statefulset()
        joined = self._joined(statefulset)
        if endpoint.name in joined:
            self._set_joined(joined - {endpoint.name})

    def set_aside(self, endpoint: Endpoint, why: str) -> str:
        """Keep the member's volume (Retain) and release its PVC; its pod is deleted so the
        StatefulSet makes it again with a fresh volume."""
        claim = self._claims().get(claim_name(endpoint))
        where = "no PVC left"
        if claim is not None:
            where = self._release(claim, why)
        self._delete_pod(endpoint)
        self._forget(endpoint)
        return where

    def refill(self, endpoint: Endpoint, why: str) -> str:
        """Never asked: `kubernetes_rules` turns refilling off."""
        raise NotImplementedError(f"the operator can't refill {endpoint.name} ({why})")

    def discard(self, endpoint: Endpoint) -> None:
        """The scale-down retention policy for a member that left and stopped: Delete removes
        its PVC, Retain keeps it marked released, so no later member ever starts on it. Its pod
        goes too: a removed etcd member exits by itself and reads as stopped while the kubelet
        would restart it, and the replicas must drop below it before the next removal."""
        self.stop(endpoint)
        claim = self._claims().get(claim_name(endpoint))
        if claim is not None:
            if self._resource().spec.pvc_retention.when_scaled == "Delete":
                self._delete_claim(claim.metadata.name)
            else:
                why = f"{endpoint.name} left the membership; kept by pvcRetention.whenScaled"
                self._annotate_claim(claim.metadata.name, {RELEASED: why})
        self._forget(endpoint)
