"""Meta-World (v3 task names) as gym tasks, and its suites: mt10, mt50, cw10, cw20.

A Meta-World task is a ``GymTaskSpec`` of family ``metaworld``: env id ``Meta-World/MT1``
with kwargs ``env_name`` (a v3 name such as ``"reach-v3"``), ``seed`` (which of the 50
goal positions the benchmark draws; each reset picks one of them at random) and
``terminate_on_success=False`` (episodes last 500 steps; ending on success would cut off
the dense reward PPO learns from). ``info["success"]`` is reported per step; an episode's
success is 1 if it was ever reached (``VecTaskEnv``'s ``episode_success``).

Text form: ``metaworld:reach-v3`` (optional ``?seed=1,...`` kwargs of ``Meta-World/MT1``).
Suites use task names ``metaworld/<name>``; ``mt10-onehot`` / ``mt50-onehot`` append a
one-hot task id (task conditioning for a multi-task base). ``metaworld`` is imported only
when an env is built: ``pip install "skillbank[metaworld]"``.

Where v3 differs from the v2 tasks of the published tables (Meta-World v2, Continual World
on v1 names): v3 renames every task ``*-v3``; its reward functions are the v2 ones
(``reward_function_version="v2"``); observations are 39-d (hand, gripper, two objects,
their previous frame, goal) as in v2, and MuJoCo bindings are the official ``mujoco``
(3.3.0) instead of ``mujoco-py``, so simulations do not match v2 step for step.
"""

from __future__ import annotations

from typing import Any

from skillbank.tasks.gym_spec import GymTaskError, GymTaskSpec
from skillbank.tasks.spec import TaskSpec

ENV_ID = "Meta-World/MT1"
EPISODE_STEPS = 500
HINT = 'Meta-World tasks need the metaworld extra: pip install "skillbank[metaworld]"'

MT10 = [
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
]
MT50 = [
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3",
    "coffee-button-v3", "coffee-pull-v3", "coffee-push-v3", "dial-turn-v3", "disassemble-v3",
    "door-close-v3", "door-lock-v3", "door-open-v3", "door-unlock-v3", "hand-insert-v3",
    "drawer-close-v3", "drawer-open-v3", "faucet-open-v3", "faucet-close-v3", "hammer-v3",
    "handle-press-side-v3", "handle-press-v3", "handle-pull-side-v3", "handle-pull-v3",
    "lever-pull-v3", "pick-place-wall-v3", "pick-out-of-hole-v3", "pick-place-v3",
    "plate-slide-v3", "plate-slide-side-v3", "plate-slide-back-v3", "plate-slide-back-side-v3",
    "peg-insert-side-v3", "peg-unplug-side-v3", "soccer-v3", "stick-push-v3", "stick-pull-v3",
    "push-v3", "push-wall-v3", "push-back-v3", "reach-v3", "reach-wall-v3", "shelf-place-v3",
    "sweep-into-v3", "sweep-v3", "window-open-v3", "window-close-v3",
]  # fmt: skip
# Continual World's CW10 sequence (Wolczyk et al. 2021, v1 names), in v3 names; CW20 = twice.
CW10 = [
    "hammer-v3",
    "push-wall-v3",
    "faucet-close-v3",
    "push-back-v3",
    "stick-pull-v3",
    "handle-press-side-v3",
    "push-v3",
    "shelf-place-v3",
    "window-close-v3",
    "peg-unplug-side-v3",
]


def metaworld_task(
    env_name: str,
    family: str = "metaworld",
    kwargs: dict[str, Any] | None = None,
    name: str = "",
    **fields: Any,
) -> GymTaskSpec:
    """The Meta-World task ``env_name`` (a v3 name, see ``MT50``)."""
    if env_name not in MT50:
        raise GymTaskError(
            f"task {name or 'metaworld:' + env_name!r}: field env_name: unknown Meta-World v3 "
            f"task {env_name!r}; valid: {', '.join(sorted(MT50))}"
        )
    kw = {"seed": 0, "terminate_on_success": False, **(kwargs or {}), "env_name": env_name}
    fields.setdefault("max_episode_steps", EPISODE_STEPS)
    return GymTaskSpec(
        family=family, env_id=ENV_ID, kwargs=kw, name=name or f"metaworld/{env_name}", **fields
    )


def metaworld_suite(names: list[str], one_hot: bool = False) -> list[GymTaskSpec]:
    """Tasks of ``names`` in order; with ``one_hot``, each with its index among the suite's
    distinct tasks appended to the observation."""
    specs = [metaworld_task(n) for n in names]
    if not one_hot:
        return specs
    distinct = list(dict.fromkeys(names))
    return [
        s.conditioned(distinct.index(n), len(distinct)) for s, n in zip(specs, names, strict=True)
    ]


def metaworld_suites() -> dict[str, list[TaskSpec]]:
    suites = {
        "mt10": metaworld_suite(MT10),
        "mt50": metaworld_suite(MT50),
        "cw10": metaworld_suite(CW10),
        "cw20": metaworld_suite(CW10 + CW10),
        "mt10-onehot": metaworld_suite(MT10, one_hot=True),
        "mt50-onehot": metaworld_suite(MT50, one_hot=True),
    }
    # typed as the registry's lists of TaskSpec (list is invariant)
    return {name: list(specs) for name, specs in suites.items()}
