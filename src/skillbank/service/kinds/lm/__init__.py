"""Kind "lm": causal-LM runs trained with GRPO on a text domain (config, check,
orchestrator, rollout reader, batched update), registered like kind "ppo"."""

from skillbank.service.kinds.lm.config import LMRunConfig, check_lm_run, lm_skill_task
from skillbank.service.kinds.registry import register_builtin

register_builtin("lm", LMRunConfig, check_lm_run, lm_skill_task, algo="grpo")
