"""Helpers of the serve tests: a tiny random Hugging Face Llama folder with a real HF
tokenizer (trained with ``tokenizers``), a server process started and stopped by its pid,
and SDK clients pointed at it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from proc_helpers import wait_for
from skillbank.service.serve.client import free_port, healthy

KEY_A = "tml-skillbank-test-key-aaaaaaaaaaaa"
KEY_B = "tml-skillbank-test-key-bbbbbbbbbbbb"
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 =:>"
os.environ["TINKER_TELEMETRY"] = "0"


def make_model_dir(folder: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A random-weight LlamaForCausalLM + character tokenizer that AutoTokenizer opens."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + list(ALPHABET))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    fast.save_pretrained(str(folder))
    return folder


__all__ = ["free_port", "healthy"]


def start_server(
    folder: Path, base: Path, out: Path, port: int, *flags: str, name: str = "serve"
) -> subprocess.Popen:
    """``skillbank serve`` as a child process (stopped by the caller, by its pid)."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "SKILLBANK_SERVE_API_KEYS": f"{KEY_A},{KEY_B}",
    }
    log = open(folder / f"{name}.log", "ab")  # noqa: SIM115  # owned by the process
    cmd = [sys.executable, "-m", "skillbank.cli.serve", "serve", "--base", str(base)]
    cmd += ["--out", str(out), "--port", str(port), "--threads", "1", *flags]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: healthy(url), 90, f"server on {url} ({folder / (name + '.log')})", [proc])
    return proc


def service_client(port: int, key: str = KEY_A):  # -> tinker.ServiceClient
    import tinker

    return tinker.ServiceClient(base_url=f"http://127.0.0.1:{port}", api_key=key)


def encode(text: str) -> list[int]:
    specials = 4
    return [specials + ALPHABET.index(c) for c in text]
