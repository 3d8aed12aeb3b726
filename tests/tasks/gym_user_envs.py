"""Environments a user brings: registered here (by the test), never inside skillbank."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces


class Chain(gymnasium.Env):
    """Walk right along a line of ``length`` cells; +1 at the end (which terminates).

    Observation: a Dict (position as a Box, a Discrete parity flag), so it is flattened.
    ``info["success"]`` is 1.0 on reaching the end. ``nan_at`` > 0 makes step ``nan_at``
    return a NaN observation."""

    def __init__(self, length: int = 4, nan_at: int = 0) -> None:
        self.length = int(length)
        self.nan_at = int(nan_at)
        self.observation_space = spaces.Dict(
            {"pos": spaces.Box(0.0, 1.0, (1,), np.float32), "odd": spaces.Discrete(2)}
        )
        self.action_space = spaces.Discrete(2)
        self.pos = 0
        self.t = 0

    def _obs(self) -> dict[str, Any]:
        pos = np.array([self.pos / self.length], dtype=np.float32)
        if self.nan_at and self.t >= self.nan_at:
            pos[0] = np.nan
        return {"pos": pos, "odd": self.pos % 2}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.pos = int(self.np_random.integers(0, 2))
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple:
        self.t += 1
        self.pos = max(0, self.pos + (1 if int(action) == 1 else -1))
        done = self.pos >= self.length
        return self._obs(), float(done), done, False, {"success": float(done)}


class BadObs(gymnasium.Env):
    """An env whose observation space skillbank cannot take (MultiDiscrete)."""

    observation_space = spaces.MultiDiscrete([3, 3])
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        return np.zeros(2, dtype=np.int64), {}

    def step(self, action: Any) -> tuple:
        return np.zeros(2, dtype=np.int64), 0.0, False, False, {}


class BadAction(gymnasium.Env):
    """An env whose action space skillbank cannot take (MultiDiscrete)."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.MultiDiscrete([2, 2])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action: Any) -> tuple:
        return np.zeros(2, dtype=np.float32), 0.0, False, False, {}


class Negate(gymnasium.ObservationWrapper):
    """An observation wrapper a user names by import path."""

    def observation(self, observation: Any) -> Any:
        return {"pos": -observation["pos"], "odd": observation["odd"]}


def register() -> None:
    """Register the user's envs (what a user's package does on import)."""
    if "SbChain-v0" not in gymnasium.registry:
        gymnasium.register("SbChain-v0", entry_point=Chain, max_episode_steps=20)


register()
