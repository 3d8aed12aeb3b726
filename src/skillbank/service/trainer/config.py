"""``trainer.toml``: the trainer's config. Light imports only (no torch): the CLI parses
and validates it before torch is loaded (the ``[ppo]`` table's values are checked against
``PPOConfig`` by ``load_trainer_config``, which the trainer process runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from skillbank.config import Config, ConfigError, read_toml, validate, validate_table
from skillbank.service.kinds.fields import Seed, need

TRAINER_PPO_FIELDS = (
    "update_epochs",
    "num_minibatches",
    "clip_coef",
    "clip_vloss",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "norm_adv",
    "target_kl",
    "adam_eps",
)
"""PPOConfig fields the trainer applies to every run (the others are per run: orch.toml)."""

ModuleName = Annotated[str, Field(min_length=1)]


class TrainerConfig(Config):
    """``trainer.toml``: top-level fields below, plus an optional ``[ppo]`` table with the
    PPOConfig fields in ``TRAINER_PPO_FIELDS``."""

    output_dir: str = ""
    """Outputs folder watched for ``run_*`` folders (``--out`` wins; relative paths here
    and in ``library`` are taken from the working directory)."""
    library: str | None = None
    """Library folder whose base every run shares (give this, ``base_task`` or ``lm_base``)."""
    base_task: str | None = None
    """Or: a fresh actor-critic base (random init) sized for this task, saved to OUT/base."""
    lm_base: str | None = None
    """Or: a causal-LM base folder (transformers ``save_pretrained`` layout + tokenizer.json;
    "tiny-lm" = the one packaged with skillbank), copied to OUT/base; for runs of kind "lm"."""
    base_hidden: Annotated[list[PositiveInt], Field(min_length=1)] = [64, 64]
    """Hidden widths of the fresh base (``base_task`` only)."""
    base_seed: Seed = 0
    """Initialisation seed of the fresh base (``base_task`` only)."""
    target_modules: list[ModuleName] | None = None
    """LoRA target modules; None = the library's choice (or every Linear)."""
    max_concurrent_runs: PositiveInt = 4
    """Adapter slots: runs trained at once; further runs wait for a free slot."""
    rank_capacity: PositiveInt = 16
    """Largest LoRA rank a run may ask for."""
    max_async_level: NonNegativeInt = 1
    """k: a rollout of step n is collected with a policy of step >= n - k."""
    checkpoint_interval: PositiveInt = 10
    """Write checkpoints/step_N every this many steps of a run (and at its last step)."""
    keep_checkpoints: PositiveInt = 2
    """Stable checkpoints kept per run (older ones are deleted)."""
    keep_broadcasts: PositiveInt = 4
    """Broadcast folders kept per run (must exceed max_async_level)."""
    poll_interval_s: PositiveFloat = 0.02
    """Sleep between scans of the outputs folder when no rollout is ready."""
    batch_window_s: NonNegativeFloat = 0.0
    """After a first rollout is ready, wait up to this long for other runs' rollouts."""
    max_nan_updates: PositiveInt = 3
    """Evict a run after this many consecutive updates skipped for a non-finite loss."""
    seed: Seed = 0
    """Seed of the minibatch shuffling."""
    threads: PositiveInt = 1
    """torch threads (per trainer rank)"""
    debug_checkpoint_delay_s: NonNegativeFloat = 0.0
    """Test only: sleep between the files of a checkpoint write."""
    ppo: dict[str, Any] = {}
    """The ``[ppo]`` table (fields in TRAINER_PPO_FIELDS, checked against PPOConfig)."""

    def check(self, where: str | Path) -> TrainerConfig:
        """The checks across fields (``FILE: field NAME: problem``); returns self."""
        path = Path(where)
        need(bool(self.output_dir), path, "output_dir", "missing (or pass --out)")
        bases = [self.library, self.base_task, self.lm_base]
        need(
            bases.count(None) == 2,
            path,
            "library",
            "give exactly one of 'library', 'base_task' and 'lm_base'",
        )
        need(
            self.keep_broadcasts > self.max_async_level,
            path,
            "keep_broadcasts",
            f"must be > max_async_level ({self.max_async_level})",
        )
        for key in self.ppo:
            need(
                key in TRAINER_PPO_FIELDS,
                path,
                f"ppo.{key}",
                f"not a trainer setting; trainer fields: {list(TRAINER_PPO_FIELDS)} (learning "
                "rate, rollout size, gamma... are per run, in control/orch.toml)",
            )
        return self

    def ppo_config(self, where: str | Path = "trainer.toml") -> Any:
        """The trainer-wide ``PPOConfig`` (imports torch)."""
        from skillbank.algos.ppo import PPOConfig

        return validate(PPOConfig, self.ppo, f"{where} [ppo]")


def load_trainer_config(path: Path, out: str | None = None) -> TrainerConfig:
    """Read and check ``trainer.toml``; ``out`` overrides ``output_dir``."""
    data = read_toml(path)
    if not isinstance(data.get("ppo", {}), dict):
        raise ConfigError(f"{path}: field 'ppo': must be a table ([ppo])")
    if out is not None:
        data["output_dir"] = out
    cfg = validate_table(TrainerConfig, data, str(path)).check(path)
    cfg.ppo_config(path)  # the [ppo] values, checked now
    return cfg
