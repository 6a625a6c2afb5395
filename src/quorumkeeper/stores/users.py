"""Who may be a least-privilege user (`CoordinationStore.grant_prefix`), on any runtime: the local
`quorumkeeper user add` and a custom resource's `users:` are checked by the same rules."""

from __future__ import annotations

import re

from quorumkeeper.spec import Store
from quorumkeeper.stores.base import CoordinationStore
from quorumkeeper.stores.etcd.client import ROOT, EtcdStore
from quorumkeeper.stores.zookeeper.client import ZookeeperStore
from quorumkeeper.stores.zookeeper.ensemble import SUPERUSER

USER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
"""A DNS label's shape, so a user's name is also a Secret's and a certificate's common name."""

KEEPER = "keeper"
"""The local keeper's own client certificate (issued without a common name, as etcd's gateway
needs), so never a user's."""

RESERVED_USERS = (ROOT, SUPERUSER, KEEPER)
"""The administrators' names (etcd's root user, ZooKeeper's superuser) and the keeper's."""


def check_user(user: str) -> None:
    """Raise ValueError, naming the field, the rule and a fix, for a name no user may have."""
    if not USER_NAME.match(user) or user in RESERVED_USERS:
        raise ValueError(
            f"user: {user!r}; rule: a lowercase letter, then up to 62 lowercase letters, digits "
            f"or '-', not {', '.join(RESERVED_USERS)} (the keeper's own); fix: e.g. orders-app"
        )


def check_grant(store: Store, user: str, prefix: str) -> None:
    """`check_user`, then `store`'s own rules for the grant (`CoordinationStore.check_grant`),
    with nothing running."""
    check_user(user)
    store_class: type[CoordinationStore] = EtcdStore if store is Store.ETCD else ZookeeperStore
    store_class.check_grant(user, prefix)
