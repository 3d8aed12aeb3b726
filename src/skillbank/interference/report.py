"""report.html of an interference run, rebuilt from results.json alone."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from skillbank.errors import FormatError
from skillbank.interference.config import FORMAT, InterferencePaths
from skillbank.interference.summary import (
    MIN_DROP,
    rollback_points,
    rollback_text,
    score_table,
    targets,
)
from skillbank.reporting.html import html_table, img, png_data_uri, write_html

PUBLISHED = (
    "Published (multi-domain RL on an LLM, Code -> Math -> QA -> Creative Writing on one set "
    "of weights): single-domain updates are sparse and overlap little, yet earlier domains "
    "are damaged even with near-orthogonal gradients; the damage is mainly the second-order "
    "term 1/2 d_B^T H_A d_B in a low-dimensional conflict subspace; a short refresh on Math "
    "takes it from 57.66 to 66.04 (best average 66.39); resetting a sparse set of conflict "
    "coordinates without training partly recovers it."
)


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(name: str) -> str:
    return name.split("/", 1)[-1]


def scatter(res: dict[str, Any]) -> str:
    """Predicted (first + second order, and second order alone) vs measured damage."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    groups = [
        ("pairs: d_B at theta_A", res["pairs"], "o"),
        ("pairs: along the real path", [p["path"] for p in res["pairs"]], "^"),
        ("cumulative: all after A", res["cumulative"], "x"),
    ]
    for ax, key, title in zip(
        axes, ["predicted", "second_order"], ["g.d + 1/2 d^T H d", "1/2 d^T H d"]
    ):
        allv = []
        for label, recs, marker in groups:
            x = [r[key] for r in recs]
            y = [r["measured"] for r in recs]
            allv += x + y
            ax.scatter(x, y, marker=marker, label=label)
        if allv:
            lo, hi = min(allv), max(allv)
            ax.plot([lo, hi], [lo, hi], color="grey", ls=":", lw=0.8)
        ax.set_xlabel(f"predicted damage ({title})")
        ax.set_ylabel("measured damage of L_A")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return img(png_data_uri(fig))


def line_fig(res: dict[str, Any]) -> str:
    """Measured (solid) and second-order predicted (dashed) damage of A along t d_B from
    theta_A, one panel per pair: where the quadratic model holds."""
    plt = _plt()
    names = [_short(n) for n in res["domains"]]
    pairs = [p for p in res["pairs"] if "line" in p]  # older results lack the line check
    if not pairs:
        return "<p>-</p>"
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(pairs) :]:
        ax.axis("off")
    for ax, p in zip(axes.flat, pairs):
        ts = [0.0] + [pt["t"] for pt in p["line"]]
        ax.plot(ts, [0.0] + [pt["measured"] for pt in p["line"]], marker="o", label="measured")
        ax.plot(ts, [0.0] + [pt["predicted"] for pt in p["line"]], ls="--", label="g.d + 1/2 dHd")
        ax.set_title(f"{names[p['a']]} <- {names[p['b']]}", fontsize=9)
        ax.set_xlabel("t", fontsize=8)
    axes.flat[0].set_ylabel("L_A(theta_A + t d_B) - L_A(theta_A)", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return img(png_data_uri(fig))


def sparsity_overlap(res: dict[str, Any]) -> str:
    """Update sparsity per domain, and the Jaccard overlap of top neurons per pair."""
    plt = _plt()
    names = [_short(n) for n in res["domains"]]
    n = len(names)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(n)
    sp = res["sparsity"]
    axes[0].bar(x - 0.2, [100 * s["abs_unchanged"] for s in sp], 0.4, label="|d| < 1e-7")
    axes[0].bar(x + 0.2, [100 * s["rel_unchanged"] for s in sp], 0.4, label="|d| < 1e-3 |theta|")
    axes[0].set_xticks(x, names, rotation=20, fontsize=8)
    axes[0].set_ylabel("% of shared coordinates unchanged")
    axes[0].legend(fontsize=7)
    m = np.full((n, n), np.nan)
    for p in res["pairs"]:
        m[p["a"], p["b"]] = p["neuron_jaccard"]
    axes[1].imshow(m, vmin=0, vmax=1, cmap="viridis")
    for p in res["pairs"]:
        axes[1].text(
            p["b"], p["a"], f"{p['neuron_jaccard']:.2f}", ha="center", va="center", color="white"
        )
    axes[1].set_xticks(range(n), [f"B={s}" for s in names], rotation=20, fontsize=8)
    axes[1].set_yticks(range(n), [f"A={s}" for s in names], fontsize=8)
    chance = res["pairs"][0]["neuron_jaccard_random"] if res["pairs"] else float("nan")
    axes[1].set_title(
        f"Jaccard of top-{res['config']['neuron_fraction']:.0%} neurons (chance {chance:.3f})",
        fontsize=9,
    )
    fig.tight_layout()
    return img(png_data_uri(fig))


def shares(res: dict[str, Any]) -> str:
    """Share of 1/2 d^T H_A d held by the top-k directions, per pair."""
    plt = _plt()
    names = [_short(n) for n in res["domains"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for p in res["pairs"]:
        label = f"{names[p['a']]} <- {names[p['b']]}"
        s = p["krylov"]["share"]
        if s:
            axes[0].plot(range(1, len(s) + 1), s, marker=".", label=label)
        if p.get("eigen_share"):
            e = p["eigen_share"]
            axes[1].plot(range(1, len(e) + 1), e, marker=".", label=label)
    axes[0].set_title("Krylov (Lanczos from d_B): top-k Ritz directions", fontsize=9)
    axes[1].set_title("top-k eigenvectors of H_A at theta_A", fontsize=9)
    for ax in axes:
        ax.axhline(1.0, color="grey", ls=":", lw=0.8)
        ax.set_xlabel("k")
        ax.set_ylabel("share of d^T H_A d")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return img(png_data_uri(fig))


def rollback_fig(res: dict[str, Any]) -> str:
    """A's recovery and B's cost over the rollback fraction, each score vs random; and the
    trade-off (B cost, A recovery) of every point."""
    plt = _plt()
    scores = list(res["rollback"]["ranked"])
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    specs = [
        ("a_loss_recovery", "A: share of loss damage undone"),
        ("a_score_gain", "A: score gain (points)"),
        ("b_loss_cost", "later domains: mean loss increase"),
    ]
    for score in scores:
        pts = rollback_points(res, score)
        ps = [100 * p["fraction"] for p in pts]
        for ax, (key, _) in zip(axes, specs):
            ax.plot(ps, [p["ranked"][key] for p in pts], marker="o", label=score)
        axes[3].plot(
            [p["ranked"]["b_loss_cost"] for p in pts],
            [p["ranked"]["a_loss_recovery"] for p in pts],
            marker="o",
            label=score,
        )
    pts = rollback_points(res, scores[0])
    ps = [100 * p["fraction"] for p in pts]
    for ax, (key, title) in zip(axes, specs):
        ax.plot(ps, [p["random"][key] for p in pts], marker="x", color="grey", label="random")
        ax.set_xscale("log")
        ax.set_xlabel("rolled back coordinates (%)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    axes[3].plot(
        [p["random"]["b_loss_cost"] for p in pts],
        [p["random"]["a_loss_recovery"] for p in pts],
        marker="x",
        color="grey",
        label="random",
    )
    axes[3].set_xlabel("later domains: mean loss increase")
    axes[3].set_ylabel("A: share of loss damage undone")
    axes[3].set_title("trade-off (up-left is better)", fontsize=9)
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    return img(png_data_uri(fig))


def pair_table(res: dict[str, Any]) -> str:
    names = [_short(n) for n in res["domains"]]
    head = [
        "A",
        "B",
        "D measured",
        "g.d",
        "1/2 dHd",
        "pred",
        "score drop",
        "path: D / pred / score drop",
        "cos(g_A, d_B)",
        "unchanged B %",
        "Jaccard",
        "grad cos",
        "update cos",
        "Krylov k=1/2/4",
        "eigen k=1/all",
    ]
    rows = []
    for p in res["pairs"]:
        s = p["krylov"]["share"]
        kry = "/".join(f"{s[min(k, len(s)) - 1]:.2f}" for k in (1, 2, 4)) if s else "-"
        e = p.get("eigen_share")
        rows.append(
            [
                names[p["a"]],
                names[p["b"]],
                f"{p['measured']:.4g}",
                f"{p['first_order']:.3g}",
                f"{p['second_order']:.4g}",
                f"{p['predicted']:.4g}",
                f"{p['score_drop']:.1f}",
                f"{p['path']['measured']:.4g} / {p['path']['predicted']:.4g} / "
                f"{p['path']['score_drop']:.1f}",
                f"{p['grad_update_cos']:.3f}",
                f"{100 * p['sparsity_b']['abs_unchanged']:.1f} / "
                f"{100 * p['sparsity_b']['rel_unchanged']:.1f}",
                f"{p['neuron_jaccard']:.3f}",
                f"{p['grad_cos']['global']:.3f}",
                f"{p['update_cos']['global']:.3f}",
                kry,
                f"{e[0]:.2f}/{e[-1]:.2f}" if e else "-",
            ]
        )
    return html_table(head, rows)


def module_cos_table(res: dict[str, Any]) -> str:
    names = [_short(n) for n in res["domains"]]
    mods = sorted({m for p in res["pairs"] for m in p["grad_cos"]} - {"global"})
    head = ["A <- B", *mods, "global"]
    rows = [
        [
            f"{names[p['a']]} <- {names[p['b']]}",
            *[f"{p['grad_cos'].get(m, float('nan')):.2f}" for m in [*mods, "global"]],
        ]
        for p in res["pairs"]
    ]
    return html_table(head, rows)


def targets_text(res: dict[str, Any]) -> str:
    t = targets(res)
    c, cc, r, rb = t["correlation"], t["correlation_with_cumulative"], t["refresh"], t["rollback"]
    cp = t["correlation_path"]
    items = [
        f"Predicted vs measured damage (d_B applied at theta_A) over {int(c['n'])} pairs: "
        f"Pearson {c['pearson_predicted']:.3f} (second-order term alone "
        f"{c['pearson_second_order']:.3f}, first-order alone {c['pearson_first_order']:.3f}; "
        f"Spearman {c['spearman_predicted']:.3f}); along the real path: Pearson "
        f"{cp['pearson_predicted']:.3f}; pairs + cumulative points: Pearson "
        f"{cc['pearson_predicted']:.3f} over {int(cc['n'])}.",
        (
            f"Refresh on {r['domain']}: recovers {100 * r['recovered_fraction']:.0f}% of its "
            f"{r['drop']:.1f}-point drop; "
            if r["drop"] > MIN_DROP
            else f"Refresh on {r['domain']}: no score dropped by more than {MIN_DROP:g} points "
            f"(largest drop {r['drop']:.1f}), nothing to judge a recovery on; "
        )
        + f"other domains lose at most {max(0.0, r['others_max_drop']):.1f} points (move at "
        f"most {r['others_max_abs_change']:.1f}; target: >= 50% recovered, no other domain "
        f"down by more than 2 points: {'met' if r['met'] else 'not met'}).",
        "Sparse " + rollback_text(rb) + ".",
    ]
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def setup_text(res: dict[str, Any]) -> str:
    cfg = res["config"]
    doms = " -> ".join(res["domains"])
    text = (
        f"{res['kind']} domains {doms}; mode {res['mode']} ({res['numel']} shared coordinates); "
        f"{cfg['steps']} {res['steps_unit']} per domain, refresh {cfg['refresh_steps']}; "
        f"seed {cfg['seed']}. "
        f"Smooth loss L_A: {res['loss_text']}. Score: {res['score_text']}. "
        "Damage of A by B: D = L_A(theta_A + d_B) - L_A(theta_A), predicted by g_A . d_B + "
        "1/2 d_B^T H_A d_B at theta_A (Hessian-vector products); the same along the real "
        "path (start to end of B, expanded at the start) is kept as 'path'; both coincide "
        "when B follows A. A's score drop likewise. Krylov share at k: "
        "Lanczos on H_A started from d_B gives Ritz pairs (theta_i, s_i); d^T H d = |d|^2 "
        "sum_i c_i, c_i = theta_i s_i[0]^2, exactly; the share is the sum of the k largest "
        "|c_i| over sum |c_i| (the signed version is in results.json). Eigen share at k: "
        "sum_{i<=k} lambda_i (u_i . d_B)^2 / d^T H d "
        "with H_A's top-|lambda| eigenpairs at theta_A (Lanczos, random start). Gradient "
        "cosine: grad L_A vs grad L_B at the start of B's update (NaN where a gradient is "
        "0, e.g. a KL loss at its own theta). Neurons: "
        f"top {cfg['neuron_fraction']:.0%} by summed |change| per layer. Rollback: the damage "
        f"scores {', '.join(cfg['rollback_scores'])} rank the coordinates of delta = theta_now "
        "- theta_A (curvature: delta_i (H_A delta)_i; taylor: + g_A,i delta_i; conflict: "
        "taylor minus the predicted cost to the later domains, -g_B,i delta_i + 1/2 delta_i "
        "(H_B delta)_i at theta_now); the top p% are reset to theta_A without training; "
        "random rollbacks reset the same number of changed coordinates drawn at random."
    )
    return f"<p>{html.escape(text)}</p><p><i>{html.escape(PUBLISHED)}</i></p>"


def loss_table(res: dict[str, Any]) -> str:
    names = [_short(n) for n in res["domains"]]
    rows = [
        [st["stage"], *[f"{v:.4g}" for v in row]]
        for st, row in zip(res["stages"][1:], res["loss_matrix"])
    ]
    rows.append(["refresh", *[f"{v:.4g}" for v in res["refresh"]["losses"]]])
    return html_table(["stage", *[f"L_{n}" for n in names]], rows)


def rollback_table(res: dict[str, Any]) -> str:
    head = [
        "score",
        "p",
        "coords",
        "A loss undone",
        "A score gain",
        "B loss cost",
        "B score cost",
        "last loss cost",
        "last score cost",
    ]
    rows = []
    for score in res["rollback"]["ranked"]:
        for p in rollback_points(res, score):
            r, q = p["ranked"], p["random"]
            rows.append(
                [
                    score,
                    f"{p['fraction']:.1%}",
                    p["count"],
                    f"{r['a_loss_recovery']:.2f} / {q['a_loss_recovery']:.2f}",
                    f"{r['a_score_gain']:.1f} / {q['a_score_gain']:.1f}",
                    f"{r['b_loss_cost']:.4g} / {q['b_loss_cost']:.4g}",
                    f"{r['b_score_cost']:.1f} / {q['b_score_cost']:.1f}",
                    f"{r['last_loss_cost']:.4g} / {q['last_loss_cost']:.4g}",
                    f"{r['last_score_cost']:.1f} / {q['last_score_cost']:.1f}",
                ]
            )
    return html_table(head, rows)


def write_report(res: dict[str, Any], path: Path) -> None:
    header, rows = score_table(res)
    sections = [
        ("Setup", setup_text(res)),
        ("Targets", targets_text(res)),
        ("Scores after each stage (rows) per domain (columns)", html_table(header, rows)),
        ("Predicted vs measured damage", scatter(res)),
        ("Pairs (A trained before B)", pair_table(res)),
        ("Where the quadratic model holds (damage along t d_B)", line_fig(res)),
        ("Update sparsity and neuron overlap", sparsity_overlap(res)),
        ("Second-order damage in a few directions", shares(res)),
        ("Gradient cosine per module (start of B's update)", module_cos_table(res)),
        ("Smooth losses after each stage", loss_table(res)),
        (
            "Rollback sweep (ranked / mean of random; B = every domain trained after A, "
            "last = the final domain)",
            rollback_table(res) + rollback_fig(res),
        ),
    ]
    write_html(Path(path), f"skillbank interference: {' -> '.join(res['domains'])}", sections)


def load_results(folder: Path) -> dict[str, Any]:
    """DIR/results.json of ``skillbank interference`` (format checked; nulls in the
    per-pair measures back to NaN)."""
    from skillbank.io import read_json

    paths = InterferencePaths(folder)
    res = read_json(paths.results)
    if res.get("format") != FORMAT:
        raise FormatError(
            f"{paths.results}: not a skillbank interference results file (field 'format')"
        )
    res["pairs"] = [none_to_nan(p) for p in res["pairs"]]  # undefined cosines were nulls
    return res


def rebuild(folder: Path) -> Path:
    """``skillbank interference-report DIR``: report.html from DIR/results.json."""
    paths = InterferencePaths(folder)
    write_report(load_results(folder), paths.report)
    return paths.report


def none_to_nan(obj: Any) -> Any:
    """The per-pair measures as measured: JSON null (an undefined value) back to NaN."""
    if obj is None:
        return float("nan")
    if isinstance(obj, dict):
        return {k: none_to_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [none_to_nan(v) for v in obj]
    return obj
