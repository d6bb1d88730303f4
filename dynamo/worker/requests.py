"""The worker's `generate` endpoint, written once for every engine: admission
(`--engine-request-limit`), a unique engine request id per attempt, error mapping to
request-plane codes, and the abort of a request whose stream ends unfinished.

The request arrives already decoded: the endpoint is served with
`request_type=PreprocessedRequest`, so a malformed payload is a `bad_request` before it
gets here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import AsyncIterator

from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest
from dynamo.runtime.rp_server import HandlerError, RequestContext
from dynamo.runtime.wire import ErrorCode
from dynamo.worker.adapter import EngineAdapter

log = logging.getLogger(__name__)


class RequestHandler:
    def __init__(self, adapter: EngineAdapter, request_limit: int = 0) -> None:
        self.adapter = adapter
        self.request_limit = request_limit
        self.inflight = 0
        self._ids = itertools.count()

    async def generate(self, request: PreprocessedRequest, ctx: RequestContext) -> AsyncIterator[LLMEngineOutput]:
        if self.request_limit and self.inflight >= self.request_limit:
            raise HandlerError(f"Server overloaded: {self.inflight} requests in flight "
                               f"(--engine-request-limit {self.request_limit})", ErrorCode.OVERLOADED)
        # Unique per attempt: a migrated request reuses its id on another (or this) worker.
        request_id = f"{request.request_id}-{next(self._ids)}"
        self.inflight += 1
        finished = False
        stream = self.adapter.generate(request, request_id)
        try:
            async for out in stream:
                finished = out.finish_reason is not None
                yield out
                if finished:
                    break
        except (HandlerError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise self.handler_error(exc) from None
        finally:
            self.inflight -= 1
            if not finished:  # client went away (CancelledError / GeneratorExit) or an error
                await asyncio.shield(self._abort(request_id))
            await stream.aclose()

    def handler_error(self, exc: Exception) -> Exception:
        """Engine exception -> typed HandlerError; unknown ones stay as they are (-> internal)."""
        code = self.adapter.error_code(exc)
        if code is None and isinstance(exc, (ValueError, TypeError)):  # validation: bad params, prompt too long
            code = ErrorCode.BAD_REQUEST
        return HandlerError(str(exc), code) if code else exc

    async def _abort(self, request_id: str) -> None:
        try:
            await self.adapter.abort(request_id)
        except Exception as exc:  # engine already dead: nothing left to free
            log.debug("abort %s: %s", request_id, exc)
