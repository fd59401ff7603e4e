"""Where PEACE wins and loses: its headline metric against the best other model per setting
and domain, with a paired per-user test of each margin where per-user values were kept, and the
same margins split by how many rows the test user already had in the target domain's training
split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from peace.eval.report.common import ABLATION_VARIANTS, PEACE, _cell, _table, metric_label
from peace.eval.report.tables import Results
from peace.eval.significance import PairedTest, paired_test


def verdict_text(test: PairedTest) -> str:
    """A paired test in words. Significant needs both the Wilcoxon p-value under 0.05 and a 95%
    interval of the mean difference that excludes 0; where only one of them says so (the
    Wilcoxon test ranks the differences, the interval is of their mean), the sentence says which."""
    interval = f"95% interval [{test.low:+.4f}, {test.high:+.4f}]"
    facts = f"p = {test.p_value:.2g}, {interval}, {test.users:,} users"
    if test.significant:
        return f"significant: {facts}"
    ranks = test.p_value < 0.05
    mean = test.low > 0 or test.high < 0
    if ranks != mean:
        split = (
            "the Wilcoxon test finds a difference but the interval of the mean includes 0"
            if ranks
            else "the interval of the mean excludes 0 but the Wilcoxon test finds no difference"
        )
        return f"not significant, the tests disagree: {split}; {facts}"
    return f"not significant: {facts}"


def win_loss(
    res: Results, per_user: Mapping[str, Any] | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Per setting and domain: PEACE's headline metric against the best other model, with a
    paired per-user test of the margin where ``per_user`` NDCG@10 of both is at hand."""
    head = res.headline()
    out = []
    for setting in res.settings:
        for d in res.domains_in(setting):
            p = res.get(PEACE, setting, d, head)
            if p is None:
                continue
            others = [
                (m, v)
                for m in res.models
                if m not in ABLATION_VARIANTS and (v := res.get(m, setting, d, head)) is not None
            ]
            if not others:
                continue
            best_model, best = max(
                others, key=lambda mv: (round(mv[1][0], 4), -res.models.index(mv[0]))
            )
            pop = res.get("Popularity", setting, d, head)
            pop_note = ""
            if pop is None and setting == "zero-shot-test":
                pop = res.get("Popularity", "normal", d, head)
                pop_note = "†" if pop is not None else ""
            out.append(
                {
                    "setting": setting,
                    "domain": d,
                    "metric": head,
                    "peace": p,
                    "best_model": best_model,
                    "best": best,
                    "margin": p[0] - best[0],
                    "popularity": pop,
                    "popularity_note": pop_note,
                    "test": _paired(per_user, setting, d, best_model, seed),
                    "seeds": seeds_ahead(
                        res.seed_values(PEACE, setting, d, head),
                        res.seed_values(best_model, setting, d, head),
                    ),
                }
            )
    return out


def seeds_ahead(
    peace: Sequence[float] | None, other: Sequence[float] | None
) -> tuple[int, int] | None:
    """(seeds in which PEACE is ahead, seeds): each seed against the same seed of the other
    model, compared at the shown precision (4 decimals). None without per-seed values of both,
    or with a single seed (its margin says it all)."""
    if peace is None or other is None or len(peace) != len(other) or len(peace) < 2:
        return None
    ahead = sum(round(a, 4) > round(b, 4) for a, b in zip(peace, other, strict=True))
    return ahead, len(peace)


def _paired(
    per_user: Mapping[str, Any] | None, setting: str, domain: str, other: str, seed: int
) -> PairedTest | None:
    """PEACE minus ``other`` over the same test users, when both have per-user values."""
    if not per_user:
        return None
    a = per_user.get(PEACE, {}).get(setting, {}).get(domain)
    b = per_user.get(other, {}).get(setting, {}).get(domain)
    if a is None or b is None or len(a) != len(b) or not len(a):
        return None
    return paired_test(np.asarray(a), np.asarray(b), seed)


#: groups of test users by their positive rows in the target's training split: (label, low, high)
HISTORY_GROUPS: tuple[tuple[str, int, float], ...] = (
    ("none", 0, 0),
    ("1-4", 1, 4),
    ("5 or more", 5, float("inf")),
)


def history_breakdown(
    items: list[dict[str, Any]],
    per_user: Mapping[str, Any] | None,
    history: Mapping[str, Sequence[int]] | None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The paired margins of ``items`` (from :func:`win_loss`) split by :data:`HISTORY_GROUPS`.

    In the normal setting DeepFM (the part of Eq. 11 that sees no pre-trained vector) is compared
    too when it is not already the best other model.
    """
    if not per_user or not history:
        return []
    out = []
    for it in items:
        setting, domain = it["setting"], it["domain"]
        counts = history.get(domain)
        others = [it["best_model"]]
        if setting == "normal" and "DeepFM" in per_user and it["best_model"] != "DeepFM":
            others.append("DeepFM")
        for other in others:
            a = per_user.get(PEACE, {}).get(setting, {}).get(domain)
            b = per_user.get(other, {}).get(setting, {}).get(domain)
            if counts is None or a is None or b is None or not len(a):
                continue
            if not (len(a) == len(b) == len(counts)):
                continue  # per-user values of another split: nothing to pair
            n = np.asarray(counts)
            for label, low, high in HISTORY_GROUPS:
                mask = (n >= low) & (n <= high)
                if not mask.any():
                    continue
                test = paired_test(np.asarray(a)[mask], np.asarray(b)[mask], seed)
                out.append(
                    {
                        "setting": setting,
                        "domain": domain,
                        "other": other,
                        "group": label,
                        "peace": float(np.asarray(a)[mask].mean()),
                        "their": float(np.asarray(b)[mask].mean()),
                        "test": test,
                    }
                )
    return out


def _history_section(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    table = _table(
        ["Setting", "Domain", "Against", "Rows before", "Users", "PEACE", "Them", "Margin", "p"],
        [
            [
                r["setting"],
                r["domain"],
                r["other"],
                r["group"],
                f"{r['test'].users:,}",
                f"{r['peace']:.4f}",
                f"{r['their']:.4f}",
                f"{r['test'].mean:+.4f}",
                f"{r['test'].p_value:.2g}",
            ]
            for r in rows
        ],
        "lllrrrrrr",
    )
    return (
        "### By the user's history in the target domain\n\n"
        "The same per-user comparison (NDCG@10, mean over seeds), with the test users split by "
        "how many positive rows each had in the target domain's training split: none (new to "
        "the domain), 1-4, or 5 or more. p is the two-sided Wilcoxon signed-rank p-value within "
        "the group.\n\n" + table
    )


def _section_wins(
    res: Results,
    per_user: Mapping[str, Any] | None = None,
    history: Mapping[str, Sequence[int]] | None = None,
) -> str:
    items = win_loss(res, per_user)
    if not items:
        return "No setting has both PEACE and another model, so there is nothing to compare."
    head = metric_label(res.headline())
    by_seed = any(it["seeds"] is not None for it in items)  # per-seed values were kept
    rows = []
    sentences = []
    for it in items:
        p, b, margin = it["peace"], it["best"], it["margin"]
        rel = f"{100 * margin / b[0]:+.1f}%" if b[0] > 0 else "-"
        pop = it["popularity"]
        pop_text = "-" if pop is None else f"{p[0] - pop[0]:+.4f}{it['popularity_note']}"
        test = it["test"]
        seeds = "-" if it["seeds"] is None else "{} of {}".format(*it["seeds"])
        rows.append(
            [
                it["setting"],
                it["domain"],
                _cell(*p),
                it["best_model"],
                _cell(*b),
                f"{margin:+.4f}",
                rel,
                "-" if test is None else f"{test.p_value:.2g}",
                "-" if test is None else f"[{test.low:+.4f}, {test.high:+.4f}]",
                *([seeds] if by_seed else []),
                pop_text,
            ]
        )
        where = f"{it['domain']} ({it['setting']})"
        noise = max(p[1], b[1])
        if test is not None:
            within = verdict_text(test)
        else:
            within = (
                "within one seed standard deviation" if abs(margin) <= noise and noise > 0 else ""
            )
        if it["seeds"] is not None:
            ahead = "PEACE ahead in {} of {} seeds".format(*it["seeds"])
            within = f"{within}; {ahead}" if within else ahead
        within = f" ({within})" if within else ""
        if round(margin, 4) > 0:
            sentences.append(
                f"- PEACE wins on {where} by {margin:.4f} {head} over {it['best_model']} "
                f"({p[0]:.4f} vs {b[0]:.4f}){within}."
            )
        elif round(margin, 4) < 0:
            sentences.append(
                f"- PEACE loses on {where} by {-margin:.4f} {head} to {it['best_model']} "
                f"({p[0]:.4f} vs {b[0]:.4f}){within}."
            )
        else:
            sentences.append(
                f"- PEACE ties with {it['best_model']} on {where} ({p[0]:.4f}){within}."
            )
    table = _table(
        [
            "Setting",
            "Domain",
            f"PEACE {head}",
            "Best other model",
            f"Its {head}",
            "Margin",
            "Relative",
            "p (Wilcoxon)",
            "95% interval",
            *(["Seeds ahead"] if by_seed else []),
            "PEACE − Popularity",
        ],
        rows,
        "llrlrrrrr" + ("r" if by_seed else "") + "r",
    )
    notes = [
        f"PEACE's {head} against the best other model (its own ablation variants excluded; the "
        "zero-shot references included) of the same setting and domain; a positive margin means "
        "PEACE is ahead. The margin is tested per test user (NDCG@10, mean over seeds): a "
        "two-sided Wilcoxon signed-rank p-value and a paired-bootstrap 95% interval of the mean "
        "difference; '-' where per-user values were not kept."
        + (
            " Both tests pair users on their mean over the seeds, so they measure the spread "
            "between users, not between seeds: a margin smaller than the ± of its cells can be "
            "significant here and still change sign with the seed."
            if any(not np.isnan(it["peace"][1]) for it in items)  # a spread over seeds
            else ""
        )
        + (
            " Seeds ahead counts the seeds in which PEACE's value is above the other model's "
            "value of the same seed; '-' where per-seed values were not kept."
            if by_seed
            else ""
        ),
        table,
        "\n".join(sentences),
    ]
    if any(it["popularity_note"] for it in items):
        notes.append(
            "† Popularity has no zero-shot rows; the gap shown for `zero-shot-test` is to "
            "Popularity in the normal setting, fitted on the first 70% and tested on the same "
            "test split."
        )
    losses = sum(1 for it in items if round(it["margin"], 4) < 0)
    notes.append(
        f"PEACE is ahead in {sum(1 for it in items if round(it['margin'], 4) > 0)} and behind in "
        f"{losses} of {len(items)} (setting, domain) pairs; the numbers above are the evidence."
    )
    by_history = _history_section(history_breakdown(items, per_user, history))
    if by_history:
        notes.append(by_history)
    return "\n\n".join(notes)
