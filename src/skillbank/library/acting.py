"""Small-batch acting for ``PolicyLibrary.act``: a thread policy and per-call caches.

Thread policy. A batch of a few rows is a few small matrix-vector products: far too
little work to split across threads, and on a loaded machine an intra-op parallel region
waits at its barrier for a worker thread the OS has not scheduled (measured: 30 ms at
batch 1 with torch's default 2 threads beside a busy process, against 64 us idle). So
batches of at most ``SMALL_BATCH_ROWS`` rows run with ONE intra-op thread, set for the call
and restored after it (``torch.set_num_threads`` costs well under a microsecond). Larger
batches keep the caller's setting. torch has no per-call thread argument; the setting is
process-wide while the call runs, so a caller that acts from several Python threads at
once should set ``torch.set_num_threads(1)`` itself (then nothing is switched).

Caches. Everything a call needs that depends only on the skill names and on the library's
contents is computed once and reused while the library is unchanged: for one skill name,
its merged module and normalisation row; for a list of names (one per row), the slot ids,
their sort order and the per-row normalisation statistics. Per call there is then no
Python work that grows with the number of skills in the library.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn

from skillbank.models.actor_critic import ActorCritic

SMALL_BATCH_ROWS = 64  # rows at or below which act() runs with one intra-op thread
ROUTE_CACHE_ROWS = 256  # name lists up to this length have their routing cached
CACHE_ENTRIES = 8  # merged modules / routes kept (each merged module is a base-sized copy)

V = TypeVar("V")


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count."""
    prev = torch.get_num_threads()
    if prev == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def threads_for(rows: int, small_batch_rows: int = SMALL_BATCH_ROWS) -> int | None:
    """The intra-op thread count for a batch of ``rows`` rows (None = leave as it is)."""
    return 1 if rows <= small_batch_rows else None


class LRU(Generic[V]):
    """A small least-recently-used map."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, value: V) -> V:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Single:
    """One policy for every row: its merged module and its normalisation row."""

    key: tuple
    module: nn.Module  # the merged plain module (what ``base_model()`` is, skill applied)
    policy: Callable[[Tensor], Any]  # the part of it that computes the policy output
    mean: Tensor  # [1, obs_dim]
    inv_std: Tensor  # [1, obs_dim]


@dataclass(frozen=True)
class Route:
    """One skill per row: slot ids, their sort order, per-row normalisation."""

    ids: Tensor  # [B] slot ids in the caller's row order (-1 = base)
    order: Tensor | None  # [B] rows sorted by slot (None: already sorted)
    sorted_ids: Tensor  # [B] ids[order]
    mean: Tensor  # [B, obs_dim], caller's row order
    inv_std: Tensor  # [B, obs_dim]


def make_route(ids: Tensor, mean: Tensor, inv_std: Tensor) -> Route:
    """Route for slot ids ``[B]`` given the stacked statistics (last row = the base's)."""
    rows = torch.where(ids < 0, torch.full_like(ids, mean.shape[0] - 1), ids)
    if ids.numel() > 1 and not bool((ids[1:] >= ids[:-1]).all()):
        order: Tensor | None = torch.argsort(ids, stable=True)
        sorted_ids = ids[order]
    else:
        order, sorted_ids = None, ids
    return Route(ids, order, sorted_ids, mean[rows].contiguous(), inv_std[rows].contiguous())


def policy_part(module: nn.Module) -> Callable[[Tensor], Any]:
    """What computes the policy output of ``module``: an actor-critic's policy trunk (the
    value trunk is not needed to act), else the whole module."""
    return module.pi if isinstance(module, ActorCritic) else module


def policy_output(out: Any) -> Tensor:
    """The policy output of a forward pass (the first element of a tuple output)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def unsort(out: Any, order: Tensor) -> Any:
    """Rows of every tensor in ``out`` (tensor, tuple, list, dict) computed in ``order``
    back to the caller's order."""
    if isinstance(out, Tensor):
        return out.new_empty(out.shape).index_copy_(0, order, out)
    if isinstance(out, (tuple, list)):
        return type(out)(unsort(o, order) for o in out)
    if isinstance(out, dict):
        return {k: unsort(v, order) for k, v in out.items()}
    return out
