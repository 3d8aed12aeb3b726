"""Kind "ppo": control tasks trained with PPO (config, check, orchestrator, rollout
reader, batched update)."""

from skillbank.service.kinds.ppo.config import PPORunConfig, check_ppo_run, ppo_skill_task
from skillbank.service.kinds.registry import register_builtin

register_builtin(
    "ppo", PPORunConfig, check_ppo_run, ppo_skill_task, algo="ppo", serve_many="multi:MultiPPO"
)
