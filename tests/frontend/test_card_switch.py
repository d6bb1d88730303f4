"""The damping of a model's card switch (model_generations.CardSwitch), pure, on an injected clock: another card
takes over only once its majority has held for the settle time, not within the settle time of the last switch (a
flip back to the card just left, twice as long each time), and at once when the served card has no answering worker
left (the model never goes dark); the one look-again timer it owns."""

from __future__ import annotations

import asyncio

from dynamo.frontend.model_generations import MAX_SETTLE_SECS, QUIET_SECS, CardSwitch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_majority_switches_only_once_it_held_for_the_settle_time():
    clock = Clock()
    switch = CardSwitch(3.0, clock)
    assert switch.decide("old", "new", served_answers=True) == (None, 3.0)
    clock.now += 2.0
    assert switch.decide("old", "new", served_answers=True) == (None, 1.0)
    clock.now += 1.0
    assert switch.decide("old", "new", served_answers=True) == ("new", None)


def test_a_majority_that_lapses_starts_its_settle_time_again():
    """A crash-looping generation: its workers outnumber the served ones, then die, then come back."""
    clock = Clock()
    switch = CardSwitch(3.0, clock)
    switch.decide("old", "new", served_answers=True)
    clock.now += 2.5
    assert switch.decide("old", None, served_answers=True) == (None, None)  # its workers crashed
    clock.now += 0.5
    assert switch.decide("old", "new", served_answers=True) == (None, 3.0)  # back: a fresh settle time
    clock.now += 2.9
    assert switch.decide("old", "new", served_answers=True)[0] is None


def test_another_card_taking_the_lead_starts_its_own_settle_time():
    clock = Clock()
    switch = CardSwitch(3.0, clock)
    switch.decide("old", "b", served_answers=True)
    clock.now += 2.0
    assert switch.decide("old", "c", served_answers=True) == (None, 3.0)


def test_a_served_card_without_answering_workers_is_replaced_at_once():
    clock = Clock()
    switch = CardSwitch(3.0, clock)
    assert switch.decide("old", "new", served_answers=False) == ("new", None)
    # and right after that switch, the old card's return does not switch back before the (doubled) settle time
    clock.now += 0.5
    assert switch.decide("new", "old", served_answers=True) == (None, 6.0)
    clock.now += 6.0
    assert switch.decide("new", "old", served_answers=True) == ("old", None)


def test_no_switch_back_within_the_settle_time_unless_the_served_card_went_dark():
    clock = Clock()
    switch = CardSwitch(3.0, clock)
    switch.decide("old", "new", served_answers=True)
    clock.now += 3.0
    assert switch.decide("old", "new", served_answers=True) == ("new", None)
    clock.now += 1.0
    assert switch.decide("new", "old", served_answers=True)[0] is None  # the flip back waits
    assert switch.decide("new", "old", served_answers=False) == ("old", None)  # unless the new card's workers left


def test_each_flip_back_to_the_card_just_left_waits_twice_as_long_up_to_a_minute():
    """A generation that crashes only after it took over (> settle time): A -> B -> A -> B ... each switch back
    waits twice as long as the one before, never over MAX_SETTLE_SECS; after a quiet spell, plain again."""
    clock = Clock()
    switch = CardSwitch(3.0, clock)
    served, other, waits = "a", "b", []
    for _ in range(7):
        _, wait = switch.decide(served, other, served_answers=True)
        waits.append(wait)
        clock.now += wait
        assert switch.decide(served, other, served_answers=True) == (other, None)
        served, other = other, served
        clock.now += 1.0  # the new card's workers crash a second after taking over; the old ones come back
    assert waits == [3.0, 6.0, 12.0, 24.0, 48.0, 60.0, 60.0]
    clock.now += QUIET_SECS
    assert switch.decide(served, other, served_answers=True) == (None, 3.0)
    assert MAX_SETTLE_SECS == 60.0


def test_a_switch_to_a_third_card_is_not_damped_harder():
    clock = Clock()
    switch = CardSwitch(3.0, clock)
    switch.decide("a", "b", served_answers=False)
    clock.now += 1.0
    assert switch.decide("b", "c", served_answers=True) == (None, 3.0)  # only from the last switch, not doubled


async def test_the_look_again_timer_is_owned_replaced_and_cancelled():
    switch = CardSwitch(3.0, Clock())
    fired: list[str] = []
    switch.arm(0.05, lambda: fired.append("first"))
    switch.arm(0.05, lambda: fired.append("second"))  # replaces the first: one timer per model
    await asyncio.sleep(0.3)
    assert fired == ["second"]
    switch.arm(0.05, lambda: fired.append("cancelled"))
    switch.cancel()
    await asyncio.sleep(0.3)
    assert fired == ["second"]


async def test_a_failing_look_again_is_logged_not_lost(caplog):
    switch = CardSwitch(3.0, Clock())

    def broken() -> None:
        raise RuntimeError("boom")

    switch.arm(0.01, broken)
    await asyncio.sleep(0.2)
    assert "boom" in caplog.text and "card switch failed" in caplog.text
    switch.arm(0.01, lambda: None)  # and it can be armed again
    switch.cancel()


def test_no_settle_time_switches_at_once():
    assert CardSwitch(0.0, Clock()).decide("old", "new", served_answers=True) == ("new", None)
