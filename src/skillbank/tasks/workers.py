"""Environment stepping in worker processes: ``ProcVecEnv`` has ``VecTaskEnv``'s interface
and splits its sub-envs over ``workers`` processes, so rollout collection uses many cores.

Worker j holds an ordinary ``VecTaskEnv`` over every task with its share of
``envs_per_task`` (``np.array_split``) and seed ``worker_seed(seed, j)``; the parent sends
each worker its actions, the workers step in parallel, and the parent puts their results
back in the global order (sub-env ``i`` runs ``specs[i // envs_per_task]``, as in
``VecTaskEnv``). Results keep ``VecTaskEnv``'s semantics (same-step autoreset,
``final_obs``, episode statistics, ``NonFiniteError``); with one worker they are identical
to an in-process ``VecTaskEnv`` of the same seed. With several, each worker's sub-envs
are identical to an in-process ``VecTaskEnv`` of its share and seed (the tests check both).

Processes are started with ``spawn`` (they never inherit torch's threads) and talk over
pipes (actions and results are numpy arrays); as with any spawned process, a script must
build a ``ProcVecEnv`` under ``if __name__ == "__main__":``. A worker exits when its
parent dies (its pipe closes).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from skillbank.tasks import NonFiniteError, TaskSpec, VecTaskEnv, make_vec_env
from skillbank.tasks.gym_spec import GYM_FAMILIES

DIED = (
    "the worker process died (a script that builds a ProcVecEnv must do so under "
    "`if __name__ == '__main__':`, as for any spawned process)"
)


def worker_seed(seed: int, j: int) -> int:
    """Seed of worker ``j`` (worker 0 keeps ``seed``)."""
    return seed if j == 0 else int(np.random.SeedSequence([seed, j]).generate_state(1)[0])


def _serve(conn: Connection, specs: list[TaskSpec], envs_per_task: int, seed: int) -> None:
    """A worker's loop: build its env, then answer ``(command, argument)`` messages."""
    env = None
    try:
        env = VecTaskEnv(specs, envs_per_task, seed)
        conn.send(("ok", None))
        while True:
            cmd, arg = conn.recv()
            if cmd == "close":
                break
            try:
                out = env.reset(seed=arg) if cmd == "reset" else env.step(arg)
                conn.send(("ok", out))
            except NonFiniteError as e:
                conn.send(("nonfinite", (str(e), e.task_name, e.step, e.env_index)))
            except Exception as e:  # reported by the parent, with the worker's index
                conn.send(("error", f"{type(e).__name__}: {e}"))
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception as e:  # construction failed
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        if env is not None:
            env.close()
        conn.close()


class ProcVecEnv:
    """``VecTaskEnv`` with its sub-envs stepped in ``workers`` processes (module docstring)."""

    def __init__(self, specs: list[TaskSpec], envs_per_task: int, seed: int, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        probe = make_vec_env(list(specs), 1, seed)  # spaces and limits, in this process
        probe.close()
        self.specs = list(specs)
        self.envs_per_task = envs_per_task
        self.num_envs = len(specs) * envs_per_task
        self.task_ids = np.repeat(np.arange(len(specs)), envs_per_task)
        self.obs_dim = probe.obs_dim
        self.action_space = probe.action_space
        self.observation_space = probe.observation_space
        self.max_returns, self.max_return = probe.max_returns, probe.max_return
        self.max_episode_steps = probe.max_episode_steps
        shares = [len(p) for p in np.array_split(np.arange(envs_per_task), workers) if len(p)]
        self.index: list[np.ndarray] = []  # worker j's sub-envs -> global sub-env indices
        offset = 0
        for c in shares:
            local = [k * envs_per_task + offset + e for k in range(len(specs)) for e in range(c)]
            self.index.append(np.array(local, dtype=np.int64))
            offset += c
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        try:
            for j, c in enumerate(shares):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_serve,
                    args=(child, self.specs, c, worker_seed(seed, j)),
                    daemon=True,
                    name=f"env-worker-{j}",
                )
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)
            self._gather()
        except BaseException:
            self.close()
            raise

    @property
    def workers(self) -> int:
        return len(self.conns)

    def _gather(self) -> list[Any]:
        """Every worker's answer, in order; raises the first worker's error."""
        answers = []
        for conn in self.conns:
            try:
                answers.append(conn.recv())
            except EOFError:
                answers.append(("error", DIED))
        for j, (status, payload) in enumerate(answers):
            if status == "nonfinite":
                message, task, step, i = payload
                raise NonFiniteError(
                    f"env worker {j}: {message}", task, step, int(self.index[j][i])
                )
            if status == "error":
                raise RuntimeError(f"env worker {j} ({self.procs[j].name}): {payload}")
        return [payload for _, payload in answers]

    def reset(self, seed: int | None = None) -> np.ndarray:
        for j, conn in enumerate(self.conns):
            conn.send(("reset", None if seed is None else worker_seed(seed, j)))
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float32)
        for idx, part in zip(self.index, self._gather()):
            obs[idx] = part
        return obs

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        acts = np.asarray(actions)
        if acts.shape[:1] != (self.num_envs,):
            raise ValueError(f"actions must have {self.num_envs} rows, got shape {acts.shape}")
        for conn, idx in zip(self.conns, self.index):
            conn.send(("step", acts[idx]))
        parts = self._gather()
        first = parts[0]
        out = [np.empty((self.num_envs, *a.shape[1:]), dtype=a.dtype) for a in first[:4]]
        info = {
            k: np.empty((self.num_envs, *v.shape[1:]), dtype=v.dtype) for k, v in first[4].items()
        }
        for idx, part in zip(self.index, parts):
            for dst, src in zip(out, part[:4]):
                dst[idx] = src
            for k, v in part[4].items():
                info[k][idx] = v
        obs, reward, terminated, truncated = out
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):  # a worker that died already
                conn.send(("close", None))
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
        self.conns, self.procs = [], []

    def __enter__(self) -> ProcVecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self.specs)
        return f"ProcVecEnv({self.num_envs} envs in {self.workers} processes: [{names}])"


def make_env(
    specs: list[TaskSpec], envs_per_task: int, seed: int, workers: int = 0
) -> VecTaskEnv | ProcVecEnv:
    """In-process ``VecTaskEnv`` for ``workers`` 0, else a ``ProcVecEnv`` with that many
    worker processes (at most ``envs_per_task``); gym tasks use Gymnasium's
    ``AsyncVectorEnv`` instead (one process per sub-env) when ``workers > 1``."""
    if workers == 0:
        return make_vec_env(list(specs), envs_per_task, seed)
    if any(s.family in GYM_FAMILIES for s in specs):  # Gymnasium's own async vector envs
        return make_vec_env(list(specs), envs_per_task, seed, workers)
    return ProcVecEnv(list(specs), envs_per_task, seed, min(workers, envs_per_task))
