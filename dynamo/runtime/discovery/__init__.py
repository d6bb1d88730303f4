"""Discovery: a leased key-value store with list-then-watch, backends `mem`, `file`, `etcd`."""

from dynamo.runtime.discovery.base import (
    DEFAULT_TTL,
    KeyValueStore,
    WatchEvent,
    backends,
    make_store,
    register_backend,
    store_from_env,
)

__all__ = [
    "DEFAULT_TTL",
    "KeyValueStore",
    "WatchEvent",
    "backends",
    "make_store",
    "register_backend",
    "store_from_env",
]
