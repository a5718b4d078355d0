"""An Open Inference Protocol inference request -> model items, every field checked before anything is built.

The order is what keeps a request's cost bounded by its size: the shape is checked first (a list of
one or two non-negative integers, `true` is not one, within the API's limits: N <= MAX_TEXTS texts,
T <= max_tokens tokens), so a 70-byte `shape: [1000000000000, 0]` is a 422 before any row exists;
then the data must hold exactly the elements the shape says, either flat (row-major, as the protocol
says) or nested row by row with every row of the shape's width: ragged rows are a 400 naming the row,
never re-cut. Binary data (`parameters.binary_data_size`, serve.http.v2_binary) is counted element by
element against the shape as it is read. Every string of the request outside the tensor data (id,
names, datatypes, parameters and their keys) is checked for lone surrogates (which JSON can carry
but UTF-8 cannot), the data by `serve.http.api` as it prepares each text or token.

`id` is a string, as the protocol says: any other type is a 400, so the reply's `id` is always the
request's string. Request parameters: `binary_data_output` (bool) asks for every output in binary;
others (Triton's `priority`, `timeout`, ...) are scalars and are ignored. Requested outputs may carry
`binary_data` (bool). Parameters of extensions this server does not implement (shared memory,
classification) are a 400 naming the extension, rather than an answer the client would not find.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from serve.http.api import MAX_TEXTS, ApiError, check_unicode, decode_json, prepare_items
from serve.http.v2_binary import decode_bytes, split_body
from serve.runtime import Item, ServingModel

WHERE = "inputs[0]"
TENSOR = re.compile(r"inputs\[\d+\]")  # where an input tensor's `data` is: checked as texts or tokens
UNSUPPORTED = {
    "shared_memory_region": "shared memory",
    "shared_memory_byte_size": "shared memory",
    "shared_memory_offset": "shared memory",
    "classification": "classification",
}


@dataclass
class InferCall:
    """What an inference request asks for: the items, each output by name with whether it goes binary."""

    items: list[Item]
    outputs: dict[str, bool]
    id: str | None


def parse_infer(
    body: bytes, model: ServingModel, *, json_length: int | None, inputs: list[str], outputs: list[str]
) -> InferCall:
    """The request body (JSON, then binary tensors when `json_length` is given) -> what to run."""
    header, binary = split_body(body, json_length)
    data = decode_json(header)
    if not isinstance(data, dict):
        raise ApiError(400, f"expected an inference request object; got {type(data).__name__}")
    check_strings(data)
    request_id = data.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(400, f'"id" must be a string (the protocol\'s type); got {type(request_id).__name__}')
    parameters = check_parameters(data.get("parameters"), "parameters")
    binary_default = flag(parameters, "binary_data_output", "parameters")
    tensors = data.get("inputs")
    if not isinstance(tensors, list) or len(tensors) != 1:
        raise ApiError(400, 'expected "inputs": a list of exactly one tensor')
    items = input_items(tensors[0], binary, model, inputs)
    return InferCall(items, requested_outputs(data.get("outputs"), outputs, binary_default), request_id)


def check_strings(data: dict[str, Any]) -> None:
    """Every key and string value outside the tensors' data is valid Unicode (no lone surrogate)."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            check_unicode(where or "the request", value)
        elif isinstance(value, dict):
            for key, item in value.items():
                check_unicode(f"a key of {where or 'the request'}", key)
                if not (key == "data" and TENSOR.fullmatch(where)):
                    stack.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))


def check_parameters(value: Any, where: str) -> dict[str, Any]:
    """A `parameters` object: scalar values, none of an extension this server lacks."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"{where} must be an object; got {type(value).__name__}")
    for key, item in value.items():
        if key in UNSUPPORTED:
            raise ApiError(400, f"{where}.{key}: the {UNSUPPORTED[key]} extension is not supported by this server")
        if not isinstance(item, (str, int, float, bool)):
            raise ApiError(400, f"{where}.{key} must be a string, number or boolean; got {type(item).__name__}")
    return value


def flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"{where}.{key} must be true or false; got {str(value)[:40]}")
    return value


def check_shape(shape: Any, name: str, model: ServingModel) -> list[int]:
    """`shape` as the input `name` takes it, within the API's limits; nothing is built from it before this."""
    wanted = "[N, T]" if name == "tokens" else "[N] or [N, 1]"
    if not (
        isinstance(shape, list)
        and len(shape) in ((2,) if name == "tokens" else (1, 2))
        and all(type(d) is int and d >= 0 for d in shape)  # type(): a bool is an int to isinstance
    ):
        raise ApiError(400, f"{WHERE}.shape must be {wanted}, non-negative integers; got {str(shape)[:60]}")
    if name == "text" and len(shape) == 2 and shape[1] != 1:
        raise ApiError(400, f"{WHERE}.shape must be {wanted}; got {str(shape)[:60]}")
    if shape[0] > MAX_TEXTS:
        raise ApiError(422, f"{WHERE}.shape {str(shape)[:60]}: {str(shape[0])[:30]} entries; the limit is {MAX_TEXTS}")
    if name == "tokens" and shape[1] > model.max_tokens:
        raise ApiError(
            422, f"{WHERE}.shape {str(shape)[:60]}: rows of {str(shape[1])[:30]} tokens; max_tokens={model.max_tokens}"
        )
    return shape


def input_items(tensor: Any, binary: bytes, model: ServingModel, names: list[str]) -> list[Item]:
    if not isinstance(tensor, dict) or tensor.get("name") not in names:
        got = tensor.get("name") if isinstance(tensor, dict) else tensor
        raise ApiError(400, f"{WHERE}.name must be one of {names}; got {str(got)[:40]!r}")
    name = tensor["name"]
    if tensor.get("datatype") != "BYTES":
        raise ApiError(400, f'{WHERE}.datatype must be "BYTES"; got {str(tensor.get("datatype"))[:20]!r}')
    shape = check_shape(tensor.get("shape"), name, model)
    count = math.prod(shape)
    size = check_parameters(tensor.get("parameters"), f"{WHERE}.parameters").get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise ApiError(400, f"{WHERE}.parameters.binary_data_size must be a non-negative integer; got {size!r:.40}")
        if "data" in tensor:
            raise ApiError(400, f"{WHERE} has both data and binary_data_size; send one")
        if size != len(binary):
            raise ApiError(400, f"{WHERE}.parameters.binary_data_size is {size}; {len(binary)} bytes follow the JSON")
        flat = decode_bytes(binary, count, f"{WHERE}'s binary data")
    else:
        if binary:
            raise ApiError(400, f"{len(binary)} bytes follow the JSON, but {WHERE} has no binary_data_size")
        flat = elements(tensor.get("data"), shape)
    if name == "text":
        return prepare_items("texts", flat, model, f"{WHERE}.data")
    width = shape[1]
    rows = [strip_padding(flat[i * width : (i + 1) * width]) for i in range(shape[0])]
    return prepare_items("tokens", rows, model, f"{WHERE}.data")


def elements(data: Any, shape: list[int]) -> list[Any]:
    """The tensor's elements, row-major: `data` flat, or nested row by row exactly as `shape` says."""
    where, count = f"{WHERE}.data", math.prod(shape)
    if not isinstance(data, list):
        raise ApiError(400, f"{where} must be a list; got {type(data).__name__}")
    if not any(isinstance(x, list) for x in data):
        if len(data) != count:
            raise ApiError(400, f"{where} has {len(data)} elements; shape {shape} needs {count}")
        return data
    if len(shape) != 2:
        raise ApiError(400, f"{where} must be a flat list of {count} elements for shape {shape}")
    if len(data) != shape[0]:
        raise ApiError(400, f"{where} has {len(data)} rows; shape {shape} needs {shape[0]} (or {count} elements flat)")
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != shape[1]:
            got = f"{len(row)} elements" if isinstance(row, list) else type(row).__name__
            raise ApiError(400, f"{where}[{i}] has {got}; shape {shape} needs rows of {shape[1]}")
    return [x for row in data for x in row]


def strip_padding(row: list[Any]) -> list[Any]:
    """A tokens row without its trailing "" (a token is never empty, so the padding is unambiguous)."""
    end = len(row)
    while end and row[end - 1] == "":
        end -= 1
    return row[:end]


def requested_outputs(asked: Any, known: list[str], binary_default: bool) -> dict[str, bool]:
    """Output name -> whether it goes binary; every output when none is asked for."""
    if asked is None or asked == []:
        return {name: binary_default for name in known}
    if not isinstance(asked, list):
        raise ApiError(400, f'"outputs" must be a list of {{"name": ...}} with names from {known}')
    chosen: dict[str, bool] = {}
    for i, output in enumerate(asked):
        name = output.get("name") if isinstance(output, dict) else None
        if name not in known:
            raise ApiError(
                400, f'"outputs" must be a list of {{"name": ...}} with names from {known}; got {str(name)[:40]!r}'
            )
        if name in chosen:
            raise ApiError(400, f"outputs[{i}] asks for {name!r} a second time")
        where = f"outputs[{i}].parameters"
        parameters = check_parameters(output.get("parameters"), where)
        chosen[name] = flag(parameters, "binary_data", where) if "binary_data" in parameters else binary_default
    return chosen
