"""A prompt set's own system message ([prompts.<set>] system) and MMLU question wording
([prompts.mmlu] template): validated at load, sent as the seed study sent them (a method's
system prompt replaces the set's), and left out of cache keys when not set."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from steerstats.collect import with_plan
from steerstats.collect.plan import Plan
from steerstats.config import Experiment, init_experiment, load_config, parse_config
from steerstats.datasets import mmlu_prompts
from steerstats.errors import ConfigError
from tests._shared import shared_path

SEED = shared_path("seed-study")
needs_seed_study = pytest.mark.skipif(SEED is None, reason="../shared/seed-study not present")

BASE = """
[experiment]
name = "keys"
cache_dir = "cache"

[[models]]
label = "m"
backend = "mock"
model = "mock-model"

[[methods]]
name = "control"

[[methods]]
name = "prompt"

[queries]
items = [{ text = "be funny" }, { text = "be formal" }]

[prompts.open]
items = [{ text = "Tell me about rain." }, { text = "How do bikes work?" }]
OPEN_EXTRA

[prompts.mmlu]
n = 3
MMLU_EXTRA

[sampling]
max_tokens = 32
seed = 7

[[judges]]
name = "mmlu"
"""

# The keys of BASE (no system, no template) as computed before either option existed: a
# cache collected then must keep every result.
GOLDEN = (27, "248a151debf475dca9352931a228c79d7a46fb4cae33b00c9b58ac0ef8e05127")

STUDY_TEMPLATE = (
    "{question}\n{choices}\n\nThis is a Chain-of-Thought (CoT) task.\nFirst, think step-by-step "
    "inside <thinking>...</thinking> tags.\nYou MUST NOT write any reasoning outside the "
    "<thinking> block.\nThen, give only the final answer \u2014 a single letter (A, B, C, ...) "
    "\u2014 inside <answer>...</answer> tags."
)
STUDY_SYSTEM = (
    "You are a helpful assistant.\nFirst, think step-by-step inside <thinking>...</thinking> "
    "tags.\nYou MUST NOT write any reasoning outside the <thinking> block.\nThen, give only the "
    "final answer inside <answer>...</answer> tags."
)


def config(tmp_path: Path, open_extra: str = "", mmlu_extra: str = "") -> Experiment:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "x.toml"
    path.write_text(BASE.replace("OPEN_EXTRA", open_extra).replace("MMLU_EXTRA", mmlu_extra))
    return load_config(path)


def keys(cfg: Experiment) -> list[str]:
    return with_plan(cfg, lambda p: [*p.generation_keys(), *p.judgement_keys()])


def plan(cfg: Experiment) -> Plan:
    return with_plan(cfg, lambda p: p)


def test_without_system_or_template_the_keys_are_as_before(tmp_path: Path) -> None:
    got = keys(config(tmp_path))
    assert (len(got), hashlib.sha256("\n".join(got).encode()).hexdigest()) == GOLDEN


def test_a_sets_system_message_goes_with_requests_whose_method_sends_none(tmp_path: Path) -> None:
    cfg = config(tmp_path, mmlu_extra='system = "Think, then answer in <answer> tags."')
    p = plan(cfg)
    for g in p.generations:
        assert g.request is not None
        first = g.request.messages[0]
        if g.method == "prompt":  # the method's system prompt replaces the set's
            assert first == {"role": "system",
                             "content": f"You are a helpful assistant. In every reply, "
                                        f"{g.query.text}."}
            assert len(g.request.messages) == 2
        elif g.prompt.prompt_set == "mmlu":
            assert first == {"role": "system", "content": "Think, then answer in <answer> tags."}
        else:  # the open set has no system of its own
            assert [m["role"] for m in g.request.messages] == ["user"]
    # only the MMLU control requests (and their gradings) changed key
    old = plan(config(tmp_path / "old"))
    changed = {(g.method, g.prompt.prompt_set) for g, o in zip(p.generations, old.generations,
                                                                strict=True) if g.key != o.key}
    assert changed == {("control", "mmlu")}


def test_the_open_sets_system_message(tmp_path: Path) -> None:
    p = plan(config(tmp_path, open_extra='system = "Be kind."'))
    control = [g for g in p.generations if g.method == "control"]
    assert {g.prompt.prompt_set for g in control if g.request.messages[0]["role"] == "system"} \
        == {"open"}


def test_an_mmlu_template_words_the_questions_and_keeps_their_ids(tmp_path: Path) -> None:
    plain = plan(config(tmp_path / "a"))
    worded = plan(config(tmp_path / "b", mmlu_extra='template = "Q: {question}\\n{choices}\\n'
                                                    'Answer with one of {letters}."'))
    mm = [g for g in worded.generations if g.prompt.prompt_set == "mmlu"]
    before = [g for g in plain.generations if g.prompt.prompt_set == "mmlu"]
    assert [g.prompt.id for g in mm] == [g.prompt.id for g in before]
    for g in mm:
        assert g.prompt.text.startswith("Q: ") and "\nA. " in g.prompt.text
        assert g.prompt.text.endswith("Answer with one of A, B, C, D.")
        assert g.prompt.answer in "ABCD"
    opened = [g.key for g in worded.generations if g.prompt.prompt_set == "open"]
    assert opened == [g.key for g in plain.generations if g.prompt.prompt_set == "open"]
    assert not {g.key for g in mm} & {g.key for g in before}


@pytest.mark.parametrize(("template", "problem"), [
    ("{question} {choice}", "unknown placeholder {choice}"),
    ("{question}", "must contain {choices}"),
    ("{choices}", "must contain {question}"),
    ("{question}\n{choices} {", "literal braces"),
    ("{question!r}\n{choices}", "no format spec or conversion"),
    ("{question:>9}\n{choices}", "no format spec or conversion"),
    ("{0}{question}{choices}", "unknown placeholder {0}"),
])
def test_a_bad_template_names_file_and_field(tmp_path: Path, template: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, mmlu_extra=f"template = {json.dumps(template)}")
    msg = str(err.value)
    assert str(tmp_path / "x.toml") in msg and "prompts.mmlu.template" in msg and problem in msg


def test_an_empty_system_message_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"prompts\.open\.system"):
        config(tmp_path, open_extra='system = ""')


def test_literal_braces_are_written_doubled(tmp_path: Path) -> None:
    p = plan(config(tmp_path, mmlu_extra='template = "{{json}} {question}\\n{choices}"'))
    assert all(g.prompt.text.startswith("{json} ") for g in p.generations
               if g.prompt.prompt_set == "mmlu")


@needs_seed_study
def test_the_study_template_reproduces_its_mmlu_prompts() -> None:
    assert SEED is not None
    design = json.loads((SEED / "design" / "steering_queries_mmlu.json").read_text())
    theirs = design[0]["topic_specific_prompts"]
    assert all(q["topic_specific_prompts"] == theirs for q in design)
    ours = [p.text for p in mmlu_prompts(source="paper", template=STUDY_TEMPLATE)]
    assert len(ours) == len(theirs) == 171
    differ = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    # one choice in the study's file ends in a space, which the question loader strips
    assert len(differ) == 1 and differ[0][0] == differ[0][1].replace("2. \n", "2.\n")


@needs_seed_study
def test_the_study_system_message_is_its_control_rows() -> None:
    assert SEED is not None
    with (SEED / "results" / "mmlu_llama-3.1-8b_partial.csv").open(encoding="utf-8") as f:
        control = {r["system_prompt"] for r in csv.DictReader(f)
                   if r["steering_method"] == "Control"}
    assert control == {STUDY_SYSTEM}


@pytest.mark.parametrize("name", ["paper", "paper-corrected"])
def test_the_paper_presets_ask_mmlu_in_the_study_words(tmp_path: Path, name: str) -> None:
    cfg = load_config(init_experiment(tmp_path / f"{name}.toml", preset=name))
    assert cfg.prompts.mmlu is not None and cfg.prompts.open is not None
    assert (cfg.prompts.mmlu.system, cfg.prompts.mmlu.template) == (STUDY_SYSTEM, STUDY_TEMPLATE)
    assert cfg.prompts.open.system is None  # the model's system_prompt option: the study's


def test_parse_config_without_a_file_still_validates_the_template() -> None:
    with pytest.raises(ConfigError, match=r"<experiment>: prompts\.mmlu\.template"):
        parse_config(BASE.replace("OPEN_EXTRA", "").replace("MMLU_EXTRA", 'template = "{x}"'))
