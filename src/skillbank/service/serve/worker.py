"""The worker thread: one queue of model operations, the fusion window, and futures.

Every call that touches the model is an ``Op`` in one FIFO queue, executed by one thread
(so the model, its optimiser and the slot table need no locks). ``forward_backward`` and
``forward`` ops of *different* tenants are fused: the worker takes the first one, then
waits up to ``fuse_window_ms`` for the calls of the other tenants that were active in the
last seconds, and runs all of them as one mixed-batch pass. An op never overtakes an
earlier op of the same tenant (a tenant's optim_step stays between its passes). Queued
sample ops run as one mixed batch too.

Each op has a ``Future``: the HTTP handler answers at once with its request id, and
``retrieve_future`` long-polls it (an ``asyncio.Event`` set from this thread).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skillbank.service.serve.engine import Work
from skillbank.service.serve.errors import ServeError, not_found
from skillbank.service.serve.sampling import SampleJob

ACTIVE_S = 2.0
"""The window waits only for tenants of the previous fused pass whose last call is this
recent (a tenant that stopped, or one running alone, costs no waiting)."""
MAX_FUTURES = 20_000


@dataclass
class Future:
    """A pending or finished result: JSON, protobuf bytes, or an error."""

    request_id: str
    owner: str
    model_id: str | None
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    json: dict[str, Any] | None = None
    proto: bytes | None = None
    error: ServeError | None = None

    def finish(self, json: Any = None, proto: bytes | None = None, error: Any = None) -> None:
        self.json, self.proto, self.error = json, proto, error
        self.loop.call_soon_threadsafe(self.event.set)


@dataclass
class Op:
    kind: str  # "pass" (forward/forward_backward), "optim", "sample", or "call"
    owner: str
    model_id: str | None
    future: Future
    run: Callable[[], Any] | None = None  # "call": returns the JSON result
    prepare: Callable[[], Work] | None = None  # "pass": checks and resolves the slot
    job: Callable[[], SampleJob] | None = None  # "sample"
    step: Callable[[], tuple[int, dict[str, Any]]] | None = None  # "optim": (slot, adam)


class Worker:
    """Owns the queue and the thread; ``engine_fns`` runs fused passes and samples."""

    def __init__(
        self,
        fused: Callable[[list[Work]], list[Any]],
        sample: Callable[[list[SampleJob]], list[bytes]],
        optim: Callable[[list[tuple[int, dict[str, Any]]]], list[Any]],
        window_s: float,
        idle: Callable[[], Any],
    ) -> None:
        self._fused, self._sample, self._optim, self._idle = fused, sample, optim, idle
        self.window_s = window_s
        self._queue: deque[Op] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._recent: dict[str, float] = {}
        self._last_batch: set[str] = set()
        self.futures: OrderedDict[str, Future] = OrderedDict()
        self.stats = {"passes": 0, "fused_ops": 0, "largest": 0}
        self._thread = threading.Thread(target=self._main, name="serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------- futures
    def new_future(self, owner: str, model_id: str | None) -> Future:
        fut = Future(f"req-{secrets.token_hex(10)}", owner, model_id, asyncio.get_running_loop())
        self.futures[fut.request_id] = fut
        while len(self.futures) > MAX_FUTURES:
            self.futures.popitem(last=False)
        return fut

    def future(self, request_id: str, owner: str) -> Future:
        fut = self.futures.get(request_id)
        if fut is None or fut.owner != owner:
            raise not_found("request", "request_id", request_id)
        return fut

    def submit(self, op: Op) -> None:
        with self._cond:
            self._queue.append(op)
            self._cond.notify_all()

    # ---------------------------------------------------------------- loop
    def _main(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait(timeout=5.0)
                    if not self._queue:
                        self._guard(self._idle)
                if self._stop and not self._queue:
                    return
                op = self._queue.popleft()
            if op.kind == "pass":
                self._run_batch(self._gather(op), "prepare")
            elif op.kind == "optim":
                self._run_batch([op, *self._take(lambda o: o.kind == "optim")], "step")
            elif op.kind == "sample":
                self._run_batch([op, *self._take(lambda o: o.kind == "sample")], "job")
            else:
                self._run_call(op)

    def _take(self, want: Callable[[Op], bool]) -> list[Op]:
        """Queued ops matching ``want`` that no earlier op of the same tenant precedes."""
        with self._cond:
            taken: list[Op] = []
            blocked: set[str | None] = set()
            keep: deque[Op] = deque()
            for o in self._queue:
                if want(o) and o.model_id not in blocked:
                    taken.append(o)
                else:
                    blocked.add(o.model_id)
                    keep.append(o)
            self._queue = keep
        return taken

    def _gather(self, first: Op) -> list[Op]:
        batch = [first]
        now = time.monotonic()
        expected = {m for m in self._last_batch if now - self._recent.get(m, 0.0) < ACTIVE_S}
        deadline = now + self.window_s
        while True:
            batch += self._take(lambda o: o.kind == "pass")
            have = {o.model_id for o in batch}
            left = deadline - time.monotonic()
            if expected <= have or left <= 0:
                break
            with self._cond:
                self._cond.wait(timeout=left)
        now = time.monotonic()
        for o in batch:
            self._recent[str(o.model_id)] = now
        self._last_batch = {str(o.model_id) for o in batch}
        return batch

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ServeError:
            return None
        except Exception:  # a bug must not stop the worker; it is printed
            traceback.print_exc()
            return None

    def _run_call(self, op: Op) -> None:
        assert op.run is not None
        try:
            op.future.finish(json=op.run())
        except ServeError as e:
            op.future.finish(error=e)
        except Exception as e:
            traceback.print_exc()
            op.future.finish(
                error=ServeError(f"internal error: {type(e).__name__}: {e}", 500, "server")
            )

    def _run_batch(self, ops: list[Op], what: str) -> None:
        """Fused passes (``what="prepare"``), sample jobs (``"job"``) or optimiser steps
        (``"step"``) of several tenants, run together; each op gets its result or error."""
        ready, items = [], []
        runs: dict[str, Callable[[list[Any]], list[Any]]] = {
            "prepare": self._fused,
            "job": self._sample,
            "step": self._optim,
        }
        run = runs[what]
        for op in ops:
            make = getattr(op, what)
            assert make is not None
            try:
                items.append(make())
                ready.append(op)
            except ServeError as e:
                op.future.finish(error=e)
        if not items:
            return
        try:
            outs = run(items)
        except Exception as e:
            traceback.print_exc()
            for op in ready:
                op.future.finish(error=ServeError(f"internal error: {e}", 500, "server"))
            return
        if what == "prepare":
            self.stats["passes"] += 1
            self.stats["fused_ops"] += len(items)
            self.stats["largest"] = max(self.stats["largest"], len(items))
        for op, out in zip(ready, outs):
            if isinstance(out, ServeError):
                op.future.finish(error=out)
            elif isinstance(out, bytes):
                op.future.finish(proto=out)
            else:
                op.future.finish(json={"metrics": out})
