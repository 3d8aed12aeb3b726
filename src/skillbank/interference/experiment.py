"""An interference run: train the domains in order on the shared parameters, measure every
(earlier A, later B) pair, repair the most damaged domain (refresh, sparse rollback) and
write results.json + report.html. Works on any ``Setting``."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import save_file
from torch import Tensor

from skillbank.errors import ConfigError
from skillbank.interference.analysis import eigenpairs, measure_pair, taylor_terms
from skillbank.interference.config import FORMAT, InterferenceConfig, InterferencePaths
from skillbank.interference.hessian import LossFn, gradient, hvp, loss_value
from skillbank.interference.measures import ABS_TOL, flat, sub, unflat, update_sparsity
from skillbank.interference.repair import (
    DAMAGE_SCORES,
    DamageInputs,
    count_for,
    random_coordinates,
    rollback,
    top_coordinates,
)
from skillbank.interference.setting import Setting
from skillbank.io import nan_to_none, write_json

Theta = Mapping[str, Tensor]


def save_tensors(path: Path, tensors: Mapping[str, Tensor]) -> None:
    """safetensors through a temp file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    save_file({k: t.detach().contiguous().clone() for k, t in tensors.items()}, tmp)
    os.replace(tmp, path)


class Steps:
    """One rich progress bar over the whole run."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<48}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=quiet,
        )
        self.bar = self.progress.add_task("interference", total=total)

    def __enter__(self) -> Steps:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def now(self, text: str) -> None:
        self.progress.update(self.bar, description=text)

    def done(self, n: int = 1) -> None:
        self.progress.advance(self.bar, n)


def evaluate_all(setting: Setting, losses: list[LossFn], theta: Theta) -> dict[str, list[float]]:
    """Scores of every domain and smooth losses of the domains that have one, at ``theta``."""
    setting.load(theta)
    return {
        "scores": [d.score() for d in setting.domains],
        "losses": [loss_value(fn, theta) for fn in losses],
    }


def pick_repair(names: list[str], stages: list[dict[str, Any]], wanted: str | None) -> int:
    """The domain to repair: ``wanted``, else the largest score drop from the end of its
    own training to the end of the sequence (the last domain excluded; ties: the largest
    increase of its smooth loss)."""
    if wanted is not None:
        if wanted not in names[:-1]:
            raise ConfigError(f"field repair_domain: {wanted!r} is not one of {names[:-1]}")
        return names.index(wanted)
    final = stages[-1]
    keys = [
        (
            round(stages[i + 1]["scores"][i] - final["scores"][i], 6),
            final["losses"][i] - stages[i + 1]["losses"][i],
        )
        for i in range(len(names) - 1)
    ]
    return max(range(len(keys)), key=lambda i: keys[i])


def run_refresh(
    setting: Setting, cfg: InterferenceConfig, losses: list[LossFn], a: int, final: Theta
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``refresh_steps`` of training on domain ``a`` from the final parameters; every
    domain evaluated after. Domain states and the final parameters are restored."""
    states = [d.get_state() for d in setting.domains]
    setting.load(final)
    start = time.perf_counter()
    summary = setting.domains[a].train(cfg.refresh_steps, cfg.seed * 1000 + 900, False)
    theta = setting.theta()
    rec = {"domain": a, "steps": cfg.refresh_steps, "train": summary}
    rec.update(evaluate_all(setting, losses, theta))
    rec["seconds"] = time.perf_counter() - start
    for d, s in zip(setting.domains, states):
        d.set_state(s)
    setting.load(final)
    return rec, theta


def run_rollback(
    setting: Setting,
    cfg: InterferenceConfig,
    losses: list[LossFn],
    a: int,
    theta_a: Theta,
    final: Theta,
    steps: Steps,
) -> dict[str, Any]:
    """Sweep the rollback fraction p: for each damage score, reset the top-p coordinates to
    theta_A; as the peer, reset p of the changed coordinates drawn at random (several
    seeds). Every domain's score and smooth loss is measured after each reset."""
    fa, ff = flat(theta_a), flat(final)
    delta = sub(final, theta_a)
    later = losses[a + 1 :]

    def loss_b(p: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([fn(p) for fn in later]).sum()

    inputs = DamageInputs(
        delta=ff - fa,
        g_a=flat(gradient(losses[a], theta_a)),
        hd_a=flat(hvp(losses[a], theta_a, delta)),
        g_b=flat(gradient(loss_b, final)),
        hd_b=flat(hvp(loss_b, final, delta)),
    )
    n = inputs.delta.numel()
    changed = torch.nonzero(inputs.delta.abs() >= ABS_TOL).squeeze(1)
    like = {k: t.detach() for k, t in theta_a.items()}
    ranks = {name: DAMAGE_SCORES[name](inputs) for name in cfg.rollback_scores}
    counts = [count_for(p, n) for p in cfg.rollback_fractions]
    ranked: dict[str, list[dict[str, list[float]]]] = {name: [] for name in ranks}
    random_evals: list[list[dict[str, list[float]]]] = []
    for p, count in zip(cfg.rollback_fractions, counts):
        steps.now(f"rollback p={p:g}")
        for name, score in ranks.items():
            th = unflat(rollback(ff, fa, top_coordinates(score, count)), like)
            ranked[name].append(evaluate_all(setting, losses, th))
        row = []
        for s in range(cfg.random_seeds):
            k = min(count, changed.numel())
            pick = changed[random_coordinates(changed.numel(), k, cfg.seed * 100 + s)]
            row.append(evaluate_all(setting, losses, unflat(rollback(ff, fa, pick), like)))
        random_evals.append(row)
        steps.done()
    setting.load(final)
    return {
        "domain": a,
        "numel": n,
        "changed": changed.numel(),
        "fractions": list(cfg.rollback_fractions),
        "counts": counts,
        "ranked": ranked,
        "random": random_evals,
        "predicted_damage_total": float(
            inputs.g_a @ inputs.delta + 0.5 * inputs.delta @ inputs.hd_a
        ),
    }


def train_sequence(
    setting: Setting, cfg: InterferenceConfig, paths: InterferencePaths, steps: Steps
) -> tuple[list[dict[str, Tensor]], list[LossFn], list[dict[str, Any]], list[dict[str, Any]]]:
    """Train every domain in order; (thetas [initial + one per domain], smooth losses,
    stages with every domain's score (and the losses defined so far), training log)."""
    thetas = [setting.theta()]
    save_tensors(paths.theta(0, "init"), thetas[0])
    stages: list[dict[str, Any]] = [
        {"stage": "start", "scores": [d.score() for d in setting.domains]}
    ]
    losses: list[LossFn] = []
    log: list[dict[str, Any]] = []
    for j, dom in enumerate(setting.domains):
        steps.now(f"train {dom.name}")
        t0 = time.perf_counter()
        summary = dom.train(cfg.steps, cfg.seed * 1000 + j, True)
        log.append({"domain": dom.name, "seconds": time.perf_counter() - t0, **summary})
        thetas.append(setting.theta())
        save_tensors(paths.theta(j + 1, dom.name), thetas[-1])
        loss, data = dom.make_loss()
        save_tensors(paths.loss_data(dom.name), data)
        losses.append(loss)
        stages.append({"stage": f"after {dom.name}", **evaluate_all(setting, losses, thetas[-1])})
        steps.done()
    return thetas, losses, stages, log


def measure_pairs(
    setting: Setting,
    cfg: InterferenceConfig,
    thetas: list[dict[str, Tensor]],
    losses: list[LossFn],
    stages: list[dict[str, Any]],
    steps: Steps,
) -> list[dict[str, Any]]:
    """``measure_pair`` for every earlier A and later B (H_A's eigenpairs once per A), with
    A's score drop at theta_A + d_B (evaluated) and along the real path (from the stages)."""
    names, num = setting.names, len(setting.domains)
    pairs: list[dict[str, Any]] = []
    for i in range(num - 1):
        steps.now(f"H_A eigenpairs of {names[i]}")
        eig = eigenpairs(losses[i], thetas[i + 1], cfg.eigen_k, cfg.eigen_steps, cfg.seed)
        for j in range(i + 1, num):
            steps.now(f"pair {names[i]} -> {names[j]}")
            rec = measure_pair(
                setting,
                losses[i],
                losses[j],
                (thetas[i], thetas[i + 1]),
                (thetas[j], thetas[j + 1]),
                neuron_fraction=cfg.neuron_fraction,
                krylov_steps=cfg.krylov_steps,
                eig=eig,
            )
            rec["path"]["score_drop"] = stages[j]["scores"][i] - stages[j + 1]["scores"][i]
            if j == i + 1:  # B right after A: the real point
                rec["score_drop"] = rec["path"]["score_drop"]
            else:  # A's score at theta_A + d_B
                virtual = {k: thetas[i + 1][k] + thetas[j + 1][k] - thetas[j][k] for k in thetas[0]}
                setting.load(virtual)
                rec["score_drop"] = stages[i + 1]["scores"][i] - setting.domains[i].score()
            rec.update({"a": i, "b": j})
            pairs.append(rec)
            steps.done()
    setting.load(thetas[-1])
    return pairs


def run_experiment(
    setting: Setting, cfg: InterferenceConfig, out: Path, quiet: bool = False
) -> dict[str, Any]:
    """The whole run; returns the results (also written to OUT/results.json)."""
    paths = InterferencePaths(out)
    names, num = setting.names, len(setting.domains)
    if num < 2:
        raise ConfigError("field domains: interference needs at least two domains")
    if cfg.repair_domain is not None and cfg.repair_domain not in names[:-1]:
        raise ConfigError(f"field repair_domain: {cfg.repair_domain!r} is not one of {names[:-1]}")
    total = num + num * (num - 1) // 2 + (num - 1) + 1 + len(cfg.rollback_fractions)
    started = time.perf_counter()
    with Steps(total, quiet) as steps:
        thetas, losses, stages, train_log = train_sequence(setting, cfg, paths, steps)
        # every domain's loss at every stage (now that all losses exist)
        loss_matrix = [[loss_value(fn, th) for fn in losses] for th in thetas[1:]]
        pairs = measure_pairs(setting, cfg, thetas, losses, stages, steps)
        cumulative = []
        for i in range(num - 1):  # all of A's later domains at once, expanded at theta_A
            rec = taylor_terms(losses[i], thetas[i + 1], thetas[-1])
            rec["a"] = i
            rec["score_drop"] = stages[i + 1]["scores"][i] - stages[-1]["scores"][i]
            cumulative.append(rec)
            steps.done()
        sparsity = [
            vars(update_sparsity(thetas[j], sub(thetas[j + 1], thetas[j]), setting.active))
            for j in range(num)
        ]
        a = pick_repair(names, stages, cfg.repair_domain)
        steps.now(f"refresh {names[a]}")
        refresh, refreshed = run_refresh(setting, cfg, losses, a, thetas[-1])
        save_tensors(paths.repaired("refresh"), refreshed)
        steps.done()
        rb = run_rollback(setting, cfg, losses, a, thetas[a + 1], thetas[-1], steps)
    results = {
        "format": FORMAT,
        "kind": setting.kind,
        "mode": setting.mode,
        "domains": names,
        "config": cfg.to_dict(),
        "setting": setting.info,
        "loss_text": setting.loss_text,
        "score_text": setting.score_text,
        "steps_unit": setting.steps_unit,
        "numel": sum(t.numel() for t in thetas[0].values()),
        "stages": stages,
        "loss_matrix": loss_matrix,
        "train": train_log,
        "sparsity": sparsity,
        "pairs": pairs,
        "cumulative": cumulative,
        "refresh": refresh,
        "rollback": rb,
        "wall_time_s": time.perf_counter() - started,
    }
    write_json(paths.results, nan_to_none(results))  # strict JSON: NaN -> null
    from skillbank.interference.report import write_report

    write_report(results, paths.report)
    return results
