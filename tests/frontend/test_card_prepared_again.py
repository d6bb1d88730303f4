"""`preparation.prepared_again`: a request whose model switched its card between its preparation and its dispatch
is prepared again once, and only while nothing of its answer was sent; a second switch is the client's 503."""

from __future__ import annotations

import pytest

from dynamo.frontend.errors import ApiError, CardChanged
from dynamo.frontend.preparation import attempt_id, prepared_again


class Attempts:
    """Prepare-and-run attempts that end with the card changed (`unsent` as given) before the last one answers."""

    def __init__(self, *changed: bool) -> None:
        self.changed, self.calls = list(changed), 0

    async def __call__(self, attempt: int) -> str:
        assert attempt == self.calls  # the first attempt is 0, its one retry 1
        self.calls += 1
        if self.changed:
            raise CardChanged("m", unsent=self.changed.pop(0))
        return "answered"


async def test_a_switch_before_anything_was_sent_is_prepared_again():
    attempts = Attempts(True)
    assert await prepared_again("m", attempts) == "answered" and attempts.calls == 2


async def test_a_second_switch_is_the_retryable_503():
    attempts = Attempts(True, True)
    with pytest.raises(ApiError) as refused:
        await prepared_again("m", attempts)
    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (503, "model_card_changed", 1)
    assert attempts.calls == 2


async def test_a_switch_once_the_answer_began_is_not_prepared_again():
    attempts = Attempts(False)
    with pytest.raises(ApiError):
        await prepared_again("m", attempts)
    assert attempts.calls == 1


async def test_a_retry_is_told_and_its_wire_id_told_apart():
    told: list[str] = []
    attempts = Attempts(True)
    assert await prepared_again("m", attempts, "req-1", lambda: told.append("again")) == "answered"
    assert told == ["again"]
    assert (attempt_id("req-1", 0), attempt_id("req-1", 1), attempt_id(None, 1)) == ("req-1", "req-1.r1", None)
