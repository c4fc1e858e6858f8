"""Read what the runtime must know of a serialized ONNX model without the onnx package:
its external-data references and the IR version and opset it needs.

A bundle's sha256 covers only the .onnx bytes, and a graph given to onnxruntime as bytes
resolves external data against the process's working directory, so the runtime refuses
any tensor stored outside the graph file. This walks just the protobuf fields that can
hold tensors (onnx.proto: ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto).
"""

from __future__ import annotations

# message -> {field number: message type of that (length-delimited) field}
_SCHEMA = {
    "model": {7: "graph", 25: "function"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
    "entry": {},
}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL, field 14


class ProtobufError(ValueError):
    pass


def external_data_locations(data: bytes) -> list[str]:
    """Locations of all tensors in the model stored as external data ('' if unnamed)."""
    found: list[str] = []
    _walk(memoryview(data), "model", found)
    return found


def ir_version_and_opset(data: bytes) -> tuple[int, int]:
    """The model's IR version and the version of the default (ai.onnx) opset it imports
    (0 where the model does not say)."""
    ir_version = opset = 0
    for number, wire, value in _fields(memoryview(data)):
        if number == 1 and wire == 0:  # ModelProto.ir_version
            ir_version = value
        elif number == 8 and wire == 2:  # ModelProto.opset_import: OperatorSetIdProto
            domain, version = "", 0
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    domain = bytes(v).decode("utf-8", "replace")
                elif n == 2 and w == 0:
                    version = v
            if domain in ("", "ai.onnx"):
                opset = version
    return ir_version, opset


def _walk(buf: memoryview, kind: str, found: list[str]) -> None:
    location, external = "", False
    for number, wire, value in _fields(buf):
        if kind == "tensor" and number == 14 and wire == 0 and value == _EXTERNAL:
            external = True
        elif kind == "tensor" and number == 13 and wire == 2:
            key, text = _entry(value)
            if key == "location":
                location = text
        elif wire == 2 and number in _SCHEMA[kind]:
            _walk(value, _SCHEMA[kind][number], found)
    if external:
        found.append(location)


def _entry(buf: memoryview) -> tuple[str, str]:
    key = text = ""
    for number, wire, value in _fields(buf):
        if wire == 2 and number in (1, 2):
            decoded = bytes(value).decode("utf-8", "replace")
            key, text = (decoded, text) if number == 1 else (key, decoded)
    return key, text


def _fields(buf: memoryview):
    i, n = 0, len(buf)
    while i < n:
        tag, i = _varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = None, i + 8
        elif wire == 5:
            value, i = None, i + 4
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        else:
            raise ProtobufError(f"unsupported protobuf wire type {wire}")
        if i > n:
            raise ProtobufError("truncated protobuf message")
        yield number, wire, value


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ProtobufError("truncated protobuf varint")
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7
