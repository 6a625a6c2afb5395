"""A cluster resource's least-privilege users (`spec.users`), each with a Secret the resource
owns, `<cluster>-user-<name>`:

    password        made once, random, never rewritten (like `<cluster>-root`'s)
    ca.crt          the trust bundle
    tls.crt/.key    a client certificate of the cluster's CA with the user's name as common name
    keystore.pem    ZooKeeper only: key and certificate in one file, for the Java client
    prefix          the prefix granted, written once the store took the grant

A Secret without `prefix`, or with another one than the spec's, is granted again
(`CoordinationStore.grant_prefix`, idempotent), so an idle cluster writes nothing to the store;
a deleted Secret is made anew, and its new password set by the grant that follows. `renew`
keeps each user's trust bundle and certificate current (a renewal, a CA rotation's phases); the
password and prefix stay. A user removed from the spec keeps its rights and its Secret, whose
certificate is no longer renewed: the stores have no revoke yet.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from http.client import HTTPException

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from quorumkeeper.runtimes.kubernetes.api import KubeApi
from quorumkeeper.runtimes.kubernetes.authority import SecretAuthority, encoded, secret_data
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

    def renew(self) -> list[str]:
        """Rewrite each spec user's Secret where its trust bundle or certificate is no longer
        current (`SecretAuthority.user_changes`); a missing Secret is left to `grant`. Returns
        the users whose Secret was rewritten. Raises ApiException as the API server answers."""
        resource = self._resource()
        rewritten = []
        for user in resource.spec.users:
            name = Names(resource.name).user_secret(user.name)
            try:
                found = self._core.read_namespaced_secret(name, resource.namespace)
            except ApiException as error:
                if error.status == 404:
                    continue
                raise
            changes = self._authority.user_changes(user.name, secret_data(found))
            if changes:
                body = {"data": encoded(changes)}
                self._core.patch_namespaced_secret(name, resource.namespace, body)
                rewritten.append(user.name)
        return rewritten

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
        body = {"data": encoded({PREFIX_KEY: user.prefix.encode()})}
        self._core.patch_namespaced_secret(name, resource.namespace, body)
        return True
