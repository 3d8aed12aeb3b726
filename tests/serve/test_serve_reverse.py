"""The issue's target on the packaged tiny-lm, through the real SDK: SFT (cross_entropy) on
reverse-text on one tenant; a second tenant starts from its saved SFT state and runs an RL
loop (importance_sampling on sampled completions, group-relative rewards) while the first
keeps training SFT on another domain at the same time. The RL reward rises to >= 0.65 and
the sampler saved after RL uses the new weights."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

tinker = pytest.importorskip("tinker")
pytest.importorskip("starlette")

from serve_helpers import free_port, service_client, start_server  # noqa: E402

from proc_helpers import Procs  # noqa: E402
from skillbank.lm.domains import get_domain  # noqa: E402
from skillbank.lm.model import DEFAULT_BASE  # noqa: E402

types = tinker.types


class Text:
    def __init__(self, tok) -> None:
        self.tok, self.eos = tok, tok.eos_token_id

    def prompt(self, text: str) -> list[int]:
        return self.tok.encode(text)  # with the tokenizer's <s>

    def sft(self, examples) -> list:
        rows = []
        for ex in examples:
            p = self.prompt(ex.prompt)
            a = self.tok.encode(ex.answer, add_special_tokens=False) + [self.eos]
            full, w = p + a, [0.0] * (len(p) - 1) + [1.0] * len(a)
            rows.append((full, w))
        n = sum(sum(w) for _, w in rows)
        return [
            types.Datum(
                model_input=types.ModelInput.from_ints(full[:-1]),
                loss_fn_inputs={"target_tokens": full[1:], "weights": [x / n for x in w]},
            )
            for full, w in rows
        ]

    def completion(self, tokens) -> str:
        return self.tok.decode([t for t in tokens if t != self.eos])


def _reward(sampler, text: Text, dom, n: int = 32) -> float:
    exs = dom.examples(n, "test")
    greedy = types.SamplingParams(max_tokens=10, temperature=0.0)
    prompts = [types.ModelInput.from_ints(text.prompt(e.prompt)) for e in exs]
    futs = [sampler.sample(p, 1, greedy) for p in prompts]
    return (
        sum(
            dom.reward(text.completion(f.result().sequences[0].tokens), e.answer)
            for e, f in zip(exs, futs)
        )
        / n
    )


def _sft(tc, text: Text, domain: str, steps: int, out: list) -> None:
    train = get_domain(domain).examples(32 * steps, "train")
    for s in range(steps):
        fb = tc.forward_backward(text.sft(train[32 * s : 32 * (s + 1)]), "cross_entropy")
        opt = tc.optim_step(types.AdamParams(learning_rate=3e-3))
        out.append(fb.result().metrics["loss:sum"])
        opt.result()


def _rl(tc, text: Text, steps: int, out: list) -> None:
    dom, rng = get_domain("reverse"), random.Random(0)
    for step in range(steps):
        sampler = tc.save_weights_and_get_sampling_client().result()
        exs = [dom.sample(rng) for _ in range(8)]
        futs = [
            sampler.sample(
                types.ModelInput.from_ints(text.prompt(e.prompt)),
                8,
                types.SamplingParams(max_tokens=10, temperature=1.0, seed=100 * step + i),
            )
            for i, e in enumerate(exs)
        ]
        data, rewards = [], []
        for e, f in zip(exs, futs):
            seqs = f.result().sequences
            rs = [dom.reward(text.completion(s.tokens), e.answer) for s in seqs]
            mean = sum(rs) / len(rs)
            rewards += rs
            p = text.prompt(e.prompt)
            for s, r in zip(seqs, rs):
                full, k, pad = p + list(s.tokens), len(s.tokens), [0.0] * (len(p) - 1)
                data.append(
                    types.Datum(
                        model_input=types.ModelInput.from_ints(full[:-1]),
                        loss_fn_inputs={
                            "target_tokens": full[1:],
                            "logprobs": pad + list(s.logprobs or []),
                            "advantages": pad + [(r - mean) / len(exs * 8)] * k,
                        },
                    )
                )
        fb = tc.forward_backward(data, "importance_sampling")
        opt = tc.optim_step(types.AdamParams(learning_rate=2e-3))
        fb.result()
        opt.result()
        out.append(sum(rewards) / len(rewards))


@pytest.mark.slow
def test_reverse_sft_then_rl_while_another_tenant_trains(tmp_path: Path) -> None:
    base = str(Path(DEFAULT_BASE).resolve())
    port = free_port()
    proc = start_server(tmp_path, Path(base), tmp_path / "out", port, "--fuse-window-ms", "30")
    try:
        sc = service_client(port)
        a = sc.create_lora_training_client(base_model=base, rank=8, seed=0).result()
        text = Text(a.get_tokenizer())
        dom = get_domain("reverse")
        base_reward = _reward(sc.create_sampling_client(base_model=base).result(), text, dom)
        sft_losses: list = []
        _sft(a, text, "reverse", 70, sft_losses)
        print("SFT loss", [round(x, 2) for x in sft_losses[::5]])
        assert sft_losses[-1] < 0.8 * sft_losses[0]
        sft_state = a.save_state("sft-reverse").result().path
        sft_reward = _reward(a.save_weights_and_get_sampling_client().result(), text, dom)
        b = sc.create_training_client_from_state_with_optimizer(sft_state).result()
        more_sft: list = []
        rl_rewards: list = []
        threads = [
            threading.Thread(target=_sft, args=(a, text, "sort", 30, more_sft)),
            threading.Thread(target=_rl, args=(b, text, 30, rl_rewards)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert len(more_sft) == 30 and len(rl_rewards) == 30, (tmp_path / "serve.log").read_text()
        final = b.save_weights_for_sampler("rl-reverse").result().path
        rl_reward = _reward(b.create_sampling_client(final).result(), text, dom)
        print(
            f"reverse greedy reward: base {base_reward:.3f}, SFT {sft_reward:.3f}, "
            f"RL {rl_reward:.3f}; sampled during RL {[round(r, 2) for r in rl_rewards]}"
        )
        assert more_sft[-1] < more_sft[0]
        assert rl_reward >= 0.65 and rl_reward > sft_reward > base_reward + 0.2
        assert sum(rl_rewards[-5:]) / 5 > sum(rl_rewards[:5]) / 5 + 0.05  # the reward rises
    finally:
        Procs.stop(proc)
