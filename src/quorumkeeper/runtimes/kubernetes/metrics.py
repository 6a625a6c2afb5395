"""The operator's Prometheus metrics, fed from each cluster daemon's pass.

One collector holds what every pass reported, per cluster resource, and builds the metric
families at scrape time (prometheus-client's custom collector), so a cluster's series all go
at once when its resource is deleted (`forget`) and the seconds in the current phase are as of
the scrape. Every series carries `namespace`, `cluster` and `kind` (EtcdCluster or
ZookeeperCluster).

Series (names follow Prometheus' naming guide: `_total` counters, base units):
- `quorumkeeper_reconcile_passes_total{outcome}`: passes, by outcome `acted` (a step went
  through), `waiting` (the plan waits or the store refused the step for now), `settled` (the
  cluster matches its spec), `failed` (the pass raised), `invalid_spec`.
- `quorumkeeper_reconcile_failures_total{error}`: passes that raised, by exception type.
- `quorumkeeper_membership_changes_total{step}`: membership changes that went through, by step
  (`AddLearner`, `Promote`, `RemoveMember`).
- `quorumkeeper_member_healthy{member}`: 1 while the store reports the member healthy, else 0.
- `quorumkeeper_phase_seconds{phase}`: seconds since the cluster entered its current phase.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from quorumkeeper.status import ClusterStatus

DEFAULT_PORT = 8080
"""Where `quorumkeeper operator` serves `/metrics` unless told otherwise (0: not at all)."""


class ClusterKey(NamedTuple):
    """A cluster resource, as its series are labelled."""

    namespace: str
    cluster: str
    kind: str


LABELS = list(ClusterKey._fields)


class Outcome(StrEnum):
    ACTED = "acted"
    WAITING = "waiting"
    SETTLED = "settled"
    FAILED = "failed"
    INVALID_SPEC = "invalid_spec"


@dataclass
class _Cluster:
    """What the passes of one cluster reported so far."""

    passes: Counter[Outcome] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    healthy: dict[str, bool] = field(default_factory=dict)
    phase: str | None = None
    phase_since: float = 0.0


class OperatorMetrics(Collector):
    """Every cluster daemon's reports, exposed in `registry`. Thread-safe: daemons run in
    threads of their own and the HTTP server scrapes from another."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self._clusters: dict[ClusterKey, _Cluster] = {}
        self._lock = threading.Lock()
        self.registry.register(self)

    def passed(
        self,
        key: ClusterKey,
        outcome: Outcome,
        status: ClusterStatus | None = None,
        membership_change: str | None = None,
    ) -> None:
        """One pass of `key`: its outcome, the status it recorded (members' health and the
        phase; None keeps the last), and the membership change that went through, by step."""
        now = self._clock()
        with self._lock:
            cluster = self._clusters.setdefault(key, _Cluster())
            cluster.passes[outcome] += 1
            if membership_change is not None:
                cluster.changes[membership_change] += 1
            if status is not None:
                cluster.healthy = {m.name: m.healthy for m in status.members}
                if status.phase != cluster.phase:
                    cluster.phase, cluster.phase_since = status.phase, now

    def failed(self, key: ClusterKey, error: BaseException) -> None:
        """A pass of `key` that raised `error`."""
        with self._lock:
            cluster = self._clusters.setdefault(key, _Cluster())
            cluster.passes[Outcome.FAILED] += 1
            cluster.failures[type(error).__name__] += 1

    def forget(self, key: ClusterKey) -> None:
        """Drop every series of `key` (its resource is gone)."""
        with self._lock:
            self._clusters.pop(key, None)

    def describe(self) -> Iterable[Metric]:
        return ()  # series come and go with clusters; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        passes = CounterMetricFamily(
            "quorumkeeper_reconcile_passes",
            "Reconcile passes, by outcome",
            labels=[*LABELS, "outcome"],
        )
        failures = CounterMetricFamily(
            "quorumkeeper_reconcile_failures",
            "Reconcile passes that failed, by exception type",
            labels=[*LABELS, "error"],
        )
        changes = CounterMetricFamily(
            "quorumkeeper_membership_changes",
            "Membership changes that went through, by step",
            labels=[*LABELS, "step"],
        )
        healthy = GaugeMetricFamily(
            "quorumkeeper_member_healthy",
            "1 while the store reports the member healthy, else 0",
            labels=[*LABELS, "member"],
        )
        phase = GaugeMetricFamily(
            "quorumkeeper_phase_seconds",
            "Seconds since the cluster entered its current phase",
            labels=[*LABELS, "phase"],
        )
        now = self._clock()
        with self._lock:
            for key, cluster in self._clusters.items():
                for outcome, count in cluster.passes.items():
                    passes.add_metric([*key, outcome.value], count)
                for error, count in cluster.failures.items():
                    failures.add_metric([*key, error], count)
                for step, count in cluster.changes.items():
                    changes.add_metric([*key, step], count)
                for member, up in cluster.healthy.items():
                    healthy.add_metric([*key, member], 1.0 if up else 0.0)
                if cluster.phase is not None:
                    phase.add_metric([*key, cluster.phase], now - cluster.phase_since)
        return [passes, failures, changes, healthy, phase]

    def serve(self, port: int, address: str) -> WSGIServer:
        """Serve `/metrics` on `address:port` from a daemon thread; the caller shuts the returned
        server down. Raises OSError when the port can't be bound."""
        server, _thread = start_http_server(port, address, registry=self.registry)
        return server
