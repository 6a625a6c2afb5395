"""Plain-JSON access to the API server over the official client's configured connection.

The test bed reads and writes Kubernetes objects as dicts in their wire form (camelCase, as in
manifests), which keeps status patches and manifests literal instead of round-tripping them
through generated models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from kubernetes import client, config

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer of the API server."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status = status


class Kube:
    """GET/LIST/POST/PATCH/DELETE by API path; results are decoded JSON."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Kube:
        api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            str(path)
        )
        return cls(api_client)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        url = self.api_client.configuration.host + path
        if params:
            url += "?" + urlencode(params)
        headers = {"Accept": "application/json", "Content-Type": content_type}
        response = self.api_client.call_api(method, url, header_params=headers, body=body)
        data: bytes = response.read() or b"{}"  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise ApiError(response.status, data.decode(errors="replace"))
        result: Obj = json.loads(data)
        return result

    def get(self, path: str, **params: str) -> Obj:
        return self.request("GET", path, params=params)

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Obj, content_type: str = STRATEGIC_MERGE_PATCH) -> Obj:
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path: str, body: Obj | None = None) -> Obj:
        return self.request("DELETE", path, body)

    def ensure(self, path: str, body: Obj) -> Obj:
        """Create ``body`` under ``path`` unless an object of that name exists already."""
        try:
            return self.create(path, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            return self.get(f"{path}/{body['metadata']['name']}")


def ns_path(namespace: str, resource: str, name: str = "", group: str = "") -> str:
    """API path of a namespaced resource, e.g. ns_path("default", "pods", "web-0")."""
    base = f"/apis/{group}" if group else "/api/v1"
    path = f"{base}/namespaces/{namespace}/{resource}"
    return f"{path}/{name}" if name else path


def condition_true(obj: Obj, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions") or []
    )


def volume_for(claim: Obj, storage_class: Obj, annotations: dict[str, str], source: Obj) -> Obj:
    """A PersistentVolume pre-bound to `claim`, as a dynamic provisioner of `storage_class`
    creates it; `source` is its volume source (e.g. `{"csi": {...}}`)."""
    meta, spec = claim["metadata"], claim["spec"]
    return {
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": annotations},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec["accessModes"],
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy", "Delete"),
            "storageClassName": storage_class["metadata"]["name"],
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            **source,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }
