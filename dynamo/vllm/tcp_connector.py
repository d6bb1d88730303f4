"""`DynamoTcpConnector`: a vLLM v1 KV connector moving a request's KV blocks from a prefill
engine to a decode engine over our TCP transport (`dynamo.kv_transfer`), for where NIXL is
absent or cannot connect.

Pull model with the protocol of vLLM's NixlConnector, so the frontend and the workers'
handlers treat both alike:
* prefill (producer): the request carries `kv_transfer_params={"do_remote_decode": True}`.
  When it finishes, `request_finished` keeps its blocks and returns NIXL-shaped params
  (`do_remote_prefill`, `remote_engine_id`, `remote_request_id`, `remote_block_ids`,
  `remote_host`, `remote_port`, `remote_num_tokens`, ...) plus `"transport": "tcp"` and
  `kv_bytes`. On the next step the worker copies those blocks out of the KV cache into the
  sender's bounded staging store and reports them sent, which frees them.
* decode (consumer): `get_num_new_matched_tokens` announces the remote tokens as an async
  load; the worker pulls them on a thread pool and writes them into the blocks vLLM
  allocated. A failed pull is reported in `failed_recving` and (with
  `kv_load_failure_policy: recompute`, which Dynamo sets) vLLM prefills locally instead.

Layouts must match on both sides (same model, dtype, block size, TP 1). Extra config:
`host` (advertised), `port`, `bind_host`, `cap_bytes`, `ttl_s`, `pull_wait_s`, `pull_timeout_s`.
`dynamo.vllm` fills in host and port (`disagg.py`). Without a port there is no pull endpoint:
a producer then hands over nothing (no params, so the frontend counts a prefill without transfer
parameters) and says so, and a consumer given params without one recomputes the prompt with a
warning and a failed transfer in its stats, never quietly.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (KVConnectorBase_V1, KVConnectorMetadata,
                                                                 KVConnectorRole, KVConnectorTransferResults)
from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorStats

from dynamo.kv_transfer import KvSender, TooLarge, TransferError, pull
from dynamo.kv_transfer.io_threads import unpin_current_thread
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.tls import ClientTls, ServerTls

if TYPE_CHECKING:
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.request import Request

log = logging.getLogger("vllm.dynamo_tcp_connector")  # under vLLM's handler in the engine process

STAGE_RETRY_S = 30.0  # a finished prefill waits at most this long for staging room


@dataclass
class RecvSpec:
    local_block_ids: list[int]
    first_block: int  # index of local_block_ids[0] among the request's blocks (local prefix hits before it)
    params: dict[str, Any]


@dataclass
class TcpConnectorMetadata(KVConnectorMetadata):
    to_send: dict[str, list[int]] = field(default_factory=dict)
    to_recv: dict[str, RecvSpec] = field(default_factory=dict)


@dataclass
class TcpConnectorStats(KVConnectorStats):
    """Same keys as NixlConnector's stats, so one stat logger reads both."""

    def __post_init__(self) -> None:
        for key in ("transfer_duration", "bytes_transferred", "num_failed_transfers"):
            self.data.setdefault(key, [])

    def reset(self) -> None:
        self.data = {}
        self.__post_init__()

    def aggregate(self, other: KVConnectorStats) -> KVConnectorStats:
        for key, values in other.data.items():
            self.data.setdefault(key, []).extend(values)
        return self

    def reduce(self) -> dict[str, int | float]:
        total = sum(self.data["transfer_duration"])
        return {"num_transfers": len(self.data["bytes_transferred"]), "bytes": sum(self.data["bytes_transferred"]),
                "seconds": round(total, 4), "failed": len(self.data["num_failed_transfers"])}

    def is_empty(self) -> bool:
        return not any(self.data.values())


class DynamoTcpConnector(KVConnectorBase_V1):
    def __init__(self, vllm_config: Any, role: KVConnectorRole, kv_cache_config: Any) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        cfg = self._kv_transfer_config
        extra = cfg.kv_connector_extra_config
        self.engine_id = cfg.engine_id
        self.block_size = vllm_config.cache_config.block_size
        self.host = str(extra.get("host", "127.0.0.1"))
        self.port = int(extra.get("port", 0))
        self.producer = cfg.kv_role in ("kv_producer", "kv_both")
        if self.producer and not self.port:
            log.warning("DynamoTcpConnector: no port in kv_connector_extra_config, so no KV pull endpoint: this "
                        "worker's prefills hand over no KV (decode workers prefill again)")
        if role == KVConnectorRole.SCHEDULER:
            self.sched = _SchedulerSide(self, kv_cache_config)
        else:
            self.worker = _WorkerSide(self, extra)

    # ---- scheduler side ----
    def get_num_new_matched_tokens(self, request: "Request", num_computed_tokens: int) -> tuple[int | None, bool]:
        return self.sched.matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks", num_external_tokens: int):
        self.sched.after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata:
        return self.sched.build_meta()

    def request_finished(self, request: "Request", block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        return self.sched.finished(request, block_ids)

    def update_connector_output(self, connector_output: Any) -> None:
        self.sched.awaiting_send.difference_update(connector_output.finished_sending or ())

    def has_pending_push_work(self) -> bool:
        return bool(self.sched.awaiting_send)  # keep stepping until staged (or given up)

    # ---- worker side ----
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self.worker.register(kv_caches, self._kv_cache_config.num_blocks)

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        self.worker.start_pulls(self._get_connector_metadata())

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # loads are whole-request and async (between steps)

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any) -> None:
        return  # staged after the request finishes, from the KV cache itself

    def wait_for_save(self) -> None:
        if self.has_connector_metadata():
            self.worker.stage(self._get_connector_metadata())

    def get_transfer_results(self, finished_req_ids: set[str]) -> KVConnectorTransferResults:
        return self.worker.results()

    def get_kv_connector_stats(self) -> KVConnectorStats | None:
        side = self.sched if self._role == KVConnectorRole.SCHEDULER else self.worker
        return side.take_stats()

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None) -> KVConnectorStats | None:
        return TcpConnectorStats(data=dict(data or {}))

    def shutdown(self) -> None:
        if self._role == KVConnectorRole.WORKER:
            self.worker.close()


class _SchedulerSide:
    def __init__(self, conn: DynamoTcpConnector, kv_cache_config: Any) -> None:
        self.conn = conn
        spec = kv_cache_config.kv_cache_groups[0]
        self.bytes_per_block = spec.kv_cache_spec.page_size_bytes * len(spec.layer_names)
        self.to_send: dict[str, list[int]] = {}
        self.to_recv: dict[str, RecvSpec] = {}
        self.awaiting_send: set[str] = set()
        self.stats = TcpConnectorStats()  # pulls refused here, before any worker-side attempt
        self.warned_no_endpoint = False

    def matched_tokens(self, request: "Request", num_computed: int) -> tuple[int, bool]:
        params = request.kv_transfer_params
        if not params or not params.get("do_remote_prefill"):
            return 0, False
        if not params.get("remote_port") or not params.get("remote_host"):
            self._no_pull_endpoint(request.request_id, params)
            return 0, False
        remote = min(int(params.get("remote_num_tokens") or 0), request.num_prompt_tokens)
        count = remote - num_computed
        return (count, True) if count > 0 else (0, False)

    def _no_pull_endpoint(self, rid: str, params: dict[str, Any]) -> None:
        """Params that name no endpoint to pull from: recomputed here, said and counted as a failed transfer."""
        params["do_remote_prefill"] = False  # once: vLLM asks again while the request waits
        log.warning("KV of %s not pulled: the prefill worker gave no pull endpoint (remote_host %r, remote_port "
                    "%r); vLLM recomputes the prompt", rid, params.get("remote_host"), params.get("remote_port"))
        self.stats.data["num_failed_transfers"].append(1)

    def take_stats(self) -> KVConnectorStats | None:
        if self.stats.is_empty():
            return None
        stats, self.stats = self.stats, TcpConnectorStats()
        return stats

    def after_alloc(self, request: "Request", blocks: "KVCacheBlocks", num_external: int) -> None:
        params = request.kv_transfer_params
        if not params or not params.get("do_remote_prefill"):
            return
        params["do_remote_prefill"] = False  # once: vLLM may call this again after the load
        if num_external <= 0:
            return
        ids = blocks.get_block_ids()[0]
        unhashed = set(blocks.get_unhashed_block_ids())
        local = [b for b in ids if b in unhashed]
        self.to_recv[request.request_id] = RecvSpec(local, len(ids) - len(local), dict(params))

    def finished(self, request: "Request", block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        from vllm.v1.request import RequestStatus

        params = request.kv_transfer_params
        if not params or not params.get("do_remote_decode"):
            return False, None
        if request.status not in (RequestStatus.FINISHED_LENGTH_CAPPED, RequestStatus.FINISHED_STOPPED):
            return False, None  # aborted: nothing to hand over
        if not block_ids:
            return False, None
        if not self.conn.port:  # nothing could pull them: free the blocks, advertise nothing
            if not self.warned_no_endpoint:
                self.warned_no_endpoint = True
                log.warning("KV of %s (and of later prefills) not handed over: no pull endpoint (no port)",
                            request.request_id)
            return False, None
        self.to_send[request.request_id] = list(block_ids)
        self.awaiting_send.add(request.request_id)
        return True, {
            "do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": self.conn.engine_id,
            "remote_request_id": request.request_id, "remote_block_ids": list(block_ids),
            "remote_host": self.conn.host, "remote_port": self.conn.port, "tp_size": 1,
            "remote_num_tokens": request.num_computed_tokens, "transfer_mode": "pull", "transport": "tcp",
            "kv_bytes": len(block_ids) * self.bytes_per_block,
        }

    def build_meta(self) -> TcpConnectorMetadata:
        meta = TcpConnectorMetadata(to_send=self.to_send, to_recv=self.to_recv)
        self.to_send, self.to_recv = {}, {}
        return meta


class _WorkerSide:
    def __init__(self, conn: DynamoTcpConnector, extra: dict[str, Any]) -> None:
        self.conn = conn
        self.extra = extra
        self.kv: dict[str, torch.Tensor] = {}
        self.block_dim = 0
        self.sender: KvSender | None = None
        self.pool = ThreadPoolExecutor(int(extra.get("pull_threads", 4)), thread_name_prefix="kv-tcp-pull",
                                       initializer=unpin_current_thread)
        self.pending_stage: dict[str, tuple[list[int], float]] = {}
        self.sent: set[str] = set()
        self.lock = threading.Lock()
        self.recvd: set[str] = set()
        self.failed: set[str] = set()
        self.stats = TcpConnectorStats()
        # The request plane's TLS settings (DYN_TCP_TLS_*, inherited from the worker) cover KV pulls too.
        settings = RuntimeSettings.from_env()
        self.server_tls, self.client_tls = ServerTls.of(settings), ClientTls.of(settings)

    def register(self, kv_caches: dict[str, torch.Tensor], num_blocks: int) -> None:
        self.kv = dict(sorted(kv_caches.items()))
        shape = next(iter(self.kv.values())).shape
        self.block_dim = next(d for d in range(len(shape)) if shape[d] == num_blocks)
        if self.conn.producer and self.conn.port:  # no port: no endpoint anyone is told of (see __init__)
            self.sender = KvSender(str(self.extra.get("bind_host", self.conn.host)), self.conn.port,
                                   cap_bytes=int(self.extra.get("cap_bytes", 1 << 30)),
                                   ttl_s=float(self.extra.get("ttl_s", 60.0)), tls=self.server_tls).start()
        log.info("DynamoTcpConnector worker: %d layers, KV shape %s (blocks on dim %d), %s", len(self.kv),
                 tuple(shape), self.block_dim,
                 f"serving pulls on {self.conn.host}:{self.conn.port}" if self.sender else "pulling")

    # -- producer --
    def stage(self, meta: TcpConnectorMetadata) -> None:
        now = time.monotonic()
        for rid, ids in meta.to_send.items():
            self.pending_stage[rid] = (ids, now + STAGE_RETRY_S)
        for rid, (ids, deadline) in list(self.pending_stage.items()):
            try:
                done = self._stage_one(rid, ids)
            except TooLarge as exc:
                log.warning("KV of %s not staged: %s", rid, exc)
                done = True
            if done or time.monotonic() > deadline:
                if not done:
                    log.warning("KV of %s not staged within %ss (staging full); decode will recompute", rid,
                                STAGE_RETRY_S)
                del self.pending_stage[rid]
                self.sent.add(rid)

    def _stage_one(self, rid: str, ids: list[int]) -> bool:
        assert self.sender is not None
        index = torch.tensor(ids, dtype=torch.long, device=next(iter(self.kv.values())).device)
        tensors = [t.index_select(self.block_dim, index).contiguous().cpu() for t in self.kv.values()]
        first = tensors[0]
        meta = {"layers": list(self.kv), "dtype": str(first.dtype).removeprefix("torch."),
                "shape": list(first.shape), "block_dim": self.block_dim, "num_blocks": len(ids)}
        segments = [t.view(torch.uint8).numpy() for t in tensors]
        return self.sender.stage(rid, segments, meta, owner=tensors)

    # -- consumer --
    def start_pulls(self, meta: TcpConnectorMetadata) -> None:
        for rid, spec in meta.to_recv.items():
            self.pool.submit(self._pull, rid, spec)

    def _pull(self, rid: str, spec: RecvSpec) -> None:
        params = spec.params
        try:
            got = pull(str(params["remote_host"]), int(params["remote_port"]), str(params["remote_request_id"]),
                       wait_s=float(self.extra.get("pull_wait_s", 10.0)),
                       timeout=float(self.extra.get("pull_timeout_s", 30.0)), tls=self.client_tls)
            self._write(got.meta, got.data, spec)
        except (TransferError, ValueError, RuntimeError) as exc:
            log.warning("KV pull for %s failed (%s); vLLM recomputes the prompt", rid, exc)
            with self.lock:
                self.failed.add(rid)
                self.stats.data["num_failed_transfers"].append(1)
            return
        with self.lock:
            self.recvd.add(rid)
            self.stats.data["bytes_transferred"].append(got.nbytes)
            self.stats.data["transfer_duration"].append(got.seconds)

    def _write(self, meta: dict[str, Any], data: bytearray, spec: RecvSpec) -> None:
        if meta["layers"] != list(self.kv) or meta["block_dim"] != self.block_dim:
            raise ValueError("remote KV layout differs from ours (layers or block dim)")
        dtype = getattr(torch, meta["dtype"])
        shape = meta["shape"]
        count = len(spec.local_block_ids)
        if spec.first_block + count > meta["num_blocks"]:
            raise ValueError(f"remote sent {meta['num_blocks']} blocks, need {spec.first_block + count}")
        per_layer = len(data) // len(self.kv)
        for i, tensor in enumerate(self.kv.values()):
            src = torch.frombuffer(data, dtype=torch.uint8, count=per_layer, offset=i * per_layer)
            src = src.view(dtype).view(shape).narrow(self.block_dim, spec.first_block, count)
            if list(src.shape[:self.block_dim]) + list(src.shape[self.block_dim + 1:]) != \
                    list(tensor.shape[:self.block_dim]) + list(tensor.shape[self.block_dim + 1:]):
                raise ValueError(f"remote block shape {shape} does not fit local {tuple(tensor.shape)}")
            index = torch.tensor(spec.local_block_ids, dtype=torch.long, device=tensor.device)
            tensor.index_copy_(self.block_dim, index, src.to(tensor.device))

    # -- both --
    def results(self) -> KVConnectorTransferResults:
        with self.lock:
            recvd, failed = self.recvd | self.failed, set(self.failed)
            self.recvd.clear()
            self.failed.clear()
        sent, self.sent = self.sent, set()
        return KVConnectorTransferResults(finished_sending=sent, finished_recving=recvd, failed_recving=failed)

    def take_stats(self) -> KVConnectorStats | None:
        with self.lock:
            if self.stats.is_empty():
                return None
            stats, self.stats = self.stats, TcpConnectorStats()
        return stats

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.sender is not None:
            self.sender.close()
