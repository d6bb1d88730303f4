"""The flags of NVIDIA Dynamo 1.6.1's KV router that ours does not act on (runtime/compat_args.py
says how such flags are handled): knobs of Dynamo's own cost model, its remote indexer and its
AIConfigurator load model. The frontend (which embeds the router) and `python -m dynamo.router`
accept them alike, with a start-up warning naming each and why.
"""

from __future__ import annotations

from dynamo.runtime.compat_args import CompatFlags

_ROUTER = ("a setting of NVIDIA Dynamo's KV router that this router does not model (its 1.6.1 cost knobs do work: "
           "dynamo_cost.py)")
_AIC = "AIConfigurator prefill-load model for Dynamo's router (--router-prefill-load-model aic); not used here"
_NOT_HERE = "not provided by this router"
_STATELESS = ("no KV event stream or radix snapshot outlives this router: it starts empty and asks each worker for "
              "the blocks it holds")
# flag (first name is Dynamo's; more are its aliases) -> (takes a value, why it has no effect here)
ROUTER_IGNORED: dict[tuple[str, ...], tuple[bool, str]] = {
    ("--serve-indexer",): (False, "the KV indexer is not exposed on the request plane"),
    ("--use-remote-indexer",): (False, "the KV indexer always runs inside this router"),
    ("--enable-session-prefix-index",): (False, "multi-turn sessions are routed by their cached history already"),
    ("--router-prefill-policy",): (True, _ROUTER), ("--router-decode-policy",): (True, _ROUTER),
    ("--router-prefill-load-model",): (True, _ROUTER),
    ("--router-predicted-ttl-secs",): (True, "a prompt routed here counts as cached on its worker from the moment it "
                                             "is sent until that worker's KV events confirm it "
                                             "(--router-inflight-prefix-credit), with no TTL to set"),
    ("--router-event-threads",): (True, _ROUTER),
    # Dynamo's JetStream mode keeps KV events in a durable stream with radix snapshots; this router keeps
    # neither between runs, so every start is a reset: it learns what each worker holds from the worker.
    ("--router-reset-states",): (False, _STATELESS), ("--router-snapshot-threshold",): (True, _STATELESS),
    ("--router-durable-kv-events",): (False, _STATELESS),
    ("--router-tracking-hash",): (True, _ROUTER), ("--router-tracking-key-file",): (True, _ROUTER),
    ("--router-tracking-key-id",): (True, _ROUTER),
    ("--shared-cache-type",): (True, "shared (HiCache) cache tiers are " + _NOT_HERE),
    ("--shared-cache-multiplier",): (True, "shared (HiCache) cache tiers are " + _NOT_HERE),
    **{(f"--{prefix}-{name}",): (True, _AIC) for prefix in ("aic", "ais") for name in (
        "backend", "backend-version", "system", "model-path", "tp-size", "moe-tp-size", "moe-ep-size",
        "attention-dp-size", "nextn", "nextn-accept-rates", "mtp-seed")},
    ("--ais-perf-config",): (True, _AIC),
}
_DISAGG = "the frontend decides conditional disaggregation here (its --router-conditional-disagg)"
ROUTER_SERVICE_FLAGS = CompatFlags({
    **ROUTER_IGNORED,
    ("--router-conditional-disagg",): (False, _DISAGG),
    ("--router-conditional-disagg-config",): (True, _DISAGG),
})
