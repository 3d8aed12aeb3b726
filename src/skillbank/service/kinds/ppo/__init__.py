"""Kind "ppo": control tasks trained with PPO (config, check, orchestrator, rollout
reader, batched update)."""

from skillbank.service.kinds.ppo.config import PPORunConfig, check_ppo_run, ppo_skill_task
from skillbank.service.kinds.registry import KINDS, RunKind

KINDS.register(
    RunKind(
        name="ppo",
        config=PPORunConfig,
        check=check_ppo_run,
        orchestrate="skillbank.service.kinds.ppo.orchestrate:run_ppo",
        read="skillbank.service.kinds.ppo.update:read_ppo_rollout",
        update="skillbank.service.kinds.ppo.update:ppo_update_runs",
        skill_task=ppo_skill_task,
        algo="ppo",
        serve_many="skillbank.service.kinds.ppo.multi:MultiPPO",
    )
)
