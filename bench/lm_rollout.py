"""LM rollout benchmark: tokens/s of generation and of the GRPO training step, and a batch
mixing 8 skills vs generating (and training) the same rows skill by skill, in one run.

Run: python bench/lm_rollout.py [--threads 1] [--repeats 3] [--base DIR]

Setup: the packaged tiny-lm base (or --base) with 8 LoRA slots (rank 8 on q/k/v/o/gate/
up/down, random non-zero adapters), 8 reverse prompts per skill (64 rows), sampling at
temperature 1 with a fixed seed, up to 12 new tokens, KV cache. Figures are medians over
--repeats. "mixed" = one batch of 64 rows, each through its skill's slot; "per skill" =
8 batches of 8 rows, one skill each (what serving one adapter at a time costs); "base only"
= the 64 rows with no adapter (slot -1), the cost floor of the LoRA routing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats, median (default 3)")
    p.add_argument("--base", help="base model folder (default: packaged tiny-lm)")
    p.add_argument("--skills", type=int, default=8, help="skills in the mixed batch (default 8)")
    p.add_argument("--rows", type=int, default=8, help="prompts per skill (default 8)")
    a = p.parse_args()

    import torch

    from skillbank.algos.slot_adam import SlotAdam
    from skillbank.lm.adapters import init_slot
    from skillbank.lm.domains import get_domain
    from skillbank.lm.grpo import GRPOConfig, grpo_step
    from skillbank.lm.model import DEFAULT_BASE, SlotLM, load_base
    from skillbank.lm.sample import generate

    torch.set_num_threads(a.threads)
    print(f"threads: {torch.get_num_threads()}")
    base, tok = load_base(a.base or DEFAULT_BASE)
    n_skills, rows = a.skills, a.rows
    n_params = sum(p.numel() for p in base.parameters())
    lm = SlotLM(base, tok, num_slots=n_skills, capacity=8)
    g = torch.Generator().manual_seed(0)
    for k in range(n_skills):
        init_slot(lm, k, 8, seed=k)
        with torch.no_grad():
            for layer in lm.mm.layers.values():
                layer.lora_B[k].normal_(0, 0.02, generator=g)
    print(f"base: {n_params / 1e6:.2f}M parameters, {n_skills} skills x {rows} prompts")
    prompts = [e.prompt for e in get_domain("reverse").examples(rows, "test")]
    all_prompts = prompts * n_skills
    slots = torch.arange(n_skills).repeat_interleave(rows)

    def gen_mixed() -> int:
        s = generate(lm, all_prompts, slots, 12, generator=torch.Generator().manual_seed(1))
        return int(s.mask.sum())

    def gen_per_skill() -> int:
        gen = torch.Generator().manual_seed(1)
        return sum(
            int(generate(lm, prompts, k, 12, generator=gen).mask.sum()) for k in range(n_skills)
        )

    def gen_base() -> int:
        s = generate(lm, all_prompts, -1, 12, generator=torch.Generator().manual_seed(1))
        return int(s.mask.sum())

    gen_mixed()  # warm-up
    tok_mixed, tok_each, tok_base = gen_mixed(), gen_per_skill(), gen_base()
    t_mixed = _median_time(gen_mixed, a.repeats)
    t_each = _median_time(gen_per_skill, a.repeats)
    t_base = _median_time(gen_base, a.repeats)
    print(f"generation, mixed batch of {n_skills} skills: {tok_mixed / t_mixed:9.0f} new tokens/s")
    print(f"generation, per skill in turn:          {tok_each / t_each:9.0f} new tokens/s")
    print(f"generation, base only (no adapter):      {tok_base / t_base:9.0f} new tokens/s")
    print(
        f"generation ratio mixed / per-skill (tokens/s): "
        f"{(tok_mixed / t_mixed) / (tok_each / t_each):.2f}x"
    )
    print(
        f"generation ratio mixed / base only (tokens/s): "
        f"{(tok_mixed / t_mixed) / (tok_base / t_base):.2f}x"
    )

    from skillbank.lm.grpo import merge_batches

    sample = generate(lm, all_prompts, slots, 12, generator=torch.Generator().manual_seed(2))
    batch = {
        "tokens": sample.tokens,
        "mask": sample.mask,
        "logp": sample.logp,
        "advantages": torch.randn(len(all_prompts), generator=g),
    }
    batch = merge_batches([batch], [0])
    batch["slot"] = slots
    opt = SlotAdam(lm.slot_parameters(), n_skills, lr=1e-4)
    opt.set_active(list(range(n_skills)))
    cfg = GRPOConfig()
    parts = [{k: v[slots == s] for k, v in batch.items()} for s in range(n_skills)]
    n_tokens = int(batch["tokens"].numel())

    def train_mixed() -> None:
        grpo_step(lm.mm, opt, batch, cfg)

    def train_per_skill() -> None:
        for part in parts:
            grpo_step(lm.mm, opt, part, cfg)

    train_mixed()
    t_tm = _median_time(train_mixed, a.repeats)
    t_te = _median_time(train_per_skill, a.repeats)
    print(
        f"training step, mixed batch:   {n_tokens / t_tm:9.0f} tokens/s "
        f"({t_tm * 1000:.0f} ms per step of {len(all_prompts)} rows)"
    )
    print(f"training step, per skill:     {n_tokens / t_te:9.0f} tokens/s")
    print(f"training ratio mixed / per-skill (tokens/s): {t_te / t_tm:.2f}x")


if __name__ == "__main__":
    main()
