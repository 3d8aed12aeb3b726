"""VecTaskEnv: one vector env holding several tasks, each sub-env with its own physics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np

from skillbank.errors import SkillbankError
from skillbank.tasks.backend import Backend
from skillbank.tasks.classic import Acrobot, CartPole, MountainCarContinuous, Pendulum
from skillbank.tasks.families import FAMILIES
from skillbank.tasks.spec import TaskSpec

NUMPY_BACKENDS = {
    "cartpole": CartPole,
    "pendulum": Pendulum,
    "mountaincar-continuous": MountainCarContinuous,
    "acrobot": Acrobot,
}


def _numpy_backend(
    cls: Callable[[list[TaskSpec]], Backend],
) -> Callable[[list[TaskSpec], int], Backend]:
    def build(specs: list[TaskSpec], workers: int) -> Backend:
        return cls(specs)

    return build


def _mujoco_backend(specs: list[TaskSpec], workers: int) -> Backend:
    from skillbank.tasks.mujoco_tasks import MujocoBackend

    return MujocoBackend(specs)


def _gym_backend(specs: list[TaskSpec], workers: int) -> Backend:
    from skillbank.tasks.gym_env import GymBackend

    return GymBackend(specs, workers)  # type: ignore[arg-type]


# family -> builder of a block of sub-envs (specs, env worker processes)
BACKENDS: dict[str, Callable[[list[TaskSpec], int], Backend]] = {
    **{name: _numpy_backend(cls) for name, cls in NUMPY_BACKENDS.items()},
    **{name: _mujoco_backend for name, info in FAMILIES.items() if info.mujoco},
    "gym": _gym_backend,
    "metaworld": _gym_backend,
}


class NonFiniteError(SkillbankError, FloatingPointError):
    """A sub-env produced a NaN or infinite observation or reward."""

    def __init__(self, message: str, task_name: str, step: int, env_index: int) -> None:
        super().__init__(message)
        self.task_name = task_name
        self.step = step
        self.env_index = env_index


def _make_backend(specs: list[TaskSpec], workers: int = 0) -> Backend:
    return BACKENDS[specs[0].family](specs, workers)


def _merge_spaces(spaces: list[gymnasium.Space], names: list[str]) -> gymnasium.Space:
    """One action space for all blocks: equal Discrete, or Boxes of one shape (widest bounds)."""
    first = spaces[0]
    for space, name in zip(spaces[1:], names[1:]):
        same_kind = type(space) is type(first)
        if isinstance(first, gymnasium.spaces.Discrete):
            same_kind = (
                same_kind and isinstance(space, gymnasium.spaces.Discrete) and space.n == first.n
            )
        else:
            same_kind = same_kind and space.shape == first.shape
        if not same_kind:
            raise ValueError(
                f"tasks in one VecTaskEnv need the same action space: {names[0]!r} has "
                f"{first}, {name!r} has {space}"
            )
    if isinstance(first, gymnasium.spaces.Discrete):
        return first
    boxes = [s for s in spaces if isinstance(s, gymnasium.spaces.Box)]
    assert len(boxes) == len(spaces)
    low = np.min([s.low for s in boxes], axis=0)
    high = np.max([s.high for s in boxes], axis=0)
    return gymnasium.spaces.Box(low=low, high=high, dtype=np.float32)


class VecTaskEnv:
    """``len(specs) * envs_per_task`` sub-envs; sub-env ``i`` runs ``specs[i // envs_per_task]``.

    Same-step autoreset: when a sub-env ends (terminated or truncated), the observation
    returned for it is already the first of its next episode. ``step`` returns
    ``(obs [N, obs_dim] float32, reward [N] float64, terminated [N] bool, truncated [N] bool,
    info)`` where ``info`` holds, per sub-env:

    - ``"final_obs"`` [N, obs_dim]: the observation reached by this step, before any reset
      (equal to ``obs`` for sub-envs that did not end); bootstrap truncated episodes from it.
    - ``"done"`` [N] bool: ``terminated | truncated``.
    - ``"episode_return"`` [N] float64, ``"episode_length"`` [N] int64: the finished episode's
      totals where ``done``, 0 elsewhere.

    ``truncated`` is set when an episode reaches ``max_episode_steps`` (per family), even if
    it terminated on that same step (as Gymnasium's TimeLimit), or when a backend reports
    its env's own truncation (gym tasks). ``info["episode_success"]`` [N] float64 is the
    finished episode's success (1.0 if ``info["success"]`` was ever true, else 0.0) where
    ``done`` and the env reports success (Meta-World), NaN elsewhere.
    Consecutive specs of one family share one backend (``BACKENDS``); numpy families step
    all their sub-envs as arrays; gym families use Gymnasium's vector envs, in ``workers``
    processes when ``workers > 1``.
    """

    def __init__(
        self, specs: list[TaskSpec], envs_per_task: int, seed: int, workers: int = 0
    ) -> None:
        if not specs:
            raise ValueError("VecTaskEnv needs at least one TaskSpec")
        if isinstance(envs_per_task, bool) or not isinstance(envs_per_task, int):
            raise ValueError(f"envs_per_task must be an int, got {envs_per_task!r}")
        if envs_per_task < 1:
            raise ValueError(f"envs_per_task must be >= 1, got {envs_per_task}")
        self.specs: list[TaskSpec] = list(specs)
        self.envs_per_task = envs_per_task
        self.num_envs = len(specs) * envs_per_task
        self.task_ids: np.ndarray = np.repeat(np.arange(len(specs)), envs_per_task)
        self.seed = int(seed)
        self.groups: list[tuple[slice, Backend]] = []
        start = 0
        while start < len(specs):
            stop = start + 1
            while stop < len(specs) and specs[stop].family == specs[start].family:
                stop += 1
            block = [s for s in specs[start:stop] for _ in range(envs_per_task)]
            env_slice = slice(start * envs_per_task, stop * envs_per_task)
            try:
                self.groups.append((env_slice, _make_backend(block, workers)))
            except BaseException:
                self.close()
                raise
            start = stop
        names = [self.specs[sl.start // envs_per_task].name for sl, _ in self.groups]
        dims = {b.obs_dim for _, b in self.groups}
        try:
            if len(dims) > 1:
                found = ", ".join(f"{n!r}: {b.obs_dim}" for n, (_, b) in zip(names, self.groups))
                raise ValueError(f"tasks in one VecTaskEnv need one observation size; got {found}")
            self.action_space: gymnasium.Space = _merge_spaces(
                [b.action_space for _, b in self.groups], names
            )
        except ValueError:
            self.close()
            raise
        self.obs_dim: int = dims.pop()
        self.observation_space = gymnasium.spaces.Box(
            low=-np.inf, high=np.inf, shape=(self.obs_dim,), dtype=np.float32
        )
        self.max_returns: list[float | None] = [s.info.max_return for s in self.specs]
        self.max_return: float | None = (
            self.max_returns[0] if len(set(self.max_returns)) == 1 else None
        )
        steps = np.array([s.info.max_episode_steps for s in self.specs])
        self.max_episode_steps: int = int(steps.max())
        self._limit = steps[self.task_ids]
        self._discrete = isinstance(self.action_space, gymnasium.spaces.Discrete)
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._ep_success = np.full(self.num_envs, np.nan)
        self._steps = 0
        self._started = False

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every sub-env and return the first observations.

        With ``seed``, reseed every sub-env from it; without, the first reset uses the
        constructor's seed and later ones continue the random streams (deterministic).
        """
        if seed is None and not self._started:
            seed = self.seed
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float32)
        for k, (sl, backend) in enumerate(self.groups):
            group_seed = seed
            if seed is not None and k > 0:
                group_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
            obs[sl] = backend.reset_all(group_seed)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._ep_success[:] = np.nan
        self._steps = 0
        self._started = True
        self._check_finite(obs, "observation at reset")
        return obs

    def _prepare_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
        n = self.num_envs
        if self._discrete:
            space = self.action_space
            assert isinstance(space, gymnasium.spaces.Discrete)
            if a.shape == (n, 1):
                a = a[:, 0]
            if a.shape != (n,):
                raise ValueError(
                    f"actions must have shape ({n},) for a Discrete space, got {a.shape}"
                )
            integral = a.dtype.kind in "iub" or (a.dtype.kind == "f" and np.all(a == np.round(a)))
            if not integral:
                raise ValueError(f"Discrete actions must be integers, got dtype {a.dtype}")
            a = a.astype(np.int64)
            bad = (a < 0) | (a >= space.n)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"action {a[i]} of sub-env {i} is outside Discrete({space.n})")
            return a
        shape = self.action_space.shape
        assert shape is not None
        if a.shape == (n,) and shape == (1,):
            a = a[:, None]
        if a.shape != (n, *shape):
            raise ValueError(f"actions must have shape {(n, *shape)}, got {a.shape}")
        return a.astype(np.float64)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step every sub-env once (see the class docstring for the returned values)."""
        if not self._started:
            raise RuntimeError("call VecTaskEnv.reset() before step()")
        acts = self._prepare_actions(actions)
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float32)
        reward = np.empty(self.num_envs, dtype=np.float64)
        terminated = np.empty(self.num_envs, dtype=bool)
        for sl, backend in self.groups:
            obs[sl], reward[sl], terminated[sl] = backend.step(acts[sl])
        self._steps += 1
        self._ep_length += 1
        self._ep_return += reward
        self._check_finite(obs, "observation")
        self._check_finite(reward, "reward")
        truncated = self._ep_length >= self._limit
        for sl, backend in self.groups:
            own = getattr(backend, "truncated", None)
            if own is not None:
                truncated[sl] |= own
            success = getattr(backend, "success", None)
            if success is not None:
                seen = ~np.isnan(success)
                prev = self._ep_success[sl]
                self._ep_success[sl] = np.where(
                    seen, np.fmax(np.nan_to_num(prev, nan=0.0), success > 0.5), prev
                )
        done = terminated | truncated
        info = {
            "final_obs": obs.copy(),
            "done": done,
            "episode_return": np.where(done, self._ep_return, 0.0),
            "episode_length": np.where(done, self._ep_length, 0),
            "episode_success": np.where(done, self._ep_success, np.nan),
        }
        if done.any():
            for sl, backend in self.groups:
                local = np.flatnonzero(done[sl])
                if len(local):
                    obs[sl.start + local] = backend.reset_envs(local)
            self._ep_return[done] = 0.0
            self._ep_length[done] = 0
            self._ep_success[done] = np.nan
            self._check_finite(obs, "observation at reset")
        return obs, reward, terminated, truncated, info

    def _check_finite(self, values: np.ndarray, what: str) -> None:
        if np.isfinite(values).all():
            return
        bad = ~np.isfinite(values)
        i = int(np.flatnonzero(bad.reshape(self.num_envs, -1).any(axis=1))[0])
        name = self.specs[self.task_ids[i]].name
        raise NonFiniteError(
            f"non-finite {what} from task {name!r} (sub-env {i}) at step {self._steps} "
            f"(episode step {int(self._ep_length[i])}): {values[i]}",
            task_name=name,
            step=self._steps,
            env_index=i,
        )

    def close(self) -> None:
        for _, backend in self.groups:
            backend.close()

    def __enter__(self) -> VecTaskEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self.specs)
        return f"VecTaskEnv({self.num_envs} envs: {self.envs_per_task} x [{names}])"


def make_vec_env(
    specs: list[TaskSpec], envs_per_task: int, seed: int, workers: int = 0
) -> VecTaskEnv:
    """A ``VecTaskEnv`` with ``envs_per_task`` sub-envs for each spec (specs keep their order);
    ``workers`` > 1 steps gym tasks in that many Gymnasium async worker processes."""
    return VecTaskEnv(list(specs), envs_per_task, seed, workers)
