"""Rubric judges: parsing (NaN with a reason, never a made-up number) and end to end on mock."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from steerstats.backends.base import Backend, GenerationRequest, GenerationResult
from steerstats.backends.mock import MockBackend
from steerstats.errors import ConfigError
from steerstats.judges import JudgeInput, Prompt, create_judge, registry
from steerstats.judges.rubric import (
    BEHAVIOR_TEMPLATE,
    COHERENCE_TEMPLATE,
    SYSTEM_TEMPLATE,
    RubricJudge,
    parse_score,
)
from steerstats.methods.base import Intervention, Query


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("The reply is mildly amusing.\n<score>3</score>", 3.0),
        ("<score> 5 </score>", 5.0),
        ("<SCORE>1</SCORE>", 1.0),
        ("Draft <score>2</score>; on reflection <score>4</score>", 4.0),
        ("<score>4.0</score>", 4.0),
    ],
)
def test_well_formed_scores(reply: str, value: float) -> None:
    score = parse_score(reply, "behavior")
    assert (score.metric, score.value, score.reason) == ("behavior", value, None)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("<score>0</score>", "unparsed: score 0 is outside 1-5"),
        ("<score>6</score>", "unparsed: score 6 is outside 1-5"),
        ("<score>-2</score>", "unparsed: score -2 is outside 1-5"),
        ("<score>2.5</score>", "unparsed: score 2.5 is not an integer"),
        ("<score>four</score>", "unparsed: <score> tag holds 'four', not an integer"),
        ("<score>4/5</score>", "unparsed: <score> tag holds '4/5', not an integer"),
        ("<score></score>", "unparsed: empty <score> tag"),
        ("Quite funny. Score: 4", "unparsed: no <score> tag"),
        ("Quite funny. <score>4", "unparsed: <score> tag not closed"),
        ("", "unparsed: empty reply"),
        (None, "unparsed: empty reply"),
    ],
)
def test_malformed_scores_are_nan_with_reason(reply: str | None, reason: str) -> None:
    score = parse_score(reply, "coherence")
    assert score.metric == "coherence" and math.isnan(score.value) and score.reason == reason


def item(criteria: str | None = "1: dull.\n3: some jokes.\n5: hilarious.") -> JudgeInput:
    return JudgeInput(
        query=Query(id="be-funny", text="be funny", criteria=criteria),
        prompt=Prompt(id="common-00", text="Explain how a computer works", prompt_set="open"),
        response="A computer is a very fast, very obedient rock.",
        generation_key="k" * 64,
        intervention=Intervention(),
    )


def test_registered_with_metadata() -> None:
    assert {"behavior", "coherence"} <= set(registry.names())
    assert registry.info("behavior").metadata == {"metrics": ("behavior",), "scale": (1, 5)}
    assert registry.info("coherence").metadata == {"metrics": ("coherence",), "scale": (1, 5)}
    with pytest.raises(ConfigError, match="unknown parameter"):
        create_judge("coherence", {"use_criteria": True})


def test_messages_use_our_rubric_and_the_querys_criteria() -> None:
    judge = create_judge("behavior")
    assert isinstance(judge, RubricJudge)
    system, user = judge.messages(item())
    assert system == {"role": "system", "content": SYSTEM_TEMPLATE}
    text = user["content"]
    assert '"be funny"' in text and "5: hilarious." in text
    assert "Explain how a computer works" in text and "obedient rock" in text
    assert text.rstrip().endswith("<score>N</score> with N from 1 to 5.")
    without = judge.messages(item(criteria=None))[1]["content"]
    assert "5: strong and sustained" in without  # the generic scale when a query has no criteria
    ignoring = create_judge("behavior", {"use_criteria": False}).messages(item())[1]["content"]
    assert "hilarious" not in ignoring


def test_coherence_ignores_the_query() -> None:
    text = create_judge("coherence").messages(item())[1]["content"]
    assert "be funny" not in text and "hilarious" not in text and "coherence" in text


def test_repeat_index_is_the_seed_and_temperature_defaults_above_zero() -> None:
    judge = create_judge("behavior", {"max_tokens": 200}, repeats=3)
    assert isinstance(judge, RubricJudge)
    requests = [judge.request(item(), r) for r in range(3)]
    assert [r.seed for r in requests] == [0, 1, 2]
    assert all(r.temperature > 0 and r.max_tokens == 200 for r in requests)
    assert len({str(r.canonical()) for r in requests}) == 3


def test_identity_has_a_template_digest_that_tracks_the_wording() -> None:
    behavior = create_judge("behavior").identity()
    coherence = create_judge("coherence").identity()
    assert len(behavior["template_digest"]) == 16
    assert behavior["template_digest"] != coherence["template_digest"]
    assert behavior == create_judge("behavior").identity()
    edited = RubricJudge("behavior", BEHAVIOR_TEMPLATE + " Be strict.").identity()
    assert edited["template_digest"] != behavior["template_digest"]
    assert COHERENCE_TEMPLATE not in str(behavior)  # a digest, not the text


def test_parameter_validation() -> None:
    with pytest.raises(ConfigError, match=r"repeats is not a judge parameter.*\[\[judges\]\]"):
        create_judge("behavior", {"repeats": 2})  # one owner: the experiment's judge entry
    with pytest.raises(ValueError, match="temperature must be in"):
        create_judge("coherence", {"temperature": 3.0})


class Scripted(Backend):
    """Replies from a list, recording the requests it got."""

    name = "scripted"

    def __init__(self, replies: list[str]) -> None:
        super().__init__("scripted-judge")
        self.replies = replies
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        return GenerationResult(text=self.replies[len(self.requests) - 1])


def mock_score(model: str, request: GenerationRequest) -> float:
    """The score steerstats.backends.mock answers: 1 + (first 8 hex digits of its digest) % 5."""
    digest = hashlib.sha256(
        json.dumps([model, request.canonical()], sort_keys=True).encode()
    ).hexdigest()
    return float(1 + int(digest[:8], 16) % 5)


async def test_end_to_end_on_the_mock_backend() -> None:
    judge = create_judge("behavior", repeats=3)
    assert isinstance(judge, RubricJudge)
    backend = MockBackend("mock-judge")
    scores = [await judge.score(item(), r, backend) for r in range(3)]
    for r, [score] in enumerate(scores):
        assert score.metric == "behavior" and score.reason is None
        assert score.value == mock_score("mock-judge", judge.request(item(), r))
    assert await judge.score(item(), 0, backend) == scores[0]
    coherence = create_judge("coherence")
    assert isinstance(coherence, RubricJudge)
    [score] = await coherence.score(item(), 0, backend)
    assert (score.metric, score.value) == (
        "coherence",
        mock_score("mock-judge", coherence.request(item(), 0)),
    )


async def test_end_to_end_unparsable_reply_is_nan_with_reason() -> None:
    backend = Scripted(["Funny enough. <score>4</score>", "I would say 4 out of 5."])
    judge = create_judge("behavior", repeats=2)
    good = await judge.score(item(), 0, backend)
    bad = await judge.score(item(), 1, backend)
    assert good[0].value == 4.0
    assert math.isnan(bad[0].value) and bad[0].reason == "unparsed: no <score> tag"
    assert [r.seed for r in backend.requests] == [0, 1]


async def test_judge_without_backend_says_what_to_configure() -> None:
    with pytest.raises(ValueError, match="needs a chat backend"):
        await create_judge("behavior").score(item(), 0, None)
