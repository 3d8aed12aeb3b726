"""Named suites: ordered lists of tasks. ``SUITES`` maps a suite name to its tasks.

Task names are unique across all suites, so ``parse_task("cartpole/long-pole")`` finds a task
by name alone.
"""

from __future__ import annotations

from skillbank.tasks.metaworld_tasks import metaworld_suites
from skillbank.tasks.spec import TaskSpec


def cartpole_physics() -> list[TaskSpec]:
    """Default CartPole-v1 and 6 physics variants (``pole_length`` is the FULL length).

    Greedy returns (20 episodes) of bases from ``skillbank train-base --task cartpole``
    (default settings: PPO 100k steps, best evaluated weights kept; seeds 0 / 1 / 2;
    evaluation seed 0):

    ==================================  =======================  =================
    task                                change                   base, seeds 0/1/2
    ==================================  =======================  =================
    ``cartpole/default``                none                     500 / 500 / 500
    ``cartpole/long-pole``              pole_length=6            327 / 36 / 21
    ``cartpole/high-gravity``           gravity=50               500 / 477 / 500
    ``cartpole/reversed``               force_mag=-10            9 / 9 / 10
    ``cartpole/heavy-pole``             pole_mass=2              500 / 500 / 500
    ``cartpole/weak-force``             force_mag=1              299 / 230 / 38
    ``cartpole/reversed-heavy-pole``    force_mag=-10, mass 0.5  10 / 9 / 10
    ==================================  =======================  =================

    The two ``reversed`` tasks (a motor wired the other way: the same observation needs the
    opposite action) defeat every base, and make forgetting visible in continual learning;
    ``long-pole`` and ``weak-force`` defeat most bases; ``high-gravity`` and ``heavy-pole``
    are milder shifts, kept for transfer.
    Every task is solvable to 500 (LoRA r=8 and full fine-tuning reach 500 on each).
    Measured and dropped: reversed with pole_length=3 (LoRA r=8 skills reached only
    230-370 where full fine-tuning reached 500), gravity 80 / 100 (base < 50%, but
    fine-tuning results vary between 74 and 500 across runs), short pole (length 0.15,
    force 20: the base already scores 500).
    """
    return [
        TaskSpec("cartpole", {}, "cartpole/default"),
        TaskSpec("cartpole", {"pole_length": 6.0}, "cartpole/long-pole"),
        TaskSpec("cartpole", {"gravity": 50.0}, "cartpole/high-gravity"),
        TaskSpec("cartpole", {"force_mag": -10.0}, "cartpole/reversed"),
        TaskSpec("cartpole", {"pole_mass": 2.0}, "cartpole/heavy-pole"),
        TaskSpec("cartpole", {"force_mag": 1.0}, "cartpole/weak-force"),
        TaskSpec(
            "cartpole", {"force_mag": -10.0, "pole_mass": 0.5}, "cartpole/reversed-heavy-pole"
        ),
    ]


def pendulum_physics() -> list[TaskSpec]:
    """Pendulum-v1 swing-up with changed mass, length and gravity (torque limit stays 2).

    Angular acceleration is ``3 g / (2 l) sin(th) + 3 / (m l^2) u``: ``heavy`` halves the
    torque's effect, ``long`` slows both terms, the gravity variants change how hard the
    pendulum falls and so how many swings the swing-up needs.
    """
    return [
        TaskSpec("pendulum", {}, "pendulum/default"),
        TaskSpec("pendulum", {"mass": 2.0}, "pendulum/heavy"),
        TaskSpec("pendulum", {"length": 1.5}, "pendulum/long"),
        TaskSpec("pendulum", {"gravity": 5.0}, "pendulum/low-gravity"),
        TaskSpec("pendulum", {"gravity": 15.0}, "pendulum/high-gravity"),
    ]


def halfcheetah_physics() -> list[TaskSpec]:
    """HalfCheetah-v5 with half gravity, 1.5x mass, and a slippery floor (friction x0.3)."""
    return [
        TaskSpec("halfcheetah", {}, "halfcheetah/default"),
        TaskSpec("halfcheetah", {"gravity_scale": 0.5}, "halfcheetah/low-gravity"),
        TaskSpec("halfcheetah", {"mass_scale": 1.5}, "halfcheetah/heavy"),
        TaskSpec("halfcheetah", {"friction_scale": 0.3}, "halfcheetah/slippery"),
    ]


def halfcheetah_vel() -> list[TaskSpec]:
    """HalfCheetah running at a target forward velocity (m/s); reward in ``families.py``."""
    return [
        TaskSpec("halfcheetah-vel", {"target_velocity": v}, f"halfcheetah-vel/target-{v:g}")
        for v in (0.5, 1.0, 2.0, 3.0)
    ]


SUITES: dict[str, list[TaskSpec]] = {
    "cartpole-physics": cartpole_physics(),
    "pendulum-physics": pendulum_physics(),
    "halfcheetah-physics": halfcheetah_physics(),
    "halfcheetah-vel": halfcheetah_vel(),
    **metaworld_suites(),  # mt10, mt50, cw10, cw20 (+ one-hot conditioned mt10/mt50)
}


def _index_tasks() -> dict[str, TaskSpec]:
    index: dict[str, TaskSpec] = {}
    for suite, tasks in SUITES.items():
        for task in tasks:
            if task.name in index and index[task.name] != task:
                raise RuntimeError(f"task name {task.name!r} of suite {suite!r} is used twice")
            index[task.name] = task
    return index


_TASKS = _index_tasks()


def list_suites() -> list[str]:
    """Names of all suites, sorted."""
    return sorted(SUITES)


def get_suite(name: str) -> list[TaskSpec]:
    """The tasks of suite ``name`` (a new list); ValueError listing the suites otherwise."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; valid suites: {', '.join(list_suites())}")
    return list(SUITES[name])


def list_suite_tasks() -> list[str]:
    """Names of every task of every suite, sorted."""
    return sorted(_TASKS)


def find_suite_task(name: str) -> TaskSpec | None:
    """The suite task called ``name``, or None."""
    return _TASKS.get(name)
