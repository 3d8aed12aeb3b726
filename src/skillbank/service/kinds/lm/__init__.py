"""Kind "lm": causal-LM runs trained with GRPO on a text domain (config, check,
orchestrator, rollout reader, batched update), registered like kind "ppo"."""

from skillbank.service.kinds.lm.config import LMRunConfig, check_lm_run, lm_skill_task
from skillbank.service.kinds.registry import KINDS, RunKind

KINDS.register(
    RunKind(
        name="lm",
        config=LMRunConfig,
        check=check_lm_run,
        orchestrate="skillbank.service.kinds.lm.orchestrate:run_lm",
        read="skillbank.service.kinds.lm.update:read_lm_rollout",
        update="skillbank.service.kinds.lm.update:lm_update_runs",
        skill_task=lm_skill_task,
        algo="grpo",
    )
)
