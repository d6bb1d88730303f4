"""Replica tags in the ids a frontend makes (replicas.py): every id names its maker, an id of another
form names none, and a request already forwarded is never forwarded again (the forwarding itself runs
end to end in tests/e2e/test_frontend_replicas.py)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from dynamo.frontend.replicas import FORWARDED_FROM, Replicas, new_id, owner_tag, tag_of


def test_ids_carry_their_makers_tag():
    tag = tag_of(0x1234_5678_9ABC_DEF0)
    assert tag == "56789abcdef0"
    made = new_id("resp_", tag)
    assert made.startswith("resp_" + tag) and len(made) == len("resp_") + 32 and owner_tag(made, "resp_") == tag
    assert new_id("file-", "") != new_id("file-", "")  # no tag (a store outside a frontend): random only


def test_ids_of_other_forms_name_no_owner():
    assert owner_tag("file-abc", "file-") is None  # too short
    assert owner_tag("resp_XYZ456789abcdef0123", "resp_") is None  # not hex
    assert owner_tag("batch_56789abcdef0aa", "resp_") is None  # another prefix
    # characters no id has: such a path is never forwarded (it could name another route on the peer)
    assert owner_tag("file-56789abcdef0x/../../../metrics", "file-") is None
    assert owner_tag("file-56789abcdef0x%3F", "file-") is None


class Directory:
    """A discovery store that remembers what it was asked and knows no replica."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def get(self, key):
        self.asked.append(key)
        return None


def test_only_another_replicas_ids_are_looked_up_and_never_for_a_forwarded_request():
    directory = Directory()
    replicas = Replicas(directory, "dynamo", 0xABC, CollectorRegistry())
    mine, theirs = new_id("resp_", replicas.tag), new_id("resp_", tag_of(0xDEF))
    scope = {"headers": [], "method": "GET", "path": "/v1/responses/" + mine}
    assert asyncio.run(replicas.forward(mine, "resp_", scope, b"", None)) is False
    forwarded = {**scope, "headers": [(FORWARDED_FROM, b"000000000def")]}
    assert asyncio.run(replicas.forward(theirs, "resp_", forwarded, b"", None)) is False
    assert directory.asked == []
    assert asyncio.run(replicas.forward(theirs, "resp_", scope, b"", None)) is False  # no such replica: a 404
    assert directory.asked == ["v1/frontends/dynamo/000000000def"]
