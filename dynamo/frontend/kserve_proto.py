"""The KServe v2 gRPC messages (package `inference`, service `GRPCInferenceService`, with Triton's
`ModelStreamInfer` and `ModelConfig` extensions), as Triton's and NVIDIA Dynamo's clients put them on the
wire: the message and field names and numbers of the public KServe v2 predict API and of Triton's
`grpc_service.proto` / `model_config.proto`, of which only the parts this frontend reads or writes are
declared (a client's other fields are skipped by protobuf as unknown fields).

The classes are built at import from the declarations below with protobuf's own descriptor machinery,
so no generated code (and no protoc version) is tied to the installed protobuf."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "bool": _F.TYPE_BOOL, "int64": _F.TYPE_INT64, "int32": _F.TYPE_INT32,
            "uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64, "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE,
            "bytes": _F.TYPE_BYTES}

# message -> [(field, number, type, repeated, oneof)]; a type that is not a scalar names a message (or
# the DataType enum); "map:X" is map<string, X>.
_CONTENTS = [("bool_contents", 1, "bool", True), ("int_contents", 2, "int32", True),
             ("int64_contents", 3, "int64", True), ("uint_contents", 4, "uint32", True),
             ("uint64_contents", 5, "uint64", True), ("fp32_contents", 6, "float", True),
             ("fp64_contents", 7, "double", True), ("bytes_contents", 8, "bytes", True)]
_TENSOR = [("name", 1, "string"), ("datatype", 2, "string"), ("shape", 3, "int64", True),
           ("parameters", 4, "map:InferParameter"), ("contents", 5, "InferTensorContents")]
MESSAGES: dict[str, list[tuple]] = {
    "ServerLiveRequest": [], "ServerLiveResponse": [("live", 1, "bool")],
    "ServerReadyRequest": [], "ServerReadyResponse": [("ready", 1, "bool")],
    "ModelReadyRequest": [("name", 1, "string"), ("version", 2, "string")],
    "ModelReadyResponse": [("ready", 1, "bool")],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [("name", 1, "string"), ("version", 2, "string"), ("extensions", 3, "string", True)],
    "ModelMetadataRequest": [("name", 1, "string"), ("version", 2, "string")],
    "TensorMetadata": [("name", 1, "string"), ("datatype", 2, "string"), ("shape", 3, "int64", True)],
    "ModelMetadataResponse": [("name", 1, "string"), ("versions", 2, "string", True), ("platform", 3, "string"),
                              ("inputs", 4, "TensorMetadata", True), ("outputs", 5, "TensorMetadata", True)],
    "InferParameter": [("bool_param", 1, "bool", False, 0), ("int64_param", 2, "int64", False, 0),
                       ("string_param", 3, "string", False, 0), ("double_param", 4, "double", False, 0),
                       ("uint64_param", 5, "uint64", False, 0)],
    "InferTensorContents": _CONTENTS,
    "InferInputTensor": _TENSOR,
    "InferRequestedOutputTensor": [("name", 1, "string"), ("parameters", 2, "map:InferParameter")],
    "ModelInferRequest": [("model_name", 1, "string"), ("model_version", 2, "string"), ("id", 3, "string"),
                          ("parameters", 4, "map:InferParameter"), ("inputs", 5, "InferInputTensor", True),
                          ("outputs", 6, "InferRequestedOutputTensor", True),
                          ("raw_input_contents", 7, "bytes", True)],
    "InferOutputTensor": _TENSOR,
    "ModelInferResponse": [("model_name", 1, "string"), ("model_version", 2, "string"), ("id", 3, "string"),
                           ("parameters", 4, "map:InferParameter"), ("outputs", 5, "InferOutputTensor", True),
                           ("raw_output_contents", 6, "bytes", True)],
    "ModelStreamInferResponse": [("error_message", 1, "string"), ("infer_response", 2, "ModelInferResponse")],
    "ModelConfigRequest": [("name", 1, "string"), ("version", 2, "string")],
    # Triton's model_config.proto, the fields a generated LLM config sets
    "ModelInput": [("name", 1, "string"), ("data_type", 2, "DataType"), ("dims", 4, "int64", True),
                   ("optional", 8, "bool")],
    "ModelOutput": [("name", 1, "string"), ("data_type", 2, "DataType"), ("dims", 3, "int64", True)],
    "ModelConfig": [("name", 1, "string"), ("platform", 2, "string"), ("max_batch_size", 4, "int32"),
                    ("input", 5, "ModelInput", True), ("output", 6, "ModelOutput", True), ("backend", 17, "string")],
    "ModelConfigResponse": [("config", 1, "ModelConfig")],
}
DATA_TYPES = {"TYPE_INVALID": 0, "TYPE_BOOL": 1, "TYPE_UINT8": 2, "TYPE_UINT16": 3, "TYPE_UINT32": 4,
              "TYPE_UINT64": 5, "TYPE_INT8": 6, "TYPE_INT16": 7, "TYPE_INT32": 8, "TYPE_INT64": 9, "TYPE_FP16": 10,
              "TYPE_FP32": 11, "TYPE_FP64": 12, "TYPE_STRING": 13, "TYPE_BF16": 14}
# rpc -> (request, response, client streams, server streams)
METHODS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse", False, False),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse", False, False),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse", False, False),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse", False, False),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse", False, False),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse", False, False),
    "ModelStreamInfer": ("ModelInferRequest", "ModelStreamInferResponse", True, True),
    "ModelConfig": ("ModelConfigRequest", "ModelConfigResponse", False, False),
}


def _field(message: descriptor_pb2.DescriptorProto, spec: tuple) -> None:
    name, number, kind = spec[:3]
    repeated, oneof = len(spec) > 3 and spec[3], spec[4] if len(spec) > 4 else None
    field = message.field.add(name=name, number=number, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if kind.startswith("map:"):  # map<string, V>: a repeated nested entry message, as protoc writes it
        entry = message.nested_type.add(name=name.title().replace("_", "") + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
        entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE,
                        type_name=f".{PACKAGE}.{kind[4:]}")
        field.label, field.type = _F.LABEL_REPEATED, _F.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{message.name}.{entry.name}"
    elif kind in _SCALARS:
        field.type = _SCALARS[kind]
    elif kind == "DataType":
        field.type, field.type_name = _F.TYPE_ENUM, f".{PACKAGE}.DataType"
    else:
        field.type, field.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{kind}"
    if oneof is not None:
        field.oneof_index = oneof


def _build() -> dict[str, type]:
    file = descriptor_pb2.FileDescriptorProto(name="dynamo_kserve.proto", package=PACKAGE, syntax="proto3")
    enum = file.enum_type.add(name="DataType")
    for name, number in DATA_TYPES.items():
        enum.value.add(name=name, number=number)
    for name, fields in MESSAGES.items():
        message = file.message_type.add(name=name)
        if any(len(spec) == 5 for spec in fields):
            message.oneof_decl.add(name="parameter_choice")
        for spec in fields:
            _field(message, spec)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in MESSAGES}


classes = _build()
globals().update(classes)  # kserve_proto.ModelInferRequest, ...
