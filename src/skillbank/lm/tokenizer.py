"""Character-level tokenizer: one token per character of a fixed alphabet, plus specials.

Ids: 0 = pad, 1 = bos, 2 = eos, then ``ALPHABET`` in order. A prompt is ``bos + text``;
an answer is ``text + eos``. Saved as ``tokenizer.json`` next to the model's config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

PAD, BOS, EOS = 0, 1, 2
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 :=+-?>|,"
TOKENIZER_FILE = "tokenizer.json"


class CharTokenizer:
    """Maps text over ``alphabet`` to token ids and back."""

    def __init__(self, alphabet: str = ALPHABET) -> None:
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("tokenizer alphabet has repeated characters")
        self.alphabet = alphabet
        self.pad_id, self.bos_id, self.eos_id = PAD, BOS, EOS
        self._ids = {c: i + 3 for i, c in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + 3

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no specials); ValueError names the first unknown character."""
        try:
            return [self._ids[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the tokenizer alphabet") from None

    def decode(self, ids: list[int] | Tensor) -> str:
        """Text of ``ids`` up to the first eos; pads and bos are dropped."""
        out = []
        for i in ids.tolist() if isinstance(ids, Tensor) else ids:
            if i == EOS:
                break
            if i >= 3:
                out.append(self.alphabet[i - 3])
        return "".join(out)

    def prompt_ids(self, prompt: str) -> list[int]:
        return [BOS, *self.encode(prompt)]

    def answer_ids(self, answer: str) -> list[int]:
        return [*self.encode(answer), EOS]

    def pad_right(self, rows: list[list[int]]) -> Tensor:
        """[B, T] int64, right-padded with pad ids."""
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    def save(self, folder: str | os.PathLike) -> None:
        path = Path(folder) / TOKENIZER_FILE
        path.write_text(json.dumps({"type": "char", "alphabet": self.alphabet}, indent=1) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> CharTokenizer:
        path = Path(folder) / TOKENIZER_FILE
        try:
            data = json.loads(path.read_text())
            return cls(str(data["alphabet"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a skillbank char tokenizer ({e})") from e
