"""Building gym tasks: one Gymnasium env per sub-env, flattened observations, one vector env.

``build_gym_env(spec)`` makes the env (``gymnasium.make`` of the id, or of an ``EnvSpec``
whose entry point is the user's ``module:Class``), applies the task's wrappers, checks the
spaces and flattens Box / Dict / Tuple observations (one-hot task id appended when the task
is conditioned). ``GymBackend`` steps a block of such sub-envs with Gymnasium's own
vector envs (``SyncVectorEnv``, or ``AsyncVectorEnv`` worker processes when ``workers > 1``)
with autoreset disabled: ``VecTaskEnv`` resets the sub-envs that ended, as for every family.
Every failure is one ``GymTaskError`` naming the task.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from skillbank.tasks.gym_spec import GymTaskError, GymTaskSpec

LEAVES = (spaces.Box, spaces.Discrete)


def import_object(path: str, task: str, what: str) -> Any:
    """``"module:attr"`` -> the object; GymTaskError naming the task otherwise."""
    module, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise GymTaskError(f"task {task!r}: {what} {path!r} cannot be imported: {exc}") from None
    return obj


def _is_registered(env_id: str) -> bool:
    module, sep, rest = env_id.partition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError:
            return False
        env_id = rest
    return env_id in gymnasium.registry


def _env_spec(spec: GymTaskSpec) -> gymnasium.envs.registration.EnvSpec | str:
    """What to pass to ``gymnasium.make``: the id, or an EnvSpec for an entry point."""
    if spec.family == "metaworld":
        import_object("metaworld:MT1", spec.name, "Meta-World (pip install 'skillbank[metaworld]')")
    if _is_registered(spec.env_id):
        return spec.env_id
    if ":" not in spec.env_id:
        raise GymTaskError(
            f"task {spec.name!r}: field env_id: {spec.env_id!r} is not a registered Gymnasium "
            "environment (give a registered id or an entry point 'module:Class')"
        )
    import_object(spec.env_id, spec.name, "entry point")
    return gymnasium.envs.registration.EnvSpec(id=spec.env_id, entry_point=spec.env_id)


def registered_limit(spec: GymTaskSpec) -> int | None:
    """The episode limit of the env spec of ``spec`` (None when it has none or is unknown)."""
    target = _env_spec(spec)
    if isinstance(target, str):
        try:
            return gymnasium.spec(
                target.partition(":")[2] if ":" in target else target
            ).max_episode_steps
        except gymnasium.error.Error:
            return None
    return target.max_episode_steps


def check_space(space: gymnasium.Space, task: str, what: str, leaves: tuple[type, ...]) -> None:
    """GymTaskError unless ``space`` is made of ``leaves`` (through Dict / Tuple for obs)."""
    if isinstance(space, leaves):
        if isinstance(space, spaces.Discrete) and what == "action" and int(space.start) != 0:
            raise GymTaskError(f"task {task!r}: unsupported action space {space}: start != 0")
        return
    if what == "observation" and isinstance(space, (spaces.Dict, spaces.Tuple)):
        for sub in space.spaces.values() if isinstance(space, spaces.Dict) else space.spaces:
            check_space(sub, task, what, LEAVES)
        return
    allowed = "Box or Discrete" if what == "action" else "Box, or Dict / Tuple of Box / Discrete"
    raise GymTaskError(f"task {task!r}: unsupported {what} space {space} (supported: {allowed})")


class FlatObs(gymnasium.ObservationWrapper):
    """Flatten the observation to float32 ``[d]``, plus the task's one-hot when conditioned."""

    def __init__(self, env: gymnasium.Env, one_hot: np.ndarray | None) -> None:
        super().__init__(env)
        self.inner = env.observation_space
        self.one_hot = one_hot
        flat = spaces.flatten_space(self.inner)
        assert flat.shape is not None
        d = int(np.prod(flat.shape)) + (0 if one_hot is None else len(one_hot))
        self.observation_space = spaces.Box(-np.inf, np.inf, (d,), np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        flat = np.asarray(spaces.flatten(self.inner, observation), dtype=np.float32).ravel()
        return flat if self.one_hot is None else np.concatenate([flat, self.one_hot])


def build_gym_env(spec: GymTaskSpec) -> gymnasium.Env:
    """The env of one sub-env of ``spec``: made, wrapped, checked, flattened."""
    target = _env_spec(spec)
    extra: dict[str, Any] = {"disable_env_checker": True}
    if spec.max_episode_steps is not None:
        extra["max_episode_steps"] = spec.max_episode_steps
    try:
        env = gymnasium.make(target, **extra, **spec.kwargs)
    except GymTaskError:
        raise
    except Exception as exc:  # the env's own constructor: bad kwargs and the like
        raise GymTaskError(
            f"task {spec.name!r}: gymnasium.make({spec.env_id!r}, **{spec.kwargs}) failed: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    try:
        for path in spec.wrappers:
            wrapper = import_object(path, spec.name, "wrapper")
            try:
                env = wrapper(env)
            except Exception as exc:
                raise GymTaskError(f"task {spec.name!r}: wrapper {path!r} failed: {exc}") from None
        check_space(env.action_space, spec.name, "action", LEAVES)
        check_space(env.observation_space, spec.name, "observation", (spaces.Box,))
        one_hot = None
        if spec.num_tasks is not None:
            one_hot = np.zeros(spec.num_tasks, dtype=np.float32)
            one_hot[spec.task_index] = 1.0
        return FlatObs(env, one_hot)
    except BaseException:
        env.close()
        raise


def _action_space(space: gymnasium.Space) -> gymnasium.Space:
    if isinstance(space, spaces.Discrete):
        return spaces.Discrete(int(space.n))
    assert isinstance(space, spaces.Box)
    return spaces.Box(low=space.low, high=space.high, shape=space.shape, dtype=np.float32)


class GymBackend:
    """A block of gym sub-envs (one spec per sub-env) in one Gymnasium vector env.

    Besides ``Backend``'s protocol it reports, after each ``step``, ``truncated`` (the env's
    own time limit or truncation) and ``success`` (``info["success"]`` as float, NaN where
    the env does not report one)."""

    def __init__(self, specs: list[GymTaskSpec], workers: int = 0) -> None:
        self.num_envs = len(specs)
        self.specs = specs
        fns: list[Callable[[], gymnasium.Env]] = [
            functools.partial(build_gym_env, spec) for spec in specs
        ]
        mode = gymnasium.vector.AutoresetMode.DISABLED
        if workers > 1 and len(specs) > 1:
            for spec in dict.fromkeys(specs):  # errors in this process, naming the task
                build_gym_env(spec).close()
            make: Callable[[], gymnasium.vector.VectorEnv] = lambda: (
                gymnasium.vector.AsyncVectorEnv(
                    fns, autoreset_mode=mode, context="spawn", shared_memory=False
                )
            )
        else:
            make = lambda: gymnasium.vector.SyncVectorEnv(fns, autoreset_mode=mode)
        try:
            self.vec = make()
        except RuntimeError as exc:  # Gymnasium: sub-envs with different spaces
            names = ", ".join(dict.fromkeys(repr(s.name) for s in specs))
            raise GymTaskError(f"tasks {names} cannot share one vector env: {exc}") from None
        obs_shape = self.vec.single_observation_space.shape
        assert obs_shape is not None
        self.obs_dim = int(obs_shape[0])
        self.action_space = _action_space(self.vec.single_action_space)
        self._discrete = isinstance(self.action_space, spaces.Discrete)
        self.truncated = np.zeros(self.num_envs, dtype=bool)
        self.success = np.full(self.num_envs, np.nan)

    def _check_obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape[1:] != (self.obs_dim,):
            raise GymTaskError(
                f"task {self.specs[0].name!r}: observations of shape {obs.shape[1:]} where "
                f"({self.obs_dim},) was expected (tasks of one block must share a shape)"
            )
        return obs

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run a call into the envs; their exceptions become one GymTaskError."""
        try:
            return fn()
        except GymTaskError:
            raise
        except Exception as exc:
            names = ", ".join(dict.fromkeys(repr(s.name) for s in self.specs))
            raise GymTaskError(
                f"task {names}: the env failed in {what}: {type(exc).__name__}: {exc}"
            ) from exc

    def reset_all(self, seed: int | None) -> np.ndarray:
        obs, _ = self._call("reset", lambda: self.vec.reset(seed=seed))
        return self._check_obs(obs)

    def reset_envs(self, idx: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[idx] = True
        obs, _ = self._call("reset", lambda: self.vec.reset(options={"reset_mask": mask}))
        return self._check_obs(obs)[idx]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        acts = actions.astype(np.int64) if self._discrete else actions.astype(np.float32)
        obs, reward, terminated, truncated, info = self._call("step", lambda: self.vec.step(acts))
        self.truncated = np.asarray(truncated, dtype=bool)
        success = info.get("success") if isinstance(info, dict) else None
        if success is None:
            self.success = np.full(self.num_envs, np.nan)
        else:
            mask = info.get("_success", np.ones(self.num_envs, dtype=bool))
            self.success = np.where(mask, np.asarray(success, dtype=np.float64), np.nan)
        return (
            self._check_obs(obs),
            np.asarray(reward, dtype=np.float64),
            np.asarray(terminated, dtype=bool),
        )

    def close(self) -> None:
        self.vec.close()
