"""MuJoCo families: one Gymnasium v5 env per sub-env, physics scaled at construction.

``mujoco`` is imported only when such a family is built, so the rest of ``skillbank.tasks``
works without it. Parameter meanings and the ``halfcheetah-vel`` reward: ``families.py``.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from skillbank.tasks.spec import TaskSpec

MUJOCO_HINT = 'MuJoCo tasks need the mujoco extra: pip install "skillbank[mujoco]"'


def require_mujoco() -> None:
    """Import mujoco, or raise ImportError telling how to install it."""
    try:
        import mujoco  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{MUJOCO_HINT} (import failed: {exc})") from exc


def scale_model(model: Any, params: dict[str, float]) -> None:
    """Scale a MuJoCo model in place by ``gravity_scale``, ``mass_scale``, ``friction_scale``.

    ``mass_scale`` multiplies ``body_inertia`` as well as ``body_mass`` (uniform density
    change), so every body stays a physically consistent rigid body.
    """
    model.opt.gravity[:] = model.opt.gravity * params["gravity_scale"]
    model.body_mass[:] = model.body_mass * params["mass_scale"]
    model.body_inertia[:] = model.body_inertia * params["mass_scale"]
    model.geom_friction[:] = model.geom_friction * params["friction_scale"]


def build_env(spec: TaskSpec) -> gymnasium.Env:
    """The unwrapped Gymnasium env of one sub-env (time limit is kept by ``VecTaskEnv``)."""
    require_mujoco()
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    env = gymnasium.make(spec.info.gym_id).unwrapped
    assert isinstance(env, MujocoEnv)
    scale_model(env.model, spec.full_params())
    return env


class MujocoBackend:
    """A block of MuJoCo sub-envs stepped one after another."""

    def __init__(self, specs: list[TaskSpec]) -> None:
        self.num_envs = len(specs)
        self.envs = [build_env(spec) for spec in specs]
        self.targets = [
            spec.full_params()["target_velocity"] if spec.family == "halfcheetah-vel" else None
            for spec in specs
        ]
        obs_shape = self.envs[0].observation_space.shape
        assert obs_shape is not None
        self.obs_dim = int(np.prod(obs_shape))
        space = self.envs[0].action_space
        assert isinstance(space, gymnasium.spaces.Box)
        self.action_space: gymnasium.Space = gymnasium.spaces.Box(
            low=space.low, high=space.high, shape=space.shape, dtype=np.float32
        )

    def reset_all(self, seed: int | None) -> np.ndarray:
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        rows = [env.reset(seed=s)[0] for env, s in zip(self.envs, seeds)]
        return np.asarray(rows, dtype=np.float32)

    def reset_envs(self, idx: np.ndarray) -> np.ndarray:
        rows = [self.envs[i].reset()[0] for i in idx]
        return np.asarray(rows, dtype=np.float32).reshape(len(idx), self.obs_dim)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float32)
        reward = np.empty(self.num_envs, dtype=np.float64)
        terminated = np.empty(self.num_envs, dtype=bool)
        with np.errstate(all="ignore"):
            for i, env in enumerate(self.envs):
                o, r, term, _, info = env.step(actions[i])
                target = self.targets[i]
                if target is not None:
                    r = -abs(info["x_velocity"] - target) + info["reward_ctrl"]
                obs[i], reward[i], terminated[i] = o, r, term
        return obs, reward, terminated

    def close(self) -> None:
        for env in self.envs:
            env.close()
