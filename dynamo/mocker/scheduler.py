"""Continuous batching for the mocker, vLLM style.

Each step: running sequences get their next chunk (1 token when decoding, a
budget-limited chunk while prefilling), then waiting sequences are admitted FIFO
while blocks (below the watermark), `max_num_seqs` and the step's token budget
allow. Cached prefix tokens cost nothing. When a decoding sequence needs a block
and none is free, the most recently admitted sequence is preempted (recompute:
blocks freed, pushed back to the front of the queue). The step sleeps the
simulated duration, then every scheduled sequence that finished its chunk samples
one token, appended to `Sequence.tokens`; its consumer is woken through a future.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from dynamo.llm.forward_pass import ForwardPassMetrics, QueuedRequests, ScheduledRequests, variance
from dynamo.llm.protocol import FinishReason
from dynamo.mocker.args import MockerArgs
from dynamo.mocker.kv_manager import KvManager, chain_hash, hash_blocks
from dynamo.mocker.timing import TimingModel
from dynamo.mocker.tokens import LCG_INC, LCG_MUL, MASK64, TokenSampler
from dynamo.llm.kv_events.hashing import MediaSalt, block_hash_at

# Sleep only once simulated time runs this far ahead of the wall clock: the event
# loop's timers are millisecond-grained, so shorter steps are paced in aggregate.
_MIN_SLEEP_S = 0.002
# Steps are scheduled against deadlines on one simulated clock: a step that starts late (the
# event loop was busy streaming tokens and publishing events, or the machine is loaded) is
# shortened by its lateness, so the mocker's own CPU time is not added to the modelled time.
# Lateness beyond this much (a stalled process) is dropped, not replayed as a burst of steps.
_MAX_CATCH_UP_S = 0.05


def step_deadline(previous: float, now: float, seconds: float) -> float:
    """When a step of `seconds` that starts at `now` ends, on the simulated clock whose previous
    step ended at `previous`: late starts are caught up (up to `_MAX_CATCH_UP_S`)."""
    return max(previous, now - _MAX_CATCH_UP_S) + seconds


class Sequence:
    """One request's state inside the scheduler."""

    __slots__ = (
        "request_id", "tokens", "prompt_len", "max_tokens", "sampler", "rng", "skip_prefill",
        "num_computed", "num_generated", "prefilling", "held", "has_partial", "cached_tokens",
        "finish_reason", "error", "waiter", "done", "_hashed_len", "_locals", "_seqs", "lora_name", "script",
        "arrived", "cache_salt", "onboarding", "media",
    )  # fmt: skip

    def __init__(
        self, request_id: str, prompt: list[int], max_tokens: int, sampler: TokenSampler, rng: int,
        *, skip_prefill: bool = False, lora_name: str | None = None, cache_salt: str | None = None,
        media: MediaSalt | None = None,
    ) -> None:  # fmt: skip
        self.request_id = request_id
        self.tokens = list(prompt)  # prompt, then every sampled token (the consumer reads the tail)
        self.prompt_len = len(prompt)
        self.max_tokens = max_tokens
        self.sampler = sampler
        self.rng = rng
        self.skip_prefill = skip_prefill  # disaggregated decode: KV arrives by transfer
        self.num_computed = 0  # tokens whose KV is computed
        self.num_generated = 0
        self.prefilling = True
        self.held: list[int] = []  # SequenceHashes of the full blocks it references
        self.has_partial = False
        self.cached_tokens: int | None = None
        self.finish_reason: FinishReason | None = None
        self.error: str | None = None
        self.waiter: asyncio.Future | None = None
        self.done = False
        self._hashed_len = -1
        self.lora_name = lora_name  # a LoRA adapter's blocks hash (and are cached) in its own namespace
        self.cache_salt = cache_salt  # a tenant's namespace: its first block hashes (and is cached) apart
        self.media = media  # its images: the block of the first one, and all after it, hash apart
        self.script: list[int] | None = None  # replayed output ids (`--replay-file`), then EOS
        self.arrived = 0.0  # monotonic time the engine got it: its engine-side TTFT starts here
        self.onboarding = 0  # blocks its admission copies back from the host tier (timed in that step)

    def full_block_hashes(self, block_size: int) -> tuple[list[int], list[int]]:
        """(local, sequence) hashes of the current full blocks, cached between admission tries."""
        if self._hashed_len != len(self.tokens):
            self._locals, self._seqs = hash_blocks(self.tokens, block_size, self.lora_name, self.cache_salt, self.media)
            self._hashed_len = len(self.tokens)
        return self._locals, self._seqs

    def notify(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class Scheduler:
    def __init__(self, args: MockerArgs, kv: KvManager, timing: TimingModel) -> None:
        self.kv = kv
        self.timing = timing
        self.block_size = args.block_size
        self.max_num_seqs = args.max_num_seqs
        self.max_batched = args.max_num_batched_tokens
        self.chunked = args.enable_chunked_prefill
        self.watermark_limit = int((1.0 - args.watermark) * kv.capacity)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._wake = asyncio.Event()
        # Counters (cumulative since start).
        self.num_preemptions = 0
        self.num_steps = 0
        self.simulated_seconds = 0.0  # sum of scaled step durations
        self.busy_seconds = 0.0  # wall time with work to do; > simulated_seconds = the model ran late
        self.generated_tokens = 0
        self.admitted_prompt_tokens = 0
        self.admitted_cached_tokens = 0
        # Forward-pass metrics: called with one ForwardPassMetrics per step (and one idle heartbeat).
        self.on_forward_pass = None
        # Called with each request's engine-side time to first token (arrival -> first token sampled).
        self.on_first_token = None
        self.worker_id = "0"
        self.dp_rank = 0
        self.fpm_counter = 0

    # ---- request lifecycle --------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        seq.arrived = time.monotonic()
        self.waiting.append(seq)
        self._wake.set()

    def abort(self, seq: Sequence) -> None:
        """Remove a sequence wherever it is and free its blocks now (client went away)."""
        if seq.done:
            return
        if seq in self.running:
            self.running.remove(seq)
        else:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        self._release(seq)
        seq.done = True

    def fail_all(self, message: str) -> None:
        for seq in [*self.running, *self.waiting]:
            self._finish(seq, FinishReason.ERROR, message)
        self.running.clear()
        self.waiting.clear()

    # ---- the step loop ------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = busy_since = loop.time()
        while True:
            if not self.running and not self.waiting:
                self.busy_seconds += loop.time() - busy_since
                if self.on_forward_pass is not None:
                    self._emit_fpm([], 0.0)  # idle heartbeat: all zero, wall_time 0
                self._wake.clear()
                await self._wake.wait()
                clock = busy_since = loop.time()
                batch, seconds = self.schedule(admit_limit=1)
            else:
                batch, seconds = self.schedule()
            if not batch:  # nothing runnable (should not happen): back off instead of spinning
                await asyncio.sleep(_MIN_SLEEP_S)
                continue
            self.simulated_seconds += seconds
            now = loop.time()
            clock = step_deadline(clock, now, seconds)
            if self.on_forward_pass is not None:
                self._emit_fpm(batch, seconds)
            await asyncio.sleep(clock - now if clock - now >= _MIN_SLEEP_S else 0)
            self.complete(batch)

    def schedule(self, admit_limit: int | None = None) -> tuple[list[tuple[Sequence, int]], float]:
        """Pick this step's work: [(sequence, tokens to compute)] and its simulated duration.
        `admit_limit`: the most waiting requests admitted. The first step after idle admits one, as
        Dynamo's mocker does (an idle engine starts on the request that woke it; what arrived
        with it waits for the next step), so a burst at an idle worker is timed as there."""
        batch: list[tuple[Sequence, int]] = []
        budget, prefill_tokens, decoding, onboard_tokens = self.max_batched, 0, False, 0
        preemptions = self.num_preemptions
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            remaining = len(seq.tokens) - seq.num_computed
            if not seq.prefilling:
                if not self._reserve_slot(seq):
                    continue  # `seq` itself was preempted (or finished): the list shifted
                batch.append((seq, 1))
                budget -= 1
                decoding = True
            else:
                chunk = min(remaining, budget)
                batch.append((seq, chunk))
                budget -= chunk
                prefill_tokens += chunk
            i += 1
        # The decode pass attends to the KV of what was already running; this step's admissions
        # are prefill work, timed by their new tokens. Dynamo's mocker times the step the same way
        # (measured: a prefill joining a decode costs the decode at the pre-admission usage).
        kv_blocks, kv_seqs = self.kv.num_active_blocks, len(self.running)
        # After a preemption the cache is full: admitting now would only thrash (as vLLM).
        admit = self.num_preemptions == preemptions
        limit = self.max_num_seqs if admit_limit is None else min(self.max_num_seqs, len(self.running) + admit_limit)
        while admit and self.waiting and budget > 0 and len(self.running) < limit:
            admitted = self._admit(self.waiting[0], budget)
            if admitted is None:
                break
            seq, chunk, is_prefill = admitted
            batch.append((seq, chunk))
            budget -= chunk
            onboard_tokens += seq.onboarding * self.block_size
            seq.onboarding = 0
            if is_prefill:
                prefill_tokens += chunk
            else:  # a disaggregated decode: its transferred KV is attended to in this very pass
                decoding = True
                kv_blocks += len(seq.held) + seq.has_partial
                kv_seqs += 1
        seconds = self.timing.onboard_seconds(onboard_tokens) + self.timing.step_seconds(
            prefill_tokens, decoding, kv_blocks / self.kv.capacity, kv_blocks * self.block_size, max(kv_seqs, 1))
        return batch, seconds

    def complete(self, batch: list[tuple[Sequence, int]]) -> None:
        """Apply a finished step: advance computed tokens, sample, finish, wake consumers.
        The hot loop of the mocker: one pass, locals only, no per-token allocations."""
        self.num_steps += 1
        bs, mul, inc, mask = self.block_size, LCG_MUL, LCG_INC, MASK64
        finished = False
        produced = 0
        on_first = self.on_first_token
        for seq, n in batch:
            if seq.done:  # aborted while the step ran
                continue
            computed = seq.num_computed + n
            seq.num_computed = computed
            if seq.has_partial and computed == (len(seq.held) + 1) * bs:
                self._promote(seq)
            tokens = seq.tokens
            if computed < len(tokens):
                continue  # mid-prefill chunk
            seq.prefilling = False
            script = seq.script
            if script is None:
                sampler = seq.sampler
                state = (seq.rng * mul + inc) & mask
                token = (state >> 33) % sampler.vocab_size
                if token in sampler.forbidden:
                    state, token = sampler.redraw(state)
                seq.rng = state
            else:
                token = script[seq.num_generated]
            tokens.append(token)
            produced += 1
            seq.num_generated += 1
            if seq.num_generated == 1 and on_first is not None:
                on_first(time.monotonic() - seq.arrived)
            if script is not None and seq.num_generated >= len(script):
                self._finish(seq, FinishReason.EOS)
                finished = True
                continue
            if seq.num_generated >= seq.max_tokens:
                self._finish(seq, FinishReason.LENGTH)
                finished = True
                continue
            waiter = seq.waiter
            if waiter is not None:
                seq.waiter = None
                if not waiter.done():
                    waiter.set_result(None)
        self.generated_tokens += produced
        if finished:
            self.running = [s for s in self.running if not s.done]

    def _emit_fpm(self, batch: list[tuple[Sequence, int]], seconds: float) -> None:
        """Describe this step (before it completes) as Dynamo's ForwardPassMetrics."""
        prefill_len, prefill_kv, decode_kv = [], 0, []
        for seq, n in batch:
            if seq.prefilling:
                prefill_len.append(n)
                prefill_kv += seq.num_computed
            else:
                decode_kv.append(len(seq.tokens))
        queued_prefill = [len(s.tokens) for s in self.waiting if s.num_generated == 0]
        queued_decode = [len(s.tokens) for s in self.waiting if s.num_generated > 0]
        self.fpm_counter += 1
        self.on_forward_pass(ForwardPassMetrics(
            worker_id=self.worker_id, dp_rank=self.dp_rank, counter_id=self.fpm_counter, wall_time=seconds,
            scheduled_requests=ScheduledRequests(
                num_prefill_requests=len(prefill_len), sum_prefill_tokens=sum(prefill_len),
                var_prefill_length=variance(prefill_len), sum_prefill_kv_tokens=prefill_kv,
                num_decode_requests=len(decode_kv), sum_decode_kv_tokens=sum(decode_kv),
                var_decode_kv_tokens=variance(decode_kv)),
            queued_requests=QueuedRequests(
                num_prefill_requests=len(queued_prefill), sum_prefill_tokens=sum(queued_prefill),
                var_prefill_length=variance(queued_prefill), num_decode_requests=len(queued_decode),
                sum_decode_kv_tokens=sum(queued_decode), var_decode_kv_tokens=variance(queued_decode))))

    # ---- helpers ------------------------------------------------------------------

    def _admit(self, seq: Sequence, budget: int) -> tuple[Sequence, int, bool] | None:
        """Move the head of the queue to running if it fits; returns (seq, chunk, is_prefill)."""
        kv, bs = self.kv, self.block_size
        local, seqs = seq.full_block_hashes(bs)
        partial = 1 if len(seq.tokens) % bs else 0
        needed = kv.blocks_to_activate(seqs) + partial
        limit = self.watermark_limit if self.running else kv.capacity
        if kv.num_active_blocks + needed > limit:
            if not self.running and needed > kv.capacity:
                self.waiting.popleft()
                self._finish(seq, FinishReason.ERROR, f"request needs {needed} KV blocks, capacity is {kv.capacity}")
                return self._admit(self.waiting[0], budget) if self.waiting else None
            return None
        total = len(seq.tokens)
        on_device = kv.cached_prefix(seqs)
        from_host = 0 if seq.skip_prefill else kv.host_prefix(seqs, on_device)
        hit_tokens = (on_device + from_host) * bs
        computed = total - 1 if seq.skip_prefill else min(hit_tokens, total - 1)
        todo = total - computed
        if not self.chunked and todo > budget and budget < self.max_batched:
            return None  # whole-prompt prefill must wait for a fresh step budget
        chunk = min(todo, budget) if self.chunked else todo
        kv.acquire(seqs, local)
        if partial:
            kv.alloc_partial()
        self.waiting.popleft()
        self.running.append(seq)
        seq.held = list(seqs)
        seq.has_partial = bool(partial)
        seq.num_computed = computed
        seq.prefilling = not seq.skip_prefill
        seq.onboarding = from_host
        if seq.num_generated == 0:
            seq.cached_tokens = min(hit_tokens, total - 1)
            self.admitted_prompt_tokens += total
            self.admitted_cached_tokens += min(seq.cached_tokens, total)
        return seq, chunk, seq.prefilling

    def _reserve_slot(self, seq: Sequence) -> bool:
        """Make room in `seq`'s blocks for its next token, preempting LIFO when out of blocks.
        False if `seq` was itself preempted or could not grow at all (then finished)."""
        bs = self.block_size
        if seq.has_partial or len(seq.held) * bs >= len(seq.tokens):
            return True
        while not self.kv.alloc_partial():
            victim = self.running[-1]
            if victim is seq and self.running[0] is seq:  # alone and the cache is full of it
                self.running.pop()
                self._finish(seq, FinishReason.LENGTH)
                return False
            self._preempt(victim)
            if victim is seq:
                return False
        seq.has_partial = True
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)
        seq.num_computed = 0
        seq.prefilling = True
        seq.skip_prefill = False  # its transferred KV is gone: recompute locally
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _promote(self, seq: Sequence) -> None:
        bs = self.block_size
        start = len(seq.held) * bs
        local = block_hash_at(seq.tokens, start, bs, seq.lora_name, seq.cache_salt, seq.media)
        parent = seq.held[-1] if seq.held else None
        seq_hash = chain_hash(parent, local)
        self.kv.promote(parent, seq_hash, local)
        seq.held.append(seq_hash)
        seq.has_partial = False

    def _release(self, seq: Sequence) -> None:
        if seq.held:
            self.kv.release(seq.held)
            seq.held = []
        if seq.has_partial:
            self.kv.free_partial()
            seq.has_partial = False

    def _finish(self, seq: Sequence, reason: FinishReason, error: str | None = None) -> None:
        """Mark finished and free blocks; the caller removes it from `running`/`waiting`."""
        self._release(seq)
        seq.finish_reason = reason
        seq.error = error
        seq.done = True
        seq.notify()
