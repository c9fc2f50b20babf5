"""Analysis tables for report tests.

A small tidy design (with failed generations and unparsed ratings) run through ``analyze``.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pandas as pd

from steerstats.analysis.analyze import analyze

MODELS = ("m-small", "m-large")
ARMS = (("control", np.nan), ("prompt", np.nan), ("caa", 1.0), ("caa", 2.0))
QUERIES = ("be-funny", "be-formal", "be-concise", "be-rude")


def tidy(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(generations, scores) for 2 models x 4 arms x 4 queries x 5 prompts, 2 judge repeats."""
    rng = np.random.default_rng(seed)
    gens, scores = [], []
    prompts = [f"common-{i:02d}" for i in range(5)]
    mmlu = [f"mmlu-{i:03d}" for i in range(8)]
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


@functools.lru_cache(maxsize=2)
def _tables(seed: int) -> dict[str, pd.DataFrame]:
    gens, scores = tidy(seed)
    return analyze((gens, scores), n_boot=200, seed=1)


def tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every table the report reads: ``analyze`` on :func:`tidy` (computed once per process;
    each call returns fresh copies)."""
    return {name: table.copy() for name, table in _tables(seed).items()}
