"""The observation and action shapes of a task, read from one environment of it."""

from __future__ import annotations

import numpy as np
from gymnasium.spaces import Discrete

from skillbank.tasks.spec import TaskSpec
from skillbank.tasks.vec_env import make_vec_env


def spaces_of(spec: TaskSpec) -> tuple[int, str, int, float | None]:
    """(obs_dim, action_kind, action_dim, max_return) of a task; action_kind is
    ``"discrete"`` or ``"box"``."""
    env = make_vec_env([spec], 1, 0)
    try:
        space = env.action_space
        if isinstance(space, Discrete):
            kind, dim = "discrete", int(space.n)
        else:
            kind, dim = "box", int(np.prod(space.shape or ()))
        return env.obs_dim, kind, dim, env.max_return
    finally:
        env.close()
