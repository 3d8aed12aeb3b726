"""A user's own base network (a small CNN) and an image-observation env, outside skillbank."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

SIDE = 8


class ImageSide(gymnasium.Env):
    """A 1x8x8 image with one bright column; reward 1 for naming its half (0 left, 1 right).

    ``flip=True`` swaps which action is right. One-step episodes."""

    observation_space = spaces.Box(0.0, 1.0, (1, SIDE, SIDE), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, flip: bool = False) -> None:
        self.flip = bool(flip)
        self.col = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.col = int(self.np_random.integers(0, SIDE))
        img = np.zeros((1, SIDE, SIDE), dtype=np.float32)
        img[0, :, self.col] = 1.0
        return img, {}

    def step(self, action: Any) -> tuple:
        right = (self.col >= SIDE // 2) != self.flip
        reward = 1.0 if int(action) == int(right) else 0.0
        obs, _ = self.reset()
        return obs, reward, True, False, {}


class SmallCNN(nn.Module):
    """conv -> flatten -> ``fc`` trunk; ``pi`` and ``v`` heads. Returns (logits, value)."""

    def __init__(self, obs_dim: int, action_dim: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.fc = nn.Linear(channels * obs_dim, 32)
        self.pi = nn.Linear(32, action_dim)
        self.v = nn.Linear(32, 1)
        nn.init.orthogonal_(self.pi.weight, 0.01)
        nn.init.zeros_(self.pi.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        img = x.reshape(x.shape[0], 1, SIDE, SIDE)
        h = torch.tanh(self.fc(torch.relu(self.conv(img)).flatten(1)))
        return self.pi(h), self.v(h).squeeze(-1)


def build_cnn(obs_dim: int, action_kind: str, action_dim: int, channels: int = 4) -> nn.Module:
    """The factory named in base/config.json (``user_nets:build_cnn``)."""
    assert action_kind == "discrete"
    return SmallCNN(obs_dim, action_dim, channels)


def build_wrong(obs_dim: int, action_kind: str, action_dim: int) -> nn.Module:
    """Returns only logits: not what a policy base must return."""
    return nn.Linear(obs_dim, action_dim)
