"""LoRA adapters on a running worker: the system port's `/v1/loras` routes and one model
card per loaded adapter.

- `POST /v1/loras {"lora_name", "source": {"uri"}}` resolves the source (`lora_source`),
  has the engine load it (`EngineAdapter.load_lora`) and registers the adapter's own card
  (name = the adapter, `lora_name`, `base_model_path`, `user_data{lora_adapter, lora_id}`)
  at `v1/mdc/.../{instance}/{adapter}`; while it loads that card carries
  `user_data.lora_loading` (frontends answer 503 for it). Loading a loaded adapter from
  the same source is a no-op success; from another source it is a 409.
- `GET /v1/loras` lists `{name: lora_id}`; `DELETE /v1/loras/{name}` unloads and removes
  the card. Cards live under the worker's lease: they go with it on drain or death.
Response bodies follow NVIDIA Dynamo's: `{"status": "success"|"error", "message", ...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from typing import Any

import msgspec
import xxhash

from dynamo.llm.model_card import ModelDeploymentCard, card_checksum, card_record, slugify
from dynamo.runtime import records
from dynamo.runtime.asgi import BodyTooLarge, read_body, send_json
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.records import EndpointId
from dynamo.worker.lora_source import LoraSourceError, fetch_timeout, resolve_source

log = logging.getLogger("dynamo.worker.lora")

ROUTE = "/v1/loras"
MAX_BODY = 64 * 1024


# One fetch per source at a time: a client retrying after a 504 joins the fetch still under way instead of
# starting another download beside it.
_FETCHES: dict[str, asyncio.Future] = {}


async def _resolve_within_deadline(uri: str):
    """The adapter's local directory; a fetch past `DYN_LORA_FETCH_TIMEOUT_SECS` is a 504 (the fetch goes
    on, in a daemon thread that does not hold the worker's exit, into the cache where the next load finds it)."""
    deadline = fetch_timeout()
    fetch = _FETCHES.get(uri)
    if fetch is None or fetch.get_loop() is not asyncio.get_running_loop():
        fetch = _FETCHES[uri] = _in_daemon_thread(resolve_source, uri)
        fetch.add_done_callback(lambda f: (_FETCHES.pop(uri, None), f.cancelled() or f.exception()))
    try:
        return await asyncio.wait_for(asyncio.shield(fetch), deadline if deadline > 0 else None)
    except asyncio.TimeoutError:
        raise LoraSourceError(f"fetching {uri} took longer than {deadline:g} s (DYN_LORA_FETCH_TIMEOUT_SECS); "
                              "it goes on in the background: load it again later", 504) from None


def _in_daemon_thread(fn, *args) -> asyncio.Future:
    """`fn(*args)` in a daemon thread, as a future of this loop (the default executor's threads would hold
    the process's exit until a download ends)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, exc) -> None:
        if not future.done():
            future.set_exception(exc) if exc is not None else future.set_result(result)

    def run() -> None:
        try:
            outcome = (fn(*args), None)
        except BaseException as exc:  # handed to the awaiting side
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="lora-fetch", daemon=True).start()
    return future


# What an engine says when the adapter itself is unusable: the client's to fix (400), not the server's
# (500). vLLM's engine core hands its errors back as text, their type lost, so they are matched by message:
# PEFTHelper.validate_legal and its _validate_features, LoRAModel.from_local_checkpoint, safetensors.
ADAPTER_FAULTS = ("is greater than max_lora_rank", "Adapter bias is not supported", "vLLM does not support",
                  "vLLM does not yet support", "vLLM only supports modules_to_save", "LoRA rank `r` must be",
                  "in `rank_pattern` must be", "Missing required configuration fields", "expected target modules",
                  "doesn't contain tensors", "is missing weight", "must be consistent with the base model's",
                  "Error while deserializing header")


def load_failure_status(exc: Exception) -> int:
    """The HTTP status of a failed load: a source's own (404 missing, 502 unreachable, 504 slow), 400 when
    the adapter is refused (an adapter's `ValueError`, the engines' convention for the request's fault, or an
    engine's message of `ADAPTER_FAULTS`), else 500: a fault of the worker, logged with its traceback."""
    if isinstance(exc, LoraSourceError):
        return exc.status
    if isinstance(exc, ValueError) or any(text in str(exc) for text in ADAPTER_FAULTS):
        return 400
    return 500


def lora_id_of(name: str) -> int:
    """Stable positive id (same on every worker), as engines want a nonzero int per adapter."""
    return xxhash.xxh3_64_intdigest(name.encode()) % (2**31 - 2) + 1


class LoraManager:
    def __init__(self, runtime: DistributedRuntime, eid: EndpointId, adapter: Any, base_card: ModelDeploymentCard,
                 max_loras: int | None) -> None:
        self.runtime, self.eid, self.adapter, self.base = runtime, eid, adapter, base_card
        self.max_loras = max_loras
        self.loaded: dict[str, tuple[int, str]] = {}  # name -> (lora id, source uri)
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def enabled(self) -> bool:
        return self.max_loras is not None and hasattr(self.adapter, "load_lora")

    def card_key(self, name: str) -> str:
        return f"{records.mdc_key(self.eid, self.runtime.instance_id)}/{slugify(name)}"

    def card(self, name: str, lora_id: int, loading: bool) -> bytes:
        base = self.base
        user_data: dict[str, Any] = {"lora_adapter": True, "lora_id": lora_id}
        if loading:
            user_data["lora_loading"] = True
        card = msgspec.structs.replace(base, display_name=name, slug=slugify(name), lora_name=name,
                                       base_model_path=base.display_name, user_data=user_data,
                                       max_gpu_lora_count=self.max_loras)
        card.mdcsum = card_checksum(card)
        return card_record(card, *self.eid, self.runtime.instance_id, model_suffix=slugify(name))

    # -- operations --------------------------------------------------------------------------
    async def load(self, name: str, uri: str) -> tuple[int, dict]:
        if not self.enabled:
            return 400, error("LoRA is not enabled on this worker (start it with --enable-lora)")
        if name == self.base.display_name:
            return 400, error(f"lora_name {name!r} is the base model's name")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name in self.loaded:
                lora_id, current = self.loaded[name]
                if current != uri:
                    return 409, error(f"LoRA adapter {name!r} is already loaded from {current}; unload it first")
                return 200, success(f"LoRA adapter '{name}' already loaded", name, lora_id)
            lora_id = lora_id_of(name)
            key = self.card_key(name)
            await self.runtime.register_key(key, self.card(name, lora_id, loading=True))
            try:
                path = await _resolve_within_deadline(uri)
                await self.adapter.load_lora(name, str(path), lora_id)
            except Exception as exc:
                await self.runtime.unregister_key(key)
                status = load_failure_status(exc)
                if status >= 500 and not isinstance(exc, LoraSourceError):
                    log.exception("loading LoRA adapter %r failed", name)
                elif status == 400:
                    log.warning("LoRA adapter %r refused: %s", name, exc)
                return status, error(f"failed to load LoRA adapter {name!r}: {exc}")
            self.loaded[name] = (lora_id, uri)
            await self.runtime.register_key(key, self.card(name, lora_id, loading=False))
        log.info("LoRA adapter %r loaded from %s (id %d)", name, uri, lora_id)
        return 200, success(f"LoRA adapter '{name}' loaded successfully", name, lora_id)

    async def unload(self, name: str) -> tuple[int, dict]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name not in self.loaded:
                return 404, error(f"LoRA adapter {name!r} is not loaded")
            lora_id, _ = self.loaded.pop(name)
            await self.runtime.unregister_key(self.card_key(name))  # first: no new requests for it
            try:
                await self.adapter.unload_lora(name)
            except Exception as exc:
                log.warning("engine unload of LoRA adapter %r failed: %s", name, exc)
        log.info("LoRA adapter %r unloaded", name)
        return 200, success(f"LoRA adapter '{name}' unloaded successfully", name, lora_id)

    def listing(self) -> dict:
        loras = {name: lora_id for name, (lora_id, _) in sorted(self.loaded.items())}
        return {"status": "success", "loras": loras, "count": len(loras)}

    # -- HTTP ----------------------------------------------------------------------------------
    async def app(self, scope, receive, send) -> None:
        method, path = scope["method"], scope["path"].rstrip("/")
        if path == ROUTE and method == "GET":
            await send_json(send, 200, self.listing())
        elif path == ROUTE and method == "POST":
            status, body = await self._post(receive)
            await send_json(send, status, body)
        elif path.startswith(ROUTE + "/") and method == "DELETE":
            status, body = await self.unload(path[len(ROUTE) + 1 :])
            await send_json(send, status, body)
        else:
            await send_json(send, 405, error(f"{method} {scope['path']} is not supported"))

    async def _post(self, receive) -> tuple[int, dict]:
        try:
            payload = json.loads(await read_body(receive, MAX_BODY))
        except BodyTooLarge:
            return 413, error("request body too large")
        except (ValueError, RecursionError, ConnectionError):  # RecursionError: nested too deeply
            return 400, error("request body must be a JSON object")
        name = payload.get("lora_name") if isinstance(payload, dict) else None
        source = payload.get("source") if isinstance(payload, dict) else None
        uri = source.get("uri") if isinstance(source, dict) else None
        if not isinstance(name, str) or not name.strip() or "/" in name:
            return 400, error("`lora_name` must be a non-empty string without '/'")
        if not isinstance(uri, str) or not uri:
            return 400, error("`source.uri` must be a string (file://, hf:// or s3://)")
        return await self.load(name, uri)


def success(message: str, name: str, lora_id: int) -> dict:
    return {"status": "success", "message": message, "lora_name": name, "lora_id": lora_id}


def error(message: str) -> dict:
    return {"status": "error", "message": message}
