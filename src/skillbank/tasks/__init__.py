"""Control tasks: vectorised environments whose physics can differ per sub-environment.

``make_vec_env(get_suite("cartpole-physics"), envs_per_task=8, seed=0)`` builds one vector
env holding every task of a suite; ``VecTaskEnv.task_ids`` maps sub-envs to tasks.
"""

from skillbank.tasks.families import FAMILIES, FamilyInfo, get_family, list_families
from skillbank.tasks.gym_spec import GymTaskConfig, GymTaskError, GymTaskSpec, task_from_dict
from skillbank.tasks.spec import TaskSpec, parse_task
from skillbank.tasks.suites import SUITES, get_suite, list_suites
from skillbank.tasks.vec_env import NonFiniteError, VecTaskEnv, make_vec_env

__all__ = [
    "FAMILIES",
    "SUITES",
    "FamilyInfo",
    "GymTaskConfig",
    "GymTaskError",
    "GymTaskSpec",
    "NonFiniteError",
    "TaskSpec",
    "VecTaskEnv",
    "get_family",
    "get_suite",
    "list_families",
    "list_suites",
    "make_vec_env",
    "parse_task",
    "task_from_dict",
]
