"""Admission's short grace for a model discovery is about to serve (admission.FIRST_WORKER_GRACE_SECS): a LoRA
adapter whose load returned 200 while this frontend still holds its loading card, or a name discovery already
lists that this frontend has not taken in yet. Its requests wait that long for the worker instead of a 503 or
404 at once; a model with no worker coming is answered at once, and a store that does not answer does not hold
a request past the grace."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from dynamo.frontend.admission import FIRST_WORKER_GRACE_SECS, MIN_LOOK_GAP_SECS, Admission
from dynamo.frontend.errors import ApiError
from dynamo.frontend.metrics import FrontendMetrics
from tests.frontend.test_admission import _Models as _AdmissionModels


class _Models(_AdmissionModels):
    """The model manager as admission sees it (test_admission's stand-in): entries with workers (address None:
    registered, not routable yet), and its discovery look-up (`caught_up`), which `arrives` settles."""

    def __init__(self, store_answers: bool = True, read_secs: float = 0.05) -> None:
        super().__init__()
        self.store_answers = store_answers
        self.read_secs = read_secs
        self.looks = 0
        self.in_discovery: set[str] = set()  # names workers registered that this frontend has not taken in

    def register(self, name: str, address: str | None) -> None:
        worker = SimpleNamespace(address=address, instance_id=1, endpoint="dyn://ns.backend.generate")
        self.models[name] = SimpleNamespace(name=name, workers={1: worker},
                                            decode_workers=lambda: [worker] if worker.address else [])

    def knows(self, name: str) -> bool:
        return name in self.models

    async def caught_up(self, timeout: float) -> bool:
        self.looks += 1
        read = set(self.in_discovery)  # the namespace as read at the look's start
        await asyncio.sleep(self.read_secs)
        for name in read:
            self.register(name, "127.0.0.1:1")
        if not self.store_answers:
            await asyncio.sleep(3600)
        return True


async def _never_disconnects() -> dict:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


async def test_a_worker_registered_but_not_routable_yet_is_waited_for():
    models = _Models()
    models.register("ada", None)  # the adapter's loading card
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    request = asyncio.ensure_future(admission.served_entry("ada", _never_disconnects))
    await asyncio.sleep(0.2)
    assert not request.done(), "held, not a 503"
    models.register("ada", "127.0.0.1:1")  # its loaded card, as the next look at discovery sees it
    assert (await asyncio.wait_for(request, 5)).name == "ada"


async def test_the_grace_is_short_and_ends_in_the_503():
    models = _Models()
    models.register("ada", None)  # still loading past the grace
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    began = time.monotonic()
    with pytest.raises(ApiError) as refused:
        await admission.served_entry("ada", _never_disconnects)
    assert (refused.value.status, refused.value.code) == (503, "no_workers")
    assert FIRST_WORKER_GRACE_SECS <= time.monotonic() - began < FIRST_WORKER_GRACE_SECS + 1


async def test_a_model_with_no_worker_coming_is_answered_at_once():
    models = _Models()
    models.retired["gone"] = SimpleNamespace(name="gone")  # its workers all left
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    began = time.monotonic()
    with pytest.raises(ApiError) as refused:
        await admission.served_entry("gone", _never_disconnects)
    assert refused.value.status == 503 and time.monotonic() - began < 0.5
    assert models.looks == 0


@pytest.mark.parametrize("store_answers", [True, False])
async def test_an_unknown_name_is_looked_up_once_for_all_its_requests_and_bounded(store_answers):
    models = _Models(store_answers)
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    began = time.monotonic()
    answers = await asyncio.gather(*(admission.served_entry("nope", _never_disconnects) for _ in range(5)),
                                   return_exceptions=True)
    assert {(a.status, a.code) for a in answers} == {(404, "model_not_found")}
    # the first request's look, and one more for those that came after it began (it may have read too early)
    assert models.looks <= 2 and time.monotonic() - began < FIRST_WORKER_GRACE_SECS + 1


async def test_a_finished_look_answers_the_next_unknown_names_at_once():
    """A misspelt model asked for again and again: one look at discovery per grace, not one per request."""
    models = _Models()
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    for _ in range(5):
        with pytest.raises(ApiError):
            await admission.served_entry("nope", _never_disconnects)
    assert models.looks == 1
    await asyncio.sleep(FIRST_WORKER_GRACE_SECS + 0.1)  # the look is stale now: the next request looks again
    with pytest.raises(ApiError):
        await admission.served_entry("nope", _never_disconnects)
    assert models.looks == 2


async def test_a_slow_store_holds_one_request_per_grace_not_each():
    models = _Models(store_answers=False)
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        await admission.served_entry("nope", _never_disconnects)  # held the grace: the look timed out
    began = time.monotonic()
    with pytest.raises(ApiError) as refused:
        await admission.served_entry("nope", _never_disconnects)
    assert refused.value.status == 404 and time.monotonic() - began < 0.2


async def test_the_look_is_owned_and_a_drain_ends_it_and_its_waiters():
    models = _Models(store_answers=False)
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    request = asyncio.ensure_future(admission.served_entry("nope", _never_disconnects))
    await asyncio.sleep(0.1)
    look = admission.unknown._look
    assert look is not None and not look.done()
    admission.begin_drain()
    with pytest.raises(ApiError) as refused:
        await asyncio.wait_for(request, 0.5)
    assert refused.value.status == 503
    await asyncio.sleep(0)
    assert look.cancelled()


async def test_requests_in_the_grace_count_as_waiting_and_against_the_limit():
    models = _Models()
    models.register("ada", None)
    admission = Admission(models, FrontendMetrics(), concurrency_limit=1)  # type: ignore[arg-type]
    first = asyncio.ensure_future(admission.served_entry("ada", _never_disconnects))
    await asyncio.sleep(0.1)
    assert admission.worker_wait.waiting == 1
    with pytest.raises(ApiError) as refused:
        await admission.served_entry("ada", _never_disconnects)  # the limit counts the one held
    assert refused.value.status == 529
    with pytest.raises(ApiError):
        await first
    assert admission.worker_wait.waiting == 0


async def test_a_client_that_leaves_ends_its_wait():
    models = _Models()
    models.register("ada", None)
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]

    async def leaves() -> dict:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    began = time.monotonic()
    with pytest.raises(ConnectionError):
        await admission.served_entry("ada", leaves)
    assert time.monotonic() - began < 0.5 and admission.worker_wait.waiting == 0


async def test_a_name_registered_while_another_names_look_ran_is_looked_for_again():
    """A LoRA adapter loaded (its load returned 200) while a look for a misspelt name read discovery: its first
    request is not answered by that look, which may have read discovery before the adapter registered."""
    models = _Models()
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    misspelt = asyncio.ensure_future(admission.served_entry("nope", _never_disconnects))
    await asyncio.sleep(0.01)  # its look is reading discovery
    models.in_discovery.add("ada")  # registered now: after that look read discovery
    entry = await admission.served_entry("ada", _never_disconnects)
    assert entry.name == "ada" and models.looks == 2
    with pytest.raises(ApiError):
        await misspelt


async def test_random_names_sent_one_after_another_read_discovery_at_most_every_min_gap():
    models = _Models(read_secs=0.0)
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]

    async def ask(i: int):
        await asyncio.sleep(i * 0.01)
        with pytest.raises(ApiError):
            await admission.served_entry(f"random-{i}", _never_disconnects)
    began = time.monotonic()
    await asyncio.gather(*(ask(i) for i in range(20)))
    spent = time.monotonic() - began
    assert models.looks <= spent / MIN_LOOK_GAP_SECS + 1 < 20  # not one per name
