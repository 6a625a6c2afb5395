"""Pod volumes and environment, materialised as host directories and process env.

Part of the kubelet stand-in: PVCs resolve to the directory of their bound PersistentVolume
(hostPath, as made by :mod:`testbed.provisioner`) or to where the ceph-csi stand-in staged its RBD
image (:mod:`testbed.cephcsi`); other volume types are written per pod.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
from pathlib import Path

from testbed import cephcsi
from testbed.kube import ApiError, Kube, Obj, ns_path


class NotReadyYet(Exception):
    """A referenced object (PVC binding, ConfigMap, Secret, token) is not available yet."""


def field_ref(pod: Obj, path: str, pod_ip: str, host_ip: str) -> str:
    """Resolve a downward-API fieldRef such as ``metadata.labels['app']``."""
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "metadata.labels": _kv_lines(meta.get("labels") or {}),
        "metadata.annotations": _kv_lines(meta.get("annotations") or {}),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path not in values:
        raise ValueError(f"unsupported fieldRef {path}")
    return str(values[path])


def _kv_lines(values: dict[str, str]) -> str:
    return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))


def _resource_ref(container: Obj | None, ref: Obj) -> str:
    resource = ref["resource"]
    kind, _, name = resource.partition(".")
    value = ((container or {}).get("resources") or {}).get(kind, {}).get(name)
    return str(value) if value is not None else "0"


class PodVolumes:
    """Materialises one pod's volumes under ``root`` and answers where each one lives."""

    def __init__(
        self,
        api: Kube,
        pod: Obj,
        root: Path,
        pod_ip: str,
        host_ip: str,
        rbd: cephcsi.NodePlugin,
    ) -> None:
        self.api, self.pod, self.root = api, pod, root
        self.pod_ip, self.host_ip = pod_ip, host_ip
        self.paths: dict[str, Path] = {}
        self.rbd = rbd
        self.staged: dict[str, cephcsi.Staging] = {}  # by PV name

    def release(self, node_lost: bool) -> None:
        """Unstage RBD volumes once the pod's containers are gone; on node loss just drop them,
        leaving their locks to be fenced, as a dead node would."""
        while self.staged:
            _, staging = self.staged.popitem()
            if node_lost:
                self.rbd.abandon(staging)
            else:
                self.rbd.unstage(staging)

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    def prepare(self) -> None:
        """Create every volume; raises :class:`NotReadyYet` while something is missing."""
        for volume in self.pod["spec"].get("volumes") or []:
            self.paths[volume["name"]] = self._prepare(volume)

    def refresh(self, pod: Obj) -> None:
        """Rewrite ConfigMap, Secret and downward API files from current objects, as kubelet
        does for running pods; a source that went missing keeps its last files."""
        self.pod = pod
        for volume in self.pod["spec"].get("volumes") or []:
            if volume.keys() & {"configMap", "secret", "downwardAPI", "projected"}:
                with contextlib.suppress(NotReadyYet):
                    self._prepare(volume)

    def _prepare(self, volume: Obj) -> Path:
        name = volume["name"]
        target: Path = self.root / name
        if "persistentVolumeClaim" in volume:
            return self._pvc(volume["persistentVolumeClaim"]["claimName"])
        if "hostPath" in volume:
            path: Path = Path(volume["hostPath"]["path"])
            path.mkdir(parents=True, exist_ok=True)
            return path
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return target
        if "configMap" in volume:
            self._write_items(target, self._config_map(volume["configMap"]), volume["configMap"])
        elif "secret" in volume:
            source = volume["secret"]
            data = self._secret({"name": source["secretName"], **source})
            self._write_items(target, data, source)
        elif "downwardAPI" in volume:
            self._write_downward(target, volume["downwardAPI"]["items"])
        elif "projected" in volume:
            self._write_projected(target, volume["projected"]["sources"])
        else:
            raise ValueError(f"unsupported volume type in {volume}")
        return target

    def _pvc(self, claim: str) -> Path:
        pvc = self.api.get(ns_path(self.namespace, "persistentvolumeclaims", claim))
        volume_name = pvc["spec"].get("volumeName")
        if pvc.get("status", {}).get("phase") != "Bound" or not volume_name:
            raise NotReadyYet(f"PVC {claim} is not bound")
        pv = self.api.get(f"/api/v1/persistentvolumes/{volume_name}")
        if (pv["spec"].get("csi") or {}).get("driver") == cephcsi.DRIVER:
            return self._stage(pv)
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        if source is None:
            raise ValueError(f"PV {volume_name} is neither hostPath nor local")
        path = Path(source["path"])
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _stage(self, pv: Obj) -> Path:
        name = pv["metadata"]["name"]
        if name not in self.staged:
            try:
                self.staged[name] = self.rbd.stage(pv)
            except cephcsi.CsiError as exc:
                raise NotReadyYet(
                    f"MountVolume.MountDevice failed for volume {name}: {exc}"
                ) from exc
        return self.staged[name].mount

    def _read(self, resource: str, source: Obj) -> Obj:
        try:
            return self.api.get(ns_path(self.namespace, resource, source["name"]))
        except ApiError as exc:
            if exc.status == 404 and source.get("optional"):
                return {}
            raise NotReadyYet(f"{resource} {source['name']}: {exc}") from exc

    def _config_map(self, source: Obj) -> dict[str, bytes]:
        cm = self._read("configmaps", source)
        data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
        return data

    def _secret(self, source: Obj) -> dict[str, bytes]:
        secret = self._read("secrets", source)
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    def _write_items(self, target: Path, data: dict[str, bytes], source: Obj) -> None:
        mode = source.get("defaultMode", 0o644)
        items = source.get("items")
        pairs = (
            [(i["key"], i["path"], i.get("mode", mode)) for i in items]
            if items
            else [(k, k, mode) for k in data]
        )
        for key, rel, file_mode in pairs:
            if key in data:
                self._write(target / rel, data[key], file_mode)

    def _write_downward(self, target: Path, items: list[Obj]) -> None:
        for item in items:
            if "fieldRef" in item:
                path = item["fieldRef"]["fieldPath"]
                value = field_ref(self.pod, path, self.pod_ip, self.host_ip)
            else:
                container = self._container(item["resourceFieldRef"].get("containerName"))
                value = _resource_ref(container, item["resourceFieldRef"])
            self._write(target / item["path"], value.encode(), item.get("mode", 0o644))

    def _write_projected(self, target: Path, sources: list[Obj]) -> None:
        for source in sources:
            if "configMap" in source:
                data = self._config_map(source["configMap"])
                self._write_items(target, data, source["configMap"])
            elif "secret" in source:
                self._write_items(target, self._secret(source["secret"]), source["secret"])
            elif "downwardAPI" in source:
                self._write_downward(target, source["downwardAPI"]["items"])
            elif "serviceAccountToken" in source:
                path = target / source["serviceAccountToken"]["path"]
                if not path.exists():  # tokens outlive the tests; request each one once
                    token = self._token(source["serviceAccountToken"])
                    self._write(path, token.encode(), 0o600)

    def _token(self, source: Obj) -> str:
        meta = self.pod["metadata"]
        body: Obj = {
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else [],
                "expirationSeconds": source.get("expirationSeconds", 3600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            }
        }
        account = self.pod["spec"].get("serviceAccountName") or "default"
        try:
            result = self.api.create(
                ns_path(self.namespace, "serviceaccounts", account) + "/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", **body},
            )
        except ApiError as exc:
            raise NotReadyYet(f"token for ServiceAccount {account}: {exc}") from exc
        return str(result["status"]["token"])

    def _container(self, name: str | None) -> Obj | None:
        for container in self.pod["spec"]["containers"]:
            if name is None or container["name"] == name:
                return dict(container)
        return None

    @staticmethod
    def _write(path: Path, data: bytes, mode: int) -> None:
        """Replace the file atomically: a running container may be reading it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_bytes(data)
        staging.chmod(mode)
        os.replace(staging, path)

    def env(self, container: Obj) -> dict[str, str]:
        """The container's environment: envFrom, env with valueFrom, then $(VAR) expansion."""
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._config_map(source["configMapRef"])
            else:
                data = self._secret(source["secretRef"])
            env.update({prefix + k: v.decode() for k, v in data.items()})
        for var in container.get("env") or []:
            env[var["name"]] = self._env_value(container, var, env)
        return env

    def _env_value(self, container: Obj, var: Obj, env: dict[str, str]) -> str:
        if "valueFrom" not in var:
            return expand(var.get("value", ""), env)
        source = var["valueFrom"]
        if "fieldRef" in source:
            return field_ref(self.pod, source["fieldRef"]["fieldPath"], self.pod_ip, self.host_ip)
        if "resourceFieldRef" in source:
            return _resource_ref(container, source["resourceFieldRef"])
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self._config_map(ref).get(ref["key"], b"").decode()
        ref = source["secretKeyRef"]
        return self._secret(ref).get(ref["key"], b"").decode()


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, $$ escapes, others stay verbatim."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, text)
