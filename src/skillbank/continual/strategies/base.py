"""The strategy interface, the shared context of a run, and the registry.

A strategy decides *what* is trained for each task of the sequence (which parameters,
from which start, with which extra loss) and how every task is evaluated; the runner
(``runner.py``) does the rest with the one PPO loop (``skillbank.training.loop.train_ppo``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from skillbank.algos.normalize import ObsNorm
from skillbank.algos.ppo import PPOConfig
from skillbank.continual.config import ContinualConfig
from skillbank.tasks import TaskSpec

Forward = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
ExtraLoss = Callable[[], tuple[Tensor, dict[str, float]]]


@dataclass
class Context:
    """What every strategy of one (run, seed) shares."""

    specs: list[TaskSpec]
    """The tasks, in training order."""
    config: ContinualConfig
    """The run's configuration."""
    action_kind: str
    """"discrete" or "box"."""
    obs_dim: int
    """Observation size (equal for every task)."""
    action_dim: int
    """Number of discrete actions, or the Box dimension."""
    full_ppo: PPOConfig
    """PPO settings for full networks (``total_steps`` = steps per task)."""
    lora_ppo: PPOConfig
    """PPO settings for LoRA skills (``total_steps`` = steps per task)."""
    seed: int
    """The seed of this run."""

    @property
    def num_tasks(self) -> int:
        return len(self.specs)


@dataclass
class TaskSetup:
    """What ``train_ppo`` trains for one task of the sequence."""

    bank: Any
    """A ``LoraBank``/``FullBank`` (or any object with the same three methods)."""
    ppo: PPOConfig
    """PPO settings for this task."""
    init_norm: ObsNorm
    """Observation statistics the task starts from (updated during its training)."""
    extra_loss: ExtraLoss | None = None
    """Added to every PPO minibatch loss (a penalty or a behaviour-cloning term)."""


class Strategy:
    """Base class. Subclasses set ``name`` and register with ``@register``.

    Lifecycle for a sequence of T tasks: ``adopt_first(net, norm)`` (task 0 is trained
    once per seed as a full network and shared by the strategies that declare
    ``shares_first_task``), then for j = 1..T-1: ``setup_task(j, norms)`` -> train ->
    ``finish_task(j, norm)``. ``policy()`` maps a row's task index (position in the
    sequence) to the parameters that act for it, at any time.
    """

    name: ClassVar[str] = ""
    sequential: ClassVar[bool] = True
    """False for strategies that train all tasks at once (``multitask``)."""
    shares_first_task: ClassVar[bool] = True
    """Task 0 is a full network trained from the seed's init (the same for every such
    strategy, so it is trained once per seed)."""
    description: ClassVar[str] = ""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.extras: dict[str, Any] = {}
        """JSON-able notes kept in results.json (e.g. which skill a task started from)."""

    # ----------------------------------------------------------------- sequence
    def adopt_first(self, net: nn.Module, norm: ObsNorm) -> None:
        """Take over the network trained on task 0 and its observation statistics."""
        raise NotImplementedError

    def setup_task(self, j: int, norms: list[ObsNorm]) -> TaskSetup:
        """Prepare task ``j`` (``norms``: statistics of tasks 0..j-1)."""
        raise NotImplementedError

    def finish_task(self, j: int, norm: ObsNorm) -> None:
        """Task ``j`` is trained (final statistics ``norm``): keep what later tasks need."""

    def start_norm(self, i: int, norms: list[ObsNorm]) -> ObsNorm:
        """Statistics to evaluate task ``i`` with before it has been trained (``norms``:
        the tasks trained so far, at least one)."""
        return norms[-1]

    def policy(self) -> Forward:
        """``(obs, task) -> (policy_out, value)`` for task indices of the sequence."""
        raise NotImplementedError

    # ------------------------------------------------------------ bookkeeping
    def memory_bytes(self) -> dict[str, int]:
        """Bytes of everything the strategy keeps to act on (and continue) the sequence,
        by part; the runner adds the observation statistics."""
        raise NotImplementedError

    def state_tensors(self) -> dict[str, Tensor]:
        """Every tensor needed to resume after a finished task (saved as safetensors)."""
        raise NotImplementedError

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        raise NotImplementedError


STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: add a strategy to ``STRATEGIES`` under its ``name``."""
    if not cls.name or cls.name in STRATEGIES:
        raise ValueError(f"strategy name {cls.name!r} is empty or registered twice")
    STRATEGIES[cls.name] = cls
    return cls


def module_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers of ``module``."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def tensors_bytes(tensors: dict[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())
