"""Tokenizer, domains, sampling, losses: fast unit tests on a random tiny LM."""

from __future__ import annotations

import random

import pytest
import torch

from skillbank.lm.adapters import init_slot
from skillbank.lm.domains import DOMAINS, UnknownDomainError, get_domain, in_test_split
from skillbank.lm.grpo import group_advantages, grpo_loss, slot_token_weights
from skillbank.lm.model import SlotLM
from skillbank.lm.sample import PromptTooLongError, generate, token_logprobs
from skillbank.lm.sft import answer_nll, sft_batch, sft_loss
from skillbank.lm.tokenizer import EOS, CharTokenizer


def test_tokenizer_round_trip_and_unknown_character() -> None:
    tok = CharTokenizer()
    ids = tok.prompt_ids("rev:abc=") + tok.answer_ids("cba")
    assert ids[-1] == EOS
    assert tok.decode(ids) == "rev:abc=cba"
    with pytest.raises(ValueError, match="'A' is not in the tokenizer alphabet"):
        tok.encode("A")


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_domains_splits_and_rewards(name: str) -> None:
    d = get_domain(name)
    train, test = d.examples(300, "train"), d.examples(100, "test")
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert all(in_test_split(e.prompt) for e in test)
    assert [e.prompt for e in d.examples(20, "test")] == [e.prompt for e in test[:20]]
    for e in test[:20]:
        assert d.reward(e.answer, e.answer) == 1.0
        fake = d.format_answer(random.Random(0), e)
        assert 0.0 <= d.reward(fake, e.answer) <= 1.0
    assert d.reward("", test[0].answer) == 0.0


def test_reverse_reward_is_similarity_ratio() -> None:
    d = get_domain("reverse")
    assert d.reward("dcba", "dcba") == 1.0
    assert d.reward("dcxa", "dcba") == pytest.approx(0.75)


def test_unknown_domain() -> None:
    with pytest.raises(UnknownDomainError, match="unknown domain 'revers'; known domains"):
        get_domain("revers")


def test_prompt_longer_than_context(tiny_lm: SlotLM) -> None:
    with pytest.raises(PromptTooLongError, match="context is 40 tokens"):
        generate(tiny_lm, ["rev:" + "a" * 40 + "="], 0)


def test_sampling_logp_matches_training_logp(tiny_lm: SlotLM) -> None:
    """Left-padded cached decoding, mixed slots, and the right-padded training forward
    give the same log-probabilities (so the first GRPO ratio is exactly ~1)."""
    for k in range(3):
        init_slot(tiny_lm, k, rank=4, seed=k)
        for layer in tiny_lm.mm.layers.values():  # make the slots differ from the base
            layer.lora_B.data[k].normal_(0, 0.3)
    prompts = ["rev:ab=", "sort:dcbaxyz=", "add:1+2=", "caesar:xyz="] * 2
    slots = torch.tensor([0, 1, 2, -1, 2, 1, 0, -1])
    gen = torch.Generator().manual_seed(0)
    s = generate(tiny_lm, prompts, slots, 8, generator=gen)
    lp = token_logprobs(tiny_lm.mm, s.tokens, slots)
    assert torch.allclose(lp[s.mask], s.logp[s.mask], atol=1e-4)
    # each row equals the same prompt decoded alone through its slot (greedy)
    g = generate(tiny_lm, prompts, slots, 8, greedy=True)
    for i in (0, 3):
        alone = generate(tiny_lm, [prompts[i]], int(slots[i]), 8, greedy=True)
        assert alone.completions[0] == g.completions[i]
    # different slots give different completions somewhere
    same = generate(tiny_lm, prompts[:1] * 4, torch.tensor([-1, 0, 1, 2]), 8, greedy=True)
    assert len(set(same.completions)) > 1


def test_group_advantages() -> None:
    r = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.4])
    adv = group_advantages(r, 2)
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, 0.0, 0.0, -0.1, 0.1]))
    scaled = group_advantages(r, 2, scale_std=True)
    assert scaled[0] > 0.5 and scaled[2] == 0


def test_grpo_loss_clips_and_weighs_tokens() -> None:
    old = torch.zeros(2, 3)
    logp = torch.tensor([[0.0, 0.5, 0.5], [0.0, -0.5, 0.0]])
    mask = torch.tensor([[False, True, True], [False, True, False]])
    adv = torch.tensor([1.0, 1.0])
    w = slot_token_weights(torch.tensor([0, 0]), mask)
    assert torch.allclose(w, torch.full((2,), 1 / 3))
    loss, stats = grpo_loss(logp, old, adv, mask, w, clip_eps=0.2)
    # tokens: ratio e^0.5 clipped to 1.2 (twice, positive advantage), e^-0.5 unclipped
    expect = -(1.2 + 1.2 + torch.exp(torch.tensor(-0.5))) / 3
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert stats["clip_frac"] == pytest.approx(1.0)
    # gradient: zero through clipped tokens, nonzero through the unclipped one
    lp = logp.clone().requires_grad_(True)
    grpo_loss(lp, old, adv, mask, w, 0.2)[0].backward()
    assert lp.grad is not None and lp.grad[0, 1] == 0 and lp.grad[1, 1] < 0
    # KL term: zero when the policy equals the reference, positive otherwise
    l0, s0 = grpo_loss(old.clone(), old, adv, mask, w, 0.2, 0.5, old)
    assert s0["kl"] == 0.0
    _, s1 = grpo_loss(logp, old, adv, mask, w, 0.2, 0.5, old)
    assert s1["kl"] > 0


def test_per_slot_token_weights() -> None:
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    w = slot_token_weights(torch.tensor([2, 0, 2]), mask)
    assert torch.allclose(w, torch.tensor([0.25, 1.0, 0.25]))


def test_sft_batch_masks_answers(tiny_lm: SlotLM) -> None:
    exs = get_domain("reverse").examples(4)
    tokens, mask = sft_batch(tiny_lm, exs)
    for i, e in enumerate(exs):
        assert tiny_lm.tok.decode(tokens[i][mask[i]]) == e.answer
        assert int(mask[i].sum()) == len(e.answer) + 1  # + eos
    init_slot(tiny_lm, 0, 4)
    nll = answer_nll(tiny_lm, 0, exs)
    lp = token_logprobs(tiny_lm.mm, tokens, torch.zeros(4, dtype=torch.long))
    assert nll == pytest.approx(float(sft_loss(lp, mask).detach()), rel=1e-5)


def test_shared_adapter_steps_on_two_domains(tiny_lm: SlotLM) -> None:
    from skillbank.lm.grpo import GRPOConfig, train_grpo
    from skillbank.lm.sft import SFTConfig, train_sft

    domains = [get_domain("reverse"), get_domain("add")]
    init_slot(tiny_lm, 1, rank=4)
    b0 = [layer.lora_B[1].clone() for layer in tiny_lm.mm.layers.values()]
    hist = train_sft(tiny_lm, 1, domains, SFTConfig(steps=2, batch_size=4))
    assert len(hist) == 2 and all(h["loss"] > 0 for h in hist)
    cfg = GRPOConfig(steps=2, prompts_per_step=4, group_size=2, max_new_tokens=4)
    hist = train_grpo(tiny_lm, 1, domains, cfg)
    assert len(hist) == 2 and all(0 <= h["reward"] <= 1 for h in hist)
    moved = [
        not torch.equal(layer.lora_B[1], b) for layer, b in zip(tiny_lm.mm.layers.values(), b0)
    ]
    assert all(moved)
    other = [layer.lora_A[2].detach().abs().sum() for layer in tiny_lm.mm.layers.values()]
    assert all(float(x) == 0 for x in other)  # other slots untouched


def test_mixed_batch_scores_equal_per_skill_scores(tiny_lm: SlotLM) -> None:
    from skillbank.lm.evaluate import score, score_mixed

    for k in (0, 1):
        init_slot(tiny_lm, k, rank=4, seed=k)
        with torch.no_grad():
            for layer in tiny_lm.mm.layers.values():
                layer.lora_B[k].normal_(0, 0.3, generator=torch.Generator().manual_seed(k))
    d = get_domain("sort")
    mixed = score_mixed(tiny_lm, [-1, 0, 1], d, n=12)
    alone = [score(tiny_lm, s, d, n=12) for s in (-1, 0, 1)]
    assert mixed == pytest.approx(alone, abs=1e-9)


def test_grpo_step_with_kl_and_per_row_settings(tiny_lm: SlotLM) -> None:
    from skillbank.algos.slot_adam import SlotAdam
    from skillbank.lm.grpo import GRPOConfig, collect, grpo_step, merge_batches

    for k in (0, 1):
        init_slot(tiny_lm, k, rank=4, seed=k)
    cfg = GRPOConfig(group_size=2, max_new_tokens=4, update_epochs=1)
    gen = torch.Generator().manual_seed(0)
    d = get_domain("reverse")
    parts = [collect(tiny_lm, d, d.examples(2), k, cfg, gen)[0] for k in (0, 1)]
    batch = merge_batches(parts, [0, 1])
    rows = batch["tokens"].shape[0]
    batch["clip_eps"] = torch.full((rows,), 0.2)
    batch["kl_coef"] = torch.tensor([0.5] * (rows // 2) + [0.0] * (rows - rows // 2))
    opt = SlotAdam(tiny_lm.slot_parameters(), tiny_lm.mm.num_slots, lr=1e-2)
    opt.set_active([0, 1])
    stats = grpo_step(tiny_lm.mm, opt, batch, cfg)
    assert stats["kl"] == 0.0  # first step: the adapters (B = 0) equal the base
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-3)
    assert int(opt.steps[0]) == 1 and int(opt.steps[1]) == 1 and int(opt.steps[2]) == 0
