"""Hand-made check behind the ``cartpole-physics`` suite: do default-fitted controllers transfer?

A linear threshold policy ``action = 1 if [obs, 1] @ w > 0 else 0`` is fitted by the
cross-entropy method (CEM) on one cartpole task, all candidates evaluated at once in one
``VecTaskEnv``. We fit it on the default task with several seeds, evaluate those controllers
on candidate variants, and fit a controller on each variant itself to check it is solvable.

Run ``python -m skillbank.tasks.calibrate`` (about 15 s on 2 cores) to print the table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skillbank.tasks.spec import TaskSpec, parse_task
from skillbank.tasks.vec_env import make_vec_env

# The suite's tasks, then a few candidates that were measured and not kept.
CANDIDATES = [
    "cartpole/default",
    "cartpole/long-pole",
    "cartpole/reversed",
    "cartpole:pole_length=0.15,force_mag=20",
    "cartpole/high-gravity",
    "cartpole/heavy-pole",
    "cartpole/weak-force",
    "cartpole:pole_length=3",
    "cartpole:cart_mass=3,force_mag=2",
    "cartpole/reversed-heavy-pole",
]


def evaluate_linear(weights: np.ndarray, spec: TaskSpec, episodes: int, seed: int) -> np.ndarray:
    """Mean first-episode return of each row of ``weights`` [K, obs_dim + 1] on ``spec``."""
    k = len(weights)
    env = make_vec_env([spec], k * episodes, seed)
    obs = env.reset()
    owner = np.repeat(np.arange(k), episodes)
    returns = np.full(k * episodes, np.nan)
    while np.isnan(returns).any():
        scores = np.einsum("nd,nd->n", obs, weights[owner, :-1]) + weights[owner, -1]
        obs, _, _, _, info = env.step((scores > 0).astype(np.int64))
        first = info["done"] & np.isnan(returns)
        returns[first] = info["episode_return"][first]
    env.close()
    return returns.reshape(k, episodes).mean(axis=1)


def fit_linear(
    spec: TaskSpec,
    seed: int,
    iterations: int = 40,
    population: int = 48,
    elite: int = 8,
    episodes: int = 8,
) -> tuple[np.ndarray, float]:
    """CEM on a linear threshold policy; returns (best weights, their mean return)."""
    rng = np.random.default_rng(seed)
    dim = 5
    mean, std = np.zeros(dim), np.ones(dim)
    best_w, best_score = mean, -np.inf
    for it in range(iterations):
        pop = mean + std * rng.standard_normal((population, dim))
        scores = evaluate_linear(pop, spec, episodes, seed=seed * 1000 + it)
        order = np.argsort(scores)[::-1][:elite]
        mean, std = pop[order].mean(axis=0), pop[order].std(axis=0) + 0.05
        if scores[order[0]] > best_score:
            best_w, best_score = pop[order[0]], float(scores[order[0]])
        if scores[order].min() >= 500:
            break
    return best_w, best_score


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="default-task controllers to fit")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    parser.add_argument("tasks", nargs="*", default=CANDIDATES)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    default = TaskSpec("cartpole")
    controllers = []
    for s in range(args.seeds):
        w, score = fit_linear(default, seed=s)
        controllers.append(w)
        check = evaluate_linear(w[None], default, args.episodes, seed=10_000 + s)[0]
        print(f"default-task controller, seed {s}: CEM score {score:.0f}, held-out {check:.1f}")
    weights = np.array(controllers)
    print("mean return over episodes; 'transfer' = the default-task controllers on the task,")
    print("'own' = best of 3 controllers fitted on the task itself")
    print(f"{'task':40s} {'transfer mean':>13s} {'min':>6s} {'max':>6s} {'own':>6s}")
    for text in args.tasks:
        spec = parse_task(text)
        transfer = evaluate_linear(weights, spec, args.episodes, seed=20_000)
        own = max(
            evaluate_linear(fit_linear(spec, seed=s)[0][None], spec, args.episodes, 30_000)[0]
            for s in range(3)
        )
        print(
            f"{spec.name:40s} {transfer.mean():13.1f} {transfer.min():6.1f} "
            f"{transfer.max():6.1f} {own:6.1f}"
        )
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
