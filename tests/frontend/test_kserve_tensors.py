"""KServe v2 tensors <-> completions, and our messages on the wire against Triton's own generated classes
(`tritonclient.grpc.service_pb2`, `model_config_pb2`): what one side writes the other reads."""

import asyncio
import json
import struct
import time

import pytest
import tritonclient.grpc.model_config_pb2 as triton_config
import tritonclient.grpc.service_pb2 as triton

from dynamo.frontend import kserve_proto as pb
from dynamo.frontend.kserve import JSON_SLICE_BYTES, prepared
from dynamo.frontend.kserve_tensors import KServeError, completion_body, infer_response, model_config, model_metadata


def request(*tensors, raw: list[bytes] | None = None, **params):
    req = triton.ModelInferRequest(model_name="m", id="q1")
    for name, datatype, shape, values in tensors:
        t = req.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw is None and datatype == "BYTES":
            t.contents.bytes_contents.extend(values)
        elif raw is None:
            t.contents.bool_contents.extend(values)
    req.raw_input_contents.extend(raw or [])
    for key, value in params.items():
        field = {bool: "bool_param", int: "int64_param", float: "double_param", str: "string_param"}[type(value)]
        setattr(req.parameters[key], field, value)
    return pb.ModelInferRequest.FromString(req.SerializeToString())


TEXT = ("text_input", "BYTES", [1], [b"hello"])


def test_typed_contents_and_sampling_parameters():
    body, stream = completion_body(request(TEXT, ("streaming", "BOOL", [1], [True]), max_tokens=7, temperature=0,
                                           stop="\n", priority=3))
    assert stream and body == {"model": "m", "prompt": "hello", "stream": True, "max_tokens": 7,
                               "temperature": 0.0, "stop": "\n"}  # Triton's `priority` is not ours to read


def test_raw_contents_are_length_prefixed():
    raw = [struct.pack("<I", 5) + b"hello", b"\x01"]
    body, stream = completion_body(request(("text_input", "BYTES", [1, 1], None), ("stream", "BOOL", [1], None),
                                           raw=raw))
    assert body["prompt"] == "hello" and stream


@pytest.mark.parametrize("tensors, raw, says", [
    ([], None, "Missing required input: 'text_input'"),
    ([("text_input", "INT32", [1], None)], [b"\0\0\0\0"], "to be of type BYTES"),
    ([("text_input", "BYTES", [2], [b"a", b"b"])], None, "to have shape [1]"),
    ([TEXT, ("streaming", "BOOL", [1], [True])], [struct.pack("<I", 1) + b"a"], "must be used for all inputs"),
    ([("text_input", "BYTES", [1], None)], [b"\x01\x00"], "length-prefixed"),
    ([("text_input", "BYTES", [1], None)], [struct.pack("<I", 9) + b"short"], "exactly one"),
    ([("text_input", "BYTES", [1], [b"\xff\xfe"])], None, "UTF-8"),
    ([TEXT, ("streaming", "INT32", [1], None)], [struct.pack("<I", 1) + b"a", b"\1"], "type BOOL"),
    ([TEXT, ("extra", "BYTES", [1], [b"x"])], None, "Invalid input name: extra"),
])
def test_refusals(tensors, raw, says):
    with pytest.raises(KServeError, match=None) as err:
        completion_body(request(*tensors, raw=raw))
    assert says in str(err.value)


@pytest.mark.parametrize("params, says", [({"max_tokens": 1.5}, "must be a int64"),
                                          ({"temperature": "hot"}, "must be a double"),
                                          ({"ignore_eos": 1}, "must be a bool")])
def test_parameters_of_the_wrong_type(params, says):
    with pytest.raises(KServeError) as err:
        completion_body(request(TEXT, **params))
    assert says in str(err.value)


def test_answers_mirror_how_the_request_was_sent():
    choices = [{"text": "Paris", "finish_reason": "stop"}, {"text": "", "finish_reason": None}]
    raw = triton.ModelInferResponse.FromString(infer_response(
        request(TEXT, raw=[struct.pack("<I", 5) + b"hello"]), "m", choices).SerializeToString())
    assert [(o.name, list(o.shape)) for o in raw.outputs] == [("text_output", [2]), ("finish_reason", [2])]
    assert raw.raw_output_contents[0] == struct.pack("<I", 5) + b"Paris" + struct.pack("<I", 0)
    assert raw.raw_output_contents[1] == struct.pack("<I", 4) + b"stop" + struct.pack("<I", 0)
    typed = triton.ModelInferResponse.FromString(infer_response(request(TEXT), "m", choices).SerializeToString())
    assert typed.id == "q1" and typed.model_version == "1" and not typed.raw_output_contents
    assert list(typed.outputs[0].contents.bytes_contents) == [b"Paris", b""]


def test_metadata_and_config_read_by_tritons_classes():
    meta = triton.ModelMetadataResponse.FromString(model_metadata("m").SerializeToString())
    assert [i.name for i in meta.inputs] == ["text_input", "streaming"] and meta.platform == "dynamo"
    config = triton.ModelConfigResponse.FromString(model_config("m").SerializeToString()).config
    assert config.backend == "dynamo" and config.input[0].data_type == triton_config.TYPE_STRING
    assert config.input[1].data_type == triton_config.TYPE_BOOL and config.input[1].optional
    assert list(config.output[0].dims) == [-1]


def test_every_method_is_tritons():
    service = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert pb.SERVICE == service.full_name
    for name, (req, resp, client_streams, server_streams) in pb.METHODS.items():
        method = service.methods_by_name[name]
        assert (method.input_type.name, method.output_type.name) == (req, resp)
        assert (method.client_streaming, method.server_streaming) == (client_streams, server_streams)


def test_triton_rules_dynamos_mapping_leaves_unchecked():
    with pytest.raises(KServeError, match="input 'text_input' already exists in request"):
        completion_body(request(TEXT, TEXT))
    mixed = request(TEXT)  # typed contents and raw at once
    mixed.raw_input_contents.append(struct.pack("<I", 5) + b"hello")
    with pytest.raises(KServeError, match="both `contents` and `raw_input_contents`"):
        completion_body(mixed)
    asked = request(TEXT)
    asked.outputs.add(name="logits")
    with pytest.raises(KServeError, match="unexpected inference output 'logits' for model 'm'"):
        completion_body(asked)
    with pytest.raises(KServeError, match="'streaming' must contain exactly one element"):
        completion_body(request(TEXT, ("streaming", "BOOL", [1], [])))  # the tensor as the client named it


@pytest.mark.parametrize("size", [10, JSON_SLICE_BYTES * 2 + 7])
def test_the_payload_of_a_prompt_short_or_written_in_slices_is_its_json(size):
    text = ('é"\\\n😀 ' * size)[:size]  # escapes, and characters of 2 and 4 UTF-8 bytes across slice edges
    req = request(("text_input", "BYTES", [1], [text.encode()]), max_tokens=3, temperature=0.5)
    prepared_ = asyncio.run(prepared(req.SerializeToString()))
    assert prepared_.error is None and not prepared_.stream
    assert json.loads(prepared_.payload) == {"model": "m", "prompt": text, "stream": False, "max_tokens": 3,
                                             "temperature": 0.5}


def test_bytes_that_are_no_infer_request_are_refused():
    assert "malformed" in str(asyncio.run(prepared(b"\xff\xff\xff")).error)


def test_a_big_prompt_that_is_not_utf8_is_refused_as_a_short_one_is():
    text = b"w" * (JSON_SLICE_BYTES + 5) + b"\xff" + b"w" * 10
    req = request(("text_input", "BYTES", [1], [text]))
    assert str(asyncio.run(prepared(req.SerializeToString())).error) == "'text_input' must be UTF-8 text"
    cut = request(("text_input", "BYTES", [1], ["é".encode() * JSON_SLICE_BYTES + b"\xc3"]))  # ends mid-character
    assert str(asyncio.run(prepared(cut.SerializeToString())).error) == "'text_input' must be UTF-8 text"


def test_a_non_finite_parameter_is_named():
    with pytest.raises(KServeError, match="parameter 'temperature' must be a finite double"):
        completion_body(request(TEXT, temperature=float("nan")))


def test_many_inputs_are_checked_in_one_pass():
    """100,000 differently named inputs (a 2 MB request): refused for their names at once, not after a pairwise
    comparison of every two (minutes holding the event loop)."""
    req = request(*[(f"in{i}", "BYTES", [1], [b"x"]) for i in range(100_000)])
    started = time.monotonic()
    with pytest.raises(KServeError, match="Invalid input name: in0"):
        completion_body(req)
    assert time.monotonic() - started < 15
