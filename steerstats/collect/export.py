"""Cache -> the tidy tables (steerstats/schema.py) for ``steerstats export``.

The tables are driven by the experiment's plan, not by whatever the cache holds, so a task
that failed or is still pending is a row too: a generation with ``error`` set (and no
response), a score with ``value`` NaN and ``reason`` saying why. The directory itself is
written by :mod:`steerstats.results`.
"""

from __future__ import annotations

import math
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from steerstats import __version__
from steerstats.collect.plan import Plan, with_plan
from steerstats.collect.status import recorded_usage
from steerstats.config import Experiment
from steerstats.redact import redact
from steerstats.results import Format, package_versions, write_results
from steerstats.schema import GENERATION_COLUMNS, JUDGEMENT_COLUMNS, SCORE_COLUMNS

__all__ = ["build_manifest", "export", "generations_table", "judgements_table", "scores_table",
           "tables"]

_GEN_DTYPES = {"strength": "float64", "sample": "int64", "n_tokens": "Int64",
               "latency_s": "float64", "cost_usd": "float64"}
_SCORE_DTYPES = {"strength": "float64", "sample": "int64", "repeat": "int64", "value": "float64"}
_JUDGEMENT_DTYPES = {"strength": "float64", "sample": "int64", "repeat": "int64"}


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


def _fail_text(fail: Mapping[str, Any]) -> str:
    n = int(fail.get("attempts") or 0)
    return f"failed after {n} attempt{'s' if n != 1 else ''}: {fail.get('error')}"


def generations_table(p: Plan) -> pd.DataFrame:
    """One row per generation task of the plan (columns: schema.GENERATION_COLUMNS)."""
    cache = p.session.cache
    memo: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {}
    rows = []
    for g in p.generations:
        rec = fail = None
        if g.key is not None:
            if g.key not in memo:
                r = cache.get(g.key)
                memo[g.key] = (r, None if r is not None else cache.failure(g.key))
            rec, fail = memo[g.key]
        if rec is not None:
            error = None
        elif fail is not None:
            error = _fail_text(fail)
        else:
            error = g.note or "pending: not collected yet"
        rows.append({
            "model": g.model, "method": g.method, "strength": g.reported_strength,
            "query_id": g.query.id, "query": g.query.text, "prompt_set": g.prompt.prompt_set,
            "prompt_id": g.prompt.id, "sample": g.sample,
            "response": None if rec is None else rec.get("text"),
            "n_tokens": None if rec is None else rec.get("completion_tokens"),
            "finish_reason": None if rec is None else rec.get("finish_reason"),
            "latency_s": math.nan if rec is None else _float(rec.get("latency_s")),
            "cost_usd": math.nan if rec is None else _float(rec.get("cost_usd")),
            "error": error, "key": g.key,
        })
    return _frame(rows, GENERATION_COLUMNS, _GEN_DTYPES)


def scores_table(p: Plan) -> pd.DataFrame:
    """One row per score of each judge task of the plan (columns: schema.SCORE_COLUMNS).

    A judge task without a result gives one NaN row per metric its judge declares, with the
    reason (failed, pending, or its generation missing)."""
    cache = p.session.cache
    specs = p.session.judge_specs
    rows = []
    for j in p.judgements:
        g = j.generation
        base = {
            "model": g.model, "method": g.method, "strength": g.reported_strength,
            "query_id": g.query.id, "prompt_set": g.prompt.prompt_set, "prompt_id": g.prompt.id,
            "sample": g.sample, "rater": specs[j.judge].rater_label, "repeat": j.repeat,
            "key": g.key,
        }
        rec = None if j.key is None else cache.get(j.key)
        if rec is not None:
            for s in rec["scores"]:
                rows.append({**base, "metric": s["metric"], "value": _float(s["value"]),
                             "reason": s.get("reason")})
            continue
        if j.key is None:
            reason = g.note or "pending: method not resolved yet"
        elif (fail := cache.failure(j.key)) is not None:
            reason = "judge " + _fail_text(fail)
        elif g.key is not None and cache.get(g.key) is None:
            gf = cache.failure(g.key)
            reason = ("generation " + _fail_text(gf) if gf is not None
                      else "pending: generation not collected yet")
        else:
            reason = "pending: not judged yet"
        judge = p.session.judges[j.judge]
        for metric in judge.metrics or (specs[j.judge].name,):
            rows.append({**base, "metric": metric, "value": math.nan, "reason": reason})
    return _frame(rows, SCORE_COLUMNS, _SCORE_DTYPES)


_REPLY_SEP = "\n\n----- next reply -----\n\n"  # judges that make several calls per item


def judgements_table(p: Plan) -> pd.DataFrame:
    """One row per judge call the cache holds for the plan, with the judge's raw ``reply``
    (columns: schema.JUDGEMENT_COLUMNS); computed judges, which have no reply, are left out.
    ``key`` is the generation's: the scores row with the same key, rater and repeat is what the
    judge made of this reply."""
    cache = p.session.cache
    specs = p.session.judge_specs
    rows = []
    for j in p.judgements:
        rec = None if j.key is None else cache.get(j.key)
        if rec is None:
            continue
        replies = rec.get("replies") or [s["reply"] for s in rec.get("scores") or []
                                         if s.get("reply") is not None]
        if not replies:
            continue
        g = j.generation
        rows.append({
            "model": g.model, "method": g.method, "strength": g.reported_strength,
            "query_id": g.query.id, "prompt_set": g.prompt.prompt_set, "prompt_id": g.prompt.id,
            "sample": g.sample, "judge": j.judge, "rater": specs[j.judge].rater_label,
            "repeat": j.repeat, "reply": _REPLY_SEP.join(replies), "key": g.key,
        })
    return _frame(rows, JUDGEMENT_COLUMNS, _JUDGEMENT_DTYPES)


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...],
           dtypes: Mapping[str, str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(columns))
    for col in columns:  # text columns: pandas' string dtype, NaN where missing
        df[col] = df[col].astype(dtypes.get(col, "str"))
    return df


def tables(config: Experiment, *, limit_queries: int | None = None,
           limit_prompts: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(generations, scores) for ``config`` from its cache; makes no backend calls."""
    return with_plan(config, lambda p: (generations_table(p), scores_table(p)),
                     limit_queries=limit_queries, limit_prompts=limit_prompts)


def build_manifest(p: Plan, generations: pd.DataFrame, scores: pd.DataFrame,
                   limits: Mapping[str, int | None] | None = None) -> dict[str, Any]:
    """The manifest of a results directory produced from plan ``p`` (see DESIGN.md)."""
    cfg, session = p.config, p.session
    spent, calls = recorded_usage(p)
    ledger = session.cache.ledger.totals(cfg.experiment.name)
    gen_err = generations["error"].fillna("")
    sc_reason = scores["reason"].fillna("")
    return {
        "steerstats_version": __version__,
        "python": platform.python_version(),
        "platform": sys.platform,
        "packages": package_versions(),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "experiment": {"name": cfg.experiment.name, "digest": cfg.digest(),
                       "file": None if cfg.path is None else cfg.path.name},
        "models": [{"label": m.name, "backend": session.model_backend(m.name).identity()}
                   for m in cfg.models],
        "methods": [{"label": m.column, **session.methods[m.column].identity(),
                     "strengths": None if m.strengths is None else list(m.strengths)}
                    for m in cfg.methods],
        # Judge identities carry their template digests, so a changed rubric is visible.
        "judges": [{"label": js.label, "rater": js.rater_label,
                    "repeats": session.repeats[js.label],
                    "identity": session.judge_identity(js.label),
                    "backend": (None if (jb := session.judge_backend(js.label)) is None
                                else jb.identity())}
                   for js in cfg.judges],
        "seeds": {"experiment": cfg.experiment.seed, "sampling": cfg.sampling.seed,
                  "open_prompts": (None if cfg.prompts.open is None
                                   else cfg.seed_for(cfg.prompts.open.seed)),
                  "mmlu": (None if cfg.prompts.mmlu is None
                           else cfg.seed_for(cfg.prompts.mmlu.seed))},
        "sampling": cfg.sampling.model_dump(),
        "limits": dict(limits or {}),
        "row_counts": {"generations": len(generations), "scores": len(scores)},
        "failures": {
            "generations_failed": int(gen_err.str.startswith("failed").sum()),
            "generations_pending": int(gen_err.str.startswith("pending").sum()),
            "generations_unresolved": int(gen_err.str.startswith("method resolution").sum()),
            "scores_failed": int(sc_reason.str.contains("failed after").sum()),
            "scores_pending": int(sc_reason.str.startswith("pending").sum()),
            "scores_unparsed": int((scores["value"].isna() & ~sc_reason.str.startswith("pending")
                                    & ~sc_reason.str.contains("failed after")).sum()),
        },
        "spent_usd": spent,
        "calls": calls,
        # Every attempt the cache's ledger recorded for the experiment (any scope of it).
        "ledger": {"calls": ledger.calls, "spent_usd": ledger.usd, "failed": ledger.failed,
                   "timeouts": ledger.timeouts, "retries": ledger.retries,
                   "unsettled": ledger.unsettled},
        "tables": {
            "generations": "one row per generation task (steerstats.schema.GENERATION_COLUMNS)",
            "scores": "one row per score (SCORE_COLUMNS); reason says why a value is NaN",
            "judgements": "one row per chat-judge call with its raw reply "
                          "(JUDGEMENT_COLUMNS); key, rater and repeat link it to its scores",
        },
    }


def export(config: Experiment, out_dir: str | Path, fmt: Format = "parquet", *,
           limit_queries: int | None = None, limit_prompts: int | None = None) -> Path:
    """``steerstats export``: the experiment's tables, manifest and spec into ``out_dir``."""
    limits = {"limit_queries": limit_queries, "limit_prompts": limit_prompts}

    def write(p: Plan) -> Path:
        gens, scs = generations_table(p), scores_table(p)
        return write_results(out_dir, gens, scs, build_manifest(p, gens, scs, limits), fmt,
                             experiment_toml=None if config.text is None else redact(config.text),
                             judgements=judgements_table(p))

    return with_plan(config, write, limit_queries=limit_queries, limit_prompts=limit_prompts)
