"""Numbers derived from results.json alone: the published-style score table, the target
checks (correlation, refresh, rollback). Used by the report, the CLI and the docs."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from skillbank.interference.analysis import summarize_pairs

TARGET_FRACTION = 0.05
"""Rollbacks of at most this fraction of the coordinates count for the rollback target."""
MIN_DROP = 2.0
"""A drop of at most this many score points (the refresh target's tolerance for the other
domains) is not a drop a refresh can be judged on."""


def _avg(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _nanmean(xs: list[float]) -> float:
    """Mean of the finite values (NaN when there are none), without numpy's warning."""
    ok = [x for x in xs if np.isfinite(x)]
    return float(np.mean(ok)) if ok else float("nan")


def score_table(res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows = stage (after each domain, refresh, best sparse rollback and its random peer),
    columns = domains + average; scores in [0, 100]."""
    names = res["domains"]
    rows: list[list[str]] = []

    def row(label: str, scores: list[float]) -> None:
        rows.append([label, *[f"{s:.2f}" for s in scores], f"{_avg(scores):.2f}"])

    for st in res["stages"]:
        row(st["stage"], st["scores"])
    rf = res["refresh"]
    row(f"refresh {names[rf['domain']]} ({rf['steps']} {res['steps_unit']})", rf["scores"])
    rb = res["rollback"]
    best = [b for b in (best_rollback(res, score) for score in rb["ranked"]) if b is not None]
    for score, (i, _) in zip(rb["ranked"], best):
        p = rb["fractions"][i]
        row(f"rollback {names[rb['domain']]} p={p:.1%} ({score})", rb["ranked"][score][i]["scores"])
    for i in sorted({i for i, _ in best}):
        rand = [float(np.mean(col)) for col in zip(*[r["scores"] for r in rb["random"][i]])]
        label = f"random rollback p={rb['fractions'][i]:.1%} (mean of {len(rb['random'][i])})"
        row(label, rand)
    return ["stage", *names, "avg"], rows


def rollback_points(res: dict[str, Any], score: str) -> list[dict[str, Any]]:
    """Per fraction: A's recovery (share of its loss damage undone, score points gained)
    and the cost to the later domains B (mean loss increase, mean score drop; and the same
    for the last domain alone), for the rollback ranked by ``score`` and the mean of the
    random ones."""
    rb = res["rollback"]
    a = rb["domain"]
    later = list(range(a + 1, len(res["domains"])))
    final = res["stages"][-1]
    theta_a = res["stages"][a + 1]
    loss_dmg = final["losses"][a] - theta_a["losses"][a]

    def view(ev: dict[str, list[float]]) -> dict[str, float]:
        rec = (final["losses"][a] - ev["losses"][a]) / loss_dmg if loss_dmg else float("nan")
        return {
            "a_loss_recovery": rec,
            "a_score_gain": ev["scores"][a] - final["scores"][a],
            "b_loss_cost": _avg([ev["losses"][b] - final["losses"][b] for b in later]),
            "b_score_cost": _avg([final["scores"][b] - ev["scores"][b] for b in later]),
            "last_loss_cost": ev["losses"][-1] - final["losses"][-1],
            "last_score_cost": final["scores"][-1] - ev["scores"][-1],
        }

    out = []
    for i, p in enumerate(rb["fractions"]):
        ranked = view(rb["ranked"][score][i])
        rand = [view(r) for r in rb["random"][i]]
        rmean = {k: _nanmean([r[k] for r in rand]) for k in ranked}
        out.append({"fraction": p, "count": rb["counts"][i], "ranked": ranked, "random": rmean})
    return out


def random_frontier(points: list[dict[str, Any]], cost: float, key: str) -> float:
    """The best A loss recovery among the random rollbacks (every fraction, and the empty
    rollback: cost 0, recovery 0) that cost at most ``cost`` (``key``: which cost); -inf
    when none does."""
    pts = [(0.0, 0.0)] + [(p["random"][key], p["random"]["a_loss_recovery"]) for p in points]
    within = [r for c, r in pts if c <= cost]
    return max(within) if within else float("-inf")


COSTS = {"later": "b_loss_cost", "last": "last_loss_cost"}
"""Whose loss a rollback's cost is measured on: the mean over every domain trained after A,
or the last domain alone (stricter when A agrees with some later domains)."""


def efficiency(points: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Per fraction p <= 5%, whether the ranked rollback undoes part of A's loss damage
    (a) at a lower cost (``key``) than the random rollback of the same size
    (``same_size``), and (b) with more A recovery than every random rollback (any size,
    including none) that costs no more (``frontier``: not dominated by random)."""
    out = []
    for p in points:
        if p["fraction"] > TARGET_FRACTION + 1e-12:
            continue
        r, q = p["ranked"], p["random"]
        helps = r["a_loss_recovery"] > 0
        beyond = r["a_loss_recovery"] > random_frontier(points, r[key], key)
        out.append(
            {
                "fraction": p["fraction"],
                "same_size": bool(helps and r[key] < q[key]),
                "frontier": bool(helps and beyond),
            }
        )
    return out


def rollback_targets(res: dict[str, Any]) -> dict[str, Any]:
    """The rollback target for each cost (``COSTS``), over every damage score."""
    out: dict[str, Any] = {"domain": res["domains"][res["rollback"]["domain"]]}
    for who, key in COSTS.items():
        eff = {s: efficiency(rollback_points(res, s), key) for s in res["rollback"]["ranked"]}
        same = sorted({e["fraction"] for es in eff.values() for e in es if e["same_size"]})
        front = sorted({e["fraction"] for es in eff.values() for e in es if e["frontier"]})
        out[who] = {
            "per_score": eff,
            "same_size_fractions": same,
            "frontier_fractions": front,
            "met": bool(same or front),
        }
    return out


def best_rollback(res: dict[str, Any], score: str) -> tuple[int, dict[str, Any]] | None:
    """(index, point) of the fraction p <= 5% whose ranked rollback gains A the most
    score (ties: the most loss recovery)."""
    pts = [(i, p) for i, p in enumerate(rollback_points(res, score))]
    pts = [(i, p) for i, p in pts if p["fraction"] <= TARGET_FRACTION + 1e-12]
    if not pts:
        return None
    return max(
        pts, key=lambda t: (t[1]["ranked"]["a_score_gain"], t[1]["ranked"]["a_loss_recovery"])
    )


def targets(res: dict[str, Any]) -> dict[str, Any]:
    """The issue's three targets, measured."""
    names = res["domains"]
    corr = summarize_pairs(res["pairs"])
    corr_path = summarize_pairs([p["path"] for p in res["pairs"]])
    corr_cum = summarize_pairs(res["pairs"] + res["cumulative"])
    rf = res["refresh"]
    a = rf["domain"]
    own = res["stages"][a + 1]["scores"][a]
    final = res["stages"][-1]["scores"]
    drop = own - final[a]
    others = [rf["scores"][i] - final[i] for i in range(len(names)) if i != a]
    worst = max([-x for x in others], default=0.0)  # the largest drop of another domain
    recovered = (rf["scores"][a] - final[a]) / drop if drop > 0 else float("nan")
    return {
        "correlation": corr,
        "correlation_path": corr_path,
        "correlation_with_cumulative": corr_cum,
        "refresh": {
            "domain": names[a],
            "drop": drop,
            "recovered_fraction": recovered,
            "others_max_abs_change": max([abs(x) for x in others], default=0.0),
            "others_max_drop": worst,
            "met": bool(drop > MIN_DROP and recovered >= 0.5 and worst <= 2.0),
        },
        "rollback": rollback_targets(res),
    }


def markdown(res: dict[str, Any]) -> str:
    """The score table, the pair measures and the targets as Markdown (for docs)."""
    header, rows = score_table(res)
    short = [h.split("/", 1)[-1] for h in header]
    lines = ["| " + " | ".join(short) + " |", "|" + "---|" * len(short)]
    lines += ["| " + " | ".join([re.sub(r"[\w-]+/", "", r[0]), *r[1:]]) + " |" for r in rows]
    names = [n.split("/", 1)[-1] for n in res["domains"]]
    lines += [
        "",
        "| A <- B | D measured | g.d | 1/2 dHd | score drop | path D / pred | cos(g_A, d_B) | "
        "unchanged % (abs/rel) | Jaccard | grad cos | Krylov k=1/2 | eigen k=1/2/4 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in res["pairs"]:
        kry = p["krylov"]["share"]
        eig = p.get("eigen_share")
        lines.append(
            f"| {names[p['a']]} <- {names[p['b']]} | {p['measured']:.4g} | "
            f"{p['first_order']:.3g} | {p['second_order']:.4g} | {p['score_drop']:.1f} | "
            f"{p['path']['measured']:.4g} / {p['path']['predicted']:.4g} | "
            f"{p['grad_update_cos']:.3f} | "
            f"{100 * p['sparsity_b']['abs_unchanged']:.2f} / "
            f"{100 * p['sparsity_b']['rel_unchanged']:.2f} | {p['neuron_jaccard']:.3f} | "
            f"{p['grad_cos']['global']:.2f} | "
            + ("/".join(f"{kry[min(k, len(kry)) - 1]:.2f}" for k in (1, 2)) if kry else "-")
            + " | "
            + ("/".join(f"{eig[min(k, len(eig)) - 1]:.2f}" for k in (1, 2, 4)) if eig else "-")
            + " |"
        )
    t = targets(res)
    c, r, rb = t["correlation"], t["refresh"], t["rollback"]
    cc = t["correlation_with_cumulative"]
    lines += [
        "",
        f"- damage correlation over {int(c['n'])} pairs (d_B at theta_A): Pearson(predicted, "
        f"measured) {c['pearson_predicted']:.3f}, second-order term alone "
        f"{c['pearson_second_order']:.3f}, Spearman {c['spearman_predicted']:.3f}; along the "
        f"real path: Pearson {t['correlation_path']['pearson_predicted']:.3f}; with the "
        f"{int(cc['n'] - c['n'])} cumulative "
        f"points: Pearson {cc['pearson_predicted']:.3f} / second order "
        f"{cc['pearson_second_order']:.3f}",
        f"- refresh {r['domain']}: drop {r['drop']:.1f} points, recovered "
        f"{100 * r['recovered_fraction']:.0f}%, other domains lost at most "
        f"{max(0.0, r['others_max_drop']):.1f} points (moved at most "
        f"{r['others_max_abs_change']:.1f}) ({'met' if r['met'] else 'not met'})",
        f"- {rollback_text(rb)}",
    ]
    return "\n".join(lines)


def rollback_text(rb: dict[str, Any]) -> str:
    """One sentence on the rollback target (``targets(res)["rollback"]``)."""
    parts = []
    for who, label in (("later", "every later domain (mean)"), ("last", "the last domain")):
        t = rb[who]
        parts.append(
            f"cost measured on {label}: cheaper than random of the same size at p = "
            f"{t['same_size_fractions'] or 'none'}, recovers more than every random rollback "
            f"that costs no more at p = "
            f"{t['frontier_fractions'] or 'none'} ({'met' if t['met'] else 'not met'})"
        )
    return f"rollback {rb['domain']} (p <= 5%): " + "; ".join(parts)
