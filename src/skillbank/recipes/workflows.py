"""What the PPO commands do: train a base, train skills (LoRA or full), evaluate."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from skillbank.algos.normalize import ObsNorm
from skillbank.algos.ppo import PPOConfig
from skillbank.io import write_json
from skillbank.library.core import LibraryError, PolicyLibrary
from skillbank.lora.layer import MultiLoraModel
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.tasks import TaskSpec, make_vec_env
from skillbank.training.loop import FullBank, LoraBank, TrainResult, full_copies, train_ppo
from skillbank.training.runlog import RunLogger

console = Console(stderr=True)


# PPO settings per profile of task, then per what is trained ("base", "lora", "full").
# discrete: CleanRL's settings, except the base at lr 1e-3 with 10 epochs: it reaches a
#   greedy 475 on CartPole within 1-4k steps on 6 of 6 seeds (lr 2.5e-4 with 4 epochs took
#   2-30k, and one seed of three never got there in 150k); train_base keeps the best
#   evaluated weights, so later instability of the larger step does no harm. LoRA adapters
#   want a larger step than full networks: on cartpole-physics, r=8 skills at 2e-3 reach
#   500 where 2.5e-4 stays near 300-400; 120k steps per skill (80k left one reversed task
#   at ~230 on some bases).
# box: CleanRL's continuous-control settings with reward scaling.
# mujoco: rl-zoo's tuned HalfCheetah PPO settings (small steps, many epochs, low initial
#   exploration noise): ~3400 return at 150k steps on HalfCheetah-v5 vs ~1100 at 300k
#   with the plain box settings.
PROFILES: dict[str, dict[str, dict[str, float | int | bool]]] = {
    "discrete": {
        "common": {},
        "base": {"learning_rate": 1e-3, "update_epochs": 10, "total_steps": 100_000},
        "lora": {"learning_rate": 2e-3, "total_steps": 120_000},
        "full": {"learning_rate": 1e-3, "total_steps": 120_000},
    },
    "box": {
        "common": {
            "rollout_steps": 256,
            "num_minibatches": 8,
            "update_epochs": 10,
            "ent_coef": 0.0,
            "normalize_reward": True,
        },
        "base": {"learning_rate": 3e-4, "total_steps": 300_000},
        "lora": {"learning_rate": 1e-3, "total_steps": 200_000},
        "full": {"learning_rate": 3e-4, "total_steps": 200_000},
    },
    "mujoco": {
        "common": {
            "envs_per_task": 1,
            "rollout_steps": 512,
            "num_minibatches": 8,
            "update_epochs": 20,
            "gamma": 0.98,
            "gae_lambda": 0.92,
            "clip_coef": 0.1,
            "ent_coef": 0.0004,
            "vf_coef": 0.58,
            "max_grad_norm": 0.8,
            "anneal_lr": False,
            "normalize_reward": True,
        },
        "base": {"learning_rate": 2e-5, "total_steps": 1_000_000},
        "lora": {"learning_rate": 2e-4, "total_steps": 300_000},
        "full": {"learning_rate": 2e-5, "total_steps": 300_000},
    },
}
# Base-network settings per profile (ActorCriticConfig fields).
NET_DEFAULTS: dict[str, dict[str, float]] = {
    "discrete": {},
    "box": {},
    "mujoco": {"init_log_std": -2.0},
}


def profile_of(spec: TaskSpec) -> str:
    """ "discrete", "box" or "mujoco" (a Box task of a MuJoCo family)."""
    _, kind, _, _ = spaces_of(spec)
    if kind == "discrete":
        return "discrete"
    return "mujoco" if spec.info.mujoco else "box"


def default_ppo(spec: TaskSpec, what: str = "base") -> PPOConfig:
    """Proven defaults for training ``what`` ("base", "lora" or "full") on ``spec`` (see
    ``PROFILES``)."""
    if what not in ("base", "lora", "full"):
        raise ValueError(f"what must be 'base', 'lora' or 'full', got {what!r}")
    prof = PROFILES[profile_of(spec)]
    return PPOConfig().replace(**{**prof["common"], **prof[what]})


def spaces_of(spec: TaskSpec) -> tuple[int, str, int, float | None]:
    """(obs_dim, action_kind, action_dim, max_return) of a task."""
    env = make_vec_env([spec], 1, 0)
    space = env.action_space
    if space.__class__.__name__ == "Discrete":
        kind, dim = "discrete", int(space.n)
    else:
        kind, dim = "box", int(np.prod(space.shape))
    out = (env.obs_dim, kind, dim, env.max_return)
    env.close()
    return out


def check_compatible(lib: PolicyLibrary, specs: Sequence[TaskSpec]) -> None:
    """Every task must have the base's observation and action shapes."""
    kw = lib.base_config["kwargs"]
    base_shape = (kw["obs_dim"], kw["action_kind"], kw["action_dim"])
    for spec in specs:
        obs_dim, kind, dim, _ = spaces_of(spec)
        if (obs_dim, kind, dim) != base_shape:
            raise LibraryError(
                f"{lib.path / 'base' / 'config.json'}: base expects obs [{base_shape[0]}] and "
                f"{base_shape[1]} actions [{base_shape[2]}], task {spec.name!r} has obs "
                f"[{obs_dim}] and {kind} actions [{dim}]"
            )


def skill_name(spec: TaskSpec) -> str:
    """Folder-safe skill name for a task (``family/variant`` -> ``family-variant``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in spec.name.replace("/", "-"))
    return safe.strip("-.")[:100] or "task"


class BestKeeper:
    """``should_stop`` hook: every ``every`` updates, evaluate greedily and keep a copy of
    the best weights and statistics (the latest among equals). It never stops the run:
    a base trained to the end of its budget makes better features for skills than one
    stopped at its first perfect evaluation (measured on cartpole-physics: LoRA skills on
    a base stopped at 8k steps fell to 50% of full fine-tuning on two tasks)."""

    def __init__(
        self,
        bank: FullBank,
        spec: TaskSpec,
        kind: str,
        every: int,
        episodes: int,
        seed: int,
        max_return: float | None,
    ) -> None:
        self.bank, self.spec, self.kind = bank, spec, kind
        self.every, self.episodes, self.seed, self.max_return = every, episodes, seed, max_return
        self.best_score = -float("inf")
        self.best: tuple[dict, ObsNorm, int] | None = None
        self.history: list[tuple[int, float]] = []

    def __call__(self, row: dict, norms: list[ObsNorm]) -> bool:
        if row["update"] % self.every:
            return False
        from skillbank.training.loop import evaluate_bank

        net = self.bank.models[0]
        score = float(
            evaluate_bank(self.bank, [self.spec], norms, self.kind, self.episodes, self.seed).mean()
        )
        net.train()
        self.history.append((row["steps_per_task"], score))
        if score >= self.best_score:  # ties: the later, longer-trained weights
            self.best_score = score
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            self.best = (state, norms[0].copy(), row["steps_per_task"])
        return False

    def restore(self, norms: list[ObsNorm]) -> None:
        """Load the best weights into the network and its statistics into ``norms[0]``."""
        if self.best is not None:
            self.bank.models[0].load_state_dict(self.best[0])
            norms[0] = self.best[1]


class BestPerTask:
    """``should_stop`` hook for a bank of K tasks: every ``every`` updates, evaluate every
    task greedily (one batched run) and keep, per task, the weights and statistics of its
    best evaluation (the latest among equals); ``restore`` puts them back at the end. The
    same rule for LoRA slots and full copies, so comparisons between them stay fair."""

    def __init__(
        self,
        bank: LoraBank | FullBank,
        specs: Sequence[TaskSpec],
        kind: str,
        every: int,
        episodes: int,
        seed: int,
    ) -> None:
        self.bank, self.specs, self.kind = bank, list(specs), kind
        self.every, self.episodes, self.seed = every, episodes, seed
        self.best = [-float("inf")] * len(self.specs)
        self.saved: list[tuple[object, ObsNorm] | None] = [None] * len(self.specs)

    def _snapshot(self, k: int) -> object:
        if isinstance(self.bank, LoraBank):
            return self.bank.model.slot_state(int(self.bank.slot_table[k]))
        return {n: v.detach().clone() for n, v in self.bank.models[k].state_dict().items()}

    def __call__(self, row: dict, norms: list[ObsNorm]) -> bool:
        if row["update"] % self.every:
            return False
        from skillbank.training.loop import evaluate_bank

        scores = evaluate_bank(
            self.bank, self.specs, norms, self.kind, self.episodes, self.seed
        ).mean(1)
        for k, score in enumerate(scores.tolist()):
            if score >= self.best[k]:
                self.best[k] = score
                self.saved[k] = (self._snapshot(k), norms[k].copy())
        return False

    def restore(self, norms: list[ObsNorm]) -> None:
        for k, saved in enumerate(self.saved):
            if saved is None:
                continue
            state, norm = saved
            if isinstance(self.bank, LoraBank):
                self.bank.model.load_slot_state(int(self.bank.slot_table[k]), state)  # type: ignore[arg-type]
            else:
                self.bank.models[k].load_state_dict(state)  # type: ignore[arg-type]
            norms[k] = norm


def _keeper(
    bank: LoraBank | FullBank, specs: Sequence[TaskSpec], kind: str, cfg: PPOConfig, seed: int
) -> BestPerTask:
    """Ten evaluations per run (20 episodes for discrete tasks, 5 otherwise)."""
    updates = max(1, cfg.total_steps // (cfg.envs_per_task * cfg.rollout_steps))
    episodes = 20 if kind == "discrete" else 5
    return BestPerTask(bank, specs, kind, max(1, updates // 10), episodes, seed)


def train_base(
    spec: TaskSpec,
    out: Path,
    cfg: PPOConfig,
    hidden: Sequence[int] = (256, 256),
    seed: int = 0,
    quiet: bool = False,
    overwrite: bool = False,
    eval_every: int | None = None,
    eval_episodes: int | None = None,
) -> tuple[PolicyLibrary, TrainResult]:
    """Train an actor-critic on one task with PPO (all weights) and create a library.

    Every ``eval_every`` updates (default: 20 evaluations per run) the greedy policy is
    evaluated on ``eval_episodes`` episodes (default 20 for discrete tasks, 5 otherwise);
    the best evaluated weights are kept (PPO's last iterate on CartPole can be much worse
    than its best).
    ``eval_every=0`` keeps the last weights."""
    if (Path(out) / "library.json").exists() and not overwrite:
        raise LibraryError(f"{Path(out) / 'library.json'}: a library exists here (use --overwrite)")
    obs_dim, kind, dim, max_return = spaces_of(spec)
    net_cfg = ActorCriticConfig(obs_dim, kind, dim, list(hidden), **NET_DEFAULTS[profile_of(spec)])
    torch.manual_seed(seed)
    net = ActorCritic(net_cfg)
    bank = FullBank([net])
    if eval_every is None:
        eval_every = max(1, cfg.total_steps // (cfg.envs_per_task * cfg.rollout_steps) // 20)
    if eval_episodes is None:
        eval_episodes = 20 if kind == "discrete" else 5
    keeper = BestKeeper(bank, spec, kind, max(eval_every, 1), eval_episodes, seed, max_return)
    run_dir = Path(out) / "runs" / "base"
    with RunLogger(run_dir, cfg.total_steps, [spec.name], f"base {spec.name}", quiet=quiet) as log:
        result = train_ppo(
            bank,
            [spec],
            cfg,
            kind,
            seed=seed,
            on_update=log.log,
            should_stop=keeper if eval_every else None,
        )
    if eval_every:
        keeper.restore(result.norms)
    base_config = {
        "kind": "actor_critic",
        "kwargs": net_cfg.to_dict(),
        "obs_norm": result.norms[0].to_dict(),
        "task": spec.to_dict(),
        "target_modules": None,
    }
    lib = PolicyLibrary.create(out, net.eval(), base_config, overwrite=overwrite)
    write_json(
        run_dir / "config.json",
        {
            "ppo": cfg.to_dict(),
            "seed": seed,
            **base_config,
            "evaluations": keeper.history,
            "kept": None
            if keeper.best is None
            else {"steps": keeper.best[2], "greedy_return": keeper.best_score},
        },
    )
    return lib, result


def _train_from_base(
    lib: PolicyLibrary,
    bank: LoraBank | FullBank,
    specs: Sequence[TaskSpec],
    cfg: PPOConfig,
    seed: int,
    run_dir: Path,
    names: Sequence[str],
    title: str,
    quiet: bool,
) -> TrainResult:
    """Train ``bank`` (one member per task) with PPO from the base's observation
    statistics, logging to ``run_dir``; each member ends with its best evaluated weights."""
    start_norm = lib.base_norm or ObsNorm.identity(lib.base_config["kwargs"]["obs_dim"])
    kind = lib.base_config["kwargs"]["action_kind"]
    keeper = _keeper(bank, specs, kind, cfg, seed)
    with RunLogger(run_dir, cfg.total_steps, list(names), title, quiet=quiet) as log:
        result = train_ppo(
            bank,
            specs,
            cfg,
            kind,
            seed=seed,
            init_norms=[start_norm] * len(specs),
            on_update=log.log,
            should_stop=keeper,
        )
    keeper.restore(result.norms)
    return result


def train_lora_skills(
    lib: PolicyLibrary,
    specs: Sequence[TaskSpec],
    cfg: PPOConfig,
    ranks: Sequence[int],
    alpha_per_rank: float = 2.0,
    seed: int = 0,
    names: Sequence[str] | None = None,
    quiet: bool = False,
    save_mask: Sequence[bool] | None = None,
) -> tuple[dict[str, dict], TrainResult, LoraBank]:
    """Train one LoRA skill per (task, rank) pair, all in one concurrent PPO run.

    ``ranks[i]`` is the rank of task i's skill (alpha = ``alpha_per_rank * rank``). Skills
    start from the base's observation statistics. Skills with ``save_mask[i]`` (default
    all) are added to the library. Returns ({skill: summary}, result, the trained bank)."""
    check_compatible(lib, specs)
    names = list(names) if names else [skill_name(s) for s in specs]
    if len(set(names)) != len(names):
        raise LibraryError(f"skill names are not unique: {names}")
    base = lib.base_model()
    model = MultiLoraModel(base, len(specs), max(ranks), lib.base_config.get("target_modules"))
    gen = torch.Generator().manual_seed(seed)
    for k, r in enumerate(ranks):
        model.reset_slot(k, r, alpha_per_rank * r, generator=gen)
    bank = LoraBank(model, range(len(specs)))
    run_dir = lib.path / "runs" / f"skills-{time.strftime('%Y%m%d-%H%M%S')}"
    result = _train_from_base(
        lib, bank, specs, cfg, seed, run_dir, names, f"LoRA x{len(specs)}", quiet
    )
    summaries = {}
    for k, (name, spec) in enumerate(zip(names, specs)):
        meta = {
            "task": spec.to_dict(),
            "obs_norm": result.norms[k].to_dict(),
            "train": {
                "algo": "ppo",
                "rank": ranks[k],
                "lora_alpha": alpha_per_rank * ranks[k],
                "steps": result.steps_per_task,
                "wall_time_s": result.wall_time,
                "seed": seed,
                "final_return": result.curves[-1]["episodic_return"][k],
            },
        }
        if save_mask is None or save_mask[k]:
            lib.add_skill(name, (model, k), meta, overwrite=True)
        summaries[name] = meta
    write_json(
        run_dir / "config.json",
        {
            "ppo": cfg.to_dict(),
            "seed": seed,
            "tasks": [s.to_dict() for s in specs],
            "skills": names,
            "ranks": list(ranks),
        },
    )
    return summaries, result, bank


def train_full_copies(
    lib: PolicyLibrary,
    specs: Sequence[TaskSpec],
    cfg: PPOConfig,
    out: Path,
    seed: int = 0,
    quiet: bool = False,
) -> tuple[FullBank, TrainResult]:
    """Full fine-tuning for comparison: one trainable copy of the base per task, trained
    concurrently by the same PPO loop; each saved as a standalone policy under ``out``."""
    check_compatible(lib, specs)
    bank = full_copies(lib.base_model(), len(specs))
    names = [skill_name(s) for s in specs]
    title = f"full x{len(specs)}"
    result = _train_from_base(lib, bank, specs, cfg, seed, Path(out) / "run", names, title, quiet)
    for m in bank.models:
        m.train()
    from safetensors.torch import save_file

    for k, name in enumerate(names):
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        state = {n: p.detach().contiguous() for n, p in bank.models[k].state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        write_json(
            folder / "config.json",
            {
                "kind": lib.base_config["kind"],
                "kwargs": lib.base_config["kwargs"],
                "obs_norm": result.norms[k].to_dict(),
                "task": specs[k].to_dict(),
            },
        )
    write_json(
        Path(out) / "run" / "config.json",
        {"ppo": cfg.to_dict(), "seed": seed, "tasks": [s.to_dict() for s in specs]},
    )
    return bank, result


def evaluate_library(
    lib: PolicyLibrary,
    specs: Sequence[TaskSpec],
    episodes: int = 20,
    seed: int = 0,
    skills: Sequence[str | None] | None = None,
) -> dict:
    """Greedy returns of the base and each skill on each task, in one batched run.

    Returns {"tasks": [...], "policies": [...], "mean": [[...]], "std": [[...]]} with rows
    = policies (``"base"`` first) and columns = tasks."""
    check_compatible(lib, specs)
    policies: list[str | None] = list(skills) if skills is not None else [None, *lib.skills]
    pairs = [(p, s) for p in policies for s in specs]
    env = make_vec_env([s for _, s in pairs], episodes, seed + 20_000)
    slot_table = torch.tensor([-1 if p is None else lib.slot_of(p) for p, _ in pairs])
    norms = [
        ObsNorm.from_dict(lib.skill_meta(p)["obs_norm"])
        if p is not None and lib.skill_meta(p).get("obs_norm")
        else (lib.base_norm or ObsNorm.identity(env.obs_dim))
        for p, _ in pairs
    ]
    from skillbank.training.rollout import evaluate

    def forward(x: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lib._forward_ids(x, slot_table[task])

    kind = lib.base_config["kwargs"]["action_kind"]
    try:
        returns = evaluate(env, forward, norms, kind, seed=seed + 20_000)  # [P*T, episodes]
    finally:
        env.close()
    returns = returns.reshape(len(policies), len(specs), episodes)
    return {
        "tasks": [s.name for s in specs],
        "policies": ["base" if p is None else p for p in policies],
        "mean": returns.mean(-1).tolist(),
        "std": returns.std(-1).tolist(),
        "episodes": episodes,
    }


def evaluate_full(
    bank: FullBank,
    norms: Sequence[ObsNorm],
    specs: Sequence[TaskSpec],
    kind: str,
    episodes: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Greedy returns [K, episodes] of full copy k on task k."""
    from skillbank.training.loop import evaluate_bank

    for m in bank.models:
        m.eval()
    with torch.no_grad():
        return evaluate_bank(bank, specs, norms, kind, episodes, seed + 20_000)


def config_with(cfg: PPOConfig, **overrides: object) -> PPOConfig:
    """``cfg`` with the non-None overrides applied."""
    return cfg.replace(**{k: v for k, v in overrides.items() if v is not None})


def dump_json(obj: object) -> str:
    return json.dumps(obj, indent=2)
