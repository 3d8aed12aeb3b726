"""PolicyLibrary: one frozen base plus named LoRA skills, on disk and in memory.

On disk (see docs/formats.md)::

    LIB/library.json                  format version, base summary, skill list
    LIB/base/config.json              {"kind", "kwargs", "obs_norm", "task", "target_modules"}
    LIB/base/model.safetensors
    LIB/skills/<name>/adapter_config.json, adapter_model.safetensors   (PEFT LoRA format)
    LIB/skills/<name>/skill.json      task spec, obs_norm, training summary, scores

In memory every skill sits in one slot of a ``MultiLoraModel``; a mixed batch (one skill
per row) is one forward call.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from skillbank.algos.distributions import greedy_action, make_distribution
from skillbank.algos.normalize import CLIP, ObsNorm, stack_norms
from skillbank.io import read_json, stage_dir, withdraw_dir, write_json
from skillbank.library import acting, export
from skillbank.library.errors import LibraryError, check_skill_name
from skillbank.library.export import load_policy
from skillbank.lora import MultiLoraModel, peft_io

FORMAT_VERSION = 1
DEFAULT_CAPACITY = 16

__all__ = ["LibraryError", "PolicyLibrary", "check_skill_name", "load_policy"]


class PolicyLibrary:
    """A base network and named LoRA skills, backed by a folder."""

    def __init__(self, path: Path, base: nn.Module, base_config: dict, capacity: int) -> None:
        self.path = Path(path)
        self.base_config = base_config
        self._plain = base  # plain base module (never holds adapters)
        self._skills: dict[str, dict] = {}  # name -> skill.json content
        self._slot: dict[str, int] = {}
        self.load_errors: dict[str, str] = {}
        self.small_batch_rows = acting.SMALL_BATCH_ROWS  # act(): 1 thread up to this batch
        self.base_norm = (
            ObsNorm.from_dict(base_config["obs_norm"]) if base_config.get("obs_norm") else None
        )
        self._build_model(num_slots=4, capacity=capacity)

    # ------------------------------------------------------------ construction
    def _build_model(self, num_slots: int, capacity: int) -> None:
        """(Re)create the multi-slot model and reload the skills already present."""
        old = getattr(self, "model", None)
        targets = self.base_config.get("target_modules")
        copy_base = MultiLoraModel(
            _deepcopy(self._plain), max(num_slots, 1), capacity, targets
        ).eval()
        if old is not None:
            for slot in self._slot.values():
                copy_base.load_slot_state(slot, old.slot_state(slot))
        self.model = copy_base
        self._layer0 = next(iter(copy_base.layers.values()))
        self._changed()

    def _changed(self) -> None:
        """Forget everything derived from the skills (normalisation, merged modules,
        routes): called whenever a skill or the slot layout changes."""
        self._generation = getattr(self, "_generation", 0) + 1
        self._norm_cache: tuple[Tensor, Tensor] | None = None
        self._single_cache: acting.LRU[acting.Single] = acting.LRU()
        self._route_cache: acting.LRU[acting.Route] = acting.LRU()

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        base_module: nn.Module,
        base_config: dict,
        *,
        capacity: int = DEFAULT_CAPACITY,
        overwrite: bool = False,
    ) -> PolicyLibrary:
        """Write a new library with ``base_module`` as its base.

        ``base_config`` holds ``kind`` and ``kwargs`` (how to rebuild the module, see
        ``skillbank.models.BASE_KINDS``) and optionally ``obs_norm``, ``task`` and
        ``target_modules`` (None = every Linear).
        """
        path = Path(path)
        for key in ("kind", "kwargs"):
            if key not in base_config:
                raise LibraryError(f"base_config: missing field {key!r}")
        if (path / "library.json").exists() and not overwrite:
            raise LibraryError(f"{path / 'library.json'}: a library exists here (overwrite=False)")
        base_dir = path / "base"
        tmp = stage_dir(base_dir)
        state = {k: v.detach().contiguous() for k, v in base_module.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        write_json(tmp / "config.json", base_config)
        withdraw_dir(base_dir)
        os.replace(tmp, base_dir)
        (path / "skills").mkdir(exist_ok=True)
        lib = cls(path, _deepcopy(base_module), dict(base_config), capacity)
        lib._write_index()
        return lib

    @classmethod
    def load(cls, path: str | os.PathLike, strict: bool = True) -> PolicyLibrary:
        """Open a library folder. ``strict=False`` skips bad skills and records why in
        ``load_errors``; ``strict=True`` raises on the first bad skill."""
        path = Path(path)
        index = read_json(path / "library.json", LibraryError)
        version = index.get("format_version")
        if version != FORMAT_VERSION:
            raise LibraryError(
                f"{path / 'library.json'}: format_version {version!r}, expected {FORMAT_VERSION}"
            )
        base, base_config = load_policy(path / "base")
        names = index.get("skills", [])
        capacity = int(index.get("capacity", DEFAULT_CAPACITY))
        lib = cls(path, base, base_config, capacity)
        if len(names) > 4:
            lib._build_model(num_slots=len(names), capacity=capacity)
        for name in names:
            try:
                check_skill_name(name)
                lib._register(name, *lib._load_into_free_slot(path / "skills" / name))
            except (LibraryError, peft_io.AdapterFormatError, ValueError, KeyError) as e:
                if strict:
                    raise
                lib.load_errors[name] = str(e)
        return lib

    def _write_index(self) -> None:
        n_params = sum(p.numel() for p in self._plain.parameters())
        write_json(
            self.path / "library.json",
            {
                "format_version": FORMAT_VERSION,
                "base": {"kind": self.base_config["kind"], "parameters": n_params},
                "capacity": self.model.capacity,
                "skills": list(self._skills),
            },
        )

    # ------------------------------------------------------------------ skills
    @property
    def skills(self) -> list[str]:
        return list(self._skills)

    def slot_of(self, name: str) -> int:
        if name not in self._slot:
            raise KeyError(f"unknown skill {name!r}; skills: {self.skills}")
        return self._slot[name]

    def skill_meta(self, name: str) -> dict:
        self.slot_of(name)
        return self._skills[name]

    def _free_slot(self, rank: int) -> int:
        used = set(self._slot.values())
        free = [k for k in range(self.model.num_slots) if k not in used]
        if not free or rank > self.model.capacity:
            slots = max(self.model.num_slots * 2, len(used) + 1)
            self._build_model(slots, max(self.model.capacity, rank))
            free = [k for k in range(self.model.num_slots) if k not in used]
        return free[0]

    def _load_into_free_slot(self, folder: Path) -> tuple[int, dict]:
        """Validate a skill folder and load it into a free slot; registers nothing."""
        meta = (
            read_json(folder / "skill.json", LibraryError)
            if (folder / "skill.json").exists()
            else {}
        )
        if meta.get("obs_norm"):
            try:
                ObsNorm.from_dict(meta["obs_norm"])
            except (KeyError, TypeError, ValueError) as e:
                raise LibraryError(f"{folder / 'skill.json'}: field 'obs_norm': {e}") from e
        _, state, _ = peft_io.read_adapter(folder)
        rank = max((a.shape[0] for a, _, _ in state.values()), default=1)
        slot = self._free_slot(rank)
        peft_io.load_adapter(self.model, slot, folder)  # validates before writing
        return slot, meta

    def _register(self, name: str, slot: int, meta: dict) -> None:
        """Point ``name`` at ``slot`` (keeping its place in the order) and empty any slot
        it had before."""
        old = self._slot.get(name)
        if old is not None and old != slot:
            self.model.zero_slot(old)
        self._slot[name] = slot
        self._skills[name] = meta
        self._changed()

    def add_skill(
        self,
        name: str,
        adapter_dir_or_slot: str | os.PathLike | tuple[MultiLoraModel, int],
        meta: dict | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        """Add a skill from a PEFT adapter folder or from ``(model, slot)`` of a model with
        the same base. ``meta`` (task, obs_norm, train, scores) is stored in skill.json."""
        check_skill_name(name)
        if name in self._skills and not overwrite:
            raise LibraryError(f"skill {name!r} exists already in {self.path}")
        meta = dict(meta or {})
        if meta.get("obs_norm") is not None and isinstance(meta["obs_norm"], ObsNorm):
            meta["obs_norm"] = meta["obs_norm"].to_dict()
        skills_dir = self.path / "skills"
        tmp = skills_dir / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        try:
            if isinstance(adapter_dir_or_slot, tuple):
                model, slot = adapter_dir_or_slot
                peft_io.save_adapter(model, slot, tmp, base_model_name_or_path=str(self.path))
            else:
                src = Path(adapter_dir_or_slot)
                config, state, extra = peft_io.read_adapter(src)
                peft_io.write_adapter(tmp, config, state, extra)
            write_json(tmp / "skill.json", meta)
            slot, meta = self._load_into_free_slot(tmp)  # the old skill stays until this works
            final = skills_dir / name
            withdraw_dir(final)  # renamed out of the way, then deleted
            os.replace(tmp, final)
            self._register(name, slot, meta)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        self._write_index()

    def remove_skill(self, name: str) -> None:
        slot = self.slot_of(name)
        self.model.zero_slot(slot)
        del self._slot[name], self._skills[name]
        self._changed()
        self._write_index()
        withdraw_dir(self.path / "skills" / name)

    def rename_skill(self, old: str, new: str) -> None:
        slot = self.slot_of(old)
        check_skill_name(new)
        if new in self._skills:
            raise LibraryError(f"skill {new!r} exists already in {self.path}")
        os.replace(self.path / "skills" / old, self.path / "skills" / new)
        self._skills = {(new if k == old else k): v for k, v in self._skills.items()}
        del self._slot[old]
        self._slot[new] = slot
        self._changed()
        self._write_index()

    # --------------------------------------------------------------- running
    def base_model(self) -> nn.Module:
        """A fresh copy of the plain base module (no adapters): what ``peft`` wraps."""
        return _deepcopy(self._plain)

    def slot_ids(self, skills: str | None | Sequence[str | None] | Tensor, n: int) -> Tensor:
        """Slot id per row (``-1`` for the base) from one name for all rows or one per row."""
        if skills is None or isinstance(skills, str):
            return torch.full((n,), -1 if skills is None else self.slot_of(skills))
        if len(skills) != n:
            raise ValueError(f"{len(skills)} skill names for {n} rows")
        if isinstance(skills, Tensor):  # slot ids already (e.g. from an earlier call)
            return skills.long()
        lookup = {s: (-1 if s is None else self.slot_of(s)) for s in set(skills)}
        ids = np.fromiter(map(lookup.__getitem__, skills), dtype=np.int64, count=n)
        return torch.from_numpy(ids)

    def forward(self, x: Tensor, skills: str | None | Sequence[str | None] | Tensor) -> Any:
        """Run the base on ``x`` (already normalised) with each row's skill applied.

        ``skills``: one name for all rows, one name (or None) per row, or slot ids from
        ``slot_ids`` (cheapest for large batches called repeatedly).
        Returns exactly what ``base_model()(x)`` returns. Rows are grouped by skill inside
        (sorted, then restored), so any mix of skills is one forward call."""
        ids = self.slot_ids(skills, x.shape[0])
        return self._forward_ids(x, ids)

    def _forward_ids(self, x: Tensor, ids: Tensor) -> Any:
        if ids.numel() > 1 and not bool((ids[1:] >= ids[:-1]).all()):
            order = torch.argsort(ids, stable=True)
            return self._run_sorted(self.model.base, x, order, ids[order])
        return self._run_sorted(self.model.base, x, None, ids)

    def _run_sorted(
        self, fn: Callable[[Tensor], Any], x: Tensor, order: Tensor | None, sorted_ids: Tensor
    ) -> Any:
        """``fn(x)`` with rows routed to ``sorted_ids`` (x's rows taken in ``order``)."""
        if order is None:
            with self.model.slots(sorted_ids):
                return fn(x)
        with self.model.slots(sorted_ids):
            out = fn(x.index_select(0, order))
        return acting.unsort(out, order)

    def _version(self) -> tuple[int, ...]:
        """Changes whenever the library's skills or the adapter weights change."""
        layer0 = self._layer0
        return (self._generation, id(self.model), layer0.lora_A._version, layer0.lora_B._version)

    def merged(self, name: str | None) -> nn.Module:
        """A plain module with skill ``name`` merged in (the base for None); cached until
        the slot changes (the last few skills used). Single-skill inference through it costs
        what the base costs."""
        return self._single(name).module

    def _single(self, name: str | None) -> acting.Single:
        key = (name, *self._version())
        hit = self._single_cache.get(name)
        if hit is not None and hit.key == key:
            return hit
        mean, inv_std = self._norms()
        if name is None:
            module, row = self._plain, mean.shape[0] - 1
        else:
            row = self.slot_of(name)
            module = self.model.merged_copy(row).eval()
        single = acting.Single(
            key, module, acting.policy_part(module), mean[row : row + 1], inv_std[row : row + 1]
        )
        return self._single_cache.put(name, single)

    def _route(self, skills: Sequence[str | None] | Tensor, n: int) -> acting.Route:
        cacheable = not isinstance(skills, Tensor) and n <= acting.ROUTE_CACHE_ROWS
        key = (tuple(skills), self._version()[:2]) if cacheable else None
        hit = self._route_cache.get(key) if key is not None else None
        if hit is not None:
            return hit
        route = acting.make_route(self.slot_ids(skills, n), *self._norms())
        return self._route_cache.put(key, route) if key is not None else route

    def _norms(self) -> tuple[Tensor, Tensor]:
        """Normalisation stats per slot; row ``num_slots`` holds the base's."""
        if self._norm_cache is None:
            obs_dim = int(self.base_config["kwargs"].get("obs_dim", 0))
            ident = ObsNorm.identity(obs_dim)
            norms = [ident] * (self.model.num_slots + 1)
            for name, slot in self._slot.items():
                d = self._skills[name].get("obs_norm")
                norms[slot] = ObsNorm.from_dict(d) if d else ident
            norms[-1] = self.base_norm or ident
            self._norm_cache = stack_norms(norms)
        return self._norm_cache

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray | Tensor,
        skills: str | None | Sequence[str | None] | Tensor,
        deterministic: bool = True,
    ) -> np.ndarray:
        """Actions for raw observations ``obs [B, obs_dim]`` (or one ``[obs_dim]``), each
        row with its skill's observation normalisation and adapter (``None`` = the base).

        One name for all rows runs that skill's merged module; a list of names (one per
        row) one routed forward. Batches of at most ``small_batch_rows`` rows (default
        ``acting.SMALL_BATCH_ROWS``; 0 = never) run with one intra-op thread (see
        ``skillbank.library.acting``)."""
        x = torch.as_tensor(obs, dtype=torch.float32)
        squeeze = x.dim() == 1
        if squeeze:
            x = x.unsqueeze(0)
        n = x.shape[0]
        threads = acting.threads_for(n, self.small_batch_rows)
        with acting.intra_op_threads(threads) if threads else nullcontext():
            if skills is None or isinstance(skills, str):  # one policy: its merged module
                single = self._single(skills)
                x = ((x - single.mean) * single.inv_std).clamp_(-CLIP, CLIP)
                policy_out = acting.policy_output(single.policy(x))
            else:
                route = self._route(skills, n)
                x = ((x - route.mean) * route.inv_std).clamp_(-CLIP, CLIP)
                policy = acting.policy_part(self.model.base)
                out = self._run_sorted(policy, x, route.order, route.sorted_ids)
                policy_out = acting.policy_output(out)
            kind = self.base_config["kwargs"]["action_kind"]
            if deterministic:
                action = greedy_action(kind, policy_out)
            else:
                action = make_distribution(kind, policy_out).sample()
        out = action.numpy()
        return out[0] if squeeze else out

    # ----------------------------------------------------------------- export
    def export_skill(self, name: str, out_dir: str | os.PathLike) -> Path:
        """Write skill ``name`` merged into a standalone policy folder (see
        ``skillbank.library.export.export_skill``)."""
        return export.export_skill(self, name, out_dir)

    def memory_report(self) -> dict:
        """Bytes of the base, of each skill, the total and N full copies (see
        ``skillbank.library.export.memory_report``)."""
        return export.memory_report(self)


def _deepcopy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)
