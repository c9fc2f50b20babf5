"""MMLU correctness: computed from the <answer> tag; unreadable answers are NaN with a reason."""

from __future__ import annotations

import math

import pytest

from steerstats.backends.base import GenerationRequest
from steerstats.backends.mock import MockBackend
from steerstats.datasets import mmlu_prompts
from steerstats.judges import JudgeInput, Prompt, create_judge, default_repeats, registry
from steerstats.methods.base import Intervention, Query

QUESTION = Prompt(
    id="mmlu-000", text="q", prompt_set="mmlu", answer="B", subject="abstract_algebra"
)


def item(response: str, prompt: Prompt = QUESTION) -> JudgeInput:
    return JudgeInput(Query("be-funny", "be funny"), prompt, response, "k", Intervention())


def test_registered_as_auto_rater_on_mmlu_only() -> None:
    judge = create_judge("mmlu")
    assert registry.info("mmlu").metadata["metrics"] == ("accuracy",)
    assert judge.metrics == ("accuracy",) and default_repeats("mmlu") == 1
    assert judge.applies_to(QUESTION)
    assert not judge.applies_to(
        Prompt(id="common-00", text="Why is the sky blue?", prompt_set="open")
    )


@pytest.mark.parametrize(
    ("response", "value"),
    [
        ("<thinking>...</thinking><answer>B</answer>", 1.0),
        ("<answer>(b)</answer>", 1.0),
        ("<answer>C</answer>", 0.0),
        ("<answer>A</answer> no, <answer>B</answer>", 1.0),
    ],
)
async def test_correct_and_wrong(response: str, value: float) -> None:
    [score] = await create_judge("mmlu").score(item(response), 0, None)
    assert (score.metric, score.value, score.reason) == ("accuracy", value, None)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("The answer is B.", "unparsed: no <answer> tag"),
        (
            "<answer>B or C</answer>",
            "unparsed: <answer> tag holds 'B or C', not a single letter A-D",
        ),
        ("<answer></answer>", "unparsed: empty <answer> tag"),
    ],
)
async def test_unreadable_answer_is_nan_not_wrong(response: str, reason: str) -> None:
    [score] = await create_judge("mmlu").score(item(response), 0, None)
    assert math.isnan(score.value) and score.reason == reason


async def test_missing_key_is_nan_with_reason() -> None:
    keyless = Prompt(id="mmlu-x", text="q", prompt_set="mmlu")
    [score] = await create_judge("mmlu").score(item("<answer>A</answer>", keyless), 0, None)
    assert math.isnan(score.value) and score.reason == "no answer key for prompt 'mmlu-x'"


async def test_grades_mock_replies_to_shipped_questions() -> None:
    judge = create_judge("mmlu")
    backend = MockBackend("mock-model")
    values = []
    for prompt in mmlu_prompts(20, seed=0):
        reply = await backend.generate(
            GenerationRequest(messages=[{"role": "user", "content": prompt.text}])
        )
        [score] = await judge.score(item(reply.text, prompt), 0, None)
        expected = 1.0 if reply.text.split("<answer>")[1][0] == prompt.answer else 0.0
        assert score.value == expected
        values.append(score.value)
    assert set(values) == {0.0, 1.0}
