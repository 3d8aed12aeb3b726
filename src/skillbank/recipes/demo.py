"""``skillbank demo``: the whole story on CartPole in a few minutes.

1. train a base policy on the default CartPole (PPO, all weights);
2. train LoRA skills for every task of ``cartpole-physics`` at ranks 2, 4, 8 and 16 (one
   slot per task and rank, many slots per PPO run); the rank-8 skills go into the library;
3. fully fine-tune one copy of the base per task (same steps, same PPO loop);
4. evaluate base / LoRA / full on every task; print the tables and the memory report;
   write ``report.html`` with learning curves.

Steps 2 and 3 use both cores: the slots of a LoRA run and the copies of a full run learn
independently (per-task losses, per-slot gradient clipping, elementwise Adam), so the work
is split between this process and one helper process (``MAIN_ARMS`` / ``HELPER_ARMS``),
each with one torch thread, without changing what any skill learns. A task stops training
once two consecutive evaluations reach its maximum return (500 on CartPole); its best
evaluated weights are kept as before.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from skillbank.algos.ppo_defaults import config_with, default_ppo
from skillbank.io import write_json
from skillbank.library.core import PolicyLibrary
from skillbank.recipes.compat import skill_name, spaces_of
from skillbank.recipes.evaluate import evaluate_full, evaluate_library
from skillbank.recipes.train import train_base, train_full_copies, train_lora_skills
from skillbank.reporting.html import bars_figure, curves_figure, html_table, img, write_html
from skillbank.tasks import TaskSpec, get_suite, parse_task
from skillbank.training.loop import LoraBank, evaluate_bank

RANKS = (2, 4, 8, 16)
MAIN_RANK = 8
SUITE = "cartpole-physics"
# (what, ranks) trained by this process and by the helper process, in order. Balanced by
# measured CPU time; the main process keeps the rank-8 run, whose skills join the library.
MAIN_ARMS: tuple[tuple[str, tuple[int, ...]], ...] = (("lora", (8, 16)),)
HELPER_ARMS: tuple[tuple[str, tuple[int, ...]], ...] = (("full", ()), ("lora", (2, 4)))
SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked thread pools


@dataclass(frozen=True)
class Job:
    """What one process trains and evaluates (plain data: it crosses to the helper)."""

    arms: tuple[tuple[str, tuple[int, ...]], ...]
    out: Path
    steps: int | None
    seed: int
    quiet: bool
    episodes: int
    solved: float | None  # stop training a task once two evaluations in a row reach it


def _lora_arm(lib: PolicyLibrary, job: Job, ranks: tuple[int, ...]) -> dict:
    """Train one LoRA run with a slot per (task, rank); evaluate it. Plain data back."""
    specs = get_suite(SUITE)
    cfg = config_with(default_ppo(specs[0], "lora"), total_steps=job.steps)
    names = [skill_name(s) for s in specs]
    arm_specs = [s for _ in ranks for s in specs]
    arm_ranks = [r for r in ranks for _ in specs]
    arm_names = [n if r == MAIN_RANK else f"{n}-r{r}" for r in ranks for n in names]
    _, res, bank = train_lora_skills(
        lib,
        arm_specs,
        cfg,
        arm_ranks,
        seed=job.seed,
        names=arm_names,
        quiet=job.quiet,
        save_mask=[r == MAIN_RANK for r in arm_ranks],  # rank-8 skills join the library
        solved=job.solved,
        run_name="skills-" + "-".join(f"r{r}" for r in ranks),
    )
    kind = lib.base_config["kwargs"]["action_kind"]
    evals = evaluate_bank(bank, arm_specs, res.norms, kind, job.episodes, job.seed)
    returns = evals.mean(1).tolist()
    k, steps = len(specs), [row["steps_per_task"] for row in res.curves]
    retired = res.retired or [None] * len(arm_specs)
    return {
        str(r): {
            "returns": returns[j * k : (j + 1) * k],
            "bytes": _slot_bytes(bank, j * k),
            "curves": (steps, [row["episodic_return"][j * k : (j + 1) * k] for row in res.curves]),
            "stopped_at": retired[j * k : (j + 1) * k],
            "wall_s": res.wall_time,
        }
        for j, r in enumerate(ranks)
    }


def _full_arm(lib: PolicyLibrary, job: Job, _: tuple[int, ...]) -> dict:
    """Full fine-tuning of one copy per task; evaluated. Plain data back."""
    specs = get_suite(SUITE)
    cfg = config_with(default_ppo(specs[0], "full"), total_steps=job.steps)
    out = job.out / "full"
    bank, res = train_full_copies(lib, specs, cfg, out, job.seed, job.quiet, solved=job.solved)
    kind = lib.base_config["kwargs"]["action_kind"]
    returns = evaluate_full(bank, res.norms, specs, kind, job.episodes, job.seed).mean(1)
    return {
        "full": {
            "returns": returns.tolist(),
            "curves": (
                [r["steps_per_task"] for r in res.curves],
                [r["episodic_return"] for r in res.curves],
            ),
            "stopped_at": res.retired or [None] * len(specs),
            "wall_s": res.wall_time,
        }
    }


ARM_KINDS: dict[str, Callable[[PolicyLibrary, Job, tuple[int, ...]], dict]] = {
    "lora": _lora_arm,
    "full": _full_arm,
}


def _run_arms(job: Job) -> dict:
    """Train and evaluate ``job.arms`` in this process; {rank or "full": results, "cpu_s"}."""
    torch.set_num_threads(1)  # small batches: one thread per process on 2 cores
    start = time.process_time()
    lib = PolicyLibrary.load(job.out / "library")
    results: dict = {}
    for what, ranks in job.arms:
        results.update(ARM_KINDS[what](lib, job, ranks))
    results["cpu_s"] = time.process_time() - start
    return results


def run_demo(
    out: Path,
    steps: int | None = None,
    base_steps: int | None = None,
    seed: int = 0,
    quiet: bool = False,
    episodes: int = 20,
    processes: int = 2,
) -> dict:
    """Run the demo into ``out``; returns the summary written to ``out/summary.json``.
    ``processes=1`` trains every arm in this process, one after the other."""
    torch.set_num_threads(1)  # small batches: one thread avoids sync overhead on 2 cores
    wall0, cpu0 = time.perf_counter(), time.process_time()
    console = Console()
    out = Path(out)
    specs = get_suite(SUITE)
    names = [skill_name(s) for s in specs]
    base_cfg = config_with(default_ppo(specs[0], "base"), total_steps=base_steps)
    solved = _max_return(specs)

    # the helper process starts now: its imports overlap the base's training
    pool = SPAWN.Pool(1) if processes > 1 else None
    try:
        if pool is not None:
            pool.apply_async(_warm_up)
        console.rule("[bold]1. base policy on cartpole (PPO, all weights)")
        lib, base_res = train_base(
            parse_task("cartpole"),
            out / "library",
            base_cfg,
            seed=seed,
            quiet=quiet,
            overwrite=True,
        )
        cpu_base = time.process_time() - cpu0
        console.rule(
            f"[bold]2-3. LoRA skills ({len(specs)} tasks x ranks {list(RANKS)}) and full"
            f" fine-tuning (one copy per task), {processes} process(es)"
        )
        mine = Job(MAIN_ARMS, out, steps, seed, quiet, episodes, solved)
        theirs = replace(mine, arms=HELPER_ARMS, quiet=quiet or pool is not None)  # one bar
        if pool is not None:
            helper = pool.apply_async(_run_arms, (theirs,))
            main = _run_arms(mine)
            console.rule("[bold]4. evaluation (the helper process may still be training)")
            lib, table = _evaluate(out, specs, episodes, seed)
            other = helper.get()
        else:
            main, other = _run_arms(mine), _run_arms(theirs)
            console.rule("[bold]4. evaluation")
            lib, table = _evaluate(out, specs, episodes, seed)
    finally:
        if pool is not None:  # done by now, or stopped at once when this process fails
            pool.terminate()
            pool.join()
    arms = {**main, **other}
    cpu = {"base": cpu_base, "main_arms": main["cpu_s"], "helper_arms": other["cpu_s"]}

    base_row = np.array(table["mean"][0])
    lora_row = np.array([table["mean"][1 + i][i] for i in range(len(specs))])
    full_row = np.array(arms["full"]["returns"])
    sweep_eval = [v for r in RANKS for v in arms[str(r)]["returns"]]
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
    for mem_row in mem_rows:
        mem.add_row(*mem_row)
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
        nbytes = arms[str(r)]["bytes"]
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

    k = len(specs)
    series = {
        f"LoRA r={MAIN_RANK}": tuple(arms[str(MAIN_RANK)]["curves"]),
        "full fine-tune": tuple(arms["full"]["curves"]),
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
                            "base": base_row.tolist(),
                            f"LoRA r={MAIN_RANK}": lora_row.tolist(),
                            "full fine-tune": full_row.tolist(),
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
        "stopped_at_step": {key: arms[key]["stopped_at"] for key in ("full", *map(str, RANKS))},
        "wall_time_s": {
            "base": base_res.wall_time,
            **{f"lora r={r}": arms[str(r)]["wall_s"] for r in RANKS},
            "full": arms["full"]["wall_s"],
            "demo": time.perf_counter() - wall0,
        },
        "cpu_time_s": cpu,
        "processes": processes,
    }
    cpu.update(main_total=time.process_time() - cpu0)
    cpu.update(total=cpu["main_total"] + (cpu["helper_arms"] if processes > 1 else 0.0))
    write_json(out / "summary.json", summary)
    console.print(
        f"time: {summary['wall_time_s']['demo']:.0f} s wall, {cpu['total']:.0f} CPU s"
        f" ({processes} process(es), 1 torch thread each): base {cpu['base']:.0f}, arms of"
        f" the main process {cpu['main_arms']:.0f}, of the helper {cpu['helper_arms']:.0f}"
    )
    console.print(f"report: {out / 'report.html'}   library: {out / 'library'}")
    return summary


def _warm_up() -> None:
    """Nothing: unpickling it makes the helper process import torch and skillbank."""


def _evaluate(
    out: Path, specs: list[TaskSpec], episodes: int, seed: int
) -> tuple[PolicyLibrary, dict]:
    """The library as saved, and the greedy returns of its base and skills on every task."""
    lib = PolicyLibrary.load(out / "library")
    return lib, evaluate_library(lib, specs, episodes, seed)


def _max_return(specs: list[TaskSpec]) -> float | None:
    """The common maximum return of the tasks (None if any has none): a task whose
    evaluations reach it is solved."""
    highs = {spaces_of(s)[3] for s in specs}
    return highs.pop() if len(highs) == 1 and None not in highs else None


def _slot_bytes(bank: LoraBank, slot: int) -> int:
    """Stored bytes of one slot's adapter (unpadded A and B)."""
    state = bank.model.slot_state(slot)
    return sum((a.numel() + b.numel()) * a.element_size() for a, b, _ in state.values())
