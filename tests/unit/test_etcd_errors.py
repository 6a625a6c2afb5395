"""`etcd_errors`: every row of the table raises the class decided for it, unknown messages fall
back to their gRPC code, and answers that are not the gateway's never escape as decoding errors.

The expected classes are written out here, apart from the table, so a changed or added row
fails until its class is decided again."""

from __future__ import annotations

import pytest

from quorumkeeper.errors import ExitCode
from quorumkeeper.stores.base import AddsRefused, NotCaughtUp, StoreError, StoreUnavailable
from quorumkeeper.stores.etcd.errors import (
    ANSWERS,
    BODY_PREVIEW,
    MEMBER_ADD,
    EtcdAnswer,
    GrpcCode,
    classify,
    lookup,
    read_answer,
)

URL = "http://127.0.0.1:2379"
REMOVE = "/v3/cluster/member/remove"

REFUSED = (StoreError, False)
TRANSIENT = (StoreError, True)
UNAVAILABLE = (StoreUnavailable, True)

EXPECTED: dict[tuple[str, str | None], tuple[type[StoreError], bool]] = {
    (
        "etcdserver: can only promote a learner member which is in sync with leader",
        None,
    ): (NotCaughtUp, True),
    ("etcdserver: can only promote a learner member", None): REFUSED,
    ("etcdserver: too many learner members in cluster", None): TRANSIENT,
    ("etcdserver: Peer URLs already exists", None): REFUSED,
    ("etcdserver: member ID already exist", None): REFUSED,
    ("etcdserver: member not found", None): REFUSED,
    ("etcdserver: given member URLs are invalid", None): REFUSED,
    ("etcdserver: re-configuration failed due to not enough started members", None): TRANSIENT,
    ("etcdserver: unhealthy cluster", MEMBER_ADD): (AddsRefused, True),
    ("etcdserver: unhealthy cluster", None): TRANSIENT,
    ("etcdserver: bad leader transferee", None): REFUSED,
    ("etcdserver: not leader", None): TRANSIENT,
    ("etcdserver: no leader", None): UNAVAILABLE,
    ("etcdserver: leader changed", None): UNAVAILABLE,
    ("etcdserver: request timed out", None): UNAVAILABLE,
    ("etcdserver: request timed out, possibly due to previous leader failure", None): UNAVAILABLE,
    ("etcdserver: request timed out, possibly due to connection lost", None): UNAVAILABLE,
    (
        "etcdserver: request timed out, waiting for the applied index took too long",
        None,
    ): UNAVAILABLE,
    ("etcdserver: request timed out, leader transfer took too long", None): TRANSIENT,
    ("etcdserver: server stopped", None): UNAVAILABLE,
    ("etcdserver: rpc not supported for learner", None): UNAVAILABLE,
    ("etcdserver: not capable", None): TRANSIENT,
    ("etcdserver: too many requests", None): TRANSIENT,
    ("etcdserver: mvcc: database space exceeded", None): REFUSED,
    ("etcdserver: mvcc: required revision has been compacted", None): REFUSED,
    ("etcdserver: mvcc: required revision is a future revision", None): REFUSED,
    ("etcdserver: request is too large", None): REFUSED,
    ("etcdserver: corrupt cluster", None): REFUSED,
}


def test_every_row_has_a_decided_class_and_is_reachable() -> None:
    rows = [(answer.message, answer.path) for answer in ANSWERS]
    assert len(rows) == len(set(rows)), "a message listed twice for the same path"
    assert set(rows) == set(EXPECTED)
    for answer in ANSWERS:  # a general row listed first would hide a path-specific one
        assert lookup(answer.message, answer.path or "/v3/kv/put") is answer


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: f"{a.message}@{a.path or '*'}")
def test_each_row_raises_its_class(answer: EtcdAnswer) -> None:
    path = answer.path or REMOVE
    error = classify(f"{URL}{path}", 400, answer.code, answer.message)
    expected_class, retryable = EXPECTED[(answer.message, answer.path)]
    assert type(error) is expected_class
    assert error.retryable is retryable
    assert error.exit_code == (ExitCode.NOT_DONE if retryable else ExitCode.REFUSED)
    message = str(error)
    assert f"{URL}{path}" in message
    assert answer.message in message
    assert answer.means in message
    assert f"{answer.code.name} ({int(answer.code)})" in message


def test_unhealthy_cluster_refuses_adds_only_on_the_add_path() -> None:
    message = "etcdserver: unhealthy cluster"
    on_add = classify(f"{URL}{MEMBER_ADD}", 503, GrpcCode.UNAVAILABLE, message)
    on_remove = classify(f"{URL}{REMOVE}", 503, GrpcCode.UNAVAILABLE, message)
    assert type(on_add) is AddsRefused
    assert type(on_remove) is StoreError
    assert on_remove.retryable
    assert "quorum" in str(on_remove)


@pytest.mark.parametrize(
    ("code", "error_class", "retryable"),
    [
        (GrpcCode.UNAVAILABLE, StoreUnavailable, True),
        (GrpcCode.DEADLINE_EXCEEDED, StoreUnavailable, True),
        (GrpcCode.UNKNOWN, StoreError, True),
        (GrpcCode.RESOURCE_EXHAUSTED, StoreError, True),
        (GrpcCode.ABORTED, StoreError, True),
        (GrpcCode.CANCELLED, StoreError, True),
        (GrpcCode.FAILED_PRECONDITION, StoreError, False),
        (GrpcCode.INVALID_ARGUMENT, StoreError, False),
        (GrpcCode.NOT_FOUND, StoreError, False),
        (GrpcCode.PERMISSION_DENIED, StoreError, False),
        (GrpcCode.OUT_OF_RANGE, StoreError, False),
        (GrpcCode.DATA_LOSS, StoreError, False),
    ],
)
def test_an_unknown_message_is_classified_by_its_code_alone(
    code: GrpcCode, error_class: type[StoreError], retryable: bool
) -> None:
    error = classify(f"{URL}{REMOVE}", 500, code, "etcdserver: something new")
    assert type(error) is error_class
    assert error.retryable is retryable
    assert f"{code.name} ({int(code)}): etcdserver: something new" in str(error)


def test_a_code_grpc_does_not_define_is_refused_and_named_unknown() -> None:
    error = classify(f"{URL}{REMOVE}", 500, 99, "odd")
    assert not error.retryable
    assert "an unknown gRPC code (99): odd" in str(error)


def test_a_200_with_a_json_object_is_the_answer() -> None:
    assert read_answer(f"{URL}/v3/kv/put", 200, b'{"header": {"revision": "7"}}') == {
        "header": {"revision": "7"}
    }


def test_the_gateway_error_body_is_classified_whatever_the_http_status() -> None:
    body = b'{"code": 9, "message": "etcdserver: can only promote a learner member", "details": []}'
    with pytest.raises(StoreError) as raised:
        read_answer(f"{URL}/v3/cluster/member/promote", 400, body)
    assert not raised.value.retryable
    assert "HTTP 400, FAILED_PRECONDITION (9)" in str(raised.value)


def test_an_older_gateways_error_field_is_read_too() -> None:
    body = (
        b'{"error": "etcdserver: can only promote a learner member which is in sync with '
        b'leader", "code": 9}'
    )
    with pytest.raises(NotCaughtUp):
        read_answer(f"{URL}/v3/cluster/member/promote", 412, body)


PROXY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@pytest.mark.parametrize(
    ("status", "body", "error_class", "retryable", "shown"),
    [
        (502, PROXY_PAGE, StoreUnavailable, True, "'<html><head><title>502 Bad Gateway"),
        (503, b"", StoreUnavailable, True, "an empty body"),
        (404, b"404 page not found\n", StoreError, False, "'404 page not found'"),
        (403, b'{"detail": "forbidden"}', StoreError, False, '{"detail": "forbidden"}'),
        (200, b"# HELP etcd_server_has_leader", StoreError, False, "etcd member's client URL"),
        (200, b"[1, 2]", StoreError, False, "'[1, 2]'"),
        (500, b"\xff\xfe not utf-8", StoreUnavailable, True, "not utf-8"),
    ],
)
def test_a_body_that_is_not_the_gateways_names_url_status_and_first_bytes(
    status: int, body: bytes, error_class: type[StoreError], retryable: bool, shown: str
) -> None:
    url = f"{URL}/v3/cluster/member/list"
    with pytest.raises(StoreError) as raised:
        read_answer(url, status, body)
    error = raised.value
    assert isinstance(error, error_class)
    assert error.retryable is retryable
    assert f"{url} answered HTTP {status} with" in str(error)
    assert shown in str(error)


def test_a_long_body_is_cut_to_its_first_characters() -> None:
    with pytest.raises(StoreError) as raised:
        read_answer(f"{URL}/v3/kv/range", 404, b"x" * 10_000)
    message = str(raised.value)
    assert "x" * BODY_PREVIEW + "'..." in message
    assert "x" * (BODY_PREVIEW + 1) not in message
