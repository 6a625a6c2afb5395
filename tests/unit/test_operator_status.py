"""The status the operator writes for a resource whose spec it can't parse."""

from __future__ import annotations

import pytest

from quorumkeeper.runtimes.kubernetes.operator import invalid_status
from quorumkeeper.runtimes.kubernetes.resources import API_VERSION, ResourceError, parse_resource


def test_a_spec_the_operator_cannot_parse_is_degraded_naming_the_field() -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": "EtcdCluster",
        "metadata": {"name": "orders", "namespace": "apps", "generation": 4},
        "spec": {"members": 12, "version": "3.7.3", "storage": {"size": "1Gi"}},
        "status": {
            "members": [
                {
                    "name": "orders-0",
                    "address": "a",
                    "clientUrl": "u",
                    "id": "1",
                    "role": "leader",
                    "healthy": True,
                }
            ]
        },
    }
    with pytest.raises(ResourceError) as refused:
        parse_resource(body)
    status = invalid_status(body, refused.value, 4).model_dump(mode="json", by_alias=True)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert "spec.members" in degraded["message"]
    assert status["observedGeneration"] == 4
    assert [m["name"] for m in status["members"]] == ["orders-0"]  # the last members stay
    assert status["step"]["kind"] == "Wait"
