"""Rubric judges on any chat backend: ``behavior`` and ``coherence``, integers 1-5.

The judge model is asked to reason first and end with ``<score>N</score>``. A reply without a
readable integer 1-5 in that tag is NaN with the reason, never a made-up number.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from steerstats.backends.base import Backend, GenerationRequest
from steerstats.judges._registry import judge
from steerstats.judges.base import Judge, JudgeInput, Score, text_digest

SCALE = (1, 5)

SYSTEM_TEMPLATE = (
    "You grade replies written by an AI assistant. Read the user's message and the assistant's "
    "reply, then grade the reply on one property only, using the scale you are given. Ignore "
    "every other quality of the reply. Write a short justification first (two to four "
    "sentences), then finish with the grade alone inside score tags, like <score>3</score>. "
    "The grade must be a whole number from 1 to 5."
)

# What every rubric asks about: the exchange, then the answer format.
_EXCHANGE = """

User's message:
<<<
{prompt}
>>>

Assistant's reply:
<<<
{response}
>>>

Justify briefly, then give the grade as <score>N</score> with N from 1 to 5."""

BEHAVIOR_TEMPLATE = """Property: how strongly the reply shows this behaviour: "{query}".

Scale:
{scale}""" + _EXCHANGE

BEHAVIOR_DEFAULT_SCALE = """1: the behaviour is absent.
2: a faint trace of it.
3: present in parts of the reply, not throughout.
4: clear in most of the reply.
5: strong and sustained across the whole reply."""

COHERENCE_TEMPLATE = """Property: coherence. Is the reply well-formed, fluent and logically \
connected, and does it stay on the user's message? Judge the writing, not whether you agree \
with it or its style.

Scale:
1: incoherent: broken or repeated text, gibberish, or unrelated to the message.
2: mostly hard to follow: frequent breaks in logic or grammar, drifts off topic.
3: understandable but with noticeable lapses, contradictions or digressions.
4: clear and connected, with minor slips.
5: fully coherent: fluent, well organised and on point throughout.""" + _EXCHANGE

_SCORE_TAG = re.compile(r"<score>(.*?)</score>", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def parse_score(text: str | None, metric: str, scale: tuple[int, int] = SCALE) -> Score:
    """Read the last ``<score>N</score>`` of a judge reply: an integer within ``scale`` or NaN.

    >>> parse_score("Clear and funny. <score>4</score>", "behavior").value
    4.0
    >>> parse_score("<score>6</score>", "behavior").reason
    'unparsed: score 6 is outside 1-5'
    """
    low, high = scale
    if not isinstance(text, str) or not text.strip():
        return Score.missing(metric, "unparsed: empty reply")
    tags = _SCORE_TAG.findall(text)
    if not tags:
        if re.search(r"<score>", text, re.IGNORECASE):
            return Score.missing(metric, "unparsed: <score> tag not closed")
        return Score.missing(metric, "unparsed: no <score> tag")
    content = tags[-1].strip()
    if not content:
        return Score.missing(metric, "unparsed: empty <score> tag")
    if not _NUMBER.fullmatch(content):
        shown = content if len(content) <= 30 else content[:27] + "..."
        return Score.missing(metric, f"unparsed: <score> tag holds {shown!r}, not an integer")
    number = float(content)
    if not number.is_integer():
        return Score.missing(metric, f"unparsed: score {content} is not an integer")
    if not low <= number <= high:
        return Score.missing(metric, f"unparsed: score {int(number)} is outside {low}-{high}")
    return Score(metric=metric, value=number)


class RubricJudge(Judge):
    """A 1-5 rubric judge: one chat request per (generation, repeat), read by ``parse_score``."""

    def __init__(
        self,
        metric: str,
        template: str,
        *,
        temperature: float = 0.7,
        max_tokens: int = 400,
        use_criteria: bool = True,
    ) -> None:
        if not 0 <= temperature <= 2:
            raise ValueError(f"{metric} judge: temperature must be in [0, 2], got {temperature!r}")
        if not isinstance(max_tokens, int) or max_tokens < 16:
            raise ValueError(
                f"{metric} judge: max_tokens must be an integer >= 16, got {max_tokens!r}"
            )
        self.metric = metric
        self.metrics = (metric,)
        self.template = template
        self.temperature = float(temperature)
        self.max_tokens = max_tokens
        self.use_criteria = use_criteria

    def messages(self, item: JudgeInput) -> list[dict[str, str]]:
        """The chat messages sent to the judge model for ``item``."""
        criteria = item.query.criteria if self.use_criteria and item.query.criteria else None
        user = self.template.format(
            query=item.query.text,
            scale=criteria or BEHAVIOR_DEFAULT_SCALE,
            prompt=item.prompt.text,
            response=item.response,
        )
        return [{"role": "system", "content": SYSTEM_TEMPLATE}, {"role": "user", "content": user}]

    def request(self, item: JudgeInput, repeat: int) -> GenerationRequest:
        """The judge request for judging occasion ``repeat`` (its index is also the seed)."""
        return GenerationRequest(
            messages=self.messages(item),
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=repeat,
        )

    def identity(self) -> dict[str, Any]:
        return {
            "name": getattr(self, "registry_name", self.metric),
            "metric": self.metric,
            "template_digest": text_digest(SYSTEM_TEMPLATE, self.template, BEHAVIOR_DEFAULT_SCALE),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "use_criteria": self.use_criteria,
        }

    async def score(self, item: JudgeInput, repeat: int, backend: Backend | None) -> list[Score]:
        if backend is None:
            raise ValueError(
                f"the {self.metric} judge needs a chat backend; give the judge a backend and model "
                "in the experiment file"
            )
        result = await backend.generate(self.request(item, repeat))
        return [replace(parse_score(result.text, self.metric), reply=result.text)]


@judge("behavior", metrics=("behavior",), scale=SCALE)
def behavior(
    temperature: float = 0.7,
    max_tokens: int = 400,
    use_criteria: bool = True,
) -> Judge:
    """How strongly the response shows the queried behaviour, 1-5.

    Uses the query's criteria (what a 1, 3 and 5 look like) when it has them and
    ``use_criteria`` is true. ``temperature`` > 0 keeps repeated judgings independent (the
    repeat index is also the request seed); ``max_tokens`` for the judge's reply.
    """
    return RubricJudge(
        "behavior",
        BEHAVIOR_TEMPLATE,
        temperature=temperature,
        max_tokens=max_tokens,
        use_criteria=use_criteria,
    )


@judge("coherence", metrics=("coherence",), scale=SCALE)
def coherence(
    temperature: float = 0.7,
    max_tokens: int = 400,
) -> Judge:
    """How fluent, well-formed and on-topic the response is, 1-5, whatever the behaviour.

    Parameters as for ``behavior``.
    """
    return RubricJudge(
        "coherence",
        COHERENCE_TEMPLATE,
        temperature=temperature,
        max_tokens=max_tokens,
        use_criteria=False,
    )
