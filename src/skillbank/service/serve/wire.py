"""The Tinker SDK's wire formats: protobuf forward/backward requests, protobuf results of
forward_backward and sample, JSON datums (for clients that send JSON).

The schema is the SDK's own (``tinker.proto.tinker_public_pb2``), so this module follows
whatever the installed SDK speaks. Only what a request carries is decoded here; what the
values mean (lengths, losses, NaN) is checked in ``losses``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from skillbank.service.serve.errors import Unsupported, field_error

_NP = {"float32": np.float32, "int64": np.int64}


def _pb() -> Any:
    from tinker.proto import tinker_public_pb2

    return tinker_public_pb2


@dataclass
class Datum:
    """One training example: input tokens and named 1-D loss inputs (all as tensors)."""

    tokens: Tensor
    inputs: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class FwdBwd:
    """A decoded ``/forward_backward`` request."""

    model_id: str
    seq_id: int
    loss_fn: str
    config: dict[str, float]
    forward_only: bool
    data: list[Datum]


# ----------------------------------------------------------------------- decoding
def _dense(where: str, values: np.ndarray, shape: list[int]) -> Tensor:
    if shape and int(np.prod(shape)) != values.size:
        raise field_error(where, f"{values.size} values do not fill shape {shape}")
    arr = values.reshape(shape) if shape else values
    return torch.from_numpy(np.array(arr))


def _proto_tensor(where: str, msg: Any) -> Tensor:
    pb = _pb()
    kinds = {pb.DTYPE_FLOAT32: np.float32, pb.DTYPE_INT64: np.int64}
    if msg.dtype not in kinds:
        raise field_error(where, f"dtype {msg.dtype} not supported (float32 or int64)")
    dt = kinds[msg.dtype]
    shape = list(msg.shape)
    if msg.HasField("sparse_csr"):
        csr = msg.sparse_csr
        if len(shape) != 2:
            raise field_error(where, "a sparse tensor must be 2-D")
        vals = torch.from_numpy(np.frombuffer(csr.values, dtype=dt).copy())
        crow = torch.from_numpy(np.frombuffer(csr.crow_indices, dtype=np.int64).copy())
        col = torch.from_numpy(np.frombuffer(csr.col_indices, dtype=np.int64).copy())
        try:
            return torch.sparse_csr_tensor(crow, col, vals, tuple(shape)).to_dense()
        except RuntimeError as e:
            raise field_error(where, f"bad sparse layout ({e})") from None
    try:
        values = np.frombuffer(msg.dense, dtype=dt)
    except ValueError as e:
        raise field_error(where, f"bad dense bytes ({e})") from None
    return _dense(where, values, shape)


def decode_fwdbwd_proto(body: bytes) -> FwdBwd:
    """A protobuf ``ForwardBackwardRequest`` (what the SDK sends)."""
    from google.protobuf.message import DecodeError

    msg = _pb().ForwardBackwardRequest()
    try:
        msg.ParseFromString(body)
    except DecodeError as e:
        raise field_error("body", f"not a ForwardBackwardRequest protobuf ({e})") from None
    data = []
    for i, d in enumerate(msg.data):
        toks: list[np.ndarray] = []
        for j, chunk in enumerate(d.model_input):
            if chunk.WhichOneof("chunk") != "encoded_text":
                raise Unsupported(f"data[{i}].model_input.chunks[{j}]: only encoded_text chunks")
            toks.append(np.frombuffer(chunk.encoded_text.tokens, dtype=np.int32))
        tokens = torch.from_numpy(np.concatenate(toks).astype(np.int64)) if toks else None
        if tokens is None:
            raise field_error(f"data[{i}].model_input", "no tokens")
        inputs = {
            name: _proto_tensor(f"data[{i}].loss_fn_inputs.{name}", t)
            for name, t in d.loss_fn_inputs.items()
        }
        data.append(Datum(tokens, inputs))
    config: dict[str, float] = {k: float(v) for k, v in msg.loss_fn_config.items()}
    for k, v in msg.loss_fn_config_v2.items():
        if v.WhichOneof("value") == "number":
            config[k] = float(v.number)
    return FwdBwd(msg.model_id, int(msg.seq_id), msg.loss_fn, config, msg.forward_only, data)


def _json_tensor(where: str, td: Any) -> Tensor:
    if not isinstance(td, dict) or "data" not in td:
        raise field_error(where, "expected a TensorData object {data, dtype, shape}")
    dtype = td.get("dtype", "float32")
    if dtype not in _NP:
        raise field_error(where, f"dtype {dtype!r} not supported (float32 or int64)")
    try:
        values = np.asarray(td["data"], dtype=_NP[dtype]).reshape(-1)
    except (TypeError, ValueError) as e:
        raise field_error(where, f"bad data ({e})") from None
    return _dense(where, values, list(td.get("shape") or []))


def decode_fwdbwd_json(body: dict[str, Any], forward_only: bool) -> FwdBwd:
    """The same request as JSON (``ForwardBackwardRequest`` dumped with pydantic)."""
    inp = body.get("forward_backward_input")
    if not isinstance(inp, dict):
        raise field_error("forward_backward_input", "missing")
    data = []
    for i, d in enumerate(inp.get("data") or []):
        tokens = decode_tokens(f"data[{i}].model_input", (d or {}).get("model_input"))
        raw = (d or {}).get("loss_fn_inputs") or {}
        inputs = {k: _json_tensor(f"data[{i}].loss_fn_inputs.{k}", v) for k, v in raw.items()}
        data.append(Datum(torch.tensor(tokens, dtype=torch.int64), inputs))
    cfg = {k: float(v) for k, v in (inp.get("loss_fn_config") or {}).items() if _num(v)}
    seq = body.get("seq_id")
    return FwdBwd(
        str(body.get("model_id", "")),
        int(seq) if isinstance(seq, int) else 0,
        str(inp.get("loss_fn", "")),
        cfg,
        forward_only or bool(body.get("forward_only", False)),
        data,
    )


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def decode_tokens(where: str, model_input: Any) -> list[int]:
    """Token ids of a JSON ``ModelInput`` ({"chunks": [{"tokens": [...]}, ...]})."""
    if not isinstance(model_input, dict) or not isinstance(model_input.get("chunks"), list):
        raise field_error(where, "expected {chunks: [...]}")
    out: list[int] = []
    for j, chunk in enumerate(model_input["chunks"]):
        if not isinstance(chunk, dict) or chunk.get("type", "encoded_text") != "encoded_text":
            raise Unsupported(f"{where}.chunks[{j}]: only encoded_text chunks")
        toks = chunk.get("tokens")
        if not isinstance(toks, list) or not all(isinstance(t, int) for t in toks):
            raise field_error(f"{where}.chunks[{j}].tokens", "expected a list of integers")
        out.extend(toks)
    return out


# ----------------------------------------------------------------------- encoding
def _batched(arrays: list[np.ndarray], kind: str) -> Any:
    pb = _pb()
    dt = np.float32 if kind == "float32" else np.int64
    bt = pb.BatchedTensor()
    parts = [np.ascontiguousarray(a, dtype=dt).reshape(-1) for a in arrays]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([p.nbytes for p in parts])
    bt.data = b"".join(p.tobytes() for p in parts)
    bt.offsets = offsets.tobytes()
    bt.dtype = pb.DTYPE_FLOAT32 if kind == "float32" else pb.DTYPE_INT64
    return bt


def encode_fwdbwd_output(outputs: list[dict[str, np.ndarray]], metrics: dict[str, float]) -> bytes:
    """A protobuf ``ForwardBackwardOutput`` (one ArrayRecord, float32 fields)."""
    msg = _pb().ForwardBackwardOutput()
    msg.loss_fn_output_type = "ArrayRecord"
    for k, v in metrics.items():
        msg.metrics[k] = float(v) if math.isfinite(v) else float("nan")
    if outputs:
        rec = msg.loss_fn_outputs.add()
        rec.type_tag = "ArrayRecord"
        rec.num_datums = len(outputs)
        for name in outputs[0]:
            rec.fields[name].CopyFrom(_batched([o[name] for o in outputs], "float32"))
    return msg.SerializeToString()


@dataclass
class Sequence:
    """One sampled sequence."""

    tokens: list[int]
    logprobs: list[float]
    stop_reason: str  # "stop" | "length"


def encode_sample_output(seqs: list[Sequence], prompt_logprobs: list[float] | None) -> bytes:
    """A protobuf ``SampleResponse``."""
    pb = _pb()
    msg = pb.SampleResponse()
    for s in seqs:
        out = msg.sequences.add()
        out.stop_reason = pb.STOP_REASON_STOP if s.stop_reason == "stop" else pb.STOP_REASON_LENGTH
        out.tokens = np.asarray(s.tokens, dtype=np.int32).tobytes()
        out.logprobs = np.asarray(s.logprobs, dtype=np.float32).tobytes()
    if prompt_logprobs is not None:
        msg.prompt_logprobs = np.asarray(prompt_logprobs, dtype=np.float32).tobytes()
    return msg.SerializeToString()
