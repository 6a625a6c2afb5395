"""CustomResourceDefinitions generated from the resource models (`resources.py`).

The API server takes only structural schemas (Kubernetes docs, "Extend the Kubernetes API with
CustomResourceDefinitions", "Specifying a structural schema"): every node typed, no `$ref`, no
`anyOf` but for int-or-string, `nullable` instead of a null branch, no `additionalProperties:
false` next to `properties`. Defaults are dropped so that the API server never writes them into
stored objects; the models apply them when the operator parses a resource.
"""

from __future__ import annotations

from typing import Any

from quorumkeeper.runtimes.kubernetes.resources import (
    GROUP,
    VERSION,
    VERSION_RULES,
    Kind,
    ResourceStatus,
)
from quorumkeeper.spec import DNS_LABEL, MAX_NAME

Schema = dict[str, Any]

_DROPPED = ("default", "title", "$defs")

PRINTER_COLUMNS: list[dict[str, str | int]] = [
    {"name": "Desired", "type": "integer", "jsonPath": ".spec.members"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyMembers"},
    {"name": "Leader", "type": "string", "jsonPath": ".status.leader"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # `kubectl get -o wide` only (priority 1): empty unless a CA rotation is under way.
    {"name": "CA-Rotation", "type": "string", "jsonPath": ".status.caRotation", "priority": 1},
]


NAME_RULE = {
    "rule": f"self.metadata.name.size() <= {MAX_NAME} && "
    f"self.metadata.name.matches('{DNS_LABEL.pattern}')",
    "message": f"metadata.name must be a DNS-1123 label of at most {MAX_NAME} characters "
    "(lowercase letters, digits and '-', starting and ending with a letter or digit): members "
    "are pods <name>-N reached as <name>-N.<name>-peers",
    "reason": "FieldValueInvalid",
}
"""The local spec's rule for a cluster name, where the API server allows any DNS subdomain."""


def structural(schema: Schema) -> Schema:
    """`schema` (pydantic's JSON schema of a model, by alias) as a structural schema.

    Raises ValueError for a construct the API server can't take (a union other than
    int-or-string or "X or null"), naming its place in the schema.
    """
    definitions: dict[str, Schema] = schema.get("$defs", {})
    return _node(schema, definitions, "")


def _resolve(node: Schema, definitions: dict[str, Schema]) -> Schema:
    """`node` with a `$ref` replaced by its definition; sibling keys win."""
    if "$ref" not in node:
        return node
    name = node["$ref"].rsplit("/", 1)[-1]
    siblings = {k: v for k, v in node.items() if k != "$ref"}
    return _resolve({**definitions[name], **siblings}, definitions)


def _node(node: Schema, definitions: dict[str, Schema], where: str) -> Schema:
    node = _resolve(node, definitions)
    nullable = False
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"{where or '.'}: a union is not structural: {node['anyOf']}")
        nullable = len(branches) < len(node["anyOf"])
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**_resolve(branches[0], definitions), **rest}
    result: Schema = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "additionalProperties" and value is False):
            continue
        if key == "const":
            result["enum"] = [value]
        elif key == "additionalProperties" and value is True:
            result["x-kubernetes-preserve-unknown-fields"] = True
        elif key == "additionalProperties":
            result[key] = _node(value, definitions, f"{where}.*")
        elif key == "items":
            result[key] = _node(value, definitions, f"{where}[]")
        elif key == "properties":
            required = set(node.get("required", ()))
            result[key] = {
                name: _optional(_node(child, definitions, f"{where}.{name}"), name not in required)
                for name, child in value.items()
            }
        elif key == "anyOf":
            result[key] = [{k: v for k, v in b.items() if k not in _DROPPED} for b in value]
        else:
            result[key] = value
    if nullable:
        result["nullable"] = True
    return result


def _optional(node: Schema, optional: bool) -> Schema:
    return {**node, "nullable": True} if optional else node


def crd(kind: Kind) -> Schema:
    """The CustomResourceDefinition of `kind`: schema, subresources and printer columns.

    `kubectl scale` moves `.spec.members` (the scale subresource); its status side reads
    `.status.readyMembers`.
    """
    spec = structural(kind.spec_model.model_json_schema(by_alias=True))
    status = structural(ResourceStatus.model_json_schema(by_alias=True))
    names = {
        "kind": kind.value,
        "listKind": f"{kind.value}List",
        "plural": kind.plural,
        "singular": kind.value.lower(),
        "shortNames": [kind.short_name],
        "categories": ["quorumkeeper"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "x-kubernetes-validations": [NAME_RULE, *VERSION_RULES],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.members",
                            "statusReplicasPath": ".status.readyMembers",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def crds() -> list[Schema]:
    return [crd(kind) for kind in Kind]
