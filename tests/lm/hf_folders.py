"""Hugging Face model folders built locally (random weights, tokenizers trained with the
``tokenizers`` library on a few domain prompts): what a user brings, without a download.

- ``qwen2``: Qwen2 architecture, byte-level BPE, ``<|im_end|>`` eos, ``<|endoftext|>`` pad,
  a ChatML chat template, two eos ids in the generation config;
- ``gpt2``: GPT-2 (``Conv1D`` projections), byte-level BPE, ``<|endoftext|>`` as bos/eos, no
  pad token;
- ``llama_tied``: Llama with tied input/output embeddings, BPE with a bos added by the
  post-processor, ``</s>`` eos, no pad token.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from skillbank.lm.domains import DOMAINS

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus() -> list[str]:
    rng = random.Random(0)
    out = []
    for name in sorted(DOMAINS):
        d = DOMAINS[name]()
        for _ in range(200):
            e = d.sample(rng)
            out.append(f"{e.prompt}{e.answer}")
    return out + ["user assistant system hello world"] * 5


def _bpe(specials: list[str], vocab_size: int = 320) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(_corpus(), trainer)
    return tk


def _save(model: Any, hf_tok: Any, folder: Path, eos: int | list[int]) -> Path:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=hf_tok.pad_token_id, bos_token_id=hf_tok.bos_token_id
    )
    model.save_pretrained(str(folder))
    hf_tok.save_pretrained(str(folder))
    return folder


def _decoder(hf: Any, tied: bool) -> dict[str, Any]:
    """Llama / Qwen2 config fields of a tiny model for the tokenizer ``hf``."""
    return {
        "vocab_size": len(hf),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "tie_word_embeddings": tied,
        "bos_token_id": hf.bos_token_id,
        "eos_token_id": hf.eos_token_id,
        "pad_token_id": hf.pad_token_id,
    }


def qwen2(folder: Path) -> Path:
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tk = _bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    hf.chat_template = CHATML
    cfg = Qwen2Config(**_decoder(hf, tied=False))
    torch.manual_seed(0)
    eos = [hf.eos_token_id, hf.convert_tokens_to_ids("<|endoftext|>")]
    return _save(Qwen2ForCausalLM(cfg), hf, folder, eos)


def gpt2(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tk = _bpe(["<|endoftext|>"])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    cfg = GPT2Config(
        vocab_size=len(hf),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=hf.bos_token_id,
        eos_token_id=hf.eos_token_id,
    )
    torch.manual_seed(0)
    return _save(GPT2LMHeadModel(cfg), hf, folder, hf.eos_token_id)


def llama_tied(folder: Path) -> Path:
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = _bpe(["<s>", "</s>"])
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))]
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>")
    cfg = LlamaConfig(**_decoder(hf, tied=True))
    torch.manual_seed(0)
    return _save(LlamaForCausalLM(cfg), hf, folder, hf.eos_token_id)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "qwen2": qwen2,
    "gpt2": gpt2,
    "llama_tied": llama_tied,
}
