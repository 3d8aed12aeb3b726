"""Numpy-vectorised classic-control families, step-for-step equal to Gymnasium's at defaults.

Each ``transition`` follows the order of operations of the Gymnasium environment it copies
(CartPole-v1, Pendulum-v1, MountainCarContinuous-v0, Acrobot-v1), with every physics constant
replaced by a per-sub-env array from ``self.p``. Parameter meanings: ``families.py``.
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np

from skillbank.tasks.backend import NumpyBackend
from skillbank.tasks.spec import TaskSpec

_TWO_PI = 2 * np.pi


class CartPole(NumpyBackend):
    """CartPole-v1: euler integration, tau 0.02, +1 per step, |x| > 2.4 or |theta| > 12 deg ends."""

    state_dim = 4
    obs_dim = 4
    tau = 0.02
    x_threshold = 2.4
    theta_threshold = 12 * 2 * math.pi / 360

    def __init__(self, specs: list[TaskSpec]) -> None:
        super().__init__(specs)
        p = self.p
        self.half_length = p["pole_length"] / 2.0
        self.total_mass = p["pole_mass"] + p["cart_mass"]
        self.polemass_length = p["pole_mass"] * self.half_length

    def make_action_space(self) -> gymnasium.Space:
        return gymnasium.spaces.Discrete(2)

    def initial_state(self, n: int) -> np.ndarray:
        return self.rng.uniform(low=-0.05, high=0.05, size=(n, 4))

    def observe(self, state: np.ndarray) -> np.ndarray:
        return state.astype(np.float32)

    def transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, x_dot, theta, theta_dot = self.state.T
        p = self.p
        force = np.where(actions == 1, p["force_mag"], -p["force_mag"])
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        temp = (force + self.polemass_length * np.square(theta_dot) * sintheta) / self.total_mass
        thetaacc = (p["gravity"] * sintheta - costheta * temp) / (
            self.half_length * (4.0 / 3.0 - p["pole_mass"] * np.square(costheta) / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        state = np.stack([x, x_dot, theta, theta_dot], axis=1)
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold)
            | (theta > self.theta_threshold)
        )
        return state, np.ones(self.num_envs), terminated


class Pendulum(NumpyBackend):
    """Pendulum-v1: dt 0.05, cost = angle^2 + 0.1 thdot^2 + 0.001 u^2 (reward = -cost)."""

    state_dim = 2
    obs_dim = 3
    dt = 0.05

    def make_action_space(self) -> gymnasium.Space:
        # One space for the block: the widest torque range; each sub-env clips to its own.
        high = np.float32(self.p["max_torque"].max())
        return gymnasium.spaces.Box(low=-high, high=high, shape=(1,), dtype=np.float32)

    def initial_state(self, n: int) -> np.ndarray:
        high = np.array([np.pi, 1.0])
        return self.rng.uniform(low=-high, high=high, size=(n, 2))

    def observe(self, state: np.ndarray) -> np.ndarray:
        th, thdot = state.T
        return np.stack([np.cos(th), np.sin(th), thdot], axis=1).astype(np.float32)

    def transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        th, thdot = self.state.T
        p = self.p
        g, m, length, dt = p["gravity"], p["mass"], p["length"], self.dt
        # Gymnasium's torque is a float32 scalar, so the terms that multiply it are float32.
        f32 = np.float32
        u = np.clip(actions[:, 0], -p["max_torque"], p["max_torque"]).astype(f32)
        angle = ((th + np.pi) % _TWO_PI) - np.pi
        costs = angle**2 + 0.1 * thdot**2 + f32(0.001) * (u**2)
        torque_term = (3.0 / (m * length**2)).astype(f32) * u
        newthdot = thdot + (3 * g / (2 * length) * np.sin(th) + torque_term) * dt
        newthdot = np.clip(newthdot, -p["max_speed"], p["max_speed"])
        newth = th + newthdot * dt
        state = np.stack([newth, newthdot], axis=1)
        return state, -costs, np.zeros(self.num_envs, dtype=bool)


class MountainCarContinuous(NumpyBackend):
    """MountainCarContinuous-v0: float32 state as in Gymnasium, +100 at the goal, -0.1 a^2."""

    state_dim = 2
    obs_dim = 2
    state_dtype = np.float32
    min_position = -1.2
    max_position = 0.6
    goal_position = 0.45

    def __init__(self, specs: list[TaskSpec]) -> None:
        super().__init__(specs)
        self.p32 = {k: v.astype(np.float32) for k, v in self.p.items()}

    def make_action_space(self) -> gymnasium.Space:
        return gymnasium.spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)

    def initial_state(self, n: int) -> np.ndarray:
        position = self.rng.uniform(low=-0.6, high=-0.4, size=n)
        return np.stack([position, np.zeros(n)], axis=1).astype(np.float32)

    def observe(self, state: np.ndarray) -> np.ndarray:
        return state.astype(np.float32)

    def transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Gymnasium keeps this state in float32 and does the arithmetic in float32 (only the
        # cosine is taken in float64); we do the same so trajectories match bit for bit.
        f32 = np.float32
        position, velocity = self.state[:, 0].copy(), self.state[:, 1].copy()
        p = self.p32
        action = actions[:, 0]
        hill = self.p["gravity"] * np.cos((f32(3) * position).astype(np.float64))
        # An in-range action stays float32 in Gymnasium; a clipped one becomes a Python float,
        # which turns the whole increment into float64 before it is added to the velocity.
        clipped = (action > 1.0) | (action < -1.0)
        increment = np.where(
            clipped,
            (np.clip(action, -1.0, 1.0) * self.p["power"] - hill).astype(f32),
            action.astype(f32) * p["power"] - hill.astype(f32),
        )
        velocity = velocity + increment
        velocity = np.clip(velocity, -p["max_speed"], p["max_speed"])
        position = position + velocity
        position = np.clip(position, f32(self.min_position), f32(self.max_position))
        velocity[(position == f32(self.min_position)) & (velocity < 0)] = 0
        terminated = (position >= f32(self.goal_position)) & (velocity >= p["goal_velocity"])
        reward = np.where(terminated, 100.0, 0.0) - actions[:, 0].astype(np.float64) ** 2 * 0.1
        return np.stack([position, velocity], axis=1), reward, terminated


def _wrap(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Shift values into [low, high] by whole periods, one period at a time (as Gymnasium)."""
    diff = high - low
    x = x.copy()
    while (over := x > high).any():
        x[over] -= diff
    while (under := x < low).any():
        x[under] += diff
    return x


class Acrobot(NumpyBackend):
    """Acrobot-v1 ("book" dynamics): one RK4 step of dt 0.2, -1 per step, 0 on termination."""

    state_dim = 4
    obs_dim = 6
    dt = 0.2
    max_vel_1 = 4 * np.pi
    max_vel_2 = 9 * np.pi

    def make_action_space(self) -> gymnasium.Space:
        return gymnasium.spaces.Discrete(3)

    def initial_state(self, n: int) -> np.ndarray:
        # Gymnasium draws the start state in float32.
        return self.rng.uniform(low=-0.1, high=0.1, size=(n, 4)).astype(np.float32)

    def observe(self, state: np.ndarray) -> np.ndarray:
        s0, s1, s2, s3 = state.T
        obs = [np.cos(s0), np.sin(s0), np.cos(s1), np.sin(s1), s2, s3]
        return np.stack(obs, axis=1).astype(np.float32)

    def _derivs(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        p = self.p
        m1, m2, l1 = p["link_mass_1"], p["link_mass_2"], p["link_length_1"]
        lc1, lc2 = l1 / 2.0, p["link_length_2"] / 2.0
        moi1 = moi2 = p["link_moi"]
        g = p["gravity"]
        theta1, theta2, dtheta1, dtheta2 = s.T
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * np.cos(theta2)) + moi1 + moi2
        d2 = m2 * (lc2**2 + l1 * lc2 * np.cos(theta2)) + moi2
        phi2 = m2 * lc2 * g * np.cos(theta1 + theta2 - np.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * np.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * np.sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * np.cos(theta1 - np.pi / 2)
            + phi2
        )
        ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * np.sin(theta2) - phi2) / (
            m2 * lc2**2 + moi2 - d2**2 / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return np.stack([dtheta1, dtheta2, ddtheta1, ddtheta2], axis=1)

    def transition(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torque = (actions.astype(np.float64) - 1.0) * self.p["max_torque"]
        y0 = self.state.astype(np.float64)
        dt, dt2 = self.dt, self.dt / 2.0
        k1 = self._derivs(y0, torque)
        k2 = self._derivs(y0 + dt2 * k1, torque)
        k3 = self._derivs(y0 + dt2 * k2, torque)
        k4 = self._derivs(y0 + dt * k3, torque)
        ns = y0 + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        ns[:, 0] = _wrap(ns[:, 0], -np.pi, np.pi)
        ns[:, 1] = _wrap(ns[:, 1], -np.pi, np.pi)
        ns[:, 2] = np.clip(ns[:, 2], -self.max_vel_1, self.max_vel_1)
        ns[:, 3] = np.clip(ns[:, 3], -self.max_vel_2, self.max_vel_2)
        l1, l2 = self.p["link_length_1"], self.p["link_length_2"]
        height = -l1 * np.cos(ns[:, 0]) - l2 * np.cos(ns[:, 1] + ns[:, 0])
        terminated = height > (l1 + l2) / 2.0
        reward = np.where(terminated, 0.0, -1.0)
        return ns, reward, terminated
