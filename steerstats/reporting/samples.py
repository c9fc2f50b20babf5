"""Samples: the responses themselves, each arm side by side, with scores and judge replies.

Per query, a few prompts are shown by default (the one with the median behaviour effect and
the most extreme one); every response follows in a collapsed list with a filter (query, arm,
strength, model) run by a few lines of JavaScript inside the page. Without JavaScript the
whole list is still there to read. Every data string is escaped with ``escape.html_text``.
"""

from __future__ import annotations

import math

import pandas as pd

from steerstats import fmt
from steerstats.reporting.content import Html, Section, Text
from steerstats.reporting.data import ReportData
from steerstats.reporting.escape import html_text as h

__all__ = ["FILTER_JS", "samples_section"]

ROW = ["model", "method", "strength", "query_id", "prompt_set", "prompt_id", "sample"]
MAX_LISTED = 2000
MAX_CHARS = 2400
MAX_REPLY = 1200

FILTER_JS = """(function () {
  var root = document.getElementById('samples-all');
  if (!root) { return; }
  var form = root.querySelector('form.sample-filter');
  var cards = root.querySelectorAll('.sample-card');
  var keys = ['query', 'arm', 'strength', 'model'];
  function apply() {
    var shown = 0;
    cards.forEach(function (card) {
      var ok = keys.every(function (k) {
        var field = form.elements[k];
        return !field || !field.value || card.dataset[k] === field.value;
      });
      card.hidden = !ok;
      if (ok) { shown += 1; }
    });
    form.querySelector('output').textContent = shown + ' of ' + cards.length + ' shown';
  }
  form.hidden = false;
  form.addEventListener('change', apply);
  apply();
})();"""


def _strength(value: object) -> str:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    return "" if math.isnan(v) else f"{v:g}"


def _clip(text: object, limit: int) -> str:
    s = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    if len(s) <= limit:
        return h(s)
    return h(s[:limit]) + f'<span class="clipped"> … ({len(s) - limit:,} more characters)</span>'


def _ratings(data: ReportData) -> pd.DataFrame | None:
    """Scores with the judge's raw reply beside each judging, when judgements exist."""
    scores = data.scores
    if scores is None or not set(ROW + ["metric", "value"]).issubset(scores.columns):
        return None
    scores = scores.copy()
    scores["strength"] = scores["strength"].astype(float)
    judgements = data.judgements
    on = ROW + ["rater", "repeat"]
    if judgements is not None and set(on + ["reply"]).issubset(judgements.columns) \
            and set(on).issubset(scores.columns):
        replies = judgements[on + ["reply"]].copy()
        replies["strength"] = replies["strength"].astype(float)
        scores = scores.merge(replies.drop_duplicates(on), on=on, how="left")
    return scores


def _effects(rows: pd.DataFrame, ratings: pd.DataFrame | None, baseline: str | None) -> pd.Series:
    """Per prompt of one query: mean behaviour of the other arms minus the baseline's."""
    if ratings is None or baseline is None:
        return pd.Series(dtype=float)
    beh = ratings[(ratings["metric"] == "behavior") & ratings["value"].notna()
                  & ratings["query_id"].isin(rows["query_id"].unique())]
    if beh.empty:
        return pd.Series(dtype=float)
    per = beh.groupby(["prompt_id", beh["method"] == baseline])["value"].mean().unstack()
    if True not in per or False not in per:
        return pd.Series(dtype=float)
    return (per[False] - per[True]).dropna()


def _chosen(prompts: list[str], effects: pd.Series) -> list[tuple[str, str]]:
    """(prompt id, why shown): the median-effect prompt and the most extreme one."""
    if effects.empty:
        return [(prompts[0], "first prompt (no behaviour effect to choose by)")]
    ordered = effects.sort_values()
    median = str(ordered.index[(len(ordered) - 1) // 2])
    extreme = str(effects.abs().idxmax())
    picks = [(median, f"median behaviour effect, {fmt.num(effects[median])}")]
    if extreme != median:
        picks.append((extreme, f"most extreme behaviour effect, {fmt.num(effects[extreme])}"))
    return picks


def _card(row: pd.Series, ratings: pd.DataFrame | None, *, context: bool) -> str:
    arm = fmt.arm(row["method"], row["strength"])
    attrs = (f'data-query="{h(row["query_id"])}" data-arm="{h(row["method"])}" '
             f'data-strength="{h(_strength(row["strength"]))}" data-model="{h(row["model"])}"')
    head = f'<header><strong>{h(arm)}</strong> <span class="model">{h(row["model"])}</span>'
    if context:
        head += (f' <span class="where">query {h(row["query_id"])} · prompt '
                 f'{h(row["prompt_id"])} · sample {h(row["sample"])}</span>')
    head += "</header>"
    error = row.get("error")
    if isinstance(error, str) and error.strip():
        body = f'<p class="failed">generation failed: {_clip(error, 300)}</p>'
    else:
        body = f'<div class="response">{_clip(row.get("response"), MAX_CHARS)}</div>'
    return (f'<article class="sample-card" {attrs}>{head}{body}'
            f"{_scores_html(row, ratings)}</article>")


def _scores_html(row: pd.Series, ratings: pd.DataFrame | None) -> str:
    if ratings is None:
        return ""
    mine = ratings
    for col in ROW:
        value = row[col]
        mine = mine[mine[col].isna()] if col == "strength" and pd.isna(value) else \
            mine[mine[col] == value]
    if mine.empty:
        return '<p class="unscored">not scored</p>'
    items = []
    for metric, judged in mine.groupby("metric", sort=True):
        values = judged["value"]
        mean = fmt.num(values.mean(), fmt.metric_digits(metric)) if values.notna().any() \
            else "NaN"
        parts = []
        for _, j in judged.sort_values(["rater", "repeat"] if "repeat" in judged
                                       else ["rater"]).iterrows():
            parsed = fmt.num(j["value"], fmt.metric_digits(metric)) if pd.notna(j["value"]) \
                else f'NaN: {_clip(j.get("reason") or "no reason recorded", 300)}'
            reply = j.get("reply")
            reply_html = (f"<pre>{_clip(reply, MAX_REPLY)}</pre>" if isinstance(reply, str)
                          else "")
            parts.append(f"<li>{h(j.get('rater', ''))} #{h(j.get('repeat', ''))}: parsed "
                         f"{parsed}{reply_html}</li>")
        items.append(f"<dt>{h(metric)}</dt><dd>{mean}<details><summary>{len(parts)} "
                     f"judging(s)</summary><ul>{''.join(parts)}</ul></details></dd>")
    return f'<dl class="scores">{"".join(items)}</dl>'


def _select(name: str, title: str, values: list[str]) -> str:
    options = "".join(f'<option value="{h(v)}">{h(v or "none")}</option>' for v in values)
    return (f'<label>{title} <select name="{name}"><option value="">all</option>{options}'
            "</select></label>")


def _arm_order(generations: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    g = generations.copy()
    g["_first"] = g["method"].astype(str) != (baseline or "")
    g["_strength"] = g["strength"].astype(float).fillna(-math.inf)
    return g.sort_values(["_first", "method", "_strength", "model"], kind="stable")


def samples_section(data: ReportData) -> Section:
    """Per query, the prompt and each arm's response side by side with scores and judge
    replies; all responses below, with a filter."""
    section = Section("samples", "Samples: the responses")
    gens = data.generations
    if gens is None or "response" not in gens or not (
            gens["response"].notna() & (gens["response"].astype(str) != "")).any():
        section.blocks.append(Text("No responses are in these results (for example an import "
                                   "of scores alone), so none can be shown."))
        return section
    gens = gens.copy()
    gens["strength"] = gens["strength"].astype(float)
    ratings = _ratings(data)
    methods = set(gens["method"].astype(str))
    tr = data.get("tradeoff")
    baseline = next((b for b in ([str(tr["baseline"].iloc[0])] if tr is not None and
                                 "baseline" in tr else []) + ["control", "prompt"]
                     if b in methods), None)
    notes = []
    if data.judgements is None:
        notes.append("Judge replies are not in these results (no judgements table); the parsed "
                     "scores and the reasons for missing ones are shown.")
    open_set = gens[gens["prompt_set"] == "open"] if (gens["prompt_set"] == "open").any() else gens
    blocks: list[str] = []
    for query, rows in open_set.groupby("query_id", sort=True):
        prompts = sorted(rows["prompt_id"].astype(str).unique())
        picks = _chosen(prompts, _effects(rows, ratings, baseline))
        text = rows["query"].dropna().astype(str)
        parts = [f'<details class="sample-query"{" open" if not blocks else ""}><summary>'
                 f"<strong>{h(query)}</strong>"
                 + (f": {_clip(text.iloc[0], 300)}" if len(text) else "") + "</summary>"]
        for prompt_id, why in picks:
            cell = rows[rows["prompt_id"].astype(str) == prompt_id]
            cell = _arm_order(cell[cell["sample"] == cell["sample"].min()], baseline)
            prompt_text = (cell["prompt"].dropna().astype(str) if "prompt" in cell
                           else pd.Series([], dtype=str))
            parts.append(f'<h4>Prompt {h(prompt_id)} <span class="why">({h(why)})</span></h4>')
            if len(prompt_text):
                parts.append(f'<p class="prompt">{_clip(prompt_text.iloc[0], MAX_CHARS)}</p>')
            parts.append('<div class="sample-grid">'
                         + "".join(_card(r, ratings, context=False) for _, r in cell.iterrows())
                         + "</div>")
        parts.append("</details>")
        blocks.append("".join(parts))
    listed = _arm_order(gens, baseline).sort_values(["query_id", "prompt_id", "sample"],
                                                     kind="stable")
    capped = len(listed) > MAX_LISTED
    listed = listed.head(MAX_LISTED)
    selects = [
        _select("query", "Query", sorted(listed["query_id"].astype(str).unique())),
        _select("arm", "Arm", sorted(listed["method"].astype(str).unique())),
        _select("strength", "Strength",
                sorted({_strength(s) for s in listed["strength"]}, key=_strength_key)),
    ]
    if listed["model"].nunique() > 1:
        selects.append(_select("model", "Model", sorted(listed["model"].astype(str).unique())))
    all_html = (
        f'<details id="samples-all"><summary>All {len(listed):,} responses'
        + (f" (the first {MAX_LISTED:,} of {len(gens):,})" if capped else "")
        + ', with a filter</summary><form class="sample-filter" hidden>'
        + "".join(selects) + "<output></output></form>"
        + '<div class="sample-list">'
        + "".join(_card(r, ratings, context=True) for _, r in listed.iterrows())
        + "</div></details>"
    )
    section.blocks.append(Text(
        "For each query, the prompt with the median behaviour effect and the most extreme "
        "one, every arm side by side (first sample), with each metric's mean over judgings, "
        "each judging's parsed value or why it is missing, and the judge's reply. All responses "
        "follow below the queries." + (" " + " ".join(notes) if notes else "")))
    section.blocks.append(Html("\n".join(blocks) + "\n" + all_html, script=FILTER_JS))
    return section


def _strength_key(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return -math.inf
