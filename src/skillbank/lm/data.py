"""Users' datasets in TRL's formats, as tasks the SFT and GRPO loops take like a domain.

Files: ``*.jsonl`` (one JSON object per line), ``*.json`` (a list of objects),
``*.parquet`` (needs ``pyarrow``), or a folder written by ``datasets``' ``save_to_disk``
(``load_from_disk``; a ``DatasetDict`` gives its ``train`` split). Row formats:

- standard: ``prompt`` (str) and, for SFT, ``completion`` (str);
- conversational: ``prompt`` (a list of ``{"role", "content"}`` messages) and optionally
  ``completion`` (a list with the assistant message), or ``messages`` (the whole chat: the
  last message is the assistant's answer, the ones before it the prompt).

Column names are options (``prompt_column``, ``completion_column``); every other column is
handed to the reward functions by name. Conversational prompts go through the tokenizer's
chat template. A row without the prompt column is a ``DatasetError`` naming file and row.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillbank.errors import SkillbankError
from skillbank.lm.domains import Example
from skillbank.lm.rewards import Rewards


class DatasetError(SkillbankError, ValueError):
    """A dataset that cannot be read or a row that lacks a needed column."""


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        try:
            import datasets
        except ImportError as e:
            raise DatasetError(f"{path}: a datasets folder needs `pip install datasets`") from e
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise DatasetError(f"{path}: DatasetDict without a 'train' split ({list(ds)})")
            ds = ds["train"]
        return [dict(r) for r in ds]
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DatasetError(f"{path}: reading Parquet needs `pip install pyarrow`") from e
        return [dict(r) for r in pq.read_table(str(path)).to_pylist()]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DatasetError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list of objects")
        return data
    rows = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            raise DatasetError(f"{path}: line {i + 1}: not valid JSON ({e})") from e
    return rows


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in value
    ):
        raise DatasetError(f"{where}: expected a list of {{'role', 'content'}} messages")
    return value


def row_example(
    row: Any, where: str, name: str, prompt_column: str = "prompt", completion_column: str = ""
) -> Example:
    """One dataset row as an ``Example`` (prompt, answer text, other columns)."""
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected an object, got {type(row).__name__}")
    completion_column = completion_column or "completion"
    if prompt_column not in row and "messages" in row:
        msgs = _messages(row["messages"], f"{where}: column 'messages'")
        if len(msgs) < 2 or msgs[-1].get("role") != "assistant":
            raise DatasetError(
                f"{where}: column 'messages': the last message must be the assistant's answer"
            )
        extra = {k: v for k, v in row.items() if k != "messages"}
        return Example(msgs[:-1], str(msgs[-1]["content"]), name, extra)
    if prompt_column not in row:
        raise DatasetError(
            f"{where}: no column {prompt_column!r} (columns: {sorted(row)}); name the prompt "
            "column with --prompt-column"
        )
    prompt = row[prompt_column]
    if isinstance(prompt, list):
        prompt = _messages(prompt, f"{where}: column {prompt_column!r}")
    elif not isinstance(prompt, str):
        raise DatasetError(f"{where}: column {prompt_column!r}: expected text or messages")
    answer = row.get(completion_column, "")
    if isinstance(answer, list):
        answer = str(_messages(answer, f"{where}: column {completion_column!r}")[-1]["content"])
    extra = {k: v for k, v in row.items() if k != prompt_column}
    return Example(prompt, str(answer or ""), name, extra)


@dataclass
class DatasetTask:
    """A dataset plus reward functions, usable wherever a ``Domain`` is (sample, examples,
    rewards). ``test`` rows (an eval dataset) are what ``examples(n, "test")`` draws from;
    without one, the training rows."""

    name: str
    train: list[Example]
    test: list[Example]
    reward_fns: Rewards | None = None
    source: str = "dataset"

    @classmethod
    def load(
        cls,
        path: str | Path,
        rewards: Rewards | None = None,
        prompt_column: str = "prompt",
        completion_column: str = "completion",
        eval_path: str | Path | None = None,
        name: str | None = None,
    ) -> DatasetTask:
        path = Path(path)
        label = name or path.stem

        def read(p: Path) -> list[Example]:
            rows = _read_rows(p)
            if not rows:
                raise DatasetError(f"{p}: the dataset has no rows")
            return [
                row_example(r, f"{p}: row {i}", label, prompt_column, completion_column)
                for i, r in enumerate(rows)
            ]

        train = read(path)
        test = read(Path(eval_path)) if eval_path is not None else train
        return cls(label, train, test, rewards, str(path))

    def sample(self, rng: random.Random, split: str = "train") -> Example:
        rows = self.test if split == "test" else self.train
        return rows[rng.randrange(len(rows))]

    def examples(self, n: int, split: str = "train", seed: int | None = None) -> list[Example]:
        """The first ``n`` rows of ``split`` (all of them if fewer)."""
        return list((self.test if split == "test" else self.train)[:n])

    def reward_columns(self, examples: Sequence[Example]) -> dict[str, list[Any]]:
        """TRL's keyword arguments: ``prompts`` and every other column, one per row."""
        keys = sorted({k for e in examples for k in (e.extra or {})})
        cols: dict[str, list[Any]] = {"prompts": [e.prompt for e in examples]}
        for k in keys:
            cols[k] = [(e.extra or {}).get(k) for e in examples]
        return cols

    def rewards(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        if self.reward_fns is None:
            raise DatasetError(f"{self.source}: RL needs a reward function (--reward)")
        conversational = any(isinstance(e.prompt, list) for e in examples)
        comps: list[Any] = [
            [{"role": "assistant", "content": c}] if conversational else c for c in completions
        ]
        return self.reward_fns(comps, self.reward_columns(examples))

    def reward(self, completion: str, answer: str) -> float:
        raise DatasetError(f"{self.source}: rewards come in batches (DatasetTask.rewards)")
