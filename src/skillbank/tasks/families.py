"""Task families: their parameters, defaults and episode limits (plain data, no heavy imports).

Parameter meanings (every default reproduces the Gymnasium environment named in brackets):

``cartpole`` [CartPole-v1]
    ``pole_length``  FULL pole length in m (1.0). Gymnasium's ``length`` is the HALF length
                     (0.5); we use ``pole_length / 2`` wherever Gymnasium uses ``length``.
    ``pole_mass`` (0.1), ``cart_mass`` (1.0) in kg, ``gravity`` (9.8) in m/s^2,
    ``force_mag`` (10.0) in N: the push applied by action 1 (action 0 pushes with -force_mag).
``pendulum`` [Pendulum-v1]
    ``mass`` (1.0), ``length`` (1.0), ``gravity`` (10.0), ``max_torque`` (2.0): torques are
    clipped to +-max_torque of each sub-env, ``max_speed`` (8.0): angular-velocity clip.
``mountaincar-continuous`` [MountainCarContinuous-v0]
    ``power`` (0.0015): velocity gained per unit of action, ``gravity`` (0.0025): the factor of
    ``cos(3 x)`` in the velocity update, ``max_speed`` (0.07), ``goal_velocity`` (0.0).
``acrobot`` [Acrobot-v1, "book" dynamics, no torque noise]
    ``link_length_1``, ``link_length_2`` (1.0), ``link_mass_1``, ``link_mass_2`` (1.0),
    ``link_moi`` (1.0, both links), ``gravity`` (9.8), ``max_torque`` (1.0: actions 0/1/2 apply
    -max_torque/0/+max_torque). Each link's centre of mass is at half its length, and an episode
    terminates when the free end rises above ``(link_length_1 + link_length_2) / 2`` over the
    pivot; with the default lengths both rules are exactly Gymnasium's (0.5 and 1.0).
``halfcheetah``, ``hopper``, ``walker2d`` [HalfCheetah-v5, Hopper-v5, Walker2d-v5]
    ``gravity_scale``, ``mass_scale``, ``friction_scale`` (1.0): multiply the MuJoCo model's
    ``opt.gravity``, ``body_mass`` (and ``body_inertia``, so density scales uniformly) and
    ``geom_friction`` once, when the sub-env is built. Reward and termination are Gymnasium's.
``halfcheetah-vel`` [HalfCheetah-v5 with a velocity target]
    the three scales above plus ``target_velocity`` (1.0, m/s). The reward replaces
    Gymnasium's: ``r = -|v_x - target_velocity| - 0.1 * sum(action**2)``, where ``v_x`` is
    Gymnasium's forward velocity ``info["x_velocity"]`` and the second term is HalfCheetah's own
    control cost (``ctrl_cost_weight`` 0.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FamilyInfo:
    """What a family accepts and how long its episodes are.

    ``max_return`` is the best achievable episode return when it is a known positive number
    (used to normalise scores to [0, 1]); None when the family has no such number.
    """

    name: str
    gym_id: str
    defaults: dict[str, float]
    positive: frozenset[str]
    max_episode_steps: int
    max_return: float | None
    mujoco: bool = False
    nonnegative: frozenset[str] = field(default_factory=frozenset)

    def check_value(self, key: str, value: float) -> None:
        """Raise ValueError if ``value`` is not allowed for parameter ``key``."""
        if not math.isfinite(value):
            raise ValueError(f"{self.name}: parameter {key}={value} must be a finite number")
        if key in self.positive and value <= 0:
            raise ValueError(f"{self.name}: parameter {key}={value} must be > 0")
        if key in self.nonnegative and value < 0:
            raise ValueError(f"{self.name}: parameter {key}={value} must be >= 0")


_MUJOCO_SCALES = {"gravity_scale": 1.0, "mass_scale": 1.0, "friction_scale": 1.0}

FAMILIES: dict[str, FamilyInfo] = {
    info.name: info
    for info in [
        FamilyInfo(
            name="cartpole",
            gym_id="CartPole-v1",
            defaults={
                "pole_length": 1.0,
                "pole_mass": 0.1,
                "cart_mass": 1.0,
                "gravity": 9.8,
                "force_mag": 10.0,
            },
            positive=frozenset({"pole_length", "pole_mass", "cart_mass"}),
            max_episode_steps=500,
            max_return=500.0,
        ),
        FamilyInfo(
            name="pendulum",
            gym_id="Pendulum-v1",
            defaults={
                "mass": 1.0,
                "length": 1.0,
                "gravity": 10.0,
                "max_torque": 2.0,
                "max_speed": 8.0,
            },
            positive=frozenset({"mass", "length", "max_torque", "max_speed"}),
            max_episode_steps=200,
            max_return=None,
        ),
        FamilyInfo(
            name="mountaincar-continuous",
            gym_id="MountainCarContinuous-v0",
            defaults={"power": 0.0015, "gravity": 0.0025, "max_speed": 0.07, "goal_velocity": 0.0},
            positive=frozenset({"power", "max_speed"}),
            max_episode_steps=999,
            max_return=100.0,
        ),
        FamilyInfo(
            name="acrobot",
            gym_id="Acrobot-v1",
            defaults={
                "link_length_1": 1.0,
                "link_length_2": 1.0,
                "link_mass_1": 1.0,
                "link_mass_2": 1.0,
                "link_moi": 1.0,
                "gravity": 9.8,
                "max_torque": 1.0,
            },
            positive=frozenset(
                {"link_length_1", "link_length_2", "link_mass_1", "link_mass_2", "link_moi"}
            ),
            max_episode_steps=500,
            max_return=None,
        ),
        *[
            FamilyInfo(
                name=name,
                gym_id=gym_id,
                defaults=dict(_MUJOCO_SCALES),
                positive=frozenset({"mass_scale", "friction_scale"}),
                nonnegative=frozenset({"gravity_scale"}),
                max_episode_steps=1000,
                max_return=None,
                mujoco=True,
            )
            for name, gym_id in [
                ("halfcheetah", "HalfCheetah-v5"),
                ("hopper", "Hopper-v5"),
                ("walker2d", "Walker2d-v5"),
            ]
        ],
        FamilyInfo(
            name="halfcheetah-vel",
            gym_id="HalfCheetah-v5",
            defaults={**_MUJOCO_SCALES, "target_velocity": 1.0},
            positive=frozenset({"mass_scale", "friction_scale"}),
            nonnegative=frozenset({"gravity_scale"}),
            max_episode_steps=1000,
            max_return=None,
            mujoco=True,
        ),
    ]
}


def list_families() -> list[str]:
    """Names of all task families, sorted."""
    return sorted(FAMILIES)


def get_family(name: str) -> FamilyInfo:
    """The family called ``name``; ValueError listing the valid names otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(
            f"unknown task family {name!r}; valid families: {', '.join(list_families())}"
        ) from None
