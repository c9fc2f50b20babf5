"""Simulated ``scores`` tables, so examples, doctests, tests and benchmarks run offline.

``example_scores`` mirrors a real steering study at toy scale: queries crossed with shared
("common") open prompts, topic prompts nested in their query, MMLU questions shared by every
query, judge repeats, and unparsed answers (NaN with a reason, never a made-up score).
``simulate_crossed`` draws one metric from a crossed random-effects model with known means
(optionally several models, a strength sweep and 1-5 rounding): the truth that coverage,
power and model-fitting checks compare against.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..schema import AUTO_RATER, SCORE_COLUMNS

__all__ = ["example_scores", "simulate_crossed"]

_QUERY_IDS = (
    "be-funny",
    "be-formal",
    "talk-like-a-pirate",
    "be-concise",
    "be-enthusiastic",
    "be-sarcastic",
    "be-poetic",
    "be-pessimistic",
    "use-emojis",
    "be-childlike",
    "be-technical",
    "be-rude",
    "be-humble",
    "be-misleading-and-ambiguous",
)

# Method effects: latent behaviour and coherence on the 1-5 judge scale, MMLU accuracy on the
# logit scale, and the chance that an MMLU answer has no readable <answer> tag.
_EFFECTS = {
    "control": (1.6, 4.6, 0.85, 0.01),
    "prompt": (3.2, 4.5, 0.80, 0.02),
    "steer": (3.5, 3.6, 0.10, 0.12),
}
_DEFAULT_EFFECT = (2.5, 4.0, 0.5, 0.05)
_MODEL_SHIFT = {0: (0.0, 0.0, 0.0), 1: (0.3, 0.3, 1.0)}


def example_scores(
    seed: int = 0,
    *,
    models: Sequence[str] = ("model-a", "model-b"),
    methods: Sequence[str] = ("control", "prompt", "steer"),
    strengths: Sequence[float] | None = None,
    n_queries: int = 6,
    n_topic: int = 3,
    n_common: int = 4,
    n_mmlu: int = 8,
    n_repeats: int = 2,
    p_unparsed: float = 0.03,
) -> pd.DataFrame:
    """Simulate a small tidy ``scores`` table from a crossed random-effects design.

    Deterministic for a given ``seed``. Judge metrics ``behavior`` and ``coherence`` (integers
    1-5, ``n_repeats`` ratings per response) are scored on open prompts: ``n_topic`` topic prompts
    nested in each query (``"<query_id>/topic-NN"``) and ``n_common`` common prompts shared by all
    queries (``"common-NN"``). ``accuracy`` (1 correct, 0 wrong, rater ``"auto"``) is scored on
    ``n_mmlu`` MMLU questions shared by all queries (``"mmlu-NNN"``). Values are latent method
    effects plus query, prompt and query x method random effects and noise.

    Parameters
    ----------
    seed : int
        Seed of the simulation.
    models, methods : sequence of str
        Model and method names. ``"control"``, ``"prompt"`` and ``"steer"`` have built-in
        effects (steering: high behaviour, lower coherence and accuracy, more unparsed answers);
        other names get a middling effect.
    strengths : sequence of float, optional
        If given, ``"steer"`` is run once per strength (a sweep): its behaviour effect grows
        linearly and its coherence and accuracy costs quadratically with strength (1.0 gives the
        built-in effect). Other methods keep ``strength`` NaN.
    n_queries : int
        Number of steering queries (at most 14 named ones, then ``"query-NN"``).
    n_topic, n_common, n_mmlu : int
        Topic prompts per query, common prompts, MMLU questions.
    n_repeats : int
        Judge repeats per response for the judge metrics.
    p_unparsed : float
        Probability that a judge rating is unparsed (NaN with a reason).

    Returns
    -------
    pandas.DataFrame
        Columns of :data:`steerstats.schema.SCORE_COLUMNS`; one row per observation.

    Examples
    --------
    >>> from steerstats.stats import example_scores
    >>> scores = example_scores(seed=0)
    >>> scores.shape
    (1296, 13)
    >>> sorted(scores["metric"].unique())
    ['accuracy', 'behavior', 'coherence']
    >>> int(scores["value"].isna().sum())
    42
    """
    if n_queries < 1 or n_topic < 0 or n_common < 0 or n_mmlu < 0 or n_repeats < 1:
        raise ValueError(
            "example_scores needs n_queries >= 1, n_repeats >= 1 and non-negative prompt counts"
        )
    if not 0.0 <= p_unparsed < 1.0:
        raise ValueError(f"p_unparsed must be in [0, 1), got {p_unparsed}")
    rng = np.random.default_rng(seed)
    query_ids = [
        _QUERY_IDS[i] if i < len(_QUERY_IDS) else f"query-{i:02d}" for i in range(n_queries)
    ]
    arms: list[tuple[str, float]] = []
    for m in methods:
        if m == "steer" and strengths is not None:
            arms.extend((m, float(s)) for s in strengths)
        else:
            arms.append((m, float("nan")))

    open_prompts = [(q, f"{q}/topic-{k:02d}") for q in query_ids for k in range(n_topic)]
    open_prompts += [(q, f"common-{k:02d}") for q in query_ids for k in range(n_common)]
    mmlu_prompts = [(q, f"mmlu-{k:03d}") for q in query_ids for k in range(n_mmlu)]

    q_effect = dict(zip(query_ids, rng.normal(0.0, 0.5, (n_queries, 3)), strict=True))
    prompt_ids = sorted({p for _, p in open_prompts + mmlu_prompts})
    p_effect = dict(zip(prompt_ids, rng.normal(0.0, 0.4, (len(prompt_ids), 3)), strict=True))
    qm_effect = {
        (q, a): rng.normal(0.0, 0.3, 3)
        for q, a in itertools.product(query_ids, range(len(arms)))
    }

    frames = []
    for (mi, model), (ai, (meth, strength)) in itertools.product(
        enumerate(models), enumerate(arms)
    ):
        beh, coh, acc, p_bad = _EFFECTS.get(meth, _DEFAULT_EFFECT)
        if meth == "steer" and not np.isnan(strength):
            base = _EFFECTS["control"]
            beh = base[0] + (beh - base[0]) * strength
            coh = base[1] + (coh - base[1]) * strength**2
            acc = base[2] + (acc - base[2]) * strength**2
            p_bad = min(0.5, base[3] + (p_bad - base[3]) * strength**2)
        shift = _MODEL_SHIFT.get(mi, (0.0, 0.0, 0.0))
        for metric, centre, idx, prompts in (
            ("behavior", beh + shift[0], 0, open_prompts),
            ("coherence", coh + shift[1], 1, open_prompts),
            ("accuracy", acc + shift[2], 2, mmlu_prompts),
        ):
            n = len(prompts)
            latent = centre + np.array(
                [q_effect[q][idx] + p_effect[p][idx] + qm_effect[(q, ai)][idx] for q, p in prompts]
            )
            if metric == "accuracy":
                prob = 1.0 / (1.0 + np.exp(-latent))
                value = (rng.random(n) < prob).astype(float)
                bad = rng.random(n) < p_bad
                reason = np.where(bad, "unparsed: no <answer> tag", "")
                value[bad] = np.nan
                reps = np.zeros(n, dtype=int)
                rows = prompts
                rater = AUTO_RATER
            else:
                response = latent + rng.normal(0.0, 0.6, n)
                rows = [pr for pr in prompts for _ in range(n_repeats)]
                reps = np.tile(np.arange(n_repeats), n)
                noisy = np.repeat(response, n_repeats) + rng.normal(0.0, 0.4, n * n_repeats)
                value = np.clip(np.rint(noisy), 1, 5)
                bad = rng.random(len(value)) < p_unparsed
                value[bad] = np.nan
                reason = np.where(bad, "unparsed: no <score> tag", "")
                rater = "example-judge"
            frame = pd.DataFrame(
                {
                    "model": model,
                    "method": meth,
                    "strength": strength,
                    "query_id": [q for q, _ in rows],
                    "prompt_set": "mmlu" if metric == "accuracy" else "open",
                    "prompt_id": [p for _, p in rows],
                    "sample": 0,
                    "metric": metric,
                    "rater": rater,
                    "repeat": reps,
                    "value": value,
                    "reason": reason,
                }
            )
            frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out["key"] = _response_keys(out, _RESPONSE[:-1])  # one sample per prompt here
    return out[list(SCORE_COLUMNS)]


def simulate_crossed(
    means: Mapping[str, float] | None = None,
    *,
    sd_query: float = 0.6,
    sd_prompt: float = 0.5,
    sd_query_method: float = 0.4,
    sd_response: float = 0.8,
    sd_repeat: float = 0.5,
    n_queries: int = 14,
    n_topic: int = 10,
    n_common: int = 20,
    n_samples: int = 1,
    n_repeats: int = 3,
    model: str | Mapping[str, float] = "model",
    metric: str = "behavior",
    strengths: Sequence[float] | None = None,
    slope: float = 0.0,
    sd_slope: float = 0.0,
    discrete: bool = False,
    seed: int | np.random.Generator | None = 0,
) -> pd.DataFrame:
    """Simulate one metric from a crossed random-effects model with known population means.

    ``value = means[method] + model shift + strength * (slope + query slope) + query + prompt
    + query:method + response + repeat`` with independent normal terms of the given SDs. Each
    query has ``n_topic`` nested prompts and all queries share ``n_common`` prompts; every
    (model, method, strength, query, prompt, sample) response is rated ``n_repeats`` times.
    Unless ``discrete``, values are not rounded, so the mean over new queries and prompts of
    each method is exactly ``means[method]`` (plus the model's shift and ``strength * slope``):
    the truth against which interval coverage is checked (``benchmarks/coverage.py``).

    Parameters
    ----------
    means : mapping of str to float, optional
        Population mean per method (default control 2.0, prompt 3.0, steer 3.5).
    sd_query, sd_prompt, sd_query_method, sd_response, sd_repeat : float
        SDs of the query, prompt, query x method, response and judge-repeat terms.
    n_queries, n_topic, n_common, n_samples, n_repeats : int
        Design sizes (``n_samples`` responses per model, method, strength, query and prompt).
    model : str or mapping of str to float
        Value of the ``model`` column, or several models, each with a shift added to its values.
    metric : str
        Value of the ``metric`` column. For a table of several metrics, concatenate one call per
        metric, passing one ``numpy.random.Generator`` as ``seed`` so their effects differ.
    strengths : sequence of float, optional
        Run every method at each strength (a sweep); default: ``strength`` NaN, no sweep.
    slope, sd_slope : float
        With ``strengths``: mean slope of the metric on strength and the SD of the per-query
        deviations from it (how steerability differs by query).
    discrete : bool
        Round and clip values to the judges' 1-5 scale.
    seed : int, numpy.random.Generator or None
        Seed of the simulation.

    Returns
    -------
    pandas.DataFrame
        Tidy scores (``SCORE_COLUMNS``), one row per rating, ordered by model, method (in the
        order of ``means``), strength, query, prompt (topic prompts first), sample and repeat.
        Ratings of one response share its ``key``; the rater is ``"simulated-judge"``.

    Examples
    --------
    >>> from steerstats.stats import simulate_crossed
    >>> sim = simulate_crossed(n_queries=4, n_topic=2, n_common=3, seed=0)
    >>> len(sim)  # 3 methods x 4 queries x (2 + 3) prompts x 3 repeats
    180
    >>> sim.groupby("method")["value"].mean().round(2).tolist()
    [1.77, 3.0, 3.33]
    """
    arms = dict(means) if means is not None else {"control": 2.0, "prompt": 3.0, "steer": 3.5}
    shifts = {model: 0.0} if isinstance(model, str) else dict(model)
    levels = np.asarray([np.nan] if strengths is None else list(strengths), dtype=float)
    if (n_queries < 1 or n_topic < 0 or n_common < 0 or n_topic + n_common < 1
            or n_samples < 1 or n_repeats < 1):
        raise ValueError(
            "simulate_crossed needs n_queries, n_samples, n_repeats and some prompts >= 1")
    if not arms or not shifts:
        raise ValueError("simulate_crossed needs at least one method (means) and one model")
    if strengths is not None and (levels.size == 0 or not np.isfinite(levels).all()):
        raise ValueError(f"strengths must be finite numbers, got {list(strengths)}")
    rng = np.random.default_rng(seed)
    n_m, n_q, n_p = len(arms), n_queries, n_topic + n_common
    u_q = rng.normal(0.0, sd_query, n_q)
    v_topic = rng.normal(0.0, sd_prompt, (n_q, n_topic))
    v_common = rng.normal(0.0, sd_prompt, n_common)
    v = np.concatenate([v_topic, np.broadcast_to(v_common, (n_q, n_common))], axis=1)
    w = rng.normal(0.0, sd_query_method, (n_m, n_q))
    # Axes: model, method, strength, query, prompt (then sample, repeat).
    dose = np.zeros((1, 1, 1, n_q, 1))
    if strengths is not None:
        query_slopes = slope + rng.normal(0.0, sd_slope, n_q)
        dose = levels[None, None, :, None, None] * query_slopes[None, None, None, :, None]
    mu = np.fromiter(arms.values(), dtype=float, count=n_m)
    shift = np.fromiter(shifts.values(), dtype=float, count=len(shifts))
    cell = (shift[:, None, None, None, None] + mu[None, :, None, None, None] + dose
            + u_q[None, None, None, :, None] + v[None, None, None, :, :]
            + w[None, :, None, :, None])
    cell = np.broadcast_to(cell, (len(shifts), n_m, len(levels), n_q, n_p))
    response = cell[..., None] + rng.normal(0.0, sd_response, (*cell.shape, n_samples))
    value = response[..., None] + rng.normal(0.0, sd_repeat, (*response.shape, n_repeats))
    if discrete:
        value = np.clip(np.rint(value), 1, 5)
    qids = np.array([f"query-{i:02d}" for i in range(n_q)], dtype=object)
    pids = np.array(
        [[f"query-{i:02d}/topic-{k:02d}" for k in range(n_topic)]
         + [f"common-{k:02d}" for k in range(n_common)] for i in range(n_q)], dtype=object
    ).reshape(n_q, n_p)
    di, mi, si, qi, pi, ni, ri = np.indices(value.shape).reshape(7, -1)
    out = pd.DataFrame(
        {
            "model": np.array(list(shifts), dtype=object)[di],
            "method": np.array(list(arms), dtype=object)[mi],
            "strength": levels[si],
            "query_id": qids[qi],
            "prompt_set": "open",
            "prompt_id": pids[qi, pi],
            "sample": ni,
            "metric": metric,
            "rater": "simulated-judge",
            "repeat": ri,
            "value": value.reshape(-1),
            "reason": "",
        }
    )
    out["key"] = np.repeat(_response_keys(out.iloc[::n_repeats], _RESPONSE), n_repeats)
    return out[list(SCORE_COLUMNS)]


_RESPONSE = ("model", "method", "strength", "query_id", "prompt_id", "sample")


def _response_keys(rows: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """A stable key per row from the columns that identify its response, as a generation key
    does in collected data."""
    ident = zip(*(rows[c] for c in columns), strict=True)
    return [hashlib.sha256(repr(t).encode()).hexdigest()[:16] for t in ident]
