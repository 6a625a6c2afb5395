"""The Kubernetes API calls the operator makes, through the kubernetes client's own `ApiClient`
(its configuration, authentication, serialization, model classes and `ApiException`) without its
generated per-group API classes.

Why: importing `kubernetes.client.CoreV1Api` alone costs about 20 MB of RSS (its generated module
is 4.5 MB of source, mostly docstrings, held as code objects), `AppsV1Api` another 4 MB: more
than the daemons of ten clusters together, and the difference between the operator's RSS with
ten clusters above and below the 100 MB target (measured with `benchmarks.operator --clusters
10`). The methods keep the generated ones' names, arguments and answers (the same model
objects), and the same Content-Type choice: an object body patches a built-in kind by strategic
merge (the client's `rest.py` turns its default JSON patch into that) and a custom resource by
merge patch.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

_ACCEPT = "application/json"
_MERGE_PATCH = "application/merge-patch+json"
_STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class KubeApi:
    """The operator's calls on one `ApiClient`; each raises `ApiException` for an answer
    outside 2xx, as the generated methods do."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client

    def _call(
        self,
        method: str,
        path: str,
        response_type: str | None,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> Any:
        headers: dict[str, str | None] = {"Accept": _ACCEPT}
        if body is not None:
            headers["Content-Type"] = content_type or (
                _STRATEGIC_MERGE_PATCH if method == "PATCH" else "application/json"
            )
        params = [(key, value) for key, value in (query or {}).items() if value is not None]
        request = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(*request)
        response.read()  # type: ignore[no-untyped-call]
        return self.api_client.response_deserialize(response, {"2XX": response_type}).data

    @staticmethod
    def _apply(field_manager: str | None, force: bool | None) -> dict[str, Any]:
        return {"fieldManager": field_manager, "force": force}

    # core/v1

    def list_namespaced_pod(self, namespace: str, *, label_selector: str) -> Any:
        path = f"/api/v1/namespaces/{namespace}/pods"
        return self._call("GET", path, "V1PodList", query={"labelSelector": label_selector})

    def delete_namespaced_pod(self, name: str, namespace: str) -> Any:
        return self._call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", "V1Pod")

    def create_namespaced_pod_eviction(self, name: str, namespace: str, body: Any) -> Any:
        path = f"/api/v1/namespaces/{namespace}/pods/{name}/eviction"
        return self._call("POST", path, "V1Status", body=body)

    def list_namespaced_persistent_volume_claim(
        self, namespace: str, *, label_selector: str
    ) -> Any:
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"
        query = {"labelSelector": label_selector}
        return self._call("GET", path, "V1PersistentVolumeClaimList", query=query)

    def patch_namespaced_persistent_volume_claim(self, name: str, namespace: str, body: Any) -> Any:
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
        return self._call("PATCH", path, "V1PersistentVolumeClaim", body=body)

    def delete_namespaced_persistent_volume_claim(self, name: str, namespace: str) -> Any:
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
        return self._call("DELETE", path, "V1PersistentVolumeClaim")

    def patch_persistent_volume(self, name: str, body: Any) -> Any:
        return self._call(
            "PATCH", f"/api/v1/persistentvolumes/{name}", "V1PersistentVolume", body=body
        )

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        return self._call("GET", path, "V1ConfigMap")

    def patch_namespaced_config_map(
        self,
        name: str,
        namespace: str,
        body: Any,
        *,
        field_manager: str | None = None,
        force: bool | None = None,
        _content_type: str | None = None,
    ) -> Any:
        path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        query = self._apply(field_manager, force)
        return self._call(
            "PATCH", path, "V1ConfigMap", body=body, query=query, content_type=_content_type
        )

    def patch_namespaced_service(
        self,
        name: str,
        namespace: str,
        body: Any,
        *,
        field_manager: str | None = None,
        force: bool | None = None,
        _content_type: str | None = None,
    ) -> Any:
        path = f"/api/v1/namespaces/{namespace}/services/{name}"
        query = self._apply(field_manager, force)
        return self._call(
            "PATCH", path, "V1Service", body=body, query=query, content_type=_content_type
        )

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        return self._call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}", "V1Secret")

    def create_namespaced_secret(self, namespace: str, body: Any) -> Any:
        path = f"/api/v1/namespaces/{namespace}/secrets"
        return self._call("POST", path, "V1Secret", body=body)

    def patch_namespaced_secret(self, name: str, namespace: str, body: Any) -> Any:
        path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        return self._call("PATCH", path, "V1Secret", body=body, content_type=_MERGE_PATCH)

    def list_namespaced_event(self, namespace: str, *, field_selector: str) -> Any:
        path = f"/api/v1/namespaces/{namespace}/events"
        return self._call("GET", path, "CoreV1EventList", query={"fieldSelector": field_selector})

    def create_namespaced_event(self, namespace: str, body: Any) -> Any:
        path = f"/api/v1/namespaces/{namespace}/events"
        return self._call("POST", path, "CoreV1Event", body=body)

    # apps/v1, policy/v1

    def read_namespaced_stateful_set(self, name: str, namespace: str) -> Any:
        path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"
        return self._call("GET", path, "V1StatefulSet")

    def patch_namespaced_stateful_set(
        self,
        name: str,
        namespace: str,
        body: Any,
        *,
        field_manager: str | None = None,
        force: bool | None = None,
        _content_type: str | None = None,
    ) -> Any:
        path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"
        query = self._apply(field_manager, force)
        return self._call(
            "PATCH", path, "V1StatefulSet", body=body, query=query, content_type=_content_type
        )

    def read_namespaced_pod_disruption_budget(self, name: str, namespace: str) -> Any:
        path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}"
        return self._call("GET", path, "V1PodDisruptionBudget")

    def patch_namespaced_pod_disruption_budget(
        self,
        name: str,
        namespace: str,
        body: Any,
        *,
        field_manager: str | None = None,
        force: bool | None = None,
        _content_type: str | None = None,
    ) -> Any:
        path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}"
        query = self._apply(field_manager, force)
        return self._call(
            "PATCH",
            path,
            "V1PodDisruptionBudget",
            body=body,
            query=query,
            content_type=_content_type,
        )

    # custom resources

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        path = f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}"
        return self._call("GET", path, "object")

    def patch_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any:
        path = f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}/status"
        return self._call("PATCH", path, "object", body=body, content_type=_MERGE_PATCH)
