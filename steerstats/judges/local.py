"""Judges that run on the local backend: a next-token-probability rubric judge and two
automatic metrics, for the offline demo (no API key, no internet).

- ``local_behavior`` / ``local_coherence``: the local model reads a 1-5 rubric and the
  response, and the reply's next-token distribution over the digit tokens "1".."5" gives the
  score: the probability-weighted expected score (``<criterion>``) and the most likely digit
  (``<criterion>_argmax``). Each repeat uses a different rubric wording, so judge reliability
  across wordings is measurable (one wording judged twice would give the same number twice);
  ``wording = i`` keeps only wording ``i``, so that several judge entries, each with its own
  ``rater``, put the wordings in a panel of raters instead.
  When the digits together get less than ``min_digit_mass`` (default 0.5) of the probability,
  the model was not answering with a score: both values are NaN with the reason.
- ``coherence_ppl``: perplexity of the response (as the reply to its prompt, without any
  system prompt) under the unsteered model, and ``coherence_nll``, its logarithm (the mean
  token loss; perplexity is heavy-tailed, its log much less so). Higher is less fluent.
- ``capability_nll``: the steered model's mean token loss (nats) on a fixed neutral reference
  text, as the reply to a fixed request, under the generation's own intervention (its system
  prompt and steering). It does not depend on the response, so it is computed once per
  intervention and repeated for each generation. A capability proxy for models too small
  for MMLU.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from steerstats.backends.base import Backend, Message
from steerstats.errors import ConfigError
from steerstats.judges._registry import judge
from steerstats.judges.base import Judge, JudgeInput, Score, text_digest

DIGITS = ("1", "2", "3", "4", "5")
DEFAULT_MIN_DIGIT_MASS = 0.5
ANSWER_PREFIX = "Rating: "

# Short wordings, instructions first: replies judged with the same wording (and query) share
# the rubric's tokens, which the local backend then runs once per batch.
BEHAVIOR_WORDINGS: tuple[str, ...] = (
    "Rate 1-5 how much the reply does this: {query}. 1 = not at all, 5 = fully.\n\n"
    "Question: {prompt}\nReply: {response}",
    "Instruction to the assistant: {query}. Rate from 1 (ignored) to 5 (followed completely) how "
    "well the assistant's reply follows it.\n\nUser: {prompt}\nAssistant: {response}",
    "Does this answer {query}? 1 = no trace, 5 = in every sentence.\n\nQ: {prompt}\nA: {response}",
)

COHERENCE_WORDINGS: tuple[str, ...] = (
    "Rate 1-5 how coherent the reply is (grammatical, sensible, on topic). 1 = gibberish, "
    "5 = perfectly clear.\n\nQuestion: {prompt}\nReply: {response}",
    "From 1 (broken, repetitive or meaningless) to 5 (fluent and well-formed), how fluent is the "
    "assistant's reply?\n\nUser: {prompt}\nAssistant: {response}",
    "Is this answer readable and sensible? 1 = nonsense, 5 = careful writing.\n\n"
    "Q: {prompt}\nA: {response}",
)

CAPABILITY_REQUEST = "Please write an informative passage."


def digit_score(
    probs: Mapping[str, float], min_mass: float = DEFAULT_MIN_DIGIT_MASS
) -> tuple[float, float] | str:
    """Expected score and argmax digit from the probabilities of "1".."5", or the reason why not.

    The expected score renormalises over the digits: ``sum(d * p_d) / sum(p_d)``. If
    ``sum(p_d) < min_mass`` the model was mostly not answering with a digit and the result is
    a reason string (the caller records NaN with it).
    """
    missing = [d for d in DIGITS if d not in probs]
    if missing:
        raise ValueError(f"digit probabilities lack {missing}; expected keys {list(DIGITS)}")
    values = [float(probs[d]) for d in DIGITS]
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"digit probabilities must be finite and >= 0, got {values}")
    mass = sum(values)
    if not mass >= min_mass:
        return f"digits 1-5 got total probability {mass:.3f} < {min_mass} (no score given)"
    expected = sum((i + 1) * v for i, v in enumerate(values)) / mass
    argmax = float(max(range(5), key=lambda i: values[i]) + 1)
    return expected, argmax


def _require(backend: Backend | None, method_name: str, judge_name: str) -> Any:
    fn = getattr(backend, method_name, None) if backend is not None else None
    if fn is None:
        name = getattr(backend, "name", type(backend).__name__) if backend is not None else "none"
        raise ConfigError(
            f"judge {judge_name!r} needs the 'local' backend (it reads log-probabilities); "
            f"it was given backend {name!r}"
        )
    return fn


class LocalRubricJudge(Judge):
    """A 1-5 rubric read off the local model's next-token probabilities on the digits."""

    def __init__(
        self,
        criterion: str,
        wordings: Sequence[str],
        repeats: int,
        min_digit_mass: float,
        wording: int | None = None,
    ) -> None:
        if wording is not None:  # one rater of a panel of wordings
            if not 0 <= wording < len(wordings):
                raise ConfigError(
                    f"local_{criterion}: wording must be 0..{len(wordings) - 1} (an index into "
                    f"the wordings), got {wording}"
                )
            wordings = [wordings[wording]]
        if not wordings:
            raise ConfigError(f"local_{criterion}: wordings must be a non-empty list")
        for w in wordings:
            if "{response}" not in w:
                raise ConfigError(
                    f"local_{criterion}: every wording needs a {{response}} field; got {w!r}"
                )
        if not 0 < min_digit_mass <= 1:
            raise ConfigError(
                f"local_{criterion}: min_digit_mass must be in (0, 1], got {min_digit_mass}"
            )
        self.criterion = criterion
        self.metrics = (criterion, f"{criterion}_argmax")
        self.wordings = tuple(wordings)
        if not 1 <= int(repeats) <= len(self.wordings):
            raise ConfigError(
                f"local_{criterion}: repeats must be between 1 and the number of wordings "
                f"({len(self.wordings)}); each repeat uses a different wording, and the same "
                f"wording twice would repeat the same number. Got repeats={repeats}; add "
                "wordings or lower it."
            )
        self.min_digit_mass = min_digit_mass

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "criterion": self.criterion,
            "wordings": text_digest(*self.wordings),
            "min_digit_mass": self.min_digit_mass,
        }

    def messages(self, item: JudgeInput, repeat: int) -> list[Message]:
        """The rubric for judging occasion ``repeat`` (wording ``repeat``), filled in."""
        if not 0 <= repeat < len(self.wordings):
            raise ValueError(
                f"repeat {repeat} has no rubric wording (there are {len(self.wordings)})"
            )
        text = (
            self.wordings[repeat]
            .replace("{query}", item.query.text)
            .replace("{prompt}", item.prompt.text)
            .replace("{response}", item.response)
        )
        return [{"role": "user", "content": text}]

    async def score(self, item: JudgeInput, repeat: int, backend: Backend | None) -> list[Score]:
        probs_fn = _require(backend, "next_token_probs", f"local_{self.criterion}")
        value, argmax = self.metrics
        if not item.response.strip():
            reason = "empty response"
            return [Score.missing(value, reason), Score.missing(argmax, reason)]
        probs = await probs_fn(self.messages(item, repeat), DIGITS, prefix=ANSWER_PREFIX)
        result = digit_score(probs, self.min_digit_mass)
        if isinstance(result, str):
            return [Score.missing(value, result), Score.missing(argmax, result)]
        return [Score(value, result[0]), Score(argmax, result[1])]


@judge("local_behavior", metrics=("behavior", "behavior_argmax"), scale=(1, 5), repeats=2)
def local_behavior(
    repeats: int,
    wordings: Sequence[str] = BEHAVIOR_WORDINGS,
    min_digit_mass: float = DEFAULT_MIN_DIGIT_MASS,
    wording: int | None = None,
) -> Judge:
    """Behaviour (does the response do what the steering query asks?) on the local model."""
    return LocalRubricJudge("behavior", wordings, repeats, min_digit_mass, wording)


@judge("local_coherence", metrics=("coherence", "coherence_argmax"), scale=(1, 5), repeats=2)
def local_coherence(
    repeats: int,
    wordings: Sequence[str] = COHERENCE_WORDINGS,
    min_digit_mass: float = DEFAULT_MIN_DIGIT_MASS,
    wording: int | None = None,
) -> Judge:
    """Coherence (is the response fluent and sensible?) on the local model."""
    return LocalRubricJudge("coherence", wordings, repeats, min_digit_mass, wording)


class CoherencePerplexity(Judge):
    """Perplexity of the response under the unsteered model (conditioned on the prompt), and
    its logarithm, the mean token loss, whose distribution is far less skewed."""

    metrics = ("coherence_ppl", "coherence_nll")

    async def score(self, item: JudgeInput, repeat: int, backend: Backend | None) -> list[Score]:
        nll_fn = _require(backend, "token_nll", "coherence_ppl")
        reason = None
        if not item.response.strip():
            reason = "empty response"
        else:
            loss = await nll_fn(
                [{"role": "user", "content": item.prompt.text}], item.response, steering=None
            )
            if loss.n_tokens == 0:
                reason = "response has no tokens"
        if reason is not None:
            return [Score.missing("coherence_ppl", reason), Score.missing("coherence_nll", reason)]
        mean = loss.total_nll / loss.n_tokens
        return [Score("coherence_ppl", math.exp(mean)), Score("coherence_nll", mean)]


@judge("coherence_ppl", metrics=("coherence_ppl", "coherence_nll"))
def coherence_ppl() -> Judge:
    """Perplexity (``coherence_ppl``) and mean token loss in nats (``coherence_nll``) of each
    response under the unsteered local model; both rise as text degrades."""
    return CoherencePerplexity()


class CapabilityNLL(Judge):
    """Mean token loss of the steered model on a fixed reference text."""

    metrics = ("capability_nll",)

    def __init__(self, text: str | None, request: str) -> None:
        if text is not None and not text.strip():
            raise ConfigError(
                "capability_nll: text must be non-empty (or left out for the shipped one)"
            )
        self._text = text
        self.request = request
        self._values: dict[str, float] = {}
        self._pending: dict[str, asyncio.Task[float]] = {}

    @property
    def text(self) -> str:
        """The reference text: the given one, or the one shipped with steerstats' datasets."""
        if self._text is None:
            from steerstats.datasets import reference_text

            self._text = reference_text()
        return self._text

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "reference": text_digest(self.text, self.request)}

    async def _loss(self, item: JudgeInput, backend: Backend | None) -> float:
        nll_fn = _require(backend, "token_nll", "capability_nll")
        messages: list[Message] = []
        if item.intervention.system_prompt:
            messages.append({"role": "system", "content": item.intervention.system_prompt})
        messages.append({"role": "user", "content": self.request})
        loss = await nll_fn(messages, self.text, steering=item.intervention.steering)
        return float(loss.total_nll / loss.n_tokens)

    async def score(self, item: JudgeInput, repeat: int, backend: Backend | None) -> list[Score]:
        # One computation per intervention (and backend); concurrent callers share it.
        key = json.dumps([item.intervention.canonical(), id(backend)], sort_keys=True)
        if key not in self._values:
            loop = asyncio.get_running_loop()
            task = self._pending.get(key)
            if task is None or task.get_loop() is not loop:
                task = self._pending[key] = loop.create_task(self._loss(item, backend))
            try:
                self._values[key] = await asyncio.shield(task)
            finally:
                if task.done() and self._pending.get(key) is task:
                    del self._pending[key]
        return [Score("capability_nll", self._values[key])]


@judge("capability_nll", metrics=("capability_nll",))
def capability_nll(text: str | None = None, request: str = CAPABILITY_REQUEST) -> Judge:
    """The steered model's mean loss (nats/token) on a neutral reference text, under each
    generation's intervention; ``text`` None uses the shipped reference text."""
    return CapabilityNLL(text, request)
