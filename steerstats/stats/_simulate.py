"""Small seeded simulator of tidy ``scores`` tables from a crossed design (private).

Used by the docstring examples, tests and benchmarks of ``mixed``, ``reliability``, ``dose``
and ``power``, so those never need the collection layer. Values follow

    value = 3 + method effect + model effect + strength * (slope + query slope deviation)
            + query + prompt + query:method + response noise + judge noise

with normal random effects; ``discrete=True`` rounds and clips to the judges' 1-5 scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from steerstats.schema import SCORE_COLUMNS


def simulate_scores(
    *,
    n_queries: int = 6,
    n_prompts: int = 10,
    methods: Sequence[str] = ("control", "prompt", "steer"),
    models: Sequence[str] = ("model-a",),
    strengths: Sequence[float] | None = None,
    n_samples: int = 1,
    n_repeats: int = 1,
    metrics: Mapping[str, float] | None = None,
    method_effects: Mapping[str, float] | None = None,
    model_effects: Mapping[str, float] | None = None,
    sd_query: float = 0.5,
    sd_prompt: float = 0.3,
    sd_query_method: float = 0.3,
    sd_response: float = 0.6,
    sd_judge: float = 0.4,
    sd_slope: float = 0.3,
    discrete: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """A tidy scores table (``SCORE_COLUMNS``) from the crossed model described above.

    ``metrics`` maps each metric name to its mean slope on strength (ignored without
    ``strengths``); default ``{"behavior": 0.5}``. Prompts are crossed with queries; every
    (model, method, strength, query, prompt, sample) response is rated ``n_repeats`` times by
    one rater, ``"judge"``.
    """
    rng = np.random.default_rng(seed)
    metrics = dict(metrics) if metrics is not None else {"behavior": 0.5}
    method_effects = dict(method_effects or {})
    model_effects = dict(model_effects or {})
    strength_levels = np.asarray(strengths if strengths is not None else [np.nan], dtype=float)
    frames = []
    for metric, mean_slope in metrics.items():
        q_eff = rng.normal(0.0, sd_query, n_queries)
        p_eff = rng.normal(0.0, sd_prompt, n_prompts)
        qm_eff = rng.normal(0.0, sd_query_method, (n_queries, len(methods)))
        slopes = mean_slope + rng.normal(0.0, sd_slope, n_queries)
        grid = np.meshgrid(
            np.arange(len(models)),
            np.arange(len(methods)),
            np.arange(len(strength_levels)),
            np.arange(n_queries),
            np.arange(n_prompts),
            np.arange(n_samples),
            indexing="ij",
        )
        d, m, s, q, p, smp = (g.ravel() for g in grid)
        strength = strength_levels[s]
        dose = np.where(np.isnan(strength), 0.0, strength) * slopes[q]
        mu = (
            3.0
            + np.array([method_effects.get(x, 0.0) for x in methods])[m]
            + np.array([model_effects.get(x, 0.0) for x in models])[d]
            + dose
            + q_eff[q]
            + p_eff[p]
            + qm_eff[q, m]
            + rng.normal(0.0, sd_response, d.size)
        )
        resp = pd.DataFrame(
            {
                "model": np.asarray(models, dtype=object)[d],
                "method": np.asarray(methods, dtype=object)[m],
                "strength": strength,
                "query_id": np.array([f"query-{i:02d}" for i in range(n_queries)], dtype=object)[q],
                "prompt_set": "open",
                "prompt_id": np.array([f"common-{i:02d}" for i in range(n_prompts)],
                                      dtype=object)[p],
                "sample": smp.astype(int),
                "metric": metric,
                "rater": "judge",
                "_mu": mu,
            }
        )
        resp["key"] = [f"gen-{i:06d}" for i in range(len(resp))]
        rep = resp.loc[resp.index.repeat(n_repeats)].reset_index(drop=True)
        rep["repeat"] = np.tile(np.arange(n_repeats), len(resp))
        value = rep.pop("_mu").to_numpy() + rng.normal(0.0, sd_judge, len(rep))
        if discrete:
            value = np.clip(np.rint(value), 1, 5)
        rep["value"] = value
        rep["reason"] = ""
        frames.append(rep)
    return pd.concat(frames, ignore_index=True)[list(SCORE_COLUMNS)]
