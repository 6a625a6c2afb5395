"""`render operator` and `render cluster`: the Kubernetes manifests, printed for `kubectl apply`
or for inspection."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from quorumkeeper.errors import Refused
from quorumkeeper.runtimes.kubernetes.install import DEFAULT_NAMESPACE, operator_objects
from quorumkeeper.runtimes.kubernetes.metrics import DEFAULT_PORT as DEFAULT_METRICS_PORT
from quorumkeeper.runtimes.kubernetes.objects import SECRET_REFRESH_SECONDS, Membership, placement
from quorumkeeper.runtimes.kubernetes.render import cluster_objects
from quorumkeeper.runtimes.kubernetes.resources import Kind, parse_resource


def _print(objects: list[dict[str, Any]], output: Path | None) -> None:
    text = yaml.safe_dump_all(objects, sort_keys=False)
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


Output = Annotated[Path | None, typer.Option("--output", "-o", help="write here, not stdout")]


def render_operator(
    namespace: Annotated[str, typer.Option("--namespace", help="where the operator runs")] = (
        DEFAULT_NAMESPACE
    ),
    image: Annotated[str | None, typer.Option("--image", help="the operator's image")] = None,
    output: Output = None,
) -> None:
    """The operator's install manifests: CRDs, ServiceAccount, RBAC, Deployment."""
    _print(operator_objects(namespace, image), output)


def render_cluster(
    file: Annotated[Path, typer.Argument(help="an EtcdCluster or ZookeeperCluster manifest")],
    namespace: Annotated[
        str,
        typer.Option(
            "--namespace", "-n", help="for resources that name none (members' DNS names need it)"
        ),
    ] = "default",
    output: Output = None,
) -> None:
    """The objects the operator makes of one cluster resource, settled at its member count.

    For inspection: the operator renders them itself, growing a new cluster from one member.
    A ZooKeeper cluster's Secret gets a fresh random password on every run.
    """
    try:
        documents = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        raise Refused(f"{file}: {error}", field="FILE", fix="a readable YAML manifest") from None
    objects = []
    for document in documents:
        if not isinstance(document, dict):
            raise Refused(
                f"{file}: a document is {type(document).__name__}, not a manifest",
                field="FILE",
                fix="one EtcdCluster or ZookeeperCluster mapping per YAML document",
            )
        metadata = document.get("metadata") or {}
        placed = {**document, "metadata": {"namespace": namespace, **metadata}}
        resource = parse_resource(placed)
        membership = Membership.steady(placement(resource), resource.spec.members)
        password = secrets.token_urlsafe(24) if resource.kind is Kind.ZOOKEEPER else None
        objects.extend(cluster_objects(resource, membership, password))
    _print(objects, output)


def run_operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="watch only this namespace (repeatable)"),
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port", min=0, max=65535, help="serve Prometheus /metrics here; 0: off"
        ),
    ] = DEFAULT_METRICS_PORT,
    metrics_address: Annotated[
        str, typer.Option("--metrics-address", help="the address /metrics listens on")
    ] = "0.0.0.0",
    secret_refresh: Annotated[
        float,
        typer.Option(
            "--secret-refresh-seconds",
            min=0,
            help="the longest the kubelets take to refresh a mounted Secret (their "
            "syncFrequency plus a minute); a CA rotation waits this long between phases",
        ),
    ] = SECRET_REFRESH_SECONDS,
) -> None:
    """Run the operator: one reconciler per EtcdCluster and ZookeeperCluster, until stopped.

    Uses the in-cluster service account, or the kubeconfig ($KUBECONFIG) outside a cluster.
    """
    from quorumkeeper.runtimes.kubernetes import operator  # kopf only where it runs

    operator.run(namespace or [], metrics_port, metrics_address, secret_refresh)


def register(app: typer.Typer, render_app: typer.Typer) -> None:
    """Add `operator` to the top level, `operator` and `cluster` to the `render` group."""
    app.command("operator")(run_operator)
    render_app.command("operator")(render_operator)
    render_app.command("cluster")(render_cluster)
