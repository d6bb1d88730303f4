"""The KServe v2 gRPC frontend (`--kserve-grpc-server`, NVIDIA Dynamo's): `GRPCInferenceService` on the
frontend's `--http-port`, for Triton's and KServe's gRPC clients, serving the models whose workers serve
completions (`kserve_tensors.py` maps the tensors). The HTTP app then listens on `--grpc-metrics-port`
(its /metrics, /health and the OpenAI routes), as Dynamo serves its metrics beside the gRPC server.

Every inference goes through the HTTP app's own `/v1/completions` handler, called in process (ASGI, no
socket): validation, admission and overload, routing, migration, metrics and request logs are the same
objects as for an HTTP client, and a gRPC call the client cancels is an HTTP client that went away.
- `ModelInfer`: one answer; `streaming` true is refused, as Dynamo refuses it ("Streaming is not
  supported for this endpoint").
- `ModelStreamInfer` (Triton's bidirectional stream): every request on the stream runs at once beside the
  others; a streaming one answers a response per chunk, another one response; a failed one answers its
  `error_message` and the stream goes on. Responses carry their request's `id`.
- `ModelMetadata`, `ModelConfig`, `ModelReady` for a completions model (NOT_FOUND otherwise); `ServerLive`,
  `ServerReady` (false while the frontend drains), `ServerMetadata`.
An HTTP refusal becomes its gRPC status: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 429/529 RESOURCE_EXHAUSTED,
503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, other failures INTERNAL; the message is the OpenAI error's.
A stream's client that takes no response for `--http-write-timeout-secs` (it stopped reading and did not
hang up: HTTP/2 flow control parks the write) has the stream cut, like an HTTP client's connection
(`dynamo/runtime/write_deadline.py`, which counts acknowledged bytes; here one response must get through
within the timeout): its requests end as for a client gone, instead of running on for nobody with their
responses queued here. A peer that vanished is found by HTTP/2 keepalive pings."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextlib import aclosing
from typing import Any, AsyncIterator, Callable, NamedTuple

import grpc
import msgspec
from google.protobuf.message import DecodeError

from dynamo.frontend import kserve_proto as pb
from dynamo.frontend.kserve_tensors import (
    UTF8_REFUSAL, KServeError, completion_fields, infer_response, model_config, model_metadata, utf8_text,
)
from dynamo.frontend.inprocess import body_once, post_scope
from dynamo.frontend.intake import utf8_slices

log = logging.getLogger(__name__)

_INFER_REQUEST = pb.classes["ModelInferRequest"]
# A prompt longer than this is decoded and written into its JSON payload a slice of this many bytes at a time.
JSON_SLICE_BYTES = 1 << 20
# The model versions served: the one this frontend lists ("1"), or none named.
VERSIONS = ("", "1")

_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 413: grpc.StatusCode.INVALID_ARGUMENT,
           404: grpc.StatusCode.NOT_FOUND, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
           529: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
           504: grpc.StatusCode.DEADLINE_EXCEEDED, 499: grpc.StatusCode.CANCELLED}


class CallFailed(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _failure(status: int, body: bytes) -> CallFailed:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace") or f"HTTP {status}"
    return CallFailed(_STATUS.get(status, grpc.StatusCode.INTERNAL), message)


async def completion_events(app: Callable, payload: bytes, stream: bool,
                            headers: list[tuple[bytes, bytes]] = ()) -> AsyncIterator[dict]:
    """A `/v1/completions` body `payload` (with these request `headers`) through the app, in process: the
    answer (unary), or each streamed chunk; CallFailed for an HTTP error or an error event. Closing the
    iterator early is a client going away."""
    out: asyncio.Queue = asyncio.Queue()
    receive, gone = body_once(payload)

    async def send(message: dict) -> None:
        await out.put(message)

    task = asyncio.ensure_future(app(post_scope("/v1/completions", payload, headers, ("grpc", 0)), receive, send))
    task.add_done_callback(lambda t: out.put_nowait(None))
    try:
        async for event in _events(out, stream):
            yield event
    finally:
        gone.set()
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 30)
            except asyncio.TimeoutError:
                task.cancel()
        elif not task.cancelled() and task.exception() is not None:  # already answered as INTERNAL
            log.error("KServe request failed in the HTTP app", exc_info=task.exception())


def request_headers(context, request_id: str) -> list[tuple[bytes, bytes]]:
    """The call's gRPC metadata as HTTP headers (session ids, `traceparent`, routing hints read them), and its
    request `id` as `x-dynamo-request-id` where it is a UUID (NVIDIA Dynamo takes it as the request id then)."""
    headers = [(key.encode(), value.encode()) for key, value in (context.invocation_metadata() or ())
               if isinstance(value, str) and not key.startswith((":", "grpc-")) and not key.endswith("-bin")
               and key not in ("content-type", "content-length", "x-dynamo-request-id")]
    try:
        headers.append((b"x-dynamo-request-id", str(uuid.UUID(request_id)).encode()))
    except ValueError:
        pass
    return headers


async def _events(out: asyncio.Queue, stream: bool) -> AsyncIterator[dict]:
    status, pending = 500, bytearray()  # a large unary answer comes in pieces: appended, not copied each time
    while True:
        message = await out.get()
        if message is None:
            break
        if message["type"] == "http.response.start":
            status = message["status"]
            continue
        pending += message.get("body", b"")
        if status != 200 or not stream:
            continue
        *events, pending = pending.split(b"\n\n")
        for event in events:
            data = next((line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")), None)
            if data is None or data == b"[DONE]":
                continue
            chunk = json.loads(data)
            if "error" in chunk:  # failed after its answer began (a worker lost, past migration)
                raise _failure(500, data)
            yield chunk
    if status != 200:
        raise _failure(status, pending)
    if not stream:
        yield json.loads(pending)


class InferPayload(NamedTuple):
    """An inference request as read off the wire: the request, its `/v1/completions` payload and stream flag,
    or why it is refused (`error`: then no payload)."""

    request: Any
    payload: bytes = b""
    stream: bool = False
    error: KServeError | CallFailed | None = None


async def prepared(raw: bytes, check: Callable[[Any], None] | None = None) -> InferPayload:
    """`raw` (a serialized ModelInferRequest) parsed and mapped to its completion payload; a huge prompt is
    decoded and written into the JSON a slice at a time, other requests running in between (`json.dumps` of a
    100 MB prompt holds the loop for half a second; a thread would not help, one C call holds the GIL)."""
    try:
        request = _INFER_REQUEST.FromString(raw)
    except DecodeError:
        return InferPayload(_INFER_REQUEST(), error=KServeError("malformed ModelInferRequest"))
    try:
        if check is not None:  # the model and version, before a huge prompt is prepared for nothing
            check(request)
        fields, text, stream = completion_fields(request)
        if len(text) <= JSON_SLICE_BYTES:
            return InferPayload(request, json.dumps({**fields, "prompt": utf8_text(text)}).encode(), stream)
        return InferPayload(request, await _sliced_payload(fields, text), stream)
    except (KServeError, CallFailed) as exc:
        return InferPayload(request, error=exc)


async def _sliced_payload(fields: dict, text: memoryview) -> bytes:
    """`fields` with `prompt`: the UTF-8 `text`, checked and escaped a slice at a time."""
    head = json.dumps(fields).encode()  # always holds `model` and `stream`: its closing brace goes
    parts = [head[:-1], b', "prompt": "']
    try:
        for piece in utf8_slices(text, JSON_SLICE_BYTES):
            parts.append(msgspec.json.encode(piece)[1:-1])
            await asyncio.sleep(0)
    except UnicodeDecodeError:
        raise KServeError(UTF8_REFUSAL) from None
    parts.append(b'"}')
    return b"".join(parts)


class KServeService:
    """The servicer: `handler()` is its gRPC generic handler."""

    def __init__(self, app, write_timeout: float = 0.0) -> None:
        self.app = app  # FrontendApp: its models, its drain state, and the ASGI callable
        self.write_timeout = write_timeout  # 0: none

    def _completions_model(self, name: str) -> bool:
        entry = self.app.models.get(name)
        return entry is not None and "completions" in entry.card.model_type

    def _model(self, name: str, version: str = "") -> None:
        if not self._completions_model(name):
            raise CallFailed(grpc.StatusCode.NOT_FOUND, f"Model {name!r} not found")
        if version not in VERSIONS:  # Triton's answer for a version it does not serve
            raise CallFailed(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: {name!r} version {version} "
                             f"is not found (versions: {', '.join(v for v in VERSIONS if v)})")

    async def server_live(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request, context):
        admission = self.app.admission  # not ready while draining or before --router-min-initial-workers
        return pb.ServerReadyResponse(ready=not admission.draining and admission.initial.check())

    async def server_metadata(self, request, context):
        return pb.ServerMetadataResponse(name="dynamo", version=_version(), extensions=[])

    async def model_ready(self, request, context):
        entry = self.app.models.get(request.name)
        ready = self._completions_model(request.name) and request.version in VERSIONS and \
            bool(entry.decode_workers()) and self.app.admission.initial.check()
        return pb.ModelReadyResponse(ready=ready)

    async def model_metadata(self, request, context):
        self._model(request.name, request.version)
        return model_metadata(request.name)

    async def model_config(self, request, context):
        self._model(request.name, request.version)
        return model_config(request.name)

    async def model_infer(self, raw: bytes, context):
        request, payload, stream, error = await prepared(raw, self._version)
        if error is not None:
            raise error
        if stream:
            raise KServeError("Streaming is not supported for this endpoint")
        headers = request_headers(context, request.id)
        async with aclosing(completion_events(self.app, payload, False, headers)) as events:
            async for answer in events:
                return infer_response(request, answer.get("model", request.model_name), answer["choices"])
        raise CallFailed(grpc.StatusCode.INTERNAL, "the completion ended without an answer")

    def _version(self, request) -> None:
        """A request for a version this frontend does not serve, of a model it serves: NOT_FOUND (an unknown
        model is the completions handler's 404, with its wording)."""
        if request.model_version not in VERSIONS and self._completions_model(request.model_name):
            self._model(request.model_name, request.model_version)

    async def model_stream_infer(self, requests, context):
        out: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def run(raw: bytes) -> None:
            request, payload, stream, error = await prepared(raw, self._version)
            try:
                if error is not None:
                    raise error
                headers = request_headers(context, request.id)
                async for event in completion_events(self.app, payload, stream, headers):
                    if event.get("choices"):  # a chunk without choices (an nvext or usage one) has no tensors
                        await out.put(pb.ModelStreamInferResponse(infer_response=infer_response(
                            request, event.get("model", request.model_name), event["choices"])))
            except (KServeError, CallFailed) as exc:
                await out.put(pb.ModelStreamInferResponse(error_message=str(exc), infer_response=pb.ModelInferResponse(
                    model_name=request.model_name, id=request.id)))

        async def read() -> None:
            async for raw in requests:
                task = asyncio.ensure_future(run(raw))
                tasks.add(task)
                task.add_done_callback(lambda t: (tasks.discard(t), out.put_nowait(t)))
            await out.put(None)

        reader = asyncio.ensure_future(read())
        reading = True
        try:
            while reading or tasks:
                item = await out.get()
                if item is None:
                    reading = False
                elif isinstance(item, asyncio.Task):
                    if not item.cancelled() and item.exception() is not None:
                        log.error("KServe stream request failed", exc_info=item.exception())
                else:
                    yield item
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {}
        for name, (req, resp, client_streams, server_streams) in pb.METHODS.items():
            impl = _with_status(getattr(self, _snake(name)), server_streams, self.write_timeout)
            make = grpc.stream_stream_rpc_method_handler if client_streams else grpc.unary_unary_rpc_method_handler
            # an inference request's bytes are parsed by `prepared`
            parse = None if req == "ModelInferRequest" else pb.classes[req].FromString
            methods[name] = make(impl, request_deserializer=parse, response_serializer=pb.classes[resp].SerializeToString)
        return grpc.method_handlers_generic_handler(pb.SERVICE, methods)


def _with_status(method, streams: bool, write_timeout: float = 0.0):
    """`method` with our refusals as gRPC statuses; a streaming one's responses written with the deadline."""
    async def unary(request, context):
        try:
            return await method(request, context)
        except KServeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except CallFailed as exc:
            await context.abort(exc.code, exc.message)

    async def streaming(requests, context):
        async with aclosing(method(requests, context)) as responses:
            async for response in responses:
                if not await _written(context, response, write_timeout):
                    log.warning("KServe stream: the client took nothing for %g s; stream cut", write_timeout)
                    await responses.aclose()  # its requests end now, as for a client gone
                    await _cut(context, write_timeout)
    return streaming if streams else unary


async def _cut(context, timeout: float) -> None:
    """End a stalled call with DEADLINE_EXCEEDED. The status queues behind the responses flow control holds,
    so the wait for it is bounded: past it the handler ends as cancelled, and the call goes when its client
    reads or hangs up (nothing of it runs meanwhile)."""
    try:
        await asyncio.wait_for(context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                             f"the client took no response for {timeout:g} s"), timeout)
    except grpc.aio.AbortError:
        raise  # the status was sent: the call ends with it
    except Exception:  # timed out, or the core refused the status (the cancelled write was the call's first)
        raise asyncio.CancelledError from None


async def _written(context, response, timeout: float) -> bool:
    """Write `response` to the call; False if flow control held it back for `timeout` s (0: wait on)."""
    if timeout <= 0:
        await context.write(response)
        return True
    try:
        await asyncio.wait_for(context.write(response), timeout)
    except asyncio.TimeoutError:
        return False
    return True


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dynamo-serve")
    except PackageNotFoundError:
        return "0"


class KServeServer:
    """The gRPC server's lifecycle: listen (TLS with the frontend's certificate when it has one), stop."""

    def __init__(self, app, host: str, port: int, max_message_bytes: int,
                 tls: tuple[bytes, bytes] | None = None, client_ca: bytes | None = None,
                 write_timeout: float = 0.0) -> None:
        """`tls`: (private key, certificate chain), PEM; `client_ca`: mutual TLS, clients must present a
        certificate this CA signed; `write_timeout`: a stream's deadline for its client to take a response."""
        # no SO_REUSEPORT: a second frontend on a taken port must fail, not share it unseen
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes), ("grpc.so_reuseport", 0),
                   # a client that vanished (no FIN) is found by its unanswered pings, its calls then end
                   ("grpc.keepalive_time_ms", 60_000), ("grpc.keepalive_timeout_ms", 20_000)]
        self.server = grpc.aio.server(options=options)
        self.server.add_generic_rpc_handlers((KServeService(app, write_timeout).handler(),))
        address = f"{host}:{port}"
        try:
            if tls is not None:
                credentials = grpc.ssl_server_credentials([tls], root_certificates=client_ca,
                                                          require_client_auth=client_ca is not None)
                self.port = self.server.add_secure_port(address, credentials)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc's way of saying the port is taken
            raise OSError(str(exc)) from None
        if not self.port:
            raise OSError("the port is taken")

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)
