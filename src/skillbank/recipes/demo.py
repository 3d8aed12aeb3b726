"""``skillbank demo``: the whole story on CartPole in a few minutes.

1. train a base policy on the default CartPole (PPO, all weights);
2. train LoRA skills for every task of ``cartpole-physics`` at ranks 2, 4, 8 and 16, all
   in ONE concurrent PPO run (one slot per task and rank); the rank-8 skills go into the
   library;
3. fully fine-tune one copy of the base per task (same steps, same PPO loop);
4. evaluate base / LoRA / full on every task; print the tables and the memory report;
   write ``report.html`` with learning curves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from skillbank.library.core import PolicyLibrary
from skillbank.recipes.workflows import (
    config_with,
    default_ppo,
    evaluate_full,
    evaluate_library,
    skill_name,
    train_base,
    train_full_copies,
    train_lora_skills,
)
from skillbank.reporting.html import bars_figure, curves_figure, html_table, img, write_html
from skillbank.tasks import get_suite, parse_task
from skillbank.training.loop import LoraBank, evaluate_bank

RANKS = (2, 4, 8, 16)
MAIN_RANK = 8
SUITE = "cartpole-physics"


def run_demo(
    out: Path,
    steps: int | None = None,
    base_steps: int | None = None,
    seed: int = 0,
    quiet: bool = False,
    episodes: int = 20,
) -> dict:
    """Run the demo into ``out``; returns the summary written to ``out/summary.json``."""
    torch.set_num_threads(1)  # small batches: one thread avoids sync overhead on 2 cores
    console = Console()
    out = Path(out)
    specs = get_suite(SUITE)
    names = [skill_name(s) for s in specs]
    base_cfg = config_with(default_ppo(specs[0], "base"), total_steps=base_steps)
    lora_cfg = config_with(default_ppo(specs[0], "lora"), total_steps=steps)
    full_cfg = config_with(default_ppo(specs[0], "full"), total_steps=steps)

    console.rule("[bold]1. base policy on cartpole (PPO, all weights)")
    lib, base_res = train_base(
        parse_task("cartpole"), out / "library", base_cfg, seed=seed, quiet=quiet, overwrite=True
    )

    console.rule(f"[bold]2. LoRA skills: {len(specs)} tasks x ranks {list(RANKS)}, one run")
    sweep_specs = [s for _ in RANKS for s in specs]
    sweep_ranks = [r for r in RANKS for _ in specs]
    main_i = RANKS.index(MAIN_RANK)
    sweep_names = [n if r == MAIN_RANK else f"{n}-r{r}" for r in RANKS for n in names]
    _, lora_res, lora_bank = train_lora_skills(
        lib,
        sweep_specs,
        lora_cfg,
        sweep_ranks,
        seed=seed,
        names=sweep_names,
        quiet=quiet,
        save_mask=[r == MAIN_RANK for r in sweep_ranks],  # rank-8 skills join the library
    )
    console.rule("[bold]3. full fine-tuning, one copy per task (for comparison)")
    full_bank, full_res = train_full_copies(lib, specs, full_cfg, out / "full", seed, quiet)

    console.rule("[bold]4. evaluation")
    lib = PolicyLibrary.load(out / "library")
    table = evaluate_library(lib, specs, episodes, seed)
    base_row = np.array(table["mean"][0])
    lora_row = np.array([table["mean"][1 + i][i] for i in range(len(specs))])
    full_row = evaluate_full(full_bank, full_res.norms, specs, "discrete", episodes, seed).mean(1)
    sweep_eval = (
        evaluate_bank(lora_bank, sweep_specs, lora_res.norms, "discrete", episodes, seed)
        .mean(1)
        .tolist()
    )
    report = lib.memory_report()
    base_bytes = report["base_bytes"]
    skill_bytes = report["skill_bytes"][names[0]]

    results = Table(title=f"greedy return, {episodes} episodes per task (max 500)")
    for col in ("task", "base", f"LoRA r={MAIN_RANK}", "full fine-tune", "LoRA / full"):
        results.add_column(col, justify="right")
    rows = []
    for i, spec in enumerate(specs):
        ratio = lora_row[i] / max(full_row[i], 1e-9)
        rows.append(
            [
                spec.name,
                f"{base_row[i]:.1f}",
                f"{lora_row[i]:.1f}",
                f"{full_row[i]:.1f}",
                f"{100 * ratio:.0f}%",
            ]
        )
        results.add_row(*rows[-1])
    console.print(results)

    mem = Table(title="memory (parameter bytes, float32)")
    for col in ("what", "bytes", "vs base"):
        mem.add_column(col, justify="right")
    mem_rows = [
        ["base", f"{base_bytes:,}", "100%"],
        [
            f"one skill (r={MAIN_RANK})",
            f"{skill_bytes:,}",
            f"{100 * skill_bytes / base_bytes:.1f}%",
        ],
        [
            f"library: base + {len(specs)} skills",
            f"{report['total_bytes']:,}",
            f"{100 * report['total_bytes'] / base_bytes:.0f}%",
        ],
        [
            f"{len(specs)} full copies",
            f"{report['full_copies_bytes']:,}",
            f"{100 * report['full_copies_bytes'] / base_bytes:.0f}%",
        ],
    ]
    for r in mem_rows:
        mem.add_row(*r)
    console.print(mem)
    proj = {n: 1 - (base_bytes + n * skill_bytes) / (n * base_bytes) for n in (10, 50)}
    console.print(
        f"storage saved vs full copies: {100 * report['saving']:.0f}% with {len(specs)} skills;"
        f" {100 * proj[10]:.0f}% at 10 skills, {100 * proj[50]:.0f}% at 50 (same skill size)"
    )

    rank_tab = Table(title="rank sweep: mean greedy return over tasks, skill size vs base")
    for col in ("rank", "skill bytes", "vs base", "mean return", "min return"):
        rank_tab.add_column(col, justify="right")
    rank_rows = []
    for j, r in enumerate(RANKS):
        vals = sweep_eval[j * len(specs) : (j + 1) * len(specs)]
        nbytes = _slot_bytes(lora_bank, j * len(specs))
        rank_rows.append(
            [
                str(r),
                f"{nbytes:,}",
                f"{100 * nbytes / base_bytes:.1f}%",
                f"{np.mean(vals):.1f}",
                f"{np.min(vals):.1f}",
            ]
        )
        rank_tab.add_row(*rank_rows[-1])
    console.print(rank_tab)

    steps_axis = [row["steps_per_task"] for row in lora_res.curves]
    k = len(specs)
    lora_curves = [row["episodic_return"][main_i * k : (main_i + 1) * k] for row in lora_res.curves]
    series = {
        f"LoRA r={MAIN_RANK}": (steps_axis, lora_curves),
        "full fine-tune": (
            [r["steps_per_task"] for r in full_res.curves],
            [r["episodic_return"] for r in full_res.curves],
        ),
    }
    task_names = [s.name for s in specs]
    write_html(
        out / "report.html",
        "skillbank demo: a CartPole policy library",
        [
            (
                "Returns",
                html_table(["task", "base", f"LoRA r={MAIN_RANK}", "full", "LoRA/full"], rows)
                + img(
                    bars_figure(
                        {
                            "base": base_row,
                            f"LoRA r={MAIN_RANK}": lora_row,
                            "full fine-tune": full_row,
                        },
                        task_names,
                    )
                ),
            ),
            ("Learning curves", img(curves_figure(series, task_names, 500.0))),
            ("Memory", html_table(["what", "bytes", "vs base"], mem_rows)),
            (
                "Rank sweep",
                html_table(
                    ["rank", "skill bytes", "vs base", "mean return", "min return"], rank_rows
                ),
            ),
            (
                "Base training",
                img(
                    curves_figure(
                        {
                            "base": (
                                [r["steps_per_task"] for r in base_res.curves],
                                [r["episodic_return"] for r in base_res.curves],
                            )
                        },
                        ["cartpole"],
                        500.0,
                    )
                ),
            ),
        ],
    )
    summary = {
        "tasks": task_names,
        "base": base_row.tolist(),
        "lora": lora_row.tolist(),
        "full": full_row.tolist(),
        "memory": report,
        "rank_sweep": {str(r): sweep_eval[j * k : (j + 1) * k] for j, r in enumerate(RANKS)},
        "wall_time_s": {
            "base": base_res.wall_time,
            "lora": lora_res.wall_time,
            "full": full_res.wall_time,
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"report: {out / 'report.html'}   library: {out / 'library'}")
    return summary


def _slot_bytes(bank: LoraBank, slot: int) -> int:
    """Stored bytes of one slot's adapter (unpadded A and B)."""
    state = bank.model.slot_state(slot)
    return sum((a.numel() + b.numel()) * a.element_size() for a, b, _ in state.values())
