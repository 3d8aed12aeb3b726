"""Tokenizers: any Hugging Face tokenizer (``AutoTokenizer``), wrapped with what the samplers
and losses need (special ids, prompt/answer layout, chat templates, right padding).

``LMTokenizer`` wraps a transformers tokenizer. Special ids come from the tokenizer and the
model's generation config, never from constants: ``eos_ids`` (every id that ends an answer),
``pad_id`` (the tokenizer's pad, else its eos), ``bos_id`` (None when the tokenizer has
none, e.g. Qwen2). A prompt is the tokenizer's own encoding with its special tokens (so a
Llama tokenizer adds bos) or, when the tokenizer has a chat template and ``use_chat_template``
is not False, ``apply_chat_template([user: prompt], add_generation_prompt=True)``; an
answer is its tokens plus eos.

``CharTokenizer(alphabet)`` is the packaged tiny-lm's tokenizer: a real ``tokenizers``
WordLevel tokenizer with one token per character (ids 0 pad ``<pad>``, 1 bos ``<s>``,
2 eos ``</s>``, then the alphabet), saved as Hugging Face files that ``AutoTokenizer`` opens.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from skillbank.errors import SkillbankError

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 :=+-?>|,"
PAD, BOS, EOS = 0, 1, 2
"""Ids of the specials of ``CharTokenizer`` only (other tokenizers: ``LMTokenizer`` fields)."""
TOKENIZER_FILE = "tokenizer.json"
Messages = list[dict[str, Any]]


class TokenizerError(SkillbankError, ValueError):
    """A tokenizer folder that cannot be used (missing, no eos, ...)."""


def _quiet() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


class LMTokenizer:
    """A Hugging Face tokenizer plus the special ids and prompt layout skillbank uses."""

    def __init__(
        self,
        hf: Any,
        extra_eos: Iterable[int] = (),
        use_chat_template: bool | None = None,
        source: str = "tokenizer",
    ) -> None:
        self.hf = hf
        self.source = source
        eos = _ids(hf.eos_token_id) + [i for i in _ids(list(extra_eos)) if i != hf.eos_token_id]
        if not eos:
            raise TokenizerError(
                f"{source}: field 'eos_token': the tokenizer has no eos token and the "
                "generation config names none (answers could never end)"
            )
        self.eos_ids: list[int] = list(dict.fromkeys(eos))
        self.eos_id = self.eos_ids[0]
        self.pad_id = int(hf.pad_token_id) if hf.pad_token_id is not None else self.eos_id
        self.bos_id: int | None = None if hf.bos_token_id is None else int(hf.bos_token_id)
        has_template = bool(getattr(hf, "chat_template", None))
        if use_chat_template and not has_template:
            raise TokenizerError(f"{source}: field 'chat_template': the tokenizer has none")
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template
        self._specials = set(int(i) for i in hf.all_special_ids)

    # ------------------------------------------------------------------ sizes and text
    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce (<= the model's vocab_size)."""
        return len(self.hf)

    @property
    def alphabet(self) -> str | None:
        """The character alphabet of a ``CharTokenizer``; None for other tokenizers."""
        return None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens."""
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Text of ``ids`` up to the first eos, special tokens dropped."""
        out = []
        for i in ids.tolist() if isinstance(ids, Tensor) else ids:
            if i in self.eos_ids:
                break
            out.append(int(i))
        return str(self.hf.decode(out, skip_special_tokens=True))

    def prompt_text(self, prompt: str | Messages) -> str | None:
        """The chat-templated prompt text, or None when no template applies."""
        if isinstance(prompt, list):
            if not getattr(self.hf, "chat_template", None) or self.use_chat_template is False:
                raise TokenizerError(
                    f"{self.source}: field 'chat_template': a conversational prompt needs a "
                    "tokenizer with a chat template (and chat templates not switched off)"
                )
            msgs = prompt
        elif self.use_chat_template:
            msgs = [{"role": "user", "content": prompt}]
        else:
            return None
        return str(self.hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))

    def prompt_ids(self, prompt: str | Messages) -> list[int]:
        """Ids of a prompt: chat-templated when that applies, else with the tokenizer's own
        special tokens (bos for tokenizers that add one)."""
        text = self.prompt_text(prompt)
        if text is not None:
            return list(self.hf(text, add_special_tokens=False)["input_ids"])
        assert isinstance(prompt, str)
        ids = list(self.hf(prompt, add_special_tokens=True)["input_ids"])
        while ids and ids[-1] in self.eos_ids and ids[-1] != self.bos_id:
            ids.pop()  # tokenizers whose post-processor appends eos (the answer adds it)
        return ids

    def answer_ids(self, answer: str) -> list[int]:
        return [*self.encode(answer), self.eos_id]

    def pad_right(self, rows: list[list[int]]) -> Tensor:
        """[B, T] int64, right-padded with the pad id."""
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    # ------------------------------------------------------------------ files
    def save(self, folder: str | os.PathLike) -> None:
        """Hugging Face tokenizer files (``save_pretrained``)."""
        _quiet()
        self.hf.save_pretrained(str(folder))

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        extra_eos: Sequence[int] = (),
        use_chat_template: bool | None = None,
    ) -> LMTokenizer:
        """``AutoTokenizer.from_pretrained(folder, local_files_only=True)``, wrapped."""
        return load_tokenizer(folder, extra_eos, use_chat_template)


def load_tokenizer(
    folder: str | os.PathLike,
    extra_eos: Sequence[int] = (),
    use_chat_template: bool | None = None,
) -> LMTokenizer:
    """The tokenizer of a model folder (a ``CharTokenizer`` for skillbank char tokenizers)."""
    from transformers import AutoTokenizer

    _quiet()
    folder = Path(folder)
    try:
        hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TokenizerError(f"{folder}: no usable Hugging Face tokenizer ({e})") from e
    alphabet = char_alphabet(hf)
    extra = [i for i in extra_eos if i != EOS]
    if alphabet is not None and not extra and use_chat_template is None:
        return CharTokenizer(alphabet, hf=hf, source=str(folder))
    return LMTokenizer(hf, extra_eos, use_chat_template, source=str(folder))


def char_alphabet(hf: Any) -> str | None:
    """The alphabet if ``hf`` is a skillbank char tokenizer (3 specials, then characters)."""
    vocab = hf.get_vocab()
    if [vocab.get(s) for s in ("<pad>", "<s>", "</s>")] != [PAD, BOS, EOS]:
        return None
    chars = sorted((i, t) for t, i in vocab.items() if i >= 3)
    if any(len(t) != 1 or i != k + 3 for k, (i, t) in enumerate(chars)):
        return None
    return "".join(t for _, t in chars) if getattr(hf, "chat_template", None) is None else None


def _char_hf(alphabet: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    _quiet()
    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS, **{c: i + 3 for i, c in enumerate(alphabet)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", BOS)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


class CharTokenizer(LMTokenizer):
    """One token per character of ``alphabet`` (ids 0 pad, 1 bos, 2 eos, then the alphabet),
    as a real Hugging Face tokenizer."""

    def __init__(self, alphabet: str = ALPHABET, hf: Any = None, source: str = "tokenizer") -> None:
        if len(set(alphabet)) != len(alphabet):
            raise TokenizerError("tokenizer alphabet has repeated characters")
        self._alphabet = alphabet
        self._index = {c: i + 3 for i, c in enumerate(alphabet)}
        super().__init__(hf if hf is not None else _char_hf(alphabet), source=source)

    @property
    def alphabet(self) -> str | None:
        return self._alphabet

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; ValueError names the first unknown character."""
        for c in text:
            if c not in self._index:
                raise TokenizerError(f"character {c!r} is not in the tokenizer alphabet")
        return [self._index[c] for c in text]

    def prompt_ids(self, prompt: str | Messages) -> list[int]:
        if isinstance(prompt, list):
            return super().prompt_ids(prompt)
        return [BOS, *self.encode(prompt)]
