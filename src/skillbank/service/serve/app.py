"""The HTTP routes (Starlette): the Tinker REST protocol as the official SDK speaks it.

Every route but ``healthz`` needs an API key (header ``X-API-Key``, compared in constant
time). Bodies over ``max_request_bytes`` get HTTP 413. A refused call answers in the SDK's
error shape ``{"error": ..., "category": "user"}`` with a 4xx status (never 5xx, which the
SDK retries for minutes); a call that fails later fails its future with the same shape.
Routes the server does not implement answer 404 with a message saying so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from skillbank.service.serve.auth import KeyRing
from skillbank.service.serve.errors import ServeError, field_error
from skillbank.service.serve.ops import Server
from skillbank.service.serve.wire import decode_fwdbwd_json, decode_fwdbwd_proto
from skillbank.service.serve.worker import Future, Op

POLL_S = 10.0
"""How long retrieve_future waits for a result before answering try_again."""
PROTO = "application/x-protobuf"
CLIENT_CONFIG = MappingProxyType(
    {
        "pjwt_auth_enabled": False,
        "use_pyqwest_transport": False,
        "proto_compress_fwdbwd": False,
        "parallel_fwdbwd_chunks": True,
        "sample_use_retrieve_futures": False,
        "custom_loss_server_side": False,
        "sample_join_sampling_session": False,
    }
)
Handler = Callable[[Request, str], Awaitable[Any]]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeError(f"request body of {declared} bytes is over the limit of {limit}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServeError(f"request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    data = b"".join(chunks)
    if request.headers.get("content-encoding") == "zstd":
        import zstandard

        try:
            data = zstandard.ZstdDecompressor().decompress(data, max_output_size=limit)
        except zstandard.ZstdError as e:
            raise field_error("body", f"bad zstd data ({e})") from None
    return data


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise field_error("body", f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise field_error("body", "expected a JSON object")
    return data


def build_app(server: Server, keys: KeyRing) -> Starlette:
    limit = server.cfg.max_request_bytes

    async def body_json(request: Request) -> dict[str, Any]:
        return parse_json(await read_body(request, limit))

    def route(path: str, fn: Handler, method: str | list[str] = "POST", auth: bool = True) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                owner = keys.check(request.headers.get("x-api-key")) if auth else ""
                if owner is None:
                    raise ServeError("field 'X-API-Key': missing or wrong API key", 401)
                out = await fn(request, owner)
            except ServeError as e:
                return JSONResponse(e.body(), status_code=e.status)
            return out if isinstance(out, Response) else JSONResponse(out)

        return Route(path, endpoint, methods=[method] if isinstance(method, str) else method)

    def submit(op: Op, **extra: Any) -> dict[str, Any]:
        server.worker.submit(op)
        return {"request_id": op.future.request_id, "model_id": op.model_id, **extra}

    async def health(request: Request, owner: str) -> Any:
        return {"status": "ok"}

    async def capabilities(request: Request, owner: str) -> Any:
        return server.capabilities()

    async def client_config(request: Request, owner: str) -> Any:
        await body_json(request)
        return dict(CLIENT_CONFIG)

    async def dynamic_config(request: Request, owner: str) -> Any:
        await body_json(request)
        return {}

    async def create_session(request: Request, owner: str) -> Any:
        await body_json(request)
        return server.create_session(owner)

    async def heartbeat(request: Request, owner: str) -> Any:
        await body_json(request)
        return {"type": "session_heartbeat"}

    async def telemetry(request: Request, owner: str) -> Any:
        await read_body(request, limit)
        return {"status": "accepted"}

    async def create_model(request: Request, owner: str) -> Any:
        return submit(server.op_create_model(owner, await body_json(request)))

    async def get_info(request: Request, owner: str) -> Any:
        return server.get_info(owner, await body_json(request))

    async def forward_backward(request: Request, owner: str) -> Any:
        raw = await read_body(request, limit)
        if request.headers.get("content-type", "").startswith("application/json"):
            forward = request.url.path.endswith("/forward")
            req = decode_fwdbwd_json(parse_json(raw), forward)
        else:
            req = decode_fwdbwd_proto(raw)
        return submit(server.op_pass(owner, req))

    async def optim_step(request: Request, owner: str) -> Any:
        return submit(server.op_optim_step(owner, await body_json(request)))

    async def save_weights(request: Request, owner: str) -> Any:
        return submit(server.op_save_state(owner, await body_json(request)))

    async def save_sampler(request: Request, owner: str) -> Any:
        return submit(server.op_save_sampler(owner, await body_json(request)))

    async def load_weights(request: Request, owner: str) -> Any:
        return submit(server.op_load_state(owner, await body_json(request)))

    async def create_sampling(request: Request, owner: str) -> Any:
        return server.create_sampling_session(owner, await body_json(request))

    async def get_sampler(request: Request, owner: str) -> Any:
        sid = request.path_params["sid"]
        s = server.sampler(owner, sid)
        return {"sampler_id": sid, "base_model": server.base_name, "model_path": s.model_path}

    async def asample(request: Request, owner: str) -> Any:
        op, ids = server.op_sample(owner, await body_json(request))
        return submit(op, sample_sequence_ids=ids)

    async def checkpoints(request: Request, owner: str) -> Any:
        return server.list_checkpoints(owner, request.path_params["mid"])

    async def retrieve(request: Request, owner: str) -> Any:
        body = await body_json(request)
        fut: Future = server.worker.future(str(body.get("request_id", "")), owner)
        try:
            await asyncio.wait_for(fut.event.wait(), timeout=POLL_S)
        except asyncio.TimeoutError:
            return {"type": "try_again", "request_id": fut.request_id, "queue_state": "active"}
        if fut.error is not None:
            return fut.error.body()
        if fut.proto is not None:
            return Response(fut.proto, media_type=PROTO)
        return fut.json

    async def cancel(request: Request, owner: str) -> Any:
        await body_json(request)
        return {}

    async def unsupported(request: Request, owner: str) -> Any:
        what = f"{request.method} {request.url.path}"
        return JSONResponse(
            {"error": f"not supported by skillbank serve: {what}", "category": "user"}, 404
        )

    routes = [
        route("/api/v1/healthz", health, "GET", auth=False),
        route("/api/v1/get_server_capabilities", capabilities, "GET"),
        route("/api/v1/client/config", client_config),
        route("/api/v1/client/dynamic_config", dynamic_config),
        route("/api/v1/create_session", create_session),
        route("/api/v1/session_heartbeat", heartbeat),
        route("/api/v1/telemetry", telemetry),
        route("/api/v1/create_model", create_model),
        route("/api/v1/get_info", get_info),
        route("/api/v1/forward_backward", forward_backward),
        route("/api/v1/forward", forward_backward),
        route("/api/v1/optim_step", optim_step),
        route("/api/v1/save_weights", save_weights),
        route("/api/v1/save_weights_for_sampler", save_sampler),
        route("/api/v1/load_weights", load_weights),
        route("/api/v1/create_sampling_session", create_sampling),
        route("/api/v1/samplers/{sid}", get_sampler, "GET"),
        route("/api/v1/asample", asample),
        route("/api/v1/retrieve_future", retrieve),
        route("/api/v1/cancel_future", cancel),
        route("/api/v1/training_runs/{mid}/checkpoints", checkpoints, "GET"),
    ]
    routes.append(route("/{rest:path}", unsupported, ["GET", "POST", "PUT", "PATCH", "DELETE"]))
    return Starlette(routes=routes)
