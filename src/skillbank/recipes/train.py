"""What the PPO training verbs do: train a base (``train-base``), LoRA skills
(``train-skills``) or full fine-tuned copies (``--full-finetune``), each keeping the best
evaluated weights (``training.best``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from skillbank.algos.normalize import ObsNorm
from skillbank.algos.ppo import PPOConfig
from skillbank.algos.ppo_defaults import NET_DEFAULTS, profile_of
from skillbank.io import write_json
from skillbank.library.core import LibraryError, PolicyLibrary
from skillbank.lora import MultiLoraModel
from skillbank.models import ActorCritic, ActorCriticConfig
from skillbank.recipes.compat import check_compatible, skill_name
from skillbank.tasks import TaskSpec
from skillbank.tasks.spaces import spaces_of
from skillbank.training.best import EvalKeeper
from skillbank.training.loop import FullBank, LoraBank, TrainResult, full_copies, train_ppo
from skillbank.training.runlog import RunLogger


def _keeper(
    bank: LoraBank | FullBank,
    specs: Sequence[TaskSpec],
    kind: str,
    cfg: PPOConfig,
    seed: int,
    solved: float | None = None,
) -> EvalKeeper:
    """Ten evaluations per run (20 episodes for discrete tasks, 5 otherwise); with
    ``solved``, a task stops training after two consecutive evaluations >= it."""
    updates = max(1, cfg.total_steps // (cfg.envs_per_task * cfg.rollout_steps))
    episodes = 20 if kind == "discrete" else 5
    return EvalKeeper(bank, specs, kind, max(1, updates // 10), episodes, seed, solved)


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
    than its best). Evaluations never stop the run: a base trained to the end of its
    budget makes better features for skills than one stopped at its first perfect
    evaluation (measured on cartpole-physics: LoRA skills on a base stopped at 8k steps
    fell to 50% of full fine-tuning on two tasks).
    ``eval_every=0`` keeps the last weights."""
    if (Path(out) / "library.json").exists() and not overwrite:
        raise LibraryError(f"{Path(out) / 'library.json'}: a library exists here (use --overwrite)")
    obs_dim, kind, dim, _ = spaces_of(spec)
    net_cfg = ActorCriticConfig(
        obs_dim=obs_dim,
        action_kind=kind,
        action_dim=dim,
        hidden=list(hidden),
        **NET_DEFAULTS[profile_of(spec)],
    )
    torch.manual_seed(seed)
    net = ActorCritic(net_cfg)
    bank = FullBank([net])
    if eval_every is None:
        eval_every = max(1, cfg.total_steps // (cfg.envs_per_task * cfg.rollout_steps) // 20)
    if eval_episodes is None:
        eval_episodes = 20 if kind == "discrete" else 5
    keeper = EvalKeeper(bank, [spec], kind, max(eval_every, 1), eval_episodes, seed)
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
    kept = keeper.weights.kept[0]
    write_json(
        run_dir / "config.json",
        {
            "ppo": cfg.to_dict(),
            "seed": seed,
            **base_config,
            "evaluations": [(step, scores[0]) for step, scores in keeper.history],
            "kept": None if kept is None else {"steps": kept.step, "greedy_return": kept.score},
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
    solved: float | None = None,
) -> TrainResult:
    """Train ``bank`` (one member per task) with PPO from the base's observation
    statistics, logging to ``run_dir``; each member ends with its best evaluated weights."""
    start_norm = lib.base_norm or ObsNorm.identity(lib.base_config["kwargs"]["obs_dim"])
    kind = lib.base_config["kwargs"]["action_kind"]
    keeper = _keeper(bank, specs, kind, cfg, seed, solved)
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
            train_tasks=keeper.active if solved is not None else None,
        )
    keeper.restore(result.norms)
    result.retired = list(keeper.retired)
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
    solved: float | None = None,
    run_name: str | None = None,
) -> tuple[dict[str, dict], TrainResult, LoraBank]:
    """Train one LoRA skill per (task, rank) pair, all in one concurrent PPO run.

    ``ranks[i]`` is the rank of task i's skill (alpha = ``alpha_per_rank * rank``). Skills
    start from the base's observation statistics. Skills with ``save_mask[i]`` (default
    all) are added to the library. ``solved``: stop training a task once two consecutive
    evaluations reach it. ``run_name``: the folder under ``LIB/runs`` (default
    ``skills-<time>``). Returns ({skill: summary}, result, the trained bank)."""
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
    run_dir = lib.path / "runs" / (run_name or f"skills-{time.strftime('%Y%m%d-%H%M%S')}")
    title = f"LoRA x{len(specs)}"
    result = _train_from_base(lib, bank, specs, cfg, seed, run_dir, names, title, quiet, solved)
    summaries = {}
    for k, (name, spec) in enumerate(zip(names, specs)):
        meta = {
            "task": spec.to_dict(),
            "obs_norm": result.norms[k].to_dict(),
            "train": {
                "algo": "ppo",
                "rank": ranks[k],
                "lora_alpha": alpha_per_rank * ranks[k],
                "steps": (result.retired or [None] * len(specs))[k] or result.steps_per_task,
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
    solved: float | None = None,
) -> tuple[FullBank, TrainResult]:
    """Full fine-tuning for comparison: one trainable copy of the base per task, trained
    concurrently by the same PPO loop; each saved as a standalone policy under ``out``.
    ``solved``: as for ``train_lora_skills``."""
    check_compatible(lib, specs)
    bank = full_copies(lib.base_model(), len(specs))
    names = [skill_name(s) for s in specs]
    title = f"full x{len(specs)}"
    run_dir = Path(out) / "run"
    result = _train_from_base(lib, bank, specs, cfg, seed, run_dir, names, title, quiet, solved)
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
