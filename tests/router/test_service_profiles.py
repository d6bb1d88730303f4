"""`--router-policy-config` `models:` profiles in the router service (router/service.py, router/kv_policy.py):
its pool is named by its endpoint, so the profile that applies is that of the one model its workers' cards
name (LoRA adapters' cards aside), taken when the cards are seen; workers of several models get the root
profile, and a warning once that `models:` profiles do not apply."""

from __future__ import annotations

import logging
import textwrap

import pytest

from dynamo.router.policy import Role
from tests.router.service_fakes import EID, card, card_gone, card_put, service, worker_joins, worker_leaves

ONE_CLASS = """default_policy_family: standard
uncached_isl_buckets:
  - {min_tokens: 0, bucket: all}
policy_classes:
  - {name: a, policy_family: standard, cache_bucket: all, queue_policy: wspt, quantum: 1}
"""


@pytest.fixture
def config(tmp_path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text("models:\n  llama:\n" + textwrap.indent(ONE_CLASS, "    "))
    return str(path)


def service_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dynamo.router.service" and r.levelname == "WARNING"]


def profile(svc) -> str:
    return svc.policy.routes[svc.pool.name].queue.profile.source


def test_the_one_model_of_the_workers_gets_its_profile(config):
    svc = service(router_policy_config=config)
    assert profile(svc) == "flags"  # no card seen yet
    worker_joins(svc, 1, card("llama"))
    worker_joins(svc, 2, card("llama"))
    assert profile(svc) == "models.llama" and svc.policy.routes[svc.pool.name].queue.policy == "wspt"
    assert list(svc.policy.routes) == [EID.path]  # the pool keeps its name


def test_a_prefill_pool_gets_its_models_profile_too(config):
    svc = service(router_policy_config=config)
    worker_joins(svc, 1, card("llama", worker_type="prefill"))
    assert svc.pool.role is Role.PREFILL and profile(svc) == "models.llama"


def test_lora_adapters_are_not_other_models_and_do_not_hide_the_workers_card(config, caplog):
    svc = service(router_policy_config=config)
    adapter = card("llama", lora="adapterA")
    with caplog.at_level(logging.WARNING, logger="dynamo.router.service"):
        worker_joins(svc, 1, card("llama"), adapter)
        worker_joins(svc, 2, card("llama"))
    assert profile(svc) == "models.llama" and not service_warnings(caplog)
    assert svc.cards[1].lora_name is None  # the worker's own card, not its adapter's
    card_gone(svc, 1, adapter)  # the adapter unloaded: the worker keeps its card
    assert svc.cards[1].display_name == "llama" and profile(svc) == "models.llama"


def test_the_profile_stays_while_the_only_worker_restarts(config):
    svc = service(router_policy_config=config)
    worker_joins(svc, 1, card("llama"))
    queue = svc.policy.routes[svc.pool.name].queue
    worker_leaves(svc, 1, card("llama"))
    worker_joins(svc, 2, card("llama"))
    assert profile(svc) == "models.llama" and svc.policy.routes[svc.pool.name].queue is queue  # never swapped


def test_workers_of_several_models_get_the_root_profile_and_one_warning(config, caplog):
    svc = service(router_policy_config=config)
    with caplog.at_level(logging.WARNING, logger="dynamo.router.service"):
        worker_joins(svc, 1, card("llama"))
        worker_joins(svc, 2, card("qwen"))
        worker_joins(svc, 3, card("mistral"))
    assert profile(svc) == "flags"  # the document has no root profile
    (warning,) = service_warnings(caplog)
    assert warning.startswith(f"{EID.path} serves several models (llama, qwen): --router-policy-config's "
                              "`models:` profiles do not apply")


def test_no_warning_without_models_profiles(caplog):
    svc = service()
    with caplog.at_level(logging.WARNING, logger="dynamo.router.service"):
        worker_joins(svc, 1, card("llama"))
        card_put(svc, 2, card("qwen"))
    assert not service_warnings(caplog) and profile(svc) == "flags"
