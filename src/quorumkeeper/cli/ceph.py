"""`quorumkeeper ceph ...` and `quorumkeeper render ceph`: Ceph RBD checks, lock fencing, orphan images."""

import typer

ceph_app = typer.Typer(help="Check Ceph access, fence stale RBD locks, clean up orphan images.")
render_app = typer.Typer(help="Render manifests for the storage a cluster runs on.")
