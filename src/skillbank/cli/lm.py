"""``skillbank lm ...``: pretrain a base, SFT and RL skills, evaluate. Only argparse and
pathlib at import time: torch and transformers load inside the handlers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from skillbank.cli.argtypes import name_list

LM_HELP = """\
Language-model skills: a tiny causal LM base (transformers, char tokenizer), text domains
with verifiable rewards (reverse, sort, add, caesar), LoRA skills trained with SFT and with
GRPO, evaluated on held-out test sets. Guide: docs/lm.md.

  pretrain     train a fresh base on the domains' formats (not their skills)
  new-library  create a library whose base is an LM base folder
  sft          LoRA adapter by supervised fine-tuning (masked CE on answers)
  rl           LoRA adapter by GRPO (from scratch or from an adapter, e.g. an SFT one)
  eval         table: score of the base and of each skill on each domain's test set
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _skill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--domain",
        type=name_list,
        required=True,
        help="domain(s), comma-separated (several = one shared adapter)",
    )
    p.add_argument("--out", type=Path, help="adapter folder to write (PEFT format + skill.json)")
    p.add_argument("--base", type=Path, help="base model folder (default: the packaged tiny-lm)")
    p.add_argument("--library", type=Path, help="LM library: use its base, add the skill to it")
    p.add_argument("--skill", help="skill name in --library (default: the domain name)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank of a fresh adapter (default 8)")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--steps", type=int, help="optimiser steps")
    p.add_argument("--eval-n", type=int, default=200, help="test examples scored at the end")
    _common(p)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``lm`` verb and its sub-verbs; each sets ``args.handler``."""
    top = subparsers.add_parser(
        "lm",
        help="language-model skills: pretrain, sft, rl, eval (docs/lm.md)",
        description=LM_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="lm_verb", metavar="LM_VERB", required=True)

    p = sub.add_parser("pretrain", help="train a fresh base on the domains' formats")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps (default 1000)")
    p.add_argument("--arch", choices=["llama", "qwen2"], default="llama")
    p.add_argument("--hidden", type=int, default=128, help="hidden size (default 128)")
    p.add_argument("--layers", type=int, default=4, help="transformer layers (default 4)")
    p.add_argument("--max-len", type=int, default=48, help="context in tokens (default 48)")
    _common(p)
    p.set_defaults(handler=cmd_pretrain)

    p = sub.add_parser("new-library", help="create a library whose base is an LM base")
    p.add_argument("library", type=Path, help="library folder to create")
    p.add_argument("--base", type=Path, help="base model folder (default: packaged tiny-lm)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing library")
    p.set_defaults(handler=cmd_new_library)

    p = sub.add_parser("sft", help="LoRA skill by supervised fine-tuning on reference answers")
    _skill_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    p.set_defaults(handler=cmd_sft)

    p = sub.add_parser("rl", help="LoRA skill by GRPO (group-relative policy gradient)")
    _skill_args(p)
    p.add_argument("--init", type=Path, help="start from this adapter folder (e.g. SFT)")
    p.add_argument("--prompts", type=int, default=16, help="prompts per step (default 16)")
    p.add_argument("--group", type=int, default=8, help="samples per prompt G (default 8)")
    p.add_argument("--kl-coef", type=float, default=0.0, help="KL-to-base weight (default 0)")
    p.set_defaults(handler=cmd_rl)

    p = sub.add_parser("eval", help="score of the base and each skill on each domain")
    p.add_argument("library", type=Path, help="LM library folder")
    p.add_argument("--domains", type=name_list, help="comma-separated (default: all registered)")
    p.add_argument("--n", type=int, default=200, help="test examples per domain (default 200)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(handler=cmd_eval)


@contextmanager
def _progress(total: int, label: str, quiet: bool) -> Iterator[Callable[[int, dict], None]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet:
        yield lambda step, stats: None
        return
    cols = (
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*cols, transient=False) as bar:
        task = bar.add_task(label, total=total, info="")

        def update(step: int, stats: dict[str, Any]) -> None:
            info = " ".join(f"{k} {v:.3f}" for k, v in stats.items() if k in ("loss", "reward"))
            bar.update(task, completed=step + 1, info=info)

        yield update


def cmd_pretrain(args: argparse.Namespace) -> None:
    import torch

    from skillbank.lm.model import ArchConfig, save_base
    from skillbank.lm.pretrain import PretrainConfig, pretrain

    torch.set_num_threads(args.threads)
    arch = ArchConfig(
        arch=args.arch,
        hidden_size=args.hidden,
        layers=args.layers,
        intermediate_size=3 * args.hidden,
        max_len=args.max_len,
    )
    cfg = PretrainConfig(arch=arch, steps=args.steps, seed=args.seed)
    with _progress(cfg.steps, "pretrain", args.quiet) as cb:
        model, tok = pretrain(cfg, lambda s, loss: cb(s, {"loss": loss}))
    save_base(model, tok, args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out} ({n / 1e6:.2f}M parameters)")


def cmd_new_library(args: argparse.Namespace) -> None:
    from skillbank.lm.evaluate import create_lm_library
    from skillbank.lm.model import DEFAULT_BASE, load_base

    base, tok = load_base(args.base or DEFAULT_BASE)
    create_lm_library(args.library, base, tok, overwrite=args.overwrite)
    print(f"created LM library {args.library}")


def _setup(args: argparse.Namespace) -> tuple[Any, Any, list, str]:
    """(SlotLM with one free slot, library or None, domains, base path)."""
    import torch

    from skillbank.library.core import PolicyLibrary
    from skillbank.lm.domains import get_domain
    from skillbank.lm.evaluate import library_lm
    from skillbank.lm.model import DEFAULT_BASE, SlotLM, load_base

    torch.set_num_threads(args.threads)
    domains = [get_domain(d) for d in args.domain]
    if args.out is None and args.library is None:
        raise ValueError("give --out ADAPTER_DIR and/or --library LIB")
    if args.library is not None:
        if args.base is not None:
            raise ValueError("give --base or --library, not both")
        lib = PolicyLibrary.load(args.library)
        tok = library_lm(lib).tok  # checks that the library's base is an LM
        return SlotLM(lib.base_model(), tok), lib, domains, str(args.library)
    base, tok = load_base(args.base or DEFAULT_BASE)
    return SlotLM(base, tok), None, domains, str(args.base or DEFAULT_BASE)


def _finish(args: argparse.Namespace, lm: Any, lib: Any, domains: list, meta: dict) -> None:
    from skillbank.lm.adapters import save_lm_adapter
    from skillbank.lm.evaluate import score

    scores = {d.name: score(lm, 0, d, args.eval_n) for d in domains}
    base_scores = {d.name: score(lm, -1, d, args.eval_n) for d in domains}
    meta = {
        "domains": [d.name for d in domains],
        **meta,
        "scores": scores,
        "base_scores": base_scores,
    }
    for d in domains:
        print(
            f"{d.name}: skill {scores[d.name]:.3f}  base {base_scores[d.name]:.3f} "
            f"({args.eval_n} test examples, greedy)"
        )
    if args.out is not None:
        save_lm_adapter(lm, 0, args.out, meta["base_path"], meta)
        print(f"wrote {args.out}")
    if lib is not None:
        name = args.skill or "+".join(d.name for d in domains)
        lib.add_skill(name, (lm.mm, 0), {**meta, "base": lm.fingerprint()}, overwrite=True)
        print(f"added skill {name!r} to {args.library}")


def cmd_sft(args: argparse.Namespace) -> None:
    from skillbank.lm.adapters import init_slot
    from skillbank.lm.sft import SFTConfig, train_sft

    lm, lib, domains, base_path = _setup(args)
    cfg = SFTConfig(seed=args.seed, batch_size=args.batch_size)
    cfg.steps = args.steps or cfg.steps
    cfg.learning_rate = args.lr or cfg.learning_rate
    init_slot(lm, 0, args.rank, seed=args.seed)
    with _progress(cfg.steps, "sft", args.quiet) as cb:
        hist = train_sft(lm, 0, domains, cfg, cb)
    meta = {
        "method": "sft",
        "config": vars(cfg),
        "base_path": base_path,
        "final_loss": hist[-1]["loss"],
    }
    _finish(args, lm, lib, domains, meta)


def cmd_rl(args: argparse.Namespace) -> None:
    from skillbank.lm.adapters import init_slot, load_lm_adapter
    from skillbank.lm.grpo import GRPOConfig, train_grpo

    lm, lib, domains, base_path = _setup(args)
    cfg = GRPOConfig(
        seed=args.seed, prompts_per_step=args.prompts, group_size=args.group, kl_coef=args.kl_coef
    )
    cfg.steps = args.steps or cfg.steps
    cfg.learning_rate = args.lr or cfg.learning_rate
    if args.init is not None:
        load_lm_adapter(lm, 0, args.init)
    else:
        init_slot(lm, 0, args.rank, seed=args.seed)
    with _progress(cfg.steps, "grpo", args.quiet) as cb:
        hist = train_grpo(lm, 0, domains, cfg, cb)
    rewards = [h["reward"] for h in hist]
    meta = {
        "method": "grpo",
        "config": vars(cfg),
        "base_path": base_path,
        "init": str(args.init) if args.init else None,
        "train_reward": rewards,
    }
    _finish(args, lm, lib, domains, meta)


def cmd_eval(args: argparse.Namespace) -> None:
    import json

    import torch

    from skillbank.library.core import PolicyLibrary
    from skillbank.lm.domains import DOMAINS, get_domain
    from skillbank.lm.evaluate import library_lm, score_mixed

    torch.set_num_threads(args.threads)
    lib = PolicyLibrary.load(args.library)
    lm = library_lm(lib)
    names = args.domains or sorted(DOMAINS)
    domains = [get_domain(n) for n in names]
    rows = ["(base)", *lib.skills]
    slots = [-1, *[lib.slot_of(s) for s in lib.skills]]
    table = {d.name: dict(zip(rows, score_mixed(lm, slots, d, args.n))) for d in domains}
    if args.json:
        print(json.dumps(table, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{args.library}: mean reward on {args.n} test examples (greedy)")
    t.add_column("skill")
    for d in domains:
        t.add_column(d.name, justify="right")
    for r in rows:
        t.add_row(r, *[f"{table[d.name][r]:.3f}" for d in domains])
    Console(file=sys.stdout).print(t)
