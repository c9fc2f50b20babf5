"""Analysis tables for report tests.

A small tidy design (with failed generations and unparsed ratings) run through ``analyze``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from steerstats.analysis.analyze import analyze
from steerstats.results import write_results

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
                                 prompt_id=pid, sample=0,
                                 response="" if failed else _response(method, strength, query, pid),
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


def with_second_judge(scores: pd.DataFrame, name: str = "judge-b", seed: int = 0,
                      first: str = "judge-a") -> pd.DataFrame:
    """``scores`` plus a second judge of every rating by ``first``: one point higher (capped at
    5), a quarter of its ratings redrawn; unparsed where the first judge's rating is."""
    rng = np.random.default_rng(seed)
    judged = scores[scores["rater"] == first].copy()
    value = (judged["value"] + 1).clip(upper=5)
    redraw = rng.random(len(judged)) < 0.25
    value[redraw] = rng.integers(1, 6, int(redraw.sum())).astype(float)
    judged["value"] = value.where(judged["value"].notna())
    judged["rater"] = name
    return pd.concat([scores, judged], ignore_index=True)


def _response(method: str, strength: float, query: str, prompt_id: str) -> str:
    """A short, distinct response text per arm and prompt."""
    arm = method if np.isnan(strength) else f"{method} at strength {strength:g}"
    return (f"Reply from {arm} to {prompt_id}, asked to {query.replace('-', ' ')}.\n"
            "It goes on for a second line so the layout shows line breaks.")


def judgements(scores: pd.DataFrame) -> pd.DataFrame:
    """A judgements table (DESIGN.md) for the judged rows of ``scores``: the judge's raw reply
    holds the score in a tag, or no tag where the score is NaN."""
    judged = scores[scores["rater"] != "auto"]
    replies = [f"The response is fine. <score>{int(v)}</score>" if pd.notna(v) else
               "I cannot rate this response." for v in judged["value"]]
    cols = ["model", "method", "strength", "query_id", "prompt_set", "prompt_id", "sample",
            "rater", "repeat", "key"]
    out = judged[cols].assign(judge=judged["rater"], reply=replies)
    return out.reset_index(drop=True)


def write_folder(path: Path, generations: pd.DataFrame, scores: pd.DataFrame, *,
                 with_judgements: bool = True, n_boot: int = 50) -> Path:
    """A results directory with its analysis already written (small bootstrap, for speed)."""
    write_results(path, generations, scores, {"source": "test"})
    if with_judgements:
        judgements(scores).to_parquet(path / "judgements.parquet", index=False)
    analyze((generations, scores), out=path / "analysis", n_boot=n_boot, seed=1)
    return path


def qmd_cells(path: Path) -> list[tuple[list[str], str]]:
    """The python cells of a qmd, in order: (option lines, code)."""
    text = path.read_text(encoding="utf-8")
    cells = []
    for body in re.findall(r"^```\{python\}\n(.*?)^```", text, flags=re.S | re.M):
        options = [ln for ln in body.splitlines() if ln.startswith("#|")]
        cells.append((options, body))
    return cells


def run_qmd(path: Path, results: Path) -> list[str]:
    """Run the qmd's cells in one namespace as Quarto would, with ``results`` injected after
    the parameters cell; return each cell's standard output."""
    namespace: dict[str, object] = {}
    outputs = []
    for options, code in qmd_cells(path):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(code, str(path), "exec"), namespace)  # noqa: S102
            if any("parameters" in o for o in options):
                exec(f"results = {str(results)!r}", namespace)  # noqa: S102
        outputs.append(buffer.getvalue())
    return outputs


@functools.lru_cache(maxsize=2)
def _tables(seed: int) -> dict[str, pd.DataFrame]:
    gens, scores = tidy(seed)
    return analyze((gens, scores), n_boot=200, seed=1)


def tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every table the report reads: ``analyze`` on :func:`tidy` (computed once per process;
    each call returns fresh copies)."""
    return {name: table.copy() for name, table in _tables(seed).items()}
