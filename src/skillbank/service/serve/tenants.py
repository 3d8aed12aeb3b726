"""Which tenant holds which slot; loading, idle unloading and the sampler-slot cache.

Used from the worker thread only. A tenant known from ``tenant.json`` but not resident is
loaded on its next call into a free slot: from its newest STABLE checkpoint (adapter and
Adam state), or, if it never saved, freshly from its recorded rank and seed. When every
slot is taken, a tenant idle past ``idle_timeout_s`` is saved and unloaded to make room;
otherwise the call fails with "no free slot".
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from skillbank.service.serve.engine import Engine
from skillbank.service.serve.errors import ServeError, not_found
from skillbank.service.serve.store import Store, Tenant


class NoFreeSlot(ServeError):
    def __init__(self, n: int) -> None:
        super().__init__(
            f"no free slot: all {n} tenant slots are in use (server flag --max-tenants); "
            "retry later or save_state and close another training client",
            429,
        )


class Tenants:
    """The tenant table and the slots of the engine."""

    def __init__(self, engine: Engine, store: Store, idle_timeout_s: float) -> None:
        self.engine, self.store = engine, store
        self.idle_timeout_s = idle_timeout_s
        self.lock = threading.Lock()
        self.known: dict[str, Tenant] = {t.model_id: t for t in store.tenants()}
        self.slot_of: dict[str, int] = {}
        self.last_used: dict[str, float] = {}
        self.samplers: OrderedDict[tuple[str, str, int], int] = OrderedDict()

    # ------------------------------------------------------------ lookups
    def get(self, model_id: str, owner: str, field: str = "model_id") -> Tenant:
        with self.lock:
            t = self.known.get(model_id)
        if t is None or t.owner != owner:
            raise not_found("model", field, model_id)
        return t

    def snapshot(self) -> dict[str, Tenant]:
        with self.lock:
            return dict(self.known)

    # -------------------------------------------------------------- slots
    def _free_slot(self) -> int:
        used = set(self.slot_of.values())
        for k in range(self.engine.train_slots):
            if k not in used:
                return k
        now = time.time()
        idle = [
            (self.last_used.get(m, 0.0), m)
            for m in self.slot_of
            if now - self.last_used.get(m, 0.0) > self.idle_timeout_s
        ]
        if not idle:
            raise NoFreeSlot(self.engine.train_slots)
        return self.unload(min(idle)[1])

    def add(self, t: Tenant) -> int:
        """A new tenant in a free slot (fresh adapter from its rank and seed)."""
        slot = self._free_slot()
        self.engine.init_slot(slot, t.rank, t.seed, t.groups)
        self.store.save_tenant(t)
        with self.lock:
            self.known[t.model_id] = t
        self.slot_of[t.model_id] = slot
        self.last_used[t.model_id] = time.time()
        return slot

    def slot(self, t: Tenant) -> int:
        """The tenant's slot, loading it first if it is not resident."""
        self.last_used[t.model_id] = time.time()
        if t.model_id in self.slot_of:
            return self.slot_of[t.model_id]
        slot = self._free_slot()
        step = self.store.newest_checkpoint(t)
        if step is None:
            self.engine.init_slot(slot, t.rank, t.seed, t.groups)
        else:
            state, optim = self.store.read_state(t, step)
            self.engine.load_slot(slot, state, optim)
        self.slot_of[t.model_id] = slot
        return slot

    def unload(self, model_id: str) -> int:
        """Save the tenant's state (``step_<N>``) and free its slot; returns the slot."""
        slot = self.slot_of.pop(model_id)
        t = self.known[model_id]
        step = self.engine.step_of(slot)
        state = self.engine.lora_state(slot)
        self.store.save_state(t, step, state, self.engine.moments(slot), f"step_{step}")
        self.engine.mm.zero_slot(slot)
        return slot

    def unload_idle(self) -> list[str]:
        now = time.time()
        gone = [m for m in self.slot_of if now - self.last_used.get(m, 0.0) > self.idle_timeout_s]
        for m in gone:
            self.unload(m)
        return gone

    def save_all(self) -> None:
        for m in list(self.slot_of):
            self.unload(m)

    # ------------------------------------------------------------ samplers
    def sampler_slot(self, t: Tenant, kind: str, step: int) -> int:
        """A sampler slot holding the saved weights (loaded on a miss, LRU replaced)."""
        key = (t.model_id, kind, step)
        if key in self.samplers:
            self.samplers.move_to_end(key)
            return self.samplers[key]
        first = self.engine.train_slots
        used = set(self.samplers.values())
        free = [k for k in range(first, first + self.engine.sampler_slots) if k not in used]
        slot = free[0] if free else self.samplers.popitem(last=False)[1]
        state = self.store.read_sampler(t, kind, step)
        self.engine.load_slot(slot, state, None)
        self.samplers[key] = slot
        return slot
