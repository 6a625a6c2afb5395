"""etcd's answers mapped to quorumkeeper's error classes, through one table.

etcd's JSON gateway (grpc-gateway) answers a failed call with `{"code": <gRPC code>, "message":
"<etcd's text>", "details": []}` (older gateways also send the text as `error`), under an HTTP
status derived from the code: on etcd 3.7.3 FailedPrecondition is 400, NotFound 404, Unavailable
503, and an error etcd does not map to a gRPC status arrives as Unknown, 500. The HTTP status is
therefore not enough to tell a refusal from a transient failure (a learner that is behind and a
voter asked to be promoted are both 400; a missing member and a wrong path both 404), and the
code alone is not either (both of those are FailedPrecondition). So an answer is read in three
steps: the HTTP status and body are checked first, so a body that is not the gateway's (a proxy's
HTML page, Go's `404 page not found` outside `/v3/`, an empty body) becomes a `StoreError`
naming the URL, the status and the body's first bytes; then etcd's own message is looked up in
`ANSWERS`; an unknown message falls back to its gRPC code (`UNAVAILABLE_CODES`,
`RETRYABLE_CODES`).

Messages and codes are etcd's, from api/v3rpc/rpctypes/error.go (the gRPC statuses) and
server/etcdserver/errors.go (the server's errors they are mapped from in
server/etcdserver/api/v3rpc/util.go `toGRPCErrorMap`), checked against etcd 3.7.3's answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any
from urllib.parse import urlsplit

from quorumkeeper.stores.base import (
    AddsRefused,
    NotCaughtUp,
    StoreError,
    StoreUnavailable,
)


class GrpcCode(IntEnum):
    """gRPC status codes (google.golang.org/grpc/codes), the `code` of a gateway error body."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


ErrorClass = Callable[[str], StoreError]
"""Builds the error raised for an answer from the full message."""


def refused(message: str) -> StoreError:
    """etcd refused and changed nothing; asking again unchanged gets the same answer."""
    return StoreError(message, retryable=False)


def transient(message: str) -> StoreError:
    """etcd failed for now; the same request may pass later or on another member."""
    return StoreError(message, retryable=True)


@dataclass(frozen=True)
class EtcdAnswer:
    """One of etcd's errors: its exact `message`, the gRPC `code` etcd sends it with, the error
    class quorumkeeper raises for it and why (`means`, also shown to the user). `path` limits
    the row to one gateway path when the same message means different things per call. Rows
    are found by message and path alone: each message is etcd's own and unique, and an answer
    under another code than the row's still means what the message says."""

    message: str
    code: GrpcCode
    raises: ErrorClass
    means: str
    path: str | None = None


MEMBER_ADD = "/v3/cluster/member/add"

ADDS_REFUSED = (
    "etcd refuses member adds until every voter has been connected for 5 s (its "
    "reconfiguration grace after a member starts or reconnects)"
)

LEARNER_NOT_READY = "etcdserver: can only promote a learner member which is in sync with leader"
UNHEALTHY_CLUSTER = "etcdserver: unhealthy cluster"
COMPACTED = "etcdserver: mvcc: required revision has been compacted"

_TIMED_OUT = (
    "the proposal did not commit in time; it may still commit, which the next member list shows"
)

ANSWERS: tuple[EtcdAnswer, ...] = (
    # Membership (rpctypes ErrGRPCMember*, ErrGRPCLearnerNotReady, ErrGRPCTooManyLearners).
    EtcdAnswer(
        LEARNER_NOT_READY,
        GrpcCode.FAILED_PRECONDITION,
        NotCaughtUp,
        "the learner's log is not yet within 90% of the leader's (the leader decides: "
        "etcdserver isLearnerReady); promote again once it has caught up",
    ),
    EtcdAnswer(
        "etcdserver: can only promote a learner member",
        GrpcCode.FAILED_PRECONDITION,
        refused,
        "the member is a voter already, so there is nothing to promote",
    ),
    EtcdAnswer(
        "etcdserver: too many learner members in cluster",
        GrpcCode.FAILED_PRECONDITION,
        transient,
        "another learner is in the membership (etcd allows --max-learners, 1 by default); the "
        "add passes once that learner is promoted or removed",
    ),
    EtcdAnswer(
        "etcdserver: Peer URLs already exists",
        GrpcCode.FAILED_PRECONDITION,
        refused,
        "a member with this peer URL is listed already; remove that entry first",
    ),
    EtcdAnswer(
        "etcdserver: member ID already exist",
        GrpcCode.FAILED_PRECONDITION,
        refused,
        "a member with this ID is listed already",
    ),
    EtcdAnswer(
        "etcdserver: member not found",
        GrpcCode.NOT_FOUND,
        refused,
        "no member of the membership has this ID (removed already, or never added)",
    ),
    EtcdAnswer(
        "etcdserver: given member URLs are invalid",
        GrpcCode.INVALID_ARGUMENT,
        refused,
        "a peer URL is not a valid URL",
    ),
    EtcdAnswer(
        # rpctypes maps ErrNotEnoughStartedMembers to a client-side value, not a gRPC status,
        # so gRPC sends it as Unknown (HTTP 500 on etcd 3.7.3).
        "etcdserver: re-configuration failed due to not enough started members",
        GrpcCode.UNKNOWN,
        transient,
        "the change would leave fewer started voters than a quorum (--strict-reconfig-check); "
        "it passes once enough members run",
    ),
    EtcdAnswer(
        UNHEALTHY_CLUSTER,
        GrpcCode.UNAVAILABLE,
        AddsRefused,
        ADDS_REFUSED,
        path=MEMBER_ADD,
    ),
    EtcdAnswer(
        # etcdserver mayRemoveMember: the same error guards removals.
        UNHEALTHY_CLUSTER,
        GrpcCode.UNAVAILABLE,
        transient,
        "the member asked has not been connected to enough voters for 5 s to keep a quorum "
        "without the one removed; it passes once they reconnect",
    ),
    EtcdAnswer(
        "etcdserver: bad leader transferee",
        GrpcCode.FAILED_PRECONDITION,
        refused,
        "the successor is not a voter of this membership",
    ),
    EtcdAnswer(
        "etcdserver: not leader",
        GrpcCode.FAILED_PRECONDITION,
        transient,
        "the member asked does not lead (any more); ask the member that leads now",
    ),
    # No quorum behind the member asked, for now: another member may serve the request.
    EtcdAnswer(
        "etcdserver: no leader",
        GrpcCode.UNAVAILABLE,
        StoreUnavailable,
        "the member asked knows no leader (an election, or no quorum)",
    ),
    EtcdAnswer(
        "etcdserver: leader changed",
        GrpcCode.UNAVAILABLE,
        StoreUnavailable,
        "the leader changed while the request waited; ask again",
    ),
    EtcdAnswer("etcdserver: request timed out", GrpcCode.UNAVAILABLE, StoreUnavailable, _TIMED_OUT),
    EtcdAnswer(
        "etcdserver: request timed out, possibly due to previous leader failure",
        GrpcCode.UNAVAILABLE,
        StoreUnavailable,
        _TIMED_OUT,
    ),
    EtcdAnswer(
        "etcdserver: request timed out, possibly due to connection lost",
        GrpcCode.UNAVAILABLE,
        StoreUnavailable,
        _TIMED_OUT,
    ),
    EtcdAnswer(
        "etcdserver: request timed out, waiting for the applied index took too long",
        GrpcCode.UNAVAILABLE,
        StoreUnavailable,
        "the member asked lags in applying the log; another member, or a later try, serves it",
    ),
    EtcdAnswer(
        # etcdserver ErrTimeoutLeaderTransfer has no gRPC status: sent as Unknown.
        "etcdserver: request timed out, leader transfer took too long",
        GrpcCode.UNKNOWN,
        transient,
        "the successor did not take over within an election timeout; leadership may still move",
    ),
    EtcdAnswer(
        "etcdserver: server stopped",
        GrpcCode.UNAVAILABLE,
        StoreUnavailable,
        "the member asked is shutting down",
    ),
    EtcdAnswer(
        "etcdserver: rpc not supported for learner",
        GrpcCode.UNAVAILABLE,
        StoreUnavailable,
        "the member asked is a learner, which serves only status and serializable reads; ask "
        "a voter",
    ),
    EtcdAnswer(
        "etcdserver: not capable",
        GrpcCode.UNAVAILABLE,
        transient,
        "the cluster version is below what the request needs, as during an upgrade",
    ),
    EtcdAnswer(
        "etcdserver: too many requests",
        GrpcCode.RESOURCE_EXHAUSTED,
        transient,
        "the member asked applies the log more than 5000 entries behind its commit index "
        "(etcd's back-pressure)",
    ),
    # Keys, history and space.
    EtcdAnswer(
        "etcdserver: mvcc: database space exceeded",
        GrpcCode.RESOURCE_EXHAUSTED,
        refused,
        "the NOSPACE alarm is raised: etcd takes no writes until space is reclaimed and the "
        "alarm cleared (`quorumkeeper maintenance reclaim-space`)",
    ),
    EtcdAnswer(
        COMPACTED,
        GrpcCode.OUT_OF_RANGE,
        refused,
        "the history up to that revision is compacted already",
    ),
    EtcdAnswer(
        "etcdserver: mvcc: required revision is a future revision",
        GrpcCode.OUT_OF_RANGE,
        refused,
        "the revision asked for is beyond the cluster's current revision",
    ),
    EtcdAnswer(
        "etcdserver: request is too large",
        GrpcCode.INVALID_ARGUMENT,
        refused,
        "the request exceeds the member's --max-request-bytes",
    ),
    EtcdAnswer(
        "etcdserver: corrupt cluster",
        GrpcCode.DATA_LOSS,
        refused,
        "a member's data disagrees with the others' (etcd's CORRUPT alarm); retrying changes "
        "nothing",
    ),
)
"""etcd's errors quorumkeeper may meet, in lookup order: a row limited to a `path` comes before
the general row of the same message."""

UNAVAILABLE_CODES = frozenset({GrpcCode.UNAVAILABLE, GrpcCode.DEADLINE_EXCEEDED})
"""For a message not in `ANSWERS`: the member asked could not serve the call in time, as gRPC
documents these codes (grpc codes.go); another member or a later try may."""

RETRYABLE_CODES = frozenset(
    {GrpcCode.CANCELLED, GrpcCode.UNKNOWN, GrpcCode.RESOURCE_EXHAUSTED, GrpcCode.ABORTED}
)
"""For a message not in `ANSWERS`: failures trying again may cure. ResourceExhausted and Aborted
are transient by gRPC's documentation; Unknown and Cancelled are how etcd sends the errors it
has no status for (raft's proposals dropped during an election among them). Every code outside
these and `UNAVAILABLE_CODES` says the request itself is wrong, so it is refused."""

UNAVAILABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses with a body that is not the gateway's that say the member behind the address
can't answer now (a proxy's timeout or unreachable backend): `StoreUnavailable`, so another
member is asked. Any other status (404 for a wrong path, 401, 403) is refused."""

BODY_PREVIEW = 200
"""How many characters of an unexpected body an error quotes."""


def lookup(message: str, path: str) -> EtcdAnswer | None:
    """The row of `ANSWERS` for etcd's `message` to a call of `path`, None when it has none."""
    for answer in ANSWERS:
        if answer.message == message and answer.path in (None, path):
            return answer
    return None


def classify(url: str, status: int, code: int, message: str) -> StoreError:
    """The error for a gateway error body (`code`, `message`) that `url` answered with HTTP
    `status`: by `ANSWERS`, else by `UNAVAILABLE_CODES` and `RETRYABLE_CODES`."""
    path = urlsplit(url).path
    try:
        name = GrpcCode(code).name
    except ValueError:
        name = "an unknown gRPC code"
    said = f"{url} answered HTTP {status}, {name} ({code}): {message}"
    answer = lookup(message, path)
    if answer is not None:
        return answer.raises(f"{said} ({answer.means})")
    if code in UNAVAILABLE_CODES:
        return StoreUnavailable(said)
    if code in RETRYABLE_CODES:
        return transient(said)
    return refused(said)


def _preview(body: bytes) -> str:
    if not body.strip():
        return "an empty body"
    text = " ".join(body.decode(errors="replace").split())
    cut = "..." if len(text) > BODY_PREVIEW else ""
    return f"a body that is not etcd's: {text[:BODY_PREVIEW]!r}{cut}"


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        decoded = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        return None
    return decoded if isinstance(decoded, dict) else None


def _gateway_error(body: bytes) -> tuple[int, str] | None:
    """(gRPC code, etcd's message) of a gateway error body, None for any other body."""
    payload = _json_object(body)
    if payload is None:
        return None
    code = payload.get("code")
    message = payload.get("message") or payload.get("error")
    if isinstance(code, int) and isinstance(message, str):
        return code, message
    return None


def read_answer(url: str, status: int, body: bytes) -> dict[str, Any]:
    """The decoded JSON object of a 200 answer from `url`; any other answer raises the
    `StoreError` it stands for (`classify` for the gateway's error bodies). A body that is not
    the gateway's, at any status, raises a `StoreError` naming the URL, the status and the
    body's first characters: `StoreUnavailable` for `UNAVAILABLE_HTTP` statuses, refused for
    others (a 200 that is not JSON comes from something other than etcd's gateway)."""
    if status == 200:
        payload = _json_object(body)
        if payload is not None:
            return payload
        raise refused(
            f"{url} answered HTTP 200 with {_preview(body)} (is this address an etcd member's "
            "client URL?)"
        )
    error = _gateway_error(body)
    if error is not None:
        raise classify(url, status, *error)
    said = f"{url} answered HTTP {status} with {_preview(body)}"
    raise StoreUnavailable(said) if status in UNAVAILABLE_HTTP else refused(said)
