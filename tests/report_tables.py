"""Analysis tables for report tests.

The descriptive tables are computed from a small tidy design; the statistics tables follow the
documented column layouts with simple stand-in numbers (group means, +/- 0.2 intervals): the
report only formats and draws them, so the tests check that every number shown is read from
these tables, not that the numbers are good estimates.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from steerstats import describe

MODELS = ("m-small", "m-large")
ARMS = (("control", np.nan), ("prompt", np.nan), ("caa", 1.0), ("caa", 2.0))
QUERIES = ("be-funny", "be-formal", "be-concise", "be-rude")


def tidy(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(generations, scores) for 2 models x 4 arms x 4 queries x 5 prompts, 2 judge repeats."""
    rng = np.random.default_rng(seed)
    gens, scores = [], []
    prompts = [f"common-{i:02d}" for i in range(5)]
    mmlu = [f"mmlu-{i:03d}" for i in range(4)]
    for model, (method, strength), query in itertools.product(MODELS, ARMS, QUERIES):
        for prompt_set, pids in (("open", prompts), ("mmlu", mmlu)):
            for pid in pids:
                key = f"{model}|{method}|{strength}|{query}|{pid}"
                failed = method == "caa" and strength == 2.0 and pid == "common-04"
                gens.append(dict(model=model, method=method, strength=strength, query_id=query,
                                 query=query.replace("-", " "), prompt_set=prompt_set,
                                 prompt_id=pid, sample=0, response="" if failed else "text",
                                 n_tokens=10, finish_reason="stop", latency_s=0.1, cost_usd=0.0,
                                 error="HTTP 500" if failed else None, key=key))
                if failed:
                    continue
                base = dict(model=model, method=method, strength=strength, query_id=query,
                            prompt_set=prompt_set, prompt_id=pid, sample=0, key=key)
                if prompt_set == "mmlu":
                    unparsed = rng.random() < 0.1
                    scores.append(dict(base, metric="accuracy", rater="auto", repeat=0,
                                       value=np.nan if unparsed else float(rng.random() < 0.7),
                                       reason="unparsed: no <answer> tag" if unparsed else ""))
                    continue
                for metric, rep in itertools.product(("behavior", "coherence"), range(2)):
                    unparsed = rng.random() < 0.05
                    scores.append(dict(base, metric=metric, rater="judge-a", repeat=rep,
                                       value=np.nan if unparsed else float(rng.integers(1, 6)),
                                       reason="unparsed: no <score> tag" if unparsed else ""))
    return pd.DataFrame(gens), pd.DataFrame(scores)


def _ci(frame: pd.DataFrame, est: str) -> pd.DataFrame:
    return frame.assign(ci_low=frame[est] - 0.2, ci_high=frame[est] + 0.2)


def tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every table the report reads, keyed by its analysis name."""
    gens, scores = tidy(seed)
    keys = ["model", "method", "strength", "metric"]
    g = scores.groupby(keys, dropna=False)["value"]
    summary = _ci(pd.DataFrame({"n": g.count(), "n_missing": g.apply(lambda v: v.isna().sum()),
                                "mean": g.mean()}).reset_index(), "mean")
    base = summary[summary["method"] == "control"][["model", "metric", "mean"]]
    contrasts = summary[summary["method"] != "control"].merge(base, on=["model", "metric"],
                                                               suffixes=("", "_b"))
    contrasts = _ci(contrasts.assign(baseline="control", n_pairs=20,
                                     diff=contrasts["mean"] - contrasts["mean_b"]), "diff")
    contrasts["p"] = np.linspace(0.0001, 0.5, len(contrasts))
    contrasts["p_holm"] = np.minimum(1, contrasts["p"] * len(contrasts))
    contrasts["dz"] = contrasts["diff"] / 2
    contrasts = contrasts[["model", "method", "strength", "metric", "baseline", "n_pairs",
                           "diff", "ci_low", "ci_high", "p", "p_holm", "dz"]]
    vc = pd.DataFrame([dict(metric=m, group=grp, variance=v, sd=np.sqrt(v), n_levels=n)
                       for m in ("behavior", "coherence")
                       for grp, v, n in (("query", 0.3, 4), ("prompt", 0.1, 5),
                                         ("query:method", 0.05, 12), ("residual", 0.6, np.nan))])
    emm = summary[summary["metric"] != "accuracy"].rename(columns={"mean": "estimate"})
    emm = emm[emm["strength"].isna() | (emm["strength"] == 1.0)].assign(df=3.2)
    emm = emm[["model", "method", "metric", "estimate", "ci_low", "ci_high", "df", "n"]]
    rel = pd.DataFrame([dict(metric=m, method=np.nan, statistic=s, estimate=e, ci_low=e - .1,
                             ci_high=e + .1, n_targets=300, n_ratings=600)
                        for m in ("behavior", "coherence")
                        for s, e in (("ICC2", .61), ("ICC2k", .75), ("alpha_ordinal", .58),
                                     ("exact_agreement", .44))])
    tr = []
    for model in MODELS:
        for (method, strength), gain, closs in ((("prompt", np.nan), .4, .1),
                                               (("caa", 1.0), .9, .8), (("caa", 2.0), .7, 1.2)):
            tr.append(dict(model=model, method=method, strength=strength, baseline="control",
                           behavior_gain=gain, behavior_gain_ci_low=gain - .3,
                           behavior_gain_ci_high=gain + .3, coherence_loss=closs,
                           coherence_loss_ci_low=closs - .2, coherence_loss_ci_high=closs + .2,
                           accuracy_loss=.05, accuracy_loss_ci_low=-.02, accuracy_loss_ci_high=.1,
                           pareto=strength != 2.0))
    sweep = summary[summary["strength"].notna()]
    slopes = pd.DataFrame([dict(model=m, method="caa", metric=met, query_id=q, slope=s,
                                ci_low=s - .3, ci_high=s + .3)
                           for m in MODELS for met in ("behavior", "coherence")
                           for q, s in zip(QUERIES, (.5, .1, -.6, .2), strict=True)])
    mde = pd.DataFrame([dict(metric=m, n_queries=4, n_prompts=5, n_repeats=2, power=.8,
                             alpha=.05, mde=d) for m, d in (("behavior", .61), ("coherence", .44))])
    acc = []
    for model, (method, strength) in itertools.product(MODELS, ARMS):
        for outcome, estimator, est in (("accuracy", "gee", .7), ("accuracy", "bootstrap", .69),
                                        ("unparsed", "bootstrap", .1)):
            acc.append(dict(model=model, method=method, strength=strength, outcome=outcome,
                            estimator=estimator, n=16, estimate=est, ci_low=est - .1,
                            ci_high=est + .1))
    return {
        "design": describe.design_table(scores, gens),
        "judging": describe.judging_table(scores),
        "parse_failures": describe.parse_failures(scores),
        "summary": summary,
        "contrasts": contrasts,
        "variance_components": vc,
        "emm": emm,
        "accuracy": pd.DataFrame(acc),
        "reliability": rel,
        "tradeoff": pd.DataFrame(tr),
        "dose_curves": sweep,
        "dose_response": slopes,
        "mde": mde,
        "skipped": pd.DataFrame({"analysis": ["nothing"], "reason": ["not skipped"]}),
    }
