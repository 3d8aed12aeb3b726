"""``skillbank lm ...``: pretrain a base, SFT and RL skills, evaluate. Only argparse and
pathlib at import time: torch and transformers load inside the handlers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from skillbank.cli.argtypes import name_list, text_verb
from skillbank.config import (
    ConfigError,
    add_config_args,
    config_from_args,
    read_toml,
    validate_table,
)
from skillbank.lm.configs import DataConfig, GRPOConfig, ModelConfig, SFTConfig

LM_HELP = """\
Language-model skills: any local Hugging Face causal LM (default: the packaged tiny-lm),
built-in text domains with verifiable rewards (reverse, sort, add, caesar) or your own
dataset (--dataset, TRL's formats) and reward functions (--reward MODULE:FUNCTION), LoRA
skills trained with SFT and with GRPO. Guide: docs/lm.md.

  pretrain     train a fresh base on the domains' formats (not their skills)
  new-library  create a library whose base is an LM base folder
  sft          LoRA adapter by supervised fine-tuning (masked CE on answers)
  rl           LoRA adapter by GRPO (from scratch or from an adapter, e.g. an SFT one)
  eval         table: score of the base and of each skill on each domain's test set
"""


def _common(p: argparse.ArgumentParser, seed: Any = 0) -> None:
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=seed, help="seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


TOML_TABLES = ("model", "data", "sft", "grpo")
"""Tables of ``--config FILE.toml``: ModelConfig, DataConfig, SFTConfig, GRPOConfig."""


def _from_toml(args: argparse.Namespace, model: type[Any], table: str) -> Any:
    """``model`` from table ``[table]`` of ``--config`` (its defaults without one)."""
    path = getattr(args, "config", None)
    if path is None:
        return model()
    data = read_toml(path)
    unknown = sorted(set(data) - set(TOML_TABLES))
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {unknown}; expected {list(TOML_TABLES)}")
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: field {table!r}: must be a table ([{table}])")
    return validate_table(model, section, f"{path} [{table}]")


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (any local Hugging Face causal-LM folder)")
    g.add_argument(
        "--base", default=argparse.SUPPRESS, help="base model folder (default: packaged tiny-lm)"
    )
    add_config_args(g, ModelConfig, only=["target_modules", "chat_template"])


def _alias(p: argparse.ArgumentParser, flag: str, dest: str, kind: type, help_text: str) -> None:
    """A short flag for a config field (left out unless given, like generated flags)."""
    p.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS, help=help_text)


def _data_args(group: argparse._ArgumentGroup) -> None:
    add_config_args(group, DataConfig, skip=["reward"])
    group.add_argument(
        "--reward",
        action="append",
        default=argparse.SUPPRESS,
        metavar="MODULE:FUNCTION",
        help="reward function with TRL's reward_funcs signature (repeat for several)",
    )


def _skill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--domain",
        type=name_list,
        help="built-in domain(s), comma-separated (several = one shared adapter)",
    )
    _data_args(p.add_argument_group("data (instead of --domain: TRL's dataset formats)"))
    p.add_argument("--out", type=Path, help="adapter folder to write (PEFT format + skill.json)")
    p.add_argument("--library", type=Path, help="LM library: use its base, add the skill to it")
    p.add_argument("--skill", help="skill name in --library (default: the domain name)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank of a fresh adapter (default 8)")
    _alias(p, "--lr", "learning_rate", float, "Adam learning rate")
    p.add_argument("--eval-n", type=int, default=200, help="test examples scored at the end")
    p.add_argument(
        "--config",
        type=Path,
        help=f"TOML file with tables {', '.join(f'[{t}]' for t in TOML_TABLES)} (flags win)",
    )
    _model_args(p)
    _common(p, seed=argparse.SUPPRESS)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``lm`` verb and its sub-verbs; each sets ``args.handler``."""
    top = text_verb(
        subparsers, "lm", "language-model skills: pretrain, sft, rl, eval (docs/lm.md)", LM_HELP
    )
    sub = top.add_subparsers(dest="lm_verb", metavar="LM_VERB", required=True)

    p = sub.add_parser("pretrain", help="train a fresh base on the domains' formats")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps (default 1000)")
    p.add_argument("--arch", choices=["llama", "qwen2", "mistral"], default="llama")
    p.add_argument("--hidden", type=int, default=128, help="hidden size (default 128)")
    p.add_argument("--layers", type=int, default=4, help="transformer layers (default 4)")
    p.add_argument("--max-len", type=int, default=48, help="context in tokens (default 48)")
    _common(p)
    p.set_defaults(handler=cmd_pretrain)

    p = sub.add_parser("new-library", help="create a library whose base is an LM base")
    p.add_argument("library", type=Path, help="library folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing library")
    _model_args(p)
    p.set_defaults(handler=cmd_new_library)

    p = sub.add_parser("sft", help="LoRA skill by supervised fine-tuning on reference answers")
    _skill_args(p)
    add_config_args(p, SFTConfig, only=["steps", "batch_size", "max_grad_norm"])
    p.set_defaults(handler=cmd_sft)

    p = sub.add_parser("rl", help="LoRA skill by GRPO (group-relative policy gradient)")
    _skill_args(p)
    p.add_argument("--init", type=Path, help="start from this adapter folder (e.g. SFT)")
    _alias(p, "--prompts", "prompts_per_step", int, "prompts per step (default 16)")
    _alias(p, "--group", "group_size", int, "samples per prompt G (default 8)")
    g = p.add_argument_group("GRPO (TRL's names)")
    add_config_args(g, GRPOConfig, skip=["learning_rate", "seed"])
    p.set_defaults(handler=cmd_rl)

    p = sub.add_parser("eval", help="score of the base and each skill on each domain")
    p.add_argument("library", type=Path, help="LM library folder")
    p.add_argument("--domains", type=name_list, help="comma-separated (default: all registered)")
    p.add_argument("--n", type=int, default=200, help="test examples per domain (default 200)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    _data_args(p.add_argument_group("data (a dataset scored with reward functions)"))
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

    from skillbank.lm.configs import ArchConfig, PretrainConfig
    from skillbank.lm.model import save_base
    from skillbank.lm.pretrain import pretrain

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


def _model_cfg(args: argparse.Namespace) -> ModelConfig:
    return config_from_args(args, _from_toml(args, ModelConfig, "model"))


def cmd_new_library(args: argparse.Namespace) -> None:
    from skillbank.lm.evaluate import create_lm_library
    from skillbank.lm.model import DEFAULT_BASE, load_base

    mc = _model_cfg(args)
    base, tok = load_base(mc.base or DEFAULT_BASE, use_chat_template=mc.chat_template)
    create_lm_library(args.library, base, tok, overwrite=args.overwrite, targets=mc.target_modules)
    print(f"created LM library {args.library}")


def _tasks(args: argparse.Namespace, need_reward: bool) -> list[Any]:
    """The built-in domains of --domain, or the --dataset with its --reward functions."""
    from skillbank.lm.data import DatasetTask
    from skillbank.lm.domains import get_domain
    from skillbank.lm.rewards import Rewards

    dc = config_from_args(args, _from_toml(args, DataConfig, "data"))
    if (args.domain is None) == (dc.dataset is None):
        raise ConfigError("command line: give --domain NAME or --dataset FILE (one of them)")
    if args.domain is not None:
        return [get_domain(d) for d in args.domain]
    assert dc.dataset is not None
    rewards = None
    if dc.reward or need_reward:
        rewards = Rewards.from_specs(dc.reward, dc.reward_weights)
    task = DatasetTask.load(
        dc.dataset,
        rewards,
        dc.prompt_column,
        dc.completion_column,
        dc.eval_dataset,
    )
    return [task]


def _setup(args: argparse.Namespace, need_reward: bool) -> tuple[Any, Any, list, str]:
    """(SlotLM with one free slot, library or None, tasks, base path)."""
    import torch

    from skillbank.library.core import PolicyLibrary
    from skillbank.lm.evaluate import library_tokenizer, set_source
    from skillbank.lm.model import DEFAULT_BASE, SlotLM, load_base

    torch.set_num_threads(args.threads)
    tasks = _tasks(args, need_reward)
    if args.out is None and args.library is None:
        raise ConfigError("command line: give --out ADAPTER_DIR and/or --library LIB")
    mc = _model_cfg(args)
    if args.library is not None:
        if mc.base is not None:
            raise ConfigError("command line: give --base or --library, not both")
        lib = PolicyLibrary.load(args.library)
        if lib.base_config.get("kind") != "causal_lm":
            raise ConfigError(f"{args.library}: not an LM library (base kind 'causal_lm')")
        base = lib.base_model()
        set_source(base, lib.base_config.get("source"))
        targets = lib.base_config.get("target_modules")
        return SlotLM(base, library_tokenizer(lib), targets=targets), lib, tasks, str(args.library)
    folder = mc.base or DEFAULT_BASE
    base, tok = load_base(folder, use_chat_template=mc.chat_template)
    return SlotLM(base, tok, targets=mc.target_modules), None, tasks, str(folder)


def _finish(args: argparse.Namespace, lm: Any, lib: Any, tasks: list, meta: dict) -> None:
    from skillbank.lm.adapters import save_lm_adapter
    from skillbank.lm.evaluate import score
    from skillbank.lm.sft import answer_nll

    scored = [d for d in tasks if getattr(d, "reward_fns", True) is not None]
    scores = {d.name: score(lm, 0, d, args.eval_n) for d in scored}
    base_scores = {d.name: score(lm, -1, d, args.eval_n) for d in scored}
    meta = {"domains": [d.name for d in tasks], **meta}
    meta.update(scores=scores, base_scores=base_scores)
    for d in scored:
        print(
            f"{d.name}: skill {scores[d.name]:.3f}  base {base_scores[d.name]:.3f} "
            f"({args.eval_n} test examples, greedy)"
        )
    for d in tasks:
        if d not in scored:  # a dataset without reward functions: likelihood of its answers
            exs = d.examples(args.eval_n, "test")
            nll = {"skill": answer_nll(lm, 0, exs), "base": answer_nll(lm, -1, exs)}
            meta.setdefault("answer_nll", {})[d.name] = nll
            print(f"{d.name}: answer NLL skill {nll['skill']:.3f}  base {nll['base']:.3f} nats")
    if args.out is not None:
        save_lm_adapter(lm, 0, args.out, meta["base_path"], meta)
        print(f"wrote {args.out}")
    if lib is not None:
        name = args.skill or "+".join(d.name for d in tasks)
        lib.add_skill(name, (lm.mm, 0), {**meta, "base": lm.fingerprint()}, overwrite=True)
        print(f"added skill {name!r} to {args.library}")


def _data_meta(args: argparse.Namespace) -> dict[str, Any]:
    dc = config_from_args(args, _from_toml(args, DataConfig, "data"))
    return {"data": dc.to_dict()} if dc.dataset is not None else {}


def cmd_sft(args: argparse.Namespace) -> None:
    from skillbank.lm.adapters import init_slot
    from skillbank.lm.sft import train_sft

    lm, lib, tasks, base_path = _setup(args, need_reward=False)
    cfg = config_from_args(args, _from_toml(args, SFTConfig, "sft"))
    init_slot(lm, 0, args.rank, seed=cfg.seed)
    with _progress(cfg.steps, "sft", args.quiet) as cb:
        hist = train_sft(lm, 0, tasks, cfg, cb)
    meta = {
        "method": "sft",
        "config": cfg.to_dict(),
        "base_path": base_path,
        "final_loss": hist[-1]["loss"],
        **_data_meta(args),
    }
    _finish(args, lm, lib, tasks, meta)


def cmd_rl(args: argparse.Namespace) -> None:
    from skillbank.lm.adapters import init_slot, load_lm_adapter
    from skillbank.lm.grpo import train_grpo

    lm, lib, tasks, base_path = _setup(args, need_reward=args.domain is None)
    cfg = config_from_args(args, _from_toml(args, GRPOConfig, "grpo"))
    if args.init is not None:
        load_lm_adapter(lm, 0, args.init)
    else:
        init_slot(lm, 0, args.rank, seed=cfg.seed)
    with _progress(cfg.steps, "grpo", args.quiet) as cb:
        hist = train_grpo(lm, 0, tasks, cfg, cb)
    rewards = [h["reward"] for h in hist]
    meta = {
        "method": "grpo",
        "config": cfg.to_dict(),
        "base_path": base_path,
        "init": str(args.init) if args.init else None,
        "train_reward": rewards,
        **_data_meta(args),
    }
    _finish(args, lm, lib, tasks, meta)


def cmd_eval(args: argparse.Namespace) -> None:
    import json

    import torch

    from skillbank.library.core import PolicyLibrary
    from skillbank.lm.data import DatasetTask
    from skillbank.lm.domains import DOMAINS, get_domain
    from skillbank.lm.evaluate import library_lm, score_mixed
    from skillbank.lm.rewards import Rewards

    torch.set_num_threads(args.threads)
    lib = PolicyLibrary.load(args.library)
    lm = library_lm(lib)
    dc = config_from_args(args, DataConfig())
    if dc.dataset is not None:
        rewards = Rewards.from_specs(dc.reward, dc.reward_weights)
        path = dc.eval_dataset or dc.dataset
        domains: list[Any] = [
            DatasetTask.load(path, rewards, dc.prompt_column, dc.completion_column)
        ]
    else:
        domains = [get_domain(n) for n in (args.domains or sorted(DOMAINS))]
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
