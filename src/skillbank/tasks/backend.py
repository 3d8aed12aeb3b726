"""What a group of sub-environments must provide, and the base of the numpy families.

A *backend* simulates a contiguous block of sub-envs of one family. It knows nothing of
episodes: ``VecTaskEnv`` counts steps, truncates, autoresets and keeps episode statistics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import gymnasium
import numpy as np

from skillbank.tasks.spec import TaskSpec


class Backend(Protocol):
    """A block of ``num_envs`` sub-envs of one family (protocol used by ``VecTaskEnv``)."""

    num_envs: int
    obs_dim: int
    action_space: gymnasium.Space

    def reset_all(self, seed: int | None) -> np.ndarray:
        """Reset every sub-env (reseeded from ``seed`` unless None, which continues the random
        streams); observations ``[num_envs, obs_dim]`` float32."""
        ...

    def reset_envs(self, idx: np.ndarray) -> np.ndarray:
        """Reset sub-envs ``idx`` (local indices); their observations ``[len(idx), obs_dim]``."""
        ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance every sub-env one step: (obs float32, reward float64, terminated bool)."""
        ...

    def close(self) -> None: ...


class NumpyBackend(ABC):
    """A numpy-vectorised family: state ``[num_envs, state_dim]`` and one array per parameter.

    ``self.p[name]`` is a float64 array ``[num_envs]`` holding each sub-env's value of that
    parameter, so the physics differs per sub-env with no Python loop over sub-envs.
    Subclasses write pure array code in ``initial_state``, ``observe`` and ``transition``.
    """

    state_dim: int
    obs_dim: int
    state_dtype: type = np.float64

    def __init__(self, specs: list[TaskSpec]) -> None:
        self.num_envs = len(specs)
        full = [spec.full_params() for spec in specs]
        self.p: dict[str, np.ndarray] = {
            key: np.array([f[key] for f in full], dtype=np.float64) for key in full[0]
        }
        self.state: np.ndarray = np.zeros((self.num_envs, self.state_dim), dtype=self.state_dtype)
        self.rng = np.random.default_rng(0)
        self.action_space = self.make_action_space()

    @abstractmethod
    def make_action_space(self) -> gymnasium.Space: ...

    @abstractmethod
    def initial_state(self, n: int) -> np.ndarray:
        """``n`` fresh initial states drawn from ``self.rng``."""

    @abstractmethod
    def observe(self, state: np.ndarray) -> np.ndarray:
        """Observations (float32) of the states ``state``."""

    @abstractmethod
    def transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """From ``self.state`` and actions: (next state, reward float64, terminated bool)."""

    def reset_all(self, seed: int | None) -> np.ndarray:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.state = self.initial_state(self.num_envs)
        return self.observe(self.state)

    def reset_envs(self, idx: np.ndarray) -> np.ndarray:
        fresh = self.initial_state(len(idx))
        self.state[idx] = fresh
        return self.observe(fresh)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"):  # non-finite results are reported by VecTaskEnv
            self.state, reward, terminated = self.transition(actions)
            obs = self.observe(self.state)
        return obs, reward, terminated

    def close(self) -> None:  # noqa: B027  (nothing to release)
        return None
