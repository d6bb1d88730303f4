"""KServe v2 tensors <-> OpenAI completions, as NVIDIA Dynamo's KServe frontend maps them for a model
served by completions: a `ModelInferRequest`'s `text_input` (BYTES, shape [1]) is the prompt and its
`streaming` (or `stream`, BOOL, shape [1]) the stream flag, in typed contents or in `raw_input_contents`
(Triton's raw layout: a BYTES element is a 4-byte little-endian length and the bytes); each choice of the
answer is one element of the `text_output` and `finish_reason` outputs (BYTES, shape [choices]).

Beyond Dynamo: the request's `parameters` carry the completion's sampling fields by their OpenAI names
(`max_tokens`, `temperature`, `stop`, ...), which Dynamo's KServe path has no way to set; other parameters
(Triton's own, such as `sequence_id` or `priority`) are ignored, as Triton ignores what a backend does not
read. The refusals are Dynamo's, with its messages (`KServeError`, a gRPC INVALID_ARGUMENT)."""

from __future__ import annotations

import math
import struct

from dynamo.frontend import kserve_proto as pb

# What a completions model reads and answers (ModelMetadata, ModelConfig).
INPUTS = (("text_input", "BYTES", [1]), ("streaming", "BOOL", [1]))
OUTPUTS = (("text_output", "BYTES", [-1]), ("finish_reason", "BYTES", [-1]))
# request parameters passed on as the completion's fields, with the types they take
SAMPLING_PARAMETERS = {
    "max_tokens": int, "min_tokens": int, "n": int, "seed": int, "top_k": int,
    "temperature": float, "top_p": float, "min_p": float, "frequency_penalty": float, "presence_penalty": float,
    "repetition_penalty": float, "ignore_eos": bool, "stop": str, "echo": bool,
}
_PARAMETER_TYPES = {"bool_param": bool, "int64_param": int, "uint64_param": int, "double_param": float,
                    "string_param": str}


UTF8_REFUSAL = "'text_input' must be UTF-8 text"


class KServeError(ValueError):
    """A request this frontend refuses (INVALID_ARGUMENT), with the message a client sees."""


def completion_body(request) -> tuple[dict, bool]:
    """The `/v1/completions` body of a `ModelInferRequest`, and whether it asked to stream."""
    fields, text, stream = completion_fields(request)
    return {**fields, "prompt": utf8_text(text)}, stream


def utf8_text(data) -> str:
    try:
        return bytes(data).decode()
    except UnicodeDecodeError:
        raise KServeError(UTF8_REFUSAL) from None


def completion_fields(request) -> tuple[dict, memoryview, bool]:
    """A `ModelInferRequest`'s completion fields but the prompt, its prompt as the request holds it (UTF-8 bytes,
    not yet checked: decoding megabytes is the caller's to pace), and whether it asked to stream."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise KServeError("`raw_input_contents` must be used for all inputs")
    _check_tensors(request, bool(raw))
    text, stream = None, False
    for index, tensor in enumerate(request.inputs):
        if tensor.name == "text_input":
            text = _text_input(tensor, raw[index] if raw else None)
        elif tensor.name in ("streaming", "stream"):
            stream = _stream_input(tensor, raw[index] if raw else None)
        else:
            raise KServeError(f"Invalid input name: {tensor.name}, supported inputs are 'text_input', 'stream'")
    if text is None:
        raise KServeError("Missing required input: 'text_input'")
    return {"model": request.model_name, "stream": stream, **sampling_fields(request.parameters)}, text, stream


def _check_tensors(request, raw: bool) -> None:
    """Triton's rules that Dynamo's mapping leaves unchecked: each input once, its values in one place (typed
    contents or raw, not both), only outputs this model answers."""
    seen: set[str] = set()
    for tensor in request.inputs:
        if tensor.name in seen:
            raise KServeError(f"input '{tensor.name}' already exists in request")
        seen.add(tensor.name)
    if raw and any(tensor.HasField("contents") for tensor in request.inputs):
        raise KServeError("input contents must not be given in both `contents` and `raw_input_contents`")
    answered = [name for name, _, _ in OUTPUTS]
    for output in request.outputs:
        if output.name not in answered:
            raise KServeError(f"unexpected inference output '{output.name}' for model '{request.model_name}' "
                              f"(outputs: {', '.join(answered)})")


def _text_input(tensor, raw: bytes | None) -> memoryview:
    if tensor.datatype != "BYTES":
        raise KServeError(f"Expected 'text_input' to be of type BYTES for string input, got {tensor.datatype!r}")
    if list(tensor.shape) not in ([1], [1, 1]):
        raise KServeError(f"Expected 'text_input' to have shape [1], got {list(tensor.shape)}")
    if raw is None:
        if len(tensor.contents.bytes_contents) != 1:
            raise KServeError("'text_input' must contain exactly one element")
        return memoryview(tensor.contents.bytes_contents[0])
    else:
        if len(raw) < 4:
            raise KServeError("'text_input' raw input must be length-prefixed (>= 4 bytes)")
        (length,) = struct.unpack_from("<I", raw)
        if length != len(raw) - 4:
            raise KServeError("'text_input' raw input must hold exactly one length-prefixed element")
        return memoryview(raw)[4:]  # no copy of a prompt of megabytes


def _stream_input(tensor, raw: bytes | None) -> bool:
    if tensor.datatype != "BOOL":
        raise KServeError(f"Expected '{tensor.name}' to be of type BOOL, got {tensor.datatype!r}")
    if list(tensor.shape) != [1]:
        raise KServeError(f"Expected '{tensor.name}' to have shape [1], got {list(tensor.shape)}")
    if raw is None:
        if len(tensor.contents.bool_contents) != 1:
            raise KServeError(f"'{tensor.name}' must contain exactly one element")
        return bool(tensor.contents.bool_contents[0])
    if not raw:
        raise KServeError(f"'{tensor.name}' raw input must contain at least one byte")
    return raw[0] != 0


def sampling_fields(parameters) -> dict:
    """The completion fields named by request parameters (the others are not ours to read)."""
    out = {}
    for name, param in parameters.items():
        want = SAMPLING_PARAMETERS.get(name)
        if want is None:
            continue
        kind = param.WhichOneof("parameter_choice")
        value = getattr(param, kind) if kind else None
        if want is float and type(value) is int:
            value = float(value)
        if type(value) is not want:
            raise KServeError(f"parameter '{name}' must be a {_type_name(want)}")
        if want is float and not math.isfinite(value):
            raise KServeError(f"parameter '{name}' must be a finite double")
        out[name] = value
    return out


def _type_name(kind: type) -> str:
    return next(field for field, t in _PARAMETER_TYPES.items() if t is kind).removesuffix("_param")


def infer_response(request, model: str, choices: list[dict]):
    """A `ModelInferResponse` to `request` holding each choice's text and finish reason ("" while it runs):
    in `raw_output_contents` where the request sent its inputs raw (Triton's clients do, and read raw
    answers, as Triton sends them), else in typed contents (as NVIDIA Dynamo answers)."""
    texts = [(c.get("text") or "").encode() for c in choices]
    reasons = [(c.get("finish_reason") or "").encode() for c in choices]
    raw = bool(request.raw_input_contents)
    response = pb.ModelInferResponse(model_name=model, model_version="1", id=request.id)
    for name, values in (("text_output", texts), ("finish_reason", reasons)):
        tensor = response.outputs.add(name=name, datatype="BYTES", shape=[len(values)])
        if raw:
            response.raw_output_contents.append(b"".join(struct.pack("<I", len(v)) + v for v in values))
        else:
            tensor.contents.bytes_contents.extend(values)
    return response


def model_metadata(name: str):
    tensor = pb.TensorMetadata
    return pb.ModelMetadataResponse(
        name=name, versions=["1"], platform="dynamo",
        inputs=[tensor(name=n, datatype=t, shape=s) for n, t, s in INPUTS],
        outputs=[tensor(name=n, datatype=t, shape=s) for n, t, s in OUTPUTS])


def model_config(name: str):
    kinds = {"BYTES": pb.DATA_TYPES["TYPE_STRING"], "BOOL": pb.DATA_TYPES["TYPE_BOOL"]}
    inputs = [pb.ModelInput(name=n, data_type=kinds[t], dims=s, optional=n != "text_input")
              for n, t, s in INPUTS]
    outputs = [pb.ModelOutput(name=n, data_type=kinds[t], dims=s) for n, t, s in OUTPUTS]
    config = pb.ModelConfig(name=name, platform="dynamo", backend="dynamo", input=inputs, output=outputs)
    return pb.ModelConfigResponse(config=config)
