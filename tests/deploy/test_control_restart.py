"""`dynamo.deploy apply --wait` and `spec.restart` (control.py, pure): which restart is this apply's, whether it
is still waited for, and the exit code and message each final state gives."""

from __future__ import annotations

from dynamo.deploy.control import _restart_phase, _verdict, _waiting

APPLIED = {"generation": 3, "unchanged": ["A", "B"], "scaled": {}, "replaced": {}, "added": [],
           "restart": {"observedID": "2", "phase": "Restarting", "inProgress": ["A"], "generation": 3,
                       "strategy": "Sequential", "order": ["A", "B"]}}


def status(phase: str | None, generation: int = 3, message: str = "", states: str = "complete") -> dict:
    out: dict = {"generation": generation, "services": {n: {"generation": 3, "state": states} for n in "AB"}}
    if phase is not None:
        out["restart"] = {"observedID": "2", "phase": phase, "inProgress": [], "generation": generation,
                          **({"message": message} if message else {})}
    return out


def test_the_restart_phase_is_this_applys_only():
    assert _restart_phase(APPLIED, status("Restarting")) == "Restarting"
    assert _restart_phase(APPLIED, status("Completed", generation=4)) is None  # a later apply took it over
    assert _restart_phase(APPLIED, status(None)) is None  # a later apply dropped spec.restart
    started_none = {k: v for k, v in APPLIED.items() if k != "restart"}
    assert _restart_phase(started_none, status("Restarting", generation=3)) is None


def test_it_waits_while_its_restart_is_restarting_and_not_after():
    assert _waiting(APPLIED, status("Restarting"))
    for phase in ("Completed", "Failed", "Superseded"):
        assert not _waiting(APPLIED, status(phase))
    assert not _waiting(APPLIED, status("Restarting", generation=4))
    replaced = {**APPLIED, "replaced": {"B": "RollingUpdate"}}
    assert _waiting(replaced, status("Completed", states="progressing"))  # its own rollout still goes on


def test_the_exit_code_of_each_final_state():
    assert _verdict(APPLIED, status("Completed"), True, 9) == (0, "")
    code, why = _verdict(APPLIED, status("Failed", message="restart failed: the rollout of A stalled"), True, 9)
    assert code == 1 and why == "restart failed: the rollout of A stalled"
    code, why = _verdict(APPLIED, status("Superseded", message="superseded by the rolling update of B"), True, 9)
    assert code == 0 and "superseded by the rolling update of B" in why
    assert _verdict(APPLIED, status("Failed", generation=4), True, 9) == (0, "")  # a later apply's restart
    assert _verdict(APPLIED, status(None), True, 9) == (0, "")
    assert _verdict(APPLIED, status("Restarting"), True, 9) == (1, "rollout not complete after 9s")
    assert _verdict(APPLIED, status("Restarting"), False, 9) == (0, "")  # --no-wait
    stalled = {**APPLIED, "replaced": {"B": "RollingUpdate"}}
    assert _verdict(stalled, status("Restarting", states="stalled"), True, 9) == (1, "rollout stalled: B")
