"""Reading ceph-csi's view of a cluster (StorageClass, Secret, csi config, PVs, nodes).

Objects are handled as plain dicts, whether they come from the API server (raw JSON, so the
untyped Kubernetes models never leak) or from a manifest file written by `render ceph`.
"""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from quorumkeeper.ceph.client import CephError, CephTarget
from quorumkeeper.ceph.locks import OUT_OF_SERVICE_TAINT, NodeState

DRIVER = "rbd.csi.ceph.com"
CSI_CONFIG_MAP = "ceph-csi-config"
Obj = dict[str, Any]


@dataclass(frozen=True)
class RbdVolume:
    """An RBD-backed PV as ceph-csi records it."""

    pv: str
    handle: str
    pool: str | None
    image: str | None
    claim: str | None  # namespace/name of the bound PVC


class KubeReader:
    """Read-only access to the objects above through a kubeconfig; every request is bounded."""

    def __init__(self, kubeconfig: Path, context: str | None = None, timeout: float = 10.0):
        try:
            from kubernetes import client, config
        except ImportError as exc:
            raise CephError(
                "--kubeconfig needs the kubernetes package: pip install kubernetes==37.0.2",
                field="kubeconfig",
            ) from exc

        if not kubeconfig.is_file():
            raise CephError(f"kubeconfig {kubeconfig} does not exist", field="kubeconfig")
        try:
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), context=context
            )
        except Exception as exc:
            raise CephError(f"kubeconfig {kubeconfig} unusable: {exc}", field="kubeconfig") from exc
        self._core = client.CoreV1Api(api)
        self._storage = client.StorageV1Api(api)
        self._timeout = timeout

    def _get(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Obj:
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
            data: Obj = json.loads(resp.data)
            return data
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 404:
                raise CephError(f"{what} not found", field=what.split()[0]) from exc
            raise CephError(f"reading {what} from the API server failed: {exc}") from exc

    def nodes(self) -> tuple[NodeState, ...]:
        items = self._get("nodes", self._core.list_node)["items"]
        return tuple(node_state(n) for n in items)

    def volumes(self) -> list[RbdVolume]:
        items = self._get("persistentvolumes", self._core.list_persistent_volume)["items"]
        return [v for pv in items if (v := rbd_volume(pv)) is not None]

    def claimed_volumes(self, namespace: str, selector: str) -> list[RbdVolume]:
        """The RBD volumes bound to the PVCs matching `selector` in `namespace`."""
        pvcs = self._get(
            "persistentvolumeclaims",
            self._core.list_namespaced_persistent_volume_claim,
            namespace,
            label_selector=selector,
        )["items"]
        bound = {f"{namespace}/{c['metadata']['name']}" for c in pvcs}
        return [v for v in self.volumes() if v.claim in bound]

    def storage_objects(self, storage_class: str) -> list[Obj]:
        """The StorageClass, its node-stage Secret and the csi config map, for `target_from`."""
        sc = self._get(
            f"storageclass {storage_class}", self._storage.read_storage_class, storage_class
        )
        params = sc.get("parameters", {})
        name, ns = _secret_ref(params)
        secret = self._get(f"secret {ns}/{name}", self._core.read_namespaced_secret, name, ns)
        objs = [sc, secret]
        with contextlib.suppress(CephError):  # monitors may come from flags instead
            objs.append(
                self._get(
                    f"configmap {ns}/{CSI_CONFIG_MAP}",
                    self._core.read_namespaced_config_map,
                    CSI_CONFIG_MAP,
                    ns,
                )
            )
        return objs


def node_state(node: Obj) -> NodeState:
    status = node.get("status", {})
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )
    taints = node.get("spec", {}).get("taints", []) or []
    return NodeState(
        name=node["metadata"]["name"],
        addresses=tuple(a["address"] for a in status.get("addresses", [])),
        ready=ready,
        out_of_service=any(t.get("key") == OUT_OF_SERVICE_TAINT for t in taints),
    )


def rbd_volume(pv: Obj) -> RbdVolume | None:
    csi = pv.get("spec", {}).get("csi") or {}
    if csi.get("driver") != DRIVER:
        return None
    attrs = csi.get("volumeAttributes", {}) or {}
    ref = pv.get("spec", {}).get("claimRef") or {}
    return RbdVolume(
        pv=pv["metadata"]["name"],
        handle=csi["volumeHandle"],
        pool=attrs.get("pool"),
        image=attrs.get("imageName"),
        claim=f"{ref['namespace']}/{ref['name']}" if ref else None,
    )


def _secret_ref(params: dict[str, str]) -> tuple[str, str]:
    for prefix in ("node-stage", "provisioner"):
        name = params.get(f"csi.storage.k8s.io/{prefix}-secret-name")
        ns = params.get(f"csi.storage.k8s.io/{prefix}-secret-namespace")
        if name and ns:
            return name, ns
    raise CephError(
        "the StorageClass names no ceph-csi secret (csi.storage.k8s.io/node-stage-secret-name "
        "and -namespace)",
        field="storageclass",
    )


def load_manifests(path: Path) -> list[Obj]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as exc:
        raise CephError(f"cannot read manifests {path}: {exc}", field="manifests") from exc


def _secret_value(secret: Obj, key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    if key in (secret.get("data") or {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


def target_from(
    objs: list[Obj], monitors: list[str] | None = None, timeout: float = 10.0
) -> tuple[CephTarget, str]:
    """The client target and pool described by a ceph-csi StorageClass + Secret (+ config map)."""
    by_kind: dict[str, list[Obj]] = {}
    for o in objs:
        by_kind.setdefault(o.get("kind", ""), []).append(o)
    classes = [sc for sc in by_kind.get("StorageClass", []) if sc.get("provisioner") == DRIVER]
    if len(classes) != 1:
        raise CephError(
            f"expected one StorageClass with provisioner {DRIVER}, found {len(classes)}",
            field="storageclass",
        )
    params = classes[0].get("parameters", {})
    pool, cluster_id = params.get("pool"), params.get("clusterID")
    if not pool or not cluster_id:
        raise CephError(
            "the StorageClass lacks parameters.pool or parameters.clusterID", field="storageclass"
        )
    name, _ = _secret_ref(params)
    secret = next((s for s in by_kind.get("Secret", []) if s["metadata"]["name"] == name), None)
    if secret is None:
        raise CephError(f"secret {name!r} named by the StorageClass not found", field="secret")
    user, key = _secret_value(secret, "userID"), _secret_value(secret, "userKey")
    if not user or not key:
        raise CephError(f"secret {name!r} lacks userID or userKey", field="secret")
    if not monitors:
        for cm in by_kind.get("ConfigMap", []):
            for entry in json.loads((cm.get("data") or {}).get("config.json", "[]")):
                if entry.get("clusterID") == cluster_id:
                    monitors = list(entry.get("monitors", []))
    if not monitors:
        raise CephError(
            f"no monitors for clusterID {cluster_id!r}: pass --monitors or include the "
            f"{CSI_CONFIG_MAP} ConfigMap",
            field="monitors",
        )
    try:
        return CephTarget(monitors=monitors, user=user, key=key, timeout=timeout), pool
    except ValidationError as exc:
        problem = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        raise CephError(
            f"secret {name!r} or csi config unusable: {problem}", field="secret"
        ) from exc
