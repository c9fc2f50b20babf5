"""Behaviour gained against coherence and accuracy lost, with one joint bootstrap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ._data import group_index, require_columns
from .bootstrap import CIMethod, check_bootstrap_args, cluster_bootstrap, warn_few_clusters
from .contrasts import paired_cells

__all__ = ["tradeoff"]

DEFAULT_MARGIN: dict[str, float] = {"coherence": 0.5, "accuracy": 0.05}


def tradeoff(
    scores: pd.DataFrame,
    baseline: str = "control",
    *,
    margin: Mapping[str, float] | None = None,
    behavior: str = "behavior",
    coherence: str = "coherence",
    accuracy: str = "accuracy",
    model: str | None = "model",
    method: str = "method",
    strength: str | None = "strength",
    metric: str = "metric",
    value: str = "value",
    clusters: Sequence[str] = ("query_id", "prompt_id"),
    sample: str | None = "sample",
    n_boot: int = 2000,
    confidence: float = 0.95,
    ci_method: CIMethod = "twoway",
    seed: int | None = 0,
) -> pd.DataFrame:
    """What each method buys (behaviour) and costs (coherence, accuracy) against a baseline.

    Gains and losses are paired differences against ``baseline`` exactly as in
    :func:`steerstats.stats.paired_contrasts`, but all three are bootstrapped from the same
    resampled queries and prompts, so their intervals can be compared and the probability of a
    good trade (gain > 0 and every loss below its margin) is computed on joint replicates.

    Parameters
    ----------
    scores : pandas.DataFrame
        Tidy scores table, one row per rating.
    baseline : str
        Reference method, e.g. ``"control"`` or ``"prompt"``.
    margin : mapping of str to float, optional
        Largest acceptable loss per cost, keyed ``"coherence"`` and ``"accuracy"`` (in the
        metric's units: judge-scale points, and proportion correct). Default
        ``{"coherence": 0.5, "accuracy": 0.05}``; a key left out uses its default.
    behavior, coherence, accuracy : str
        Names of the three metrics in the ``metric`` column.
    model, strength : str or None
        Columns; ``None`` leaves a role out.
    method, metric, value : str
        Columns.
    clusters : sequence of str
        Cluster factors resampled (and matched on for pairing).
    sample : str or None
        Replicate-generation column.
    n_boot, confidence, ci_method, seed
        As in :func:`steerstats.stats.summarize`.

    Returns
    -------
    pandas.DataFrame
        One row per model x method x strength other than the baseline:

        - ``model``, ``method``, ``strength``, ``baseline``
        - ``behavior_gain``, ``behavior_gain_ci_low``, ``behavior_gain_ci_high``: mean paired
          difference ``method - baseline`` in behaviour, with limits
        - ``coherence_loss``, ``coherence_loss_ci_low``, ``coherence_loss_ci_high``:
          ``baseline - method`` in coherence (positive = coherence lost)
        - ``accuracy_loss``, ``accuracy_loss_ci_low``, ``accuracy_loss_ci_high``:
          ``baseline - method`` in accuracy with an unparsed answer counted as not correct
          (positive = accuracy lost): the headline, since a steered model that stops giving
          readable answers has lost that accuracy
        - ``accuracy_loss_parsed`` (with ``_ci_low``, ``_ci_high``): the same among parsed
          answers only
        - ``unparsed_rate_diff`` (with ``_ci_low``, ``_ci_high``): ``method - baseline`` in the
          share of unparsed answers
        - ``n_pairs_behavior``, ``n_pairs_coherence``, ``n_pairs_accuracy``: matched pairs
        - ``pareto``: True if no other arm of the same model, the baseline included (gain 0,
          losses 0), is at least as good on every available estimate and better on one
        - ``p_good_trade``: share of bootstrap replicates in which the behaviour gain is above
          0 and each available loss is below its margin (NaN without behaviour scores)
        - ``margin_coherence``, ``margin_accuracy``: the margins used

        A metric absent from the data keeps its columns, filled with NaN (0 pairs); it is left
        out of ``pareto`` and ``p_good_trade``. At least one of the three must be present.

    Notes
    -----
    One set of replicate weights (queries and prompts, crossed; see
    :func:`steerstats.stats.summarize`) is drawn for all metrics and arms, so each replicate
    gives a joint draw of (gain, coherence loss, accuracy loss) for every arm. The intervals
    use ``ci_method`` with its small-sample correction; ``p_good_trade`` is the plain share of
    replicates, without that correction, so with few queries it leans towards 0 or 1 somewhat
    more than it should. It is a bootstrap probability of the estimated trade being good, not
    a p-value. ``pareto`` uses point estimates only: read it next to the intervals.

    Examples
    --------
    >>> from steerstats.stats import example_scores, tradeoff
    >>> scores = example_scores(seed=0)
    >>> table = tradeoff(scores, baseline="control", n_boot=1000, seed=1)
    >>> table.columns.tolist()  # doctest: +NORMALIZE_WHITESPACE
    ['model', 'method', 'strength', 'baseline',
     'behavior_gain', 'behavior_gain_ci_low', 'behavior_gain_ci_high', 'n_pairs_behavior',
     'coherence_loss', 'coherence_loss_ci_low', 'coherence_loss_ci_high', 'n_pairs_coherence',
     'accuracy_loss', 'accuracy_loss_ci_low', 'accuracy_loss_ci_high', 'n_pairs_accuracy',
     'accuracy_loss_parsed', 'accuracy_loss_parsed_ci_low', 'accuracy_loss_parsed_ci_high',
     'unparsed_rate_diff', 'unparsed_rate_diff_ci_low', 'unparsed_rate_diff_ci_high',
     'pareto', 'p_good_trade', 'margin_coherence', 'margin_accuracy']
    >>> cols = ["model", "method", "behavior_gain", "coherence_loss", "accuracy_loss",
    ...         "pareto", "p_good_trade"]
    >>> print(table[cols].round(2).to_string(index=False))
      model method  behavior_gain  coherence_loss  accuracy_loss  pareto  p_good_trade
    model-a prompt           1.31            0.30           0.12    True          0.23
    model-a  steer           1.51            0.79           0.29    True          0.00
    model-b prompt           1.50           -0.06          -0.12    True          0.94
    model-b  steer           1.67            0.54           0.12    True          0.09
    """
    check_bootstrap_args(n_boot, confidence, ci_method)
    margins = dict(DEFAULT_MARGIN)
    if margin is not None:
        unknown = set(margin) - set(DEFAULT_MARGIN)
        if unknown:
            raise ValueError(
                f"margin keys must be among {sorted(DEFAULT_MARGIN)}, got {sorted(unknown)}"
            )
        margins.update({k: float(v) for k, v in margin.items()})
    require_columns(scores, {"metric": metric})
    wanted = {"behavior": behavior, "coherence": coherence, "accuracy": accuracy}
    present = set(pd.unique(scores[metric]))
    if not present & set(wanted.values()):
        raise ValueError(
            f"none of the metrics {sorted(wanted.values())} is in column {metric!r} (present: "
            f"{', '.join(map(str, sorted(present, key=str)))}); pass behavior=/coherence=/"
            "accuracy= naming yours"
        )
    rows = scores[scores[metric].isin(list(wanted.values()))]
    rows = _accuracy_variants(rows, accuracy, metric=metric, value=value)
    wanted = {**wanted, "accuracy_parsed": _PARSED, "unparsed": _UNPARSED}
    paired = paired_cells(
        rows, baseline, model=model, method=method, strength=strength, metric=metric,
        value=value, clusters=clusters, sample=sample,
    )
    arm_cols = [c for c in paired.contrast_cols if c != metric]
    cols = paired.contrast_cols
    names = tuple(clusters) if not isinstance(clusters, str) else (clusters,)
    frame = pd.concat(
        [paired.contrasts.assign(diff=np.nan), paired.pairs[[*cols, *names, "diff"]]]
    )
    frame[list(names)] = frame[list(names)].fillna("")
    result = cluster_bootstrap(frame, "diff", groups=cols, clusters=names, n_boot=n_boot, seed=seed)
    warn_few_clusters(result)
    low, high = result.interval(confidence, ci_method)

    _, arms = group_index(rows[rows[method] != baseline], arm_cols)
    arm_codes = _match(result.groups[arm_cols], arms)
    n_arms = len(arms)
    out = arms.copy()
    out["baseline"] = baseline
    joint = np.full((result.replicates.shape[0], n_arms, 3), np.nan)
    point = np.full((n_arms, 3), np.nan)
    for k, (role, name) in enumerate(wanted.items()):
        sign = 1.0 if role in ("behavior", "unparsed") else -1.0
        label = {"behavior": "behavior_gain", "accuracy_parsed": "accuracy_loss_parsed",
                 "unparsed": "unparsed_rate_diff"}.get(role, f"{role}_loss")
        est = np.full(n_arms, np.nan)
        lo = np.full(n_arms, np.nan)
        hi = np.full(n_arms, np.nan)
        n_pairs = np.zeros(n_arms, dtype=np.int64)
        sel = np.flatnonzero((result.groups[metric] == name).to_numpy())
        idx = arm_codes[sel]
        est[idx] = sign * result.estimate[sel]
        bounds = np.sort(np.stack([sign * low[sel], sign * high[sel]]), axis=0)
        lo[idx], hi[idx] = bounds[0], bounds[1]
        n_pairs[idx] = result.n_obs[sel]
        out[label] = est
        out[f"{label}_ci_low"] = lo
        out[f"{label}_ci_high"] = hi
        if k < 3:
            joint[:, idx, k] = sign * result.replicates[:, sel]
            point[idx, k] = est[idx]
            out[f"n_pairs_{role}"] = n_pairs
    out["pareto"] = _pareto(point, out[[model]] if model is not None else out.iloc[:, :0])
    out["p_good_trade"] = _p_good(joint, margins)
    out["margin_coherence"] = margins["coherence"]
    out["margin_accuracy"] = margins["accuracy"]
    return out.reset_index(drop=True)


_PARSED = "\x00accuracy_parsed"
_UNPARSED = "\x00accuracy_unparsed"


def _accuracy_variants(rows: pd.DataFrame, accuracy: str, *, metric: str, value: str
                       ) -> pd.DataFrame:
    """The accuracy rows three ways: unparsed counted as not correct (the headline, under the
    accuracy name), parsed answers only, and the unparsed indicator (1 = unparsed)."""
    acc = rows[rows[metric] == accuracy]
    if acc.empty:
        return rows
    vals = pd.to_numeric(acc[value], errors="coerce")
    headline = acc.assign(**{value: vals.fillna(0.0)})
    parsed = acc.assign(**{metric: _PARSED})
    unparsed = acc.assign(**{metric: _UNPARSED, value: vals.isna().astype(float)})
    return pd.concat([rows[rows[metric] != accuracy], headline, parsed, unparsed],
                     ignore_index=True)


def _match(keys: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """Row position in ``table`` of each row of ``keys`` (same columns; NaN matches NaN)."""
    cols = list(table.columns)
    pos = table.reset_index(drop=True).reset_index().rename(columns={"index": "_pos"})
    merged = keys.reset_index(drop=True).merge(pos, on=cols, how="left", validate="many_to_one")
    return merged["_pos"].to_numpy(dtype=np.intp)


def _pareto(point: np.ndarray, model_keys: pd.DataFrame) -> np.ndarray:
    """Pareto flag per arm from (gain, coherence loss, accuracy loss); larger gain is better.

    Arms are compared within their model, with the baseline as an extra arm at the origin;
    only estimates available for both arms of a comparison count.
    """
    goodness = point * np.array([1.0, -1.0, -1.0])
    codes, _ = group_index(model_keys, list(model_keys.columns))
    flags = np.zeros(len(point), dtype=bool)
    for g in np.unique(codes):
        members = np.flatnonzero(codes == g)
        cand = np.vstack([goodness[members], np.zeros((1, 3))])
        for row, i in enumerate(members):
            mine = goodness[i]
            if not np.isfinite(mine).any():
                continue
            dominated = False
            for j in range(len(cand)):
                if j == row:
                    continue
                both = np.isfinite(mine) & np.isfinite(cand[j])
                if not both.any():
                    continue
                a, b = cand[j][both], mine[both]
                if np.all(a >= b) and np.any(a > b):
                    dominated = True
                    break
            flags[i] = not dominated
    return flags


def _p_good(joint: np.ndarray, margins: Mapping[str, float]) -> np.ndarray:
    """Share of replicates with gain > 0 and each available loss below its margin."""
    gain, coh, acc = joint[..., 0], joint[..., 1], joint[..., 2]
    have = np.isfinite(joint).any(axis=0)  # (arms, 3): metric available for the arm
    ok = np.isfinite(gain)
    good = gain > 0
    for k, (loss, lim) in enumerate(((coh, margins["coherence"]), (acc, margins["accuracy"]))):
        need = have[:, k + 1]
        ok &= ~need | np.isfinite(loss)
        good &= ~need | (loss < lim)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (good & ok).sum(axis=0) / ok.sum(axis=0)
    return np.where(have[:, 0] & (ok.sum(axis=0) > 0), share, np.nan)
