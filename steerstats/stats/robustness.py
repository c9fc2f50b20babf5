"""Conclusions under each judge: paired contrasts per judge and whether each one holds.

A reviewer's first question of an LLM-judged study is whether another judge would have said
the same; these functions answer it for every paired contrast of the study.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from steerstats.stats._data import require_columns
from steerstats.stats._panel import AUTO_RATER
from steerstats.stats.contrasts import paired_contrasts

__all__ = ["judge_contrasts", "judge_robustness"]


# ---------------------------------------------------------------------------------------------
# Conclusions under each judge


def judge_contrasts(
    scores: pd.DataFrame,
    baseline: str | Sequence[str] = "control",
    *,
    rater: str = "rater",
    metric: str = "metric",
    **options: object,
) -> pd.DataFrame:
    """Paired contrasts pooled over the judges and as each judge alone would have given them.

    For each judge ``j`` of a metric rated by two or more judges, the scores of those metrics
    are replaced by ``j``'s alone (other metrics kept), and
    :func:`steerstats.stats.paired_contrasts` runs on that table, so each judge's Holm family
    is the pooled one's.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table, one row per rating.
    baseline : str or sequence of str
        The reference method(s), as in :func:`steerstats.stats.paired_contrasts`.
    rater, metric : str
        Columns naming the judge and the metric.
    **options
        Passed to :func:`steerstats.stats.paired_contrasts` (``n_boot``, ``seed``, ...).

    Returns
    -------
    pandas.DataFrame
        ``paired_contrasts``' columns for the panel metrics, plus ``judge``: ``"pooled"`` (all
        judges' ratings averaged per response) or ``"single"``, and ``rater``: the judge (NaN
        for pooled). Sorted pooled first.

    Raises
    ------
    ValueError
        No metric is rated by two or more judges.
    """
    require_columns(scores, {"rater": rater, "metric": metric})
    human = scores[scores[rater].astype(str) != AUTO_RATER]
    n_raters = human.groupby(metric)[rater].nunique()
    panel = sorted(str(m) for m in n_raters.index[n_raters >= 2])
    if not panel:
        raise ValueError(f"judge robustness needs a metric rated by two or more judges (column "
                         f"{rater!r}); every metric here has one judge")
    in_panel = scores[metric].isin(panel)
    pooled = paired_contrasts(scores, baseline, metric=metric, **options)  # type: ignore[arg-type]
    frames = [pooled.assign(judge="pooled", rater=np.nan)]
    for judge in sorted(human.loc[human[metric].isin(panel), rater].unique()):
        alone = scores[~in_panel | (scores[rater] == judge)]
        table = paired_contrasts(alone, baseline, metric=metric, **options)  # type: ignore[arg-type]
        rated = set(alone.loc[in_panel & (scores[rater] == judge), metric])
        frames.append(table.assign(judge="single", rater=judge)
                      .loc[lambda t, r=rated: t[metric].isin(r)])
    out = pd.concat(frames, ignore_index=True)
    return out[out[metric].isin(panel)].reset_index(drop=True)


def _conclusion(diff: float, p_holm: float, alpha: float) -> str:
    if not (np.isfinite(diff) and np.isfinite(p_holm)):
        return "not estimable"
    if p_holm >= alpha:
        return "not significant"
    return "higher" if diff > 0 else "lower"


def judge_robustness(
    contrasts: pd.DataFrame,
    alpha: float = 0.05,
    *,
    metric: str = "metric",
) -> pd.DataFrame:
    """Whether each pooled conclusion (sign, and significance after Holm) holds under every judge.

    Parameters
    ----------
    contrasts : pandas.DataFrame
        The output of :func:`judge_contrasts`.
    alpha : float
        Significance level applied to ``p_holm``.
    metric : str
        Column naming the metric.

    Returns
    -------
    pandas.DataFrame
        One row per pooled contrast (model, method, strength, metric, baseline):

        - the contrast's key columns
        - ``diff``, ``p_holm``: the pooled estimate and its Holm-adjusted p-value
        - ``conclusion``: ``"higher"`` / ``"lower"`` (than the baseline, Holm p < ``alpha``),
          ``"not significant"`` or ``"not estimable"``
        - ``n_judges``: judges with their own contrast
        - ``same_sign``: judges whose difference has the pooled sign
        - ``same_conclusion``: judges reaching the pooled conclusion
        - ``holds_under_every_judge``: ``same_conclusion == n_judges``
        - ``sign_holds_under_every_judge``: ``same_sign == n_judges``
        - ``judges``: each judge's conclusion and difference, e.g.
          ``"gpt-4o-mini: higher (+0.41); llama: not significant (+0.12)"``
    """
    require_columns(contrasts, {"contrasts 'judge'": "judge", "contrasts 'rater'": "rater"})
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    keys = [c for c in ("model", "method", "strength", metric, "baseline")
            if c in contrasts.columns]
    pooled = contrasts[contrasts["judge"] == "pooled"]
    single = contrasts[contrasts["judge"] == "single"]
    rows = []
    for _, p in pooled.iterrows():
        match = np.ones(len(single), dtype=bool)
        for k in keys:
            col, v = single[k], p[k]
            match &= (col.isna() & pd.isna(v)).to_numpy() if pd.isna(v) else (col == v).to_numpy()
        these = single[match]
        concl = _conclusion(float(p["diff"]), float(p["p_holm"]), alpha)
        sign = np.sign(p["diff"])
        per = [(str(r["rater"]), _conclusion(float(r["diff"]), float(r["p_holm"]), alpha),
                float(r["diff"])) for _, r in these.iterrows()]
        n = len(per)
        same_sign = int(sum(np.sign(d) == sign and np.isfinite(d) for _, _, d in per))
        same = int(sum(c == concl for _, c, _ in per))
        rows.append({
            **{k: p[k] for k in keys}, "diff": p["diff"], "p_holm": p["p_holm"],
            "conclusion": concl, "n_judges": n, "same_sign": same_sign, "same_conclusion": same,
            "holds_under_every_judge": n > 0 and same == n,
            "sign_holds_under_every_judge": n > 0 and same_sign == n,
            "judges": "; ".join(f"{r}: {c} ({d:+.2f})" for r, c, d in per),
        })
    cols = [*keys, "diff", "p_holm", "conclusion", "n_judges", "same_sign", "same_conclusion",
            "holds_under_every_judge", "sign_holds_under_every_judge", "judges"]
    return pd.DataFrame(rows, columns=cols)
