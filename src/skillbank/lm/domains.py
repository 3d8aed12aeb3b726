"""Text domains with verifiable rewards: a prompt generator, a verifier and split seeds.

Each domain is a small registered class. ``sample(rng)`` draws one ``Example`` (prompt,
reference answer); ``reward(completion, answer)`` scores a completion in [0, 1];
``format_answer(rng, example)`` draws a random answer of the right *format* (length and
alphabet) but not the right content: what ``skillbank lm pretrain`` trains the base on,
so that the base knows every domain's format and none of its skills.

Train and test sets never share a prompt: a prompt belongs to the test split iff a stable
hash of it falls in the held-out tenth, and each split is drawn from its own seed.
"""

from __future__ import annotations

import difflib
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from skillbank.errors import SkillbankError

LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Example:
    """One prompt with its reference answer ("" if none) and the dataset's other columns."""

    prompt: Any
    """A string, or a list of chat messages (conversational datasets)."""
    answer: str
    domain: str
    extra: dict[str, Any] | None = None
    """Other columns of a dataset row (passed to reward functions by name)."""


def similarity(a: str, b: str) -> float:
    """difflib's ratio 2 * matches / (len(a) + len(b)), in [0, 1]."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def in_test_split(prompt: str) -> bool:
    """True for the held-out tenth of all prompts (stable across runs and machines)."""
    return zlib.crc32(prompt.encode()) % 10 == 0


class Domain:
    """Base class: subclasses set ``name`` and implement ``make``, ``reward``, ``format_answer``."""

    name: ClassVar[str] = ""
    train_seed: ClassVar[int] = 0
    test_seed: ClassVar[int] = 1

    def make(self, rng: random.Random) -> Example:
        """One example from either split."""
        raise NotImplementedError

    def reward(self, completion: str, answer: str) -> float:
        """Score of ``completion`` against the reference ``answer``, in [0, 1]."""
        raise NotImplementedError

    def format_answer(self, rng: random.Random, ex: Example) -> str:
        """A random answer in the domain's format (pretraining data, no skill)."""
        raise NotImplementedError

    def rewards(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """Rewards of a batch (the interface datasets with reward functions share)."""
        return [self.reward(c, e.answer) for c, e in zip(completions, examples)]

    def rows(self, n: int, split: str = "train") -> list[dict[str, str]]:
        """``n`` examples as dataset rows in TRL's prompt / completion format."""
        return [{"prompt": e.prompt, "completion": e.answer} for e in self.examples(n, split)]

    def sample(self, rng: random.Random, split: str = "train") -> Example:
        """One example of ``split`` ("train" or "test")."""
        want_test = split == "test"
        while True:
            ex = self.make(rng)
            if in_test_split(ex.prompt) == want_test:
                return ex

    def examples(self, n: int, split: str = "train", seed: int | None = None) -> list[Example]:
        """``n`` examples of ``split`` drawn from the split's seed (or ``seed``)."""
        base = self.test_seed if split == "test" else self.train_seed
        rng = random.Random(base * 1_000_003 + (seed or 0) * 7919 + zlib.crc32(self.name.encode()))
        return [self.sample(rng, split) for _ in range(n)]


class _LetterDomain(Domain):
    """A domain whose prompt is a random string of 4-8 letters and whose answer is another
    string of as many letters (``answer_of``); reward = similarity ratio to it."""

    tag = ""
    """Prompt prefix: ``<tag>:<letters>=``."""
    min_len, max_len = 4, 8

    def answer_of(self, s: str) -> str:
        """The reference answer to the letters ``s``."""
        raise NotImplementedError

    def make(self, rng: random.Random) -> Example:
        s = "".join(rng.choice(LETTERS) for _ in range(rng.randint(self.min_len, self.max_len)))
        return Example(f"{self.tag}:{s}=", self.answer_of(s), self.name)

    def reward(self, completion: str, answer: str) -> float:
        return similarity(completion, answer)

    def format_answer(self, rng: random.Random, ex: Example) -> str:
        return "".join(rng.choice(LETTERS) for _ in ex.answer)


class Reverse(_LetterDomain):
    """``rev:abcde=`` -> ``edcba``; reward = similarity ratio to the reversed string."""

    name = "reverse"
    tag = "rev"

    def answer_of(self, s: str) -> str:
        return s[::-1]


class Sort(_LetterDomain):
    """``sort:dbca=`` -> ``abcd``; reward = similarity ratio to the sorted string."""

    name = "sort"
    tag = "sort"

    def answer_of(self, s: str) -> str:
        return "".join(sorted(s))


class Add(Domain):
    """``add:37+5=`` -> ``42`` (a 2-digit plus a 1-digit number); reward = exact match."""

    name = "add"
    max_digits = 2
    """Digits of the first operand."""
    b_digits = 1
    """Digits of the second operand (2 + 1 digits: learnable by a LoRA on the tiny base)."""

    def make(self, rng: random.Random) -> Example:
        a, b = rng.randint(0, 10**self.max_digits - 1), rng.randint(0, 10**self.b_digits - 1)
        return Example(f"add:{a}+{b}=", str(a + b), self.name)

    def reward(self, completion: str, answer: str) -> float:
        return float(completion.strip() == answer)

    def format_answer(self, rng: random.Random, ex: Example) -> str:
        return str(rng.randint(0, 10**self.max_digits + 10**self.b_digits - 2))


class Caesar(Domain):
    """``caesar:abcz=`` -> ``bcda`` (each letter shifted by one, z wraps to a); reward =
    similarity ratio to the shifted string."""

    name = "caesar"
    min_len, max_len = 4, 8
    shift = 1

    def make(self, rng: random.Random) -> Example:
        s = "".join(rng.choice(LETTERS) for _ in range(rng.randint(self.min_len, self.max_len)))
        out = "".join(LETTERS[(LETTERS.index(c) + self.shift) % 26] for c in s)
        return Example(f"caesar:{s}=", out, self.name)

    def reward(self, completion: str, answer: str) -> float:
        return similarity(completion, answer)

    def format_answer(self, rng: random.Random, ex: Example) -> str:
        return "".join(rng.choice(LETTERS) for _ in ex.answer)


DOMAINS: dict[str, Callable[[], Domain]] = {}


def register(cls: type[Domain]) -> type[Domain]:
    DOMAINS[cls.name] = cls
    return cls


for _cls in (Reverse, Sort, Add, Caesar):
    register(_cls)


class UnknownDomainError(SkillbankError, KeyError):
    """A domain name that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_domain(name: str) -> Domain:
    """The registered domain ``name``; UnknownDomainError lists the known ones."""
    if name not in DOMAINS:
        raise UnknownDomainError(f"unknown domain {name!r}; known domains: {sorted(DOMAINS)}")
    return DOMAINS[name]()
