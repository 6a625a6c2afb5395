"""`quorumkeeper maintenance ...`: store maintenance that an operator starts by hand.

Exit codes: 0 done, 1 a step failed (the output says which; running again is safe), 2 refused
(bad input, a store without the operation, no quorum, an unhealthy member, a change in flight).
"""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from quorumkeeper.maintenance import MaintenanceRefused, SpaceReclaimer
from quorumkeeper.planner import Done, plan
from quorumkeeper.runtimes.local.cluster import LocalCluster
from quorumkeeper.runtimes.local.state import ClusterPaths, cluster_names, default_state_dir
from quorumkeeper.spec import Store
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.etcd.client import EtcdStore

maintenance_app = typer.Typer(
    help="Store maintenance you start by hand, such as reclaiming etcd space after NOSPACE.",
    no_args_is_help=True,
)


@maintenance_app.callback()
def _maintenance_group() -> None:
    """Keeps `maintenance` a command group even while it has one subcommand."""


out = Console()
err = Console(stderr=True, soft_wrap=True)


def _refuse(message: str) -> typer.Exit:
    err.print(f"[bold red]refused:[/] {message}", highlight=False)
    return typer.Exit(2)


RECLAIM_SPACE_HELP = (
    'Free an etcd cluster\'s database space after NOSPACE ("database space exceeded") and '
    "disarm the alarm.\n\n"
    "In order: compact the key history up to the current revision, defragment the followers one "
    "at a time, hand leadership to a defragmented follower, defragment the old leader, disarm "
    "NOSPACE. Each step is printed as it happens. Writes stay refused until the last step, as "
    "they are while the alarm is raised; reads go on.\n\n"
    "Compaction only drops old versions of keys. Delete the keys you no longer need first (for "
    "instance the big values that filled the quota: etcd serves deletes during NOSPACE), "
    "otherwise the space stays nearly full and NOSPACE soon returns; the last line says how "
    "full the fullest member is.\n\n"
    "Exit codes: 0 done, 1 a step failed (running again is safe), 2 refused."
)


@maintenance_app.command("reclaim-space", help=RECLAIM_SPACE_HELP)
def reclaim_space(
    name: Annotated[str, typer.Argument(help="etcd cluster name")],
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="where clusters live [env QUORUMKEEPER_STATE_DIR; ~/.local/share/quorumkeeper]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The NOSPACE way out; `RECLAIM_SPACE_HELP` says what it does."""
    paths = ClusterPaths(state_dir or default_state_dir(), name)
    if not paths.exists():
        known = ", ".join(cluster_names(paths.state_dir)) or "none"
        raise _refuse(
            f"name: no cluster {name!r} in {paths.state_dir} (clusters there: {known}); "
            "fix: check the name with `quorumkeeper list`"
        )
    cluster = LocalCluster(paths)
    if cluster.spec.store is not Store.ETCD:
        raise _refuse(
            f"cluster {name} runs {cluster.spec.store}: NOSPACE, compaction and "
            "defragmentation are etcd's; ZooKeeper has no space quota (it purges old snapshots "
            "and logs itself, see zookeeper.purge_interval_hours)"
        )
    snapshot = cluster.reconciler.observe()
    if snapshot.observation.membership is None:
        raise _refuse(f"cluster {name} has no quorum now; fix: wait until status shows one")
    step = plan(cluster.reconciler.desired, snapshot.observation)
    if not isinstance(step, Done):
        raise _refuse(
            f"a change is in flight ({step.phase}: {step.reason}); fix: wait until "
            f"`quorumkeeper status {name}` shows it done, then run again"
        )
    store = cluster.reconciler.store(snapshot.endpoints)
    assert isinstance(store, EtcdStore)  # the spec says etcd, so its backend connects etcd
    reclaimer = SpaceReclaimer(
        store,
        name_of=lambda member: cluster.reconciler.desired.endpoint_of(member).name,
        say=lambda line: out.print(line, highlight=False),
    )
    try:
        reclaimer.run()
    except MaintenanceRefused as error:
        raise _refuse(str(error)) from None
    except (StoreError, OSError, http.client.HTTPException) as error:
        err.print(
            f"[bold red]error:[/] {error}; running the command again is safe", highlight=False
        )
        raise typer.Exit(1) from None
    finally:
        store.close()
