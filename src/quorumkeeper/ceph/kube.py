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
        self._apps = client.AppsV1Api(api)
        self._authz = client.AuthorizationV1Api(api)
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
            if status in (401, 403):
                raise CephError(
                    f"the API server refused this kubeconfig's user access to {what} "
                    f"({status} {getattr(exc, 'reason', '')}); refusing to go on without it",
                    field="kubeconfig",
                ) from exc
            raise CephError(
                f"reading {what} from the API server failed: {exc}; refusing to go on without it",
                field="kubeconfig",
            ) from exc

    def nodes(self) -> tuple[NodeState, ...]:
        items = self._get("nodes", self._core.list_node)["items"]
        return tuple(node_state(n) for n in items)

    def volumes(self) -> list[RbdVolume]:
        """Every RBD PV, page by page."""
        items: list[Obj] = []
        token = None
        while True:
            page = self._get(
                "persistentvolumes",
                self._core.list_persistent_volume,
                **({"_continue": token} if token else {}),
            )
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return [v for pv in items if (v := rbd_volume(pv)) is not None]

    def all_volumes(self) -> list[RbdVolume]:
        """Every RBD PV, or a CephError if the list can't be proven complete.

        The API server filters nothing by RBAC within a list (it refuses with 403 instead),
        but proxies and wrong credentials can; a SelfSubjectAccessReview asks the server
        whether this user may list every PV, so a partial list is never mistaken for all.
        """
        review: Any = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": "list", "resource": "persistentvolumes"}},
        }
        try:
            resp: Any = self._authz.create_self_subject_access_review(
                review, _preload_content=False, _request_timeout=self._timeout
            )
            allowed = bool(json.loads(resp.data).get("status", {}).get("allowed"))
        except Exception as exc:
            raise CephError(
                f"cannot confirm that this kubeconfig's user may list every PV: {exc}; "
                "refusing to treat any image as unreferenced",
                field="kubeconfig",
            ) from exc
        if not allowed:
            raise CephError(
                "the API server says this kubeconfig's user may not list persistentvolumes, so "
                "any PV list it got could be partial; refusing to treat any image as "
                "unreferenced. Use credentials with `list` on persistentvolumes (cluster-wide)",
                field="kubeconfig",
            )
        return self.volumes()

    def csi_deployments(self, namespace: str) -> list[Obj]:
        """Deployments and DaemonSets in `namespace`, where ceph-csi's flags are."""
        objs = []
        for kind, fn in (
            ("Deployment", self._apps.list_namespaced_deployment),
            ("DaemonSet", self._apps.list_namespaced_daemon_set),
        ):
            for item in self._get(f"{kind.lower()}s in {namespace}", fn, namespace)["items"]:
                objs.append({**item, "kind": kind})
        return objs

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


def csi_flags(objs: list[Obj]) -> dict[str, str]:
    """`--instanceid` and `--clustername` of the ceph-csi RBD containers in `objs`.

    ceph-csi takes both as command-line flags of its provisioner Deployment and node plugin
    DaemonSet (docs/deploy-rbd.md); a container without `--instanceid` uses "default". If the
    containers disagree, the result is an error rather than a pick.
    """
    found: dict[str, set[str]] = {"instanceid": set(), "clustername": set()}
    for obj in objs:
        if obj.get("kind") not in ("Deployment", "DaemonSet"):
            continue
        pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in pod.get("containers") or []:
            args = [*(container.get("command") or []), *(container.get("args") or [])]
            flags = dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)
            if flags.get("type") != "rbd" or flags.get("drivername", DRIVER) != DRIVER:
                continue
            found["instanceid"].add(flags.get("instanceid", "default"))
            if "clustername" in flags:
                found["clustername"].add(flags["clustername"])
    for name, values in found.items():
        if len(values) > 1:
            raise CephError(
                f"ceph-csi containers disagree on --{name} ({', '.join(sorted(values))}); "
                f"pass --{'instance-id' if name == 'instanceid' else 'cluster-name'}",
                field=name,
            )
    return {name: values.pop() for name, values in found.items() if values}


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
