"""The ``sentiment`` judge: VADER's compound score signed by the query's declared direction,
and queries that declare (or fail to declare) a direction, from config items and files."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from steerstats.collect import collect, estimate
from steerstats.collect.export import tables
from steerstats.collect.inputs import experiment_queries
from steerstats.config import JudgeSpec, load_config, parse_config
from steerstats.datasets import load_queries
from steerstats.errors import ConfigError
from steerstats.items import Query
from steerstats.judges import create_judge, registry
from steerstats.judges.base import JudgeInput, Prompt
from steerstats.judges.sentiment import compound
from steerstats.methods.base import Intervention

# VADER's own README examples (vaderSentiment 3.3.2, "Code Examples"), compound scores as
# printed there.
README_EXAMPLES = [
    ("VADER is smart, handsome, and funny.", 0.8316),
    ("VADER is smart, handsome, and funny!", 0.8439),
    ("VADER is very smart, handsome, and funny.", 0.8545),
    ("VADER is VERY SMART, handsome, and FUNNY.", 0.9227),
    ("VADER is VERY SMART, handsome, and FUNNY!!!", 0.9342),
    ("VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!", 0.9469),
    ("VADER is not smart, handsome, nor funny.", -0.7424),
    ("The book was good.", 0.4404),
    ("At least it isn't a horrible book.", 0.431),
    ("The book was only kind of good.", 0.3832),
    (
        "The plot was good, but the characters are uncompelling and the dialog is not great.",
        -0.7042,
    ),
    ("Today SUX!", -0.5461),
    ("Today only kinda sux! But I'll get by, lol", 0.5249),
    ("Make sure you :) or :D today!", 0.8633),
]


@pytest.mark.parametrize(("text", "expected"), README_EXAMPLES)
def test_compound_matches_vaders_readme(text: str, expected: float) -> None:
    assert compound(text) == pytest.approx(expected, abs=5e-5)


def item(response: str, sentiment: str | None) -> JudgeInput:
    return JudgeInput(
        query=Query("q", "be cheerful", sentiment=sentiment),
        prompt=Prompt("p", "How was your day?", "open"),
        response=response,
        generation_key="g",
        intervention=Intervention(),
    )


def test_score_is_signed_by_the_declared_direction() -> None:
    judge = create_judge("sentiment")
    text = "VADER is smart, handsome, and funny."
    pos = asyncio.run(judge.score(item(text, "positive"), 0, None))
    neg = asyncio.run(judge.score(item(text, "negative"), 0, None))
    assert [s.metric for s in pos] == ["sentiment"]
    assert pos[0].value == pytest.approx(0.8316, abs=5e-5)
    assert neg[0].value == pytest.approx(-0.8316, abs=5e-5)
    # Text without charged words is neutral, 0 in both directions (a real score, not missing).
    flat = asyncio.run(judge.score(item("Arubit Arubit YOODEN", "negative"), 0, None))
    assert flat[0].value == 0.0 and flat[0].reason is None


def test_empty_response_is_nan_with_a_reason() -> None:
    out = asyncio.run(create_judge("sentiment").score(item("  ", "positive"), 0, None))
    assert math.isnan(out[0].value) and out[0].reason == "empty response"


def test_queries_without_a_direction_are_refused_by_name() -> None:
    judge = create_judge("sentiment")
    queries = [Query("up", "be upbeat", sentiment="positive"), Query("be-funny", "be funny"),
               Query("be-terse", "be terse")]
    with pytest.raises(ConfigError, match="'be-funny', 'be-terse' declare none"):
        judge.check_queries(queries)
    with pytest.raises(ConfigError, match="'q' declare none"):
        asyncio.run(judge.score(item("good", None), 0, None))


def test_registered_as_an_automatic_metric_on_minus_one_to_one() -> None:
    info = registry.info("sentiment")
    assert info.metadata == {"metrics": ("sentiment",), "scale": (-1, 1)}
    judge = create_judge("sentiment")
    assert JudgeSpec(name="sentiment").rater_label == "auto"  # computed: no judge model
    assert judge.identity()["vader"] == "3.3.2"


def test_query_direction_is_validated() -> None:
    with pytest.raises(ValueError, match="sentiment must be one of 'positive', 'negative'"):
        Query("q", "be happy", sentiment="happy")


EXPERIMENT = """
[experiment]
name = "s"
cache_dir = "cache"

[[models]]
backend = "mock"
model = "m"

[[methods]]
name = "control"

[queries]
items = [
  {{ text = "be cheerful", sentiment = "positive" }},
  {{ text = "be gloomy", sentiment = {gloomy} }},
]

[prompts.open]
items = [{{ text = "hello" }}, {{ text = "tell me about rain" }}]

[[judges]]
name = "sentiment"
"""


def test_config_items_carry_the_direction(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(EXPERIMENT.format(gloomy='"negative"'))
    cfg = load_config(path)
    assert [(q.id, q.sentiment) for q in experiment_queries(cfg)] == [
        ("be-cheerful", "positive"), ("be-gloomy", "negative")]
    collect(cfg, progress=False)
    _, scores = tables(cfg)
    assert set(scores["metric"]) == {"sentiment"} and len(scores) == 4
    assert scores["value"].between(-1, 1).all() and (scores["rater"] == "auto").all()


def test_a_bad_direction_in_the_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"queries\.items\[1\]\.sentiment"):
        parse_config(EXPERIMENT.format(gloomy='"sad"'))


def test_planning_refuses_queries_without_a_direction(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(EXPERIMENT.replace(', sentiment = {gloomy}', "").format())
    with pytest.raises(ConfigError, match=r"judge 'sentiment'.*'be-gloomy' declare none"):
        estimate(load_config(path))


def test_query_files_carry_the_direction(tmp_path: Path) -> None:
    (tmp_path / "q.json").write_text(
        '[{"text": "be upbeat", "sentiment": "positive"}, {"text": "be curt"}]')
    (tmp_path / "q.csv").write_text("text,sentiment\nbe gloomy,negative\nbe brief,\n")
    assert [q.sentiment for q in load_queries(tmp_path / "q.json")] == ["positive", None]
    assert [q.sentiment for q in load_queries(tmp_path / "q.csv")] == ["negative", None]
    (tmp_path / "bad.csv").write_text("text,sentiment\nbe gloomy,sad\n")
    with pytest.raises(ValueError, match=r"bad\.csv: query 1 \(be-gloomy\): sentiment"):
        load_queries(tmp_path / "bad.csv")
