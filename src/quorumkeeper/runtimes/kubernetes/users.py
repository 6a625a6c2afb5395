"""A cluster resource's least-privilege users (`spec.users`), each with a Secret the resource
owns, `<cluster>-user-<name>`:

    password        made once, random, never rewritten (like `<cluster>-root`'s)
    ca.crt          the trust bundle
    tls.crt/.key    a client certificate of the cluster's CA with the user's name as common name
    keystore.pem    ZooKeeper only: key and certificate in one file, for the Java client
    prefix          the prefix granted, written once the store took the grant

A Secret without `prefix`, or with another one than the spec's, is granted again
(`CoordinationStore.grant_prefix`, idempotent), so an idle cluster writes nothing to the store;
a deleted Secret is made anew, and its new password set by the grant that follows. A user
removed from the spec keeps its rights and its Secret: the stores have no revoke yet.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from http.client import HTTPException

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from quorumkeeper.runtimes.kubernetes.api import KubeApi
from quorumkeeper.runtimes.kubernetes.authority import SecretAuthority
from quorumkeeper.runtimes.kubernetes.objects import Names
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, User
from quorumkeeper.stores.base import CoordinationStore, StoreError

PREFIX_KEY = "prefix"


class UserSecrets:
    """Makes the users' Secrets and grants their prefixes; only the resource's daemon calls
    it, one call at a time."""

    def __init__(
        self,
        api: client.ApiClient,
        authority: SecretAuthority,
        resource: Callable[[], ClusterResource],
    ) -> None:
        self._core = KubeApi(api)
        self._authority = authority
        self._resource = resource
        self.failures: dict[str, str] = {}
        """Why each user's last grant failed, until one goes through."""

    def grant(self, store: CoordinationStore) -> tuple[list[str], dict[str, str]]:
        """Each user of the spec: its Secret made when missing, its prefix granted when the
        Secret does not record it yet. Returns the users granted now and the failures that are
        new (a failure repeated pass after pass is returned once); never raises for one user,
        so the others still get theirs."""
        granted, failed = [], {}
        for user in self._resource().spec.users:
            try:
                if self._grant(user, store):
                    granted.append(user.name)
                self.failures.pop(user.name, None)
            except (StoreError, ValueError, OSError, HTTPException, ApiException) as error:
                message = f"{type(error).__name__}: {error}"
                if self.failures.get(user.name) != message:
                    failed[user.name] = message
                self.failures[user.name] = message
        return granted, failed

    def _grant(self, user: User, store: CoordinationStore) -> bool:
        """Whether the grant was made now (False: the Secret records it already)."""
        resource = self._resource()
        name = Names(resource.name).user_secret(user.name)
        data = self._authority.kept(
            name,
            lambda: (
                {"password": secrets.token_urlsafe(24).encode()} | self._authority.user(user.name)
            ),
        )
        if data.get(PREFIX_KEY) == user.prefix.encode():
            return False
        store.grant_prefix(user.name, data["password"].decode(), user.prefix)
        body = {"data": {PREFIX_KEY: base64.b64encode(user.prefix.encode()).decode()}}
        self._core.patch_namespaced_secret(name, resource.namespace, body)
        return True
