"""One generation run's latency and size observations in `FrontendMetrics`, as NVIDIA Dynamo's frontend
makes them: its TTFT at the first batch (also its worker's), an inter-token latency per token of each
later batch, output tokens as they come, and once it ends its duration, ISL, OSL, cached tokens and its
decode worker's mean ITL. `RunTiming` is the one owner of the run's clock (started, first token, last
batch), which the response's `nvext.timing` reads too."""

from __future__ import annotations

import time

from dynamo.frontend.metrics import FrontendMetrics


class RunTiming:
    __slots__ = ("metrics", "model", "started", "first_token_at", "last_time", "_decoding", "_observe_itl",
                 "_count_output")

    def __init__(self, metrics: FrontendMetrics, model: str, started: float) -> None:
        self.metrics, self.model, self.started = metrics, model, started
        self.first_token_at: float | None = None
        self.last_time = started
        self._decoding = False  # a batch with tokens came: the next ones have an inter-token latency
        self._observe_itl = metrics.itl.labels(model).observe
        self._count_output = metrics.output_tokens.labels(model).inc

    def first_response(self, handle, prompt_tokens: int) -> None:
        """The first batch came (or the stream ended without one): the TTFT, the model's and its worker's."""
        self.first_token_at = self.last_time = time.monotonic()
        ttft = self.first_token_at - self.started
        self.metrics.ttft.labels(self.model).observe(ttft)
        self.metrics.first_token_on(handle, ttft, prompt_tokens)

    def batch(self, count: int) -> None:
        """Dynamo's ITL: the gap since the last batch, once per token of this one; the first batch's tokens have
        none (their time is the TTFT): 15 observations for 16 tokens streamed one at a time."""
        if not count:
            return
        now = time.monotonic()
        if self._decoding:
            gap = (now - self.last_time) / count
            for _ in range(count):
                self._observe_itl(gap)
        self._decoding = True
        self._count_output(count)
        self.last_time = now

    def ended(self, handle, choice_tokens: int, prompt_tokens: int, completion_tokens: int,
              cached_tokens: int) -> None:
        """The run is over: `choice_tokens`, the first choice's (whose worker `handle` streamed it),
        `completion_tokens`, every choice's."""
        m, now = self.metrics, time.monotonic()
        m.duration.labels(self.model).observe(now - self.started)
        if self.first_token_at is not None and choice_tokens > 1:  # Dynamo's mean ITL: (end - first) / (tokens - 1)
            m.decoded_on(handle, (now - self.first_token_at) / (choice_tokens - 1))
        m.isl.labels(self.model).observe(prompt_tokens)
        m.osl.labels(self.model).observe(completion_tokens)
        m.cached.labels(self.model).observe(cached_tokens)
