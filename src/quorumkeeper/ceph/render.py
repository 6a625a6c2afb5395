"""Manifests that point ceph-csi's RBD driver at a pool with a least-privilege user.

Written so `quorumkeeper ceph check --manifests` can read back exactly what was rendered.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from quorumkeeper.ceph.caps import create_command
from quorumkeeper.ceph.client import check_monitor
from quorumkeeper.ceph.kube import CSI_CONFIG_MAP, DRIVER

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_DNS = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ReclaimPolicy(StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"


class RenderInput(BaseModel):
    """What the manifests are rendered from; validation errors name the flag to fix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    monitors: list[str] = Field(min_length=1)
    pool: Annotated[str, Field(pattern=_NAME)]
    cluster_id: Annotated[str, Field(min_length=1, pattern=_NAME)]
    user: Annotated[str, Field(pattern=_NAME)]
    key: str | None = None
    reclaim_policy: ReclaimPolicy = ReclaimPolicy.DELETE
    namespace: Annotated[str, Field(pattern=_DNS)] = "ceph-csi-rbd"
    storage_class: Annotated[str, Field(pattern=_DNS)] = "ceph-rbd"
    secret_name: Annotated[str, Field(pattern=_DNS)] = "csi-rbd-secret"

    @field_validator("user")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.removeprefix("client.")

    @field_validator("monitors")
    @classmethod
    def _monitors(cls, v: list[str]) -> list[str]:
        return [check_monitor(m) for m in v]


def manifests(spec: RenderInput) -> list[dict[str, Any]]:
    secret_params = {
        f"csi.storage.k8s.io/{role}-secret-{field}": value
        for role in ("provisioner", "controller-expand", "node-stage")
        for field, value in (("name", spec.secret_name), ("namespace", spec.namespace))
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CSI_CONFIG_MAP, "namespace": spec.namespace},
            "data": {
                "config.json": json.dumps(
                    [{"clusterID": spec.cluster_id, "monitors": spec.monitors}]
                )
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": spec.secret_name, "namespace": spec.namespace},
            "type": "Opaque",
            "stringData": {
                "userID": spec.user,
                "userKey": spec.key or f"REPLACE-WITH: ceph auth get-key client.{spec.user}",
            },
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": spec.storage_class},
            "provisioner": DRIVER,
            "parameters": {
                "clusterID": spec.cluster_id,
                "pool": spec.pool,
                "imageFeatures": "layering",
                "csi.storage.k8s.io/fstype": "ext4",
                **secret_params,
            },
            "reclaimPolicy": spec.reclaim_policy.value,
            "allowVolumeExpansion": True,
            "mountOptions": ["discard"],
        },
    ]


def render_yaml(spec: RenderInput) -> str:
    """Multi-document YAML, headed by the command that creates the least-privilege user."""
    header = [
        "# Least-privilege ceph-csi user (run once as a Ceph admin):",
        f"#   {create_command(spec.user, spec.pool)}",
    ]
    if spec.key is None:
        header.append(
            f"# Then put `ceph auth get-key client.{spec.user}` into the Secret's userKey."
        )
    docs = [yaml.safe_dump(m, sort_keys=False) for m in manifests(spec)]
    return "\n".join(header) + "\n---\n" + "---\n".join(docs)
