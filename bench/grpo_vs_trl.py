"""GRPO with LoRA: skillbank vs TRL's GRPOTrainer + PEFT, same model, prompts, reward and
settings, measured in the same run.

Run: python bench/grpo_vs_trl.py [--steps 20] [--prompts 8] [--group 8] [--runs 8]
     (needs the bench extra: pip install -e ".[bench,lm]", i.e. trl, peft, datasets)

Setup: the packaged tiny-lm base (or --base), reverse-text prompts of the train split, the
reward = difflib similarity to the reversed string (a TRL reward function reading the
dataset's ``answer`` column; skillbank's ``reverse`` domain computes the same), LoRA rank 8
(alpha 16) on q/k/v/o/gate/up/down, G completions per prompt, P prompts per step, up to 16
new tokens at temperature 1, Adam lr 2e-3 constant, one gradient step per generation
(TRL num_iterations 1 = skillbank update_epochs 1), no KL (beta 0), loss "dapo", no reward
scaling, gradient clip 1.0, seeds fixed. Both on CPU, float32, --threads torch threads.

Printed: completion tokens generated per second of the whole training loop (sampling +
scoring + update; for TRL the time of ``trainer.train()``, not the trainer's
construction) and the mean reward of the last 3 steps, for one run in each, and for
--runs runs: skillbank trains them at once (one adapter slot per run, one mixed batch per
step) while TRL trains them one after another (one GRPOTrainer each), the aggregate
throughput of each, and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from typing import Any

RANK, LR, MAX_NEW, TEMPERATURE = 8, 2e-3, 16, 1.0


def _rows(n: int, seed: int) -> list[Any]:
    from skillbank.lm.domains import get_domain

    return get_domain("reverse").examples(n, "train", seed=seed)


def skillbank_runs(base_dir: str, runs: int, steps: int, p: int, g: int) -> dict[str, Any]:
    """``runs`` GRPO runs at once: slot k = run k, every step one mixed batch."""
    import torch

    from skillbank.algos.grpo import group_advantages
    from skillbank.algos.slot_adam import SlotAdam
    from skillbank.lm.adapters import init_slot
    from skillbank.lm.domains import get_domain
    from skillbank.lm.grpo import GRPOConfig, grpo_step
    from skillbank.lm.model import LM_TARGETS, SlotLM, load_base
    from skillbank.lm.sample import generate

    base, tok = load_base(base_dir)
    lm = SlotLM(base, tok, num_slots=runs, capacity=RANK, targets=LM_TARGETS)
    for k in range(runs):
        init_slot(lm, k, RANK, alpha=2.0 * RANK, seed=k)
    opt = SlotAdam(lm.slot_parameters(), runs, lr=LR)
    opt.set_active(list(range(runs)))
    cfg = GRPOConfig(group_size=g, update_epochs=1, learning_rate=LR, max_new_tokens=MAX_NEW)
    domain, gen = get_domain("reverse"), torch.Generator().manual_seed(0)
    data = [_rows(p * steps, seed=k) for k in range(runs)]
    slot = torch.tensor([k for k in range(runs) for _ in range(p * g)])
    tokens, rewards = 0, []
    t0 = time.perf_counter()
    for step in range(steps):
        exs = [e for k in range(runs) for e in data[k][step * p : (step + 1) * p] for _ in range(g)]
        s = generate(lm, [e.prompt for e in exs], slot, MAX_NEW, False, TEMPERATURE, gen)
        r = torch.tensor(domain.rewards(s.completions, exs))
        batch = {"tokens": s.tokens, "mask": s.mask, "logp": s.logp, "slot": slot}
        batch["advantages"] = group_advantages(r, g).float()
        grpo_step(lm.mm, opt, batch, cfg)
        tokens += int(s.mask.sum())
        rewards.append(r.view(runs, -1).mean(1).tolist())
    seconds = time.perf_counter() - t0
    last = [
        statistics.mean(rewards[s][k] for s in range(max(0, steps - 3), steps)) for k in range(runs)
    ]
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "reward_last3": statistics.mean(last),
        "reward_first": statistics.mean(rewards[0]),
    }


def trl_run(base_dir: str, seed: int, steps: int, p: int, g: int) -> dict[str, Any]:
    """One TRL GRPOTrainer run with a PEFT LoRA adapter."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from skillbank.lm.model import LM_TARGETS
    from skillbank.lm.rewards import similarity

    tok = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    # TRL tokenizes prompts without special tokens: the bos goes into the text
    rows = [
        {"prompt": tok.bos_token + e.prompt, "answer": e.answer} for e in _rows(p * steps, seed)
    ]
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=p * g,
            gradient_accumulation_steps=1,
            num_generations=g,
            max_completion_length=MAX_NEW,
            max_steps=steps,
            learning_rate=LR,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            beta=0.0,
            num_iterations=1,
            loss_type="dapo",
            scale_rewards="none",
            temperature=TEMPERATURE,
            logging_steps=1,
            report_to=[],
            use_cpu=True,
            bf16=False,
            save_strategy="no",
            seed=seed,
            disable_tqdm=True,
            dataloader_num_workers=0,
            shuffle_dataset=False,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=similarity,
            args=args,
            processing_class=tok,
            train_dataset=Dataset.from_list(rows),
            peft_config=LoraConfig(
                r=RANK,
                lora_alpha=2 * RANK,
                target_modules=LM_TARGETS,
                task_type="CAUSAL_LM",
                lora_dropout=0.0,
            ),
        )
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints every log line
            trainer.train()
        seconds = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "reward" in h]
    tokens = sum(h["completions/mean_length"] * p * g for h in logs)
    rewards = [h["reward"] for h in logs]
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "reward_last3": statistics.mean(rewards[-3:]),
        "reward_first": rewards[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="GRPO steps per run (default 20)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step P (default 8)")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt G (default 8)")
    ap.add_argument("--runs", type=int, default=8, help="concurrent runs (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--base", help="base model folder (default: the packaged tiny-lm)")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    a = ap.parse_args()

    import torch

    from skillbank.lm.model import DEFAULT_BASE

    torch.set_num_threads(a.threads)
    base = str(a.base or DEFAULT_BASE)
    s, p, g = a.steps, a.prompts, a.group
    res = {
        "settings": {
            "steps": s,
            "prompts": p,
            "group": g,
            "runs": a.runs,
            "rank": RANK,
            "threads": torch.get_num_threads(),
        },
        "skillbank_1": skillbank_runs(base, 1, s, p, g),
        "trl_1": trl_run(base, 0, s, p, g),
        "skillbank_n": skillbank_runs(base, a.runs, s, p, g),
    }
    trl = [res["trl_1"]] + [trl_run(base, k, s, p, g) for k in range(1, a.runs)]
    res["trl_n_in_turn"] = {
        "seconds": sum(r["seconds"] for r in trl),
        "tokens": sum(r["tokens"] for r in trl),
        "reward_last3": statistics.mean(r["reward_last3"] for r in trl),
    }
    res["trl_n_in_turn"]["tokens_per_s"] = (
        res["trl_n_in_turn"]["tokens"] / res["trl_n_in_turn"]["seconds"]
    )
    res["ratio_1"] = res["skillbank_1"]["tokens_per_s"] / res["trl_1"]["tokens_per_s"]
    res["ratio_n"] = res["skillbank_n"]["tokens_per_s"] / res["trl_n_in_turn"]["tokens_per_s"]
    if a.json:
        print(json.dumps(res, indent=2))
        return
    threads = torch.get_num_threads()
    print(f"GRPO + LoRA r{RANK}, {s} steps x {p} prompts x {g} samples, {threads} thread(s)")
    print(f"{'':28s} {'tokens/s':>10s} {'reward first':>13s} {'reward last3':>13s} {'seconds':>8s}")
    for key, label in [
        ("skillbank_1", "skillbank, 1 run"),
        ("trl_1", "TRL, 1 run"),
        ("skillbank_n", f"skillbank, {a.runs} runs at once"),
        ("trl_n_in_turn", f"TRL, {a.runs} runs in turn"),
    ]:
        r = res[key]
        first = f"{r['reward_first']:.3f}" if "reward_first" in r else "-"
        row = f"{r['tokens_per_s']:10.0f} {first:>13s} {r['reward_last3']:13.3f}"
        print(f"{label:28s} {row} {r['seconds']:8.1f}")
    ratios = f"1 run {res['ratio_1']:.2f}x, {a.runs} runs {res['ratio_n']:.2f}x"
    print(f"skillbank / TRL tokens/s: {ratios}")


if __name__ == "__main__":
    main()
