"""The kubelet's counting of probe results (`probes.py`): Kubernetes' defaults where a probe gives none,
no failure counted before `initialDelaySeconds`, at most one per `periodSeconds`, `failureThreshold` in a
row act, a success starts the count again, `successThreshold` successes in a row pass."""

from __future__ import annotations

from dynamo.deploy.probes import Counter, Timing


def test_kubernetes_defaults_and_the_probes_own_values():
    assert Timing.of({"httpGet": {"path": "/live"}}) == Timing(0.0, 10.0, 1.0, 3, 1, None)
    given = Timing.of({"initialDelaySeconds": 60, "periodSeconds": 5, "timeoutSeconds": 30, "failureThreshold": 1,
                       "successThreshold": 2, "terminationGracePeriodSeconds": 7})
    assert given == Timing(60.0, 5.0, 30.0, 1, 2, 7.0)
    assert Timing.of({"periodSeconds": 0, "failureThreshold": 0}).period == 1.0  # the API server's minimums


def test_failures_count_after_the_delay_once_per_period_until_the_threshold():
    counter = Counter(Timing(initial_delay=10, period=5, failure_threshold=3), born=100.0)
    assert not counter.failed(105) and counter.failures == 0  # within initialDelaySeconds
    assert not counter.failed(110) and counter.failures == 1
    assert not counter.failed(111) and not counter.failed(114.9) and counter.failures == 1  # same period
    assert not counter.failed(115) and counter.failures == 2
    assert counter.failed(120) and counter.failures == 3


def test_a_success_starts_the_count_again():
    counter = Counter(Timing(period=1, failure_threshold=2, success_threshold=2), born=0.0)
    assert not counter.failed(1)
    assert not counter.passed()  # one of the two successes needed
    assert counter.failures == 0 and not counter.failed(1.5)  # counted: the last failure was forgotten
    assert counter.failed(2.5)
    assert not counter.passed() and counter.passed()
