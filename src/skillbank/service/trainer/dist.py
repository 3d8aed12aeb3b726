"""Data parallelism for the trainer on ``torch.distributed`` (launched by ``torchrun``).

Every rank holds the whole model and the whole ``SlotAdam`` state. Rank 0 (the *driver*)
runs the ordinary trainer: it scans the outputs folder, reads rollouts and decides; each
change of a slot and each update is sent to the other ranks (*followers*) as a command
(JSON, no pickle) plus tensors, and every rank applies it in the same order.

An update splits every minibatch across the ranks (``RowSplit``): each run's rows of the
minibatch are cut into ``world_size`` contiguous chunks and rank r runs forward/backward on
chunk r only. The outputs of all ranks are summed into the full ``[B, ...]`` outputs
(remote rows detached), so every rank computes the loss and its statistics of the whole
minibatch exactly as one process would, and its gradient is its rows' share of the global
gradient; ``all_reduce_grads`` sums those shares (over the active slots only) before the
per-slot NaN check and gradient clipping, so clipping sees the global gradient and every
rank takes the same ``SlotAdam`` step.

World size 1 never touches this module's collectives (the trainer runs as before).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor

Forward = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

DTYPES = {
    str(d): d
    for d in (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int8,
        torch.bool,
        torch.uint8,
    )
}
"""The dtypes ``broadcast_tensors`` sends (by name: the header is JSON)."""


def launched_world_size() -> int:
    """World size announced by ``torchrun`` (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def choose_backend() -> str:
    """nccl with CUDA, gloo on CPU (``SKILLBANK_DIST_BACKEND`` overrides)."""
    forced = os.environ.get("SKILLBANK_DIST_BACKEND")
    if forced:
        return forced
    return "nccl" if torch.cuda.is_available() else "gloo"


@dataclass
class Dist:
    """This process's place in the trainer's process group."""

    rank: int
    world_size: int
    device: torch.device
    """Where tensors go for collectives (cpu for gloo, cuda:LOCAL_RANK for nccl)."""

    @property
    def is_driver(self) -> bool:
        return self.rank == 0

    # ----------------------------------------------------------- plumbing
    def _to(self, t: Tensor) -> Tensor:
        return t.to(self.device) if t.device != self.device else t

    def broadcast_(self, t: Tensor, src: int = 0) -> Tensor:
        """Broadcast ``t`` in place from ``src``; returns ``t`` (on its own device)."""
        buf = self._to(t.contiguous())
        tdist.broadcast(buf, src)
        if buf is not t:
            t.copy_(buf.to(t.device))
        return t

    def all_reduce_(self, t: Tensor, op: Any = None) -> Tensor:
        """Sum (or ``op``) ``t`` over the ranks, in place."""
        buf = self._to(t.contiguous())
        tdist.all_reduce(buf, op=tdist.ReduceOp.SUM if op is None else op)
        if buf is not t:
            t.copy_(buf.to(t.device))
        return t

    def barrier(self) -> None:
        self.all_reduce_(torch.zeros(1))

    # --------------------------------------------------------------- JSON
    def broadcast_json(self, obj: Any = None, src: int = 0) -> Any:
        """``obj`` of rank ``src`` on every rank (JSON bytes in a tensor: never pickle)."""
        data = json.dumps(obj).encode() if self.rank == src else b""
        size = self.broadcast_(torch.tensor([len(data)], dtype=torch.int64), src)
        buf = torch.zeros(int(size[0]), dtype=torch.uint8)
        if self.rank == src:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        self.broadcast_(buf, src)
        return obj if self.rank == src else json.loads(buf.numpy().tobytes().decode())

    def broadcast_tensors(
        self, tensors: dict[str, Tensor] | None, src: int = 0
    ) -> dict[str, Tensor]:
        """A dict of CPU tensors of rank ``src`` on every rank (header as JSON)."""
        header = None
        if self.rank == src:
            assert tensors is not None
            header = [[k, str(t.dtype), list(t.shape)] for k, t in tensors.items()]
        header = self.broadcast_json(header, src)
        out: dict[str, Tensor] = {}
        for key, dtype, shape in header:
            if dtype not in DTYPES:
                raise ValueError(f"tensor {key!r}: dtype {dtype} cannot be broadcast")
            if self.rank == src:
                assert tensors is not None
                t = tensors[key].detach().contiguous().clone()
            else:
                t = torch.empty(shape, dtype=DTYPES[dtype])
            out[key] = self.broadcast_(t, src)
        return out

    def agree(self, error: str | None) -> str | None:
        """Every rank passes its own error (or None); every rank gets the error of the
        lowest failing rank (or None if all succeeded)."""
        first = torch.tensor([self.world_size if error is None else self.rank])
        src = int(self.all_reduce_(first, tdist.ReduceOp.MIN)[0])
        if src == self.world_size:
            return None
        return str(self.broadcast_json(error if self.rank == src else None, src))

    def gather_tensors(self, mine: dict[str, Tensor]) -> dict[str, Tensor]:
        """Union of every rank's dict (rank r's keys broadcast from rank r)."""
        merged: dict[str, Tensor] = {}
        for src in range(self.world_size):
            merged.update(self.broadcast_tensors(mine if src == self.rank else None, src))
        return merged

    # ----------------------------------------------------------- gradients
    @torch.no_grad()
    def all_reduce_grads(self, params: Sequence[Tensor], slots: Sequence[int]) -> None:
        """Sum the gradients of the slots ``slots`` of stacked ``[S, ...]`` parameters over
        the ranks, as ONE flat all_reduce. A missing gradient counts as zeros."""
        idx = torch.tensor(list(slots), dtype=torch.long)
        parts = []
        for p in params:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            parts.append(g.index_select(0, idx).reshape(-1))
        flat = self.all_reduce_(torch.cat(parts))
        offset = 0
        for p, part in zip(params, parts):
            n = part.numel()
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.index_copy_(0, idx, flat[offset : offset + n].view(-1, *p.shape[1:]))
            offset += n

    def split_forward(self, forward: Forward) -> RowSplit:
        return RowSplit(self, forward)


class RowSplit:
    """``forward(obs [B, d], task [B])`` over this rank's share of the rows; the outputs of
    the full minibatch are assembled from every rank (see the module docstring)."""

    def __init__(self, dist: Dist, forward: Forward) -> None:
        self.dist, self.forward = dist, forward

    def local_rows(self, task: Tensor) -> Tensor:
        """Row indices of this rank: chunk ``rank`` of each task's rows (in order)."""
        w, r = self.dist.world_size, self.dist.rank
        chunks = [
            torch.nonzero(task == k).squeeze(1).tensor_split(w)[r]
            for k in torch.unique(task).tolist()
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)

    def __call__(self, obs: Tensor, task: Tensor) -> tuple[Tensor, Tensor]:
        idx = self.local_rows(task)  # [b]
        pi_local, v_local = self.forward(obs[idx], task[idx])  # [b, n_out], [b]
        n_out = pi_local.shape[1]
        full = torch.zeros(obs.shape[0], n_out + 1, dtype=pi_local.dtype)  # [B, n_out + 1]
        full[idx] = torch.cat([pi_local, v_local.unsqueeze(1)], dim=1).detach()
        self.dist.all_reduce_(full)
        pi = full[:, :n_out].index_put((idx,), pi_local)  # local rows keep their graph
        value = full[:, n_out].index_put((idx,), v_local)
        return pi, value


def exit_with_parent() -> None:
    """Linux: get SIGTERM when the launcher (torchrun) dies, even by SIGKILL, so no rank
    outlives it (rank 0 then stops as on any SIGTERM). Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def init_from_env(timeout_s: float = 1800.0) -> Dist | None:
    """Join the process group ``torchrun`` set up (None when world size is 1)."""
    world = launched_world_size()
    if world <= 1:
        return None
    exit_with_parent()
    backend = choose_backend()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    tdist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Dist(tdist.get_rank(), tdist.get_world_size(), device)


def shutdown() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
