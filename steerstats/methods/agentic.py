"""``agentic``: feature search for the query, then an LLM picks features and strengths.

The steered model's backend searches its SAE features for the query text; a chat model (any
backend configured under the name ``picker``) chooses up to ``max_features`` of the candidates
with strengths, answering in JSON or XML tags (``answer_format``; the seed study's picker
answered in XML), validated with pydantic either way. An invalid answer is shown
back to the picker with the problem, up to ``attempts`` times in all; after that the resolution
fails with :class:`FeaturePickError` (recorded as a failure; a pick is never guessed). The
search result and the pick are each resolved once per query x model through the resolution
cache. A ``strengths`` sweep scales the picked values (0 = unsteered).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from steerstats.backends.base import Backend, GenerationRequest, Message
from steerstats.backends.feature_edits import FeatureEdit, describe_validation_error
from steerstats.errors import ConfigError
from steerstats.methods._feature_steering import (
    backend_extra,
    feature_intervention,
    resolution_key,
)
from steerstats.methods._registry import method
from steerstats.methods.base import (
    CachePeek,
    Intervention,
    Method,
    MethodContext,
    Query,
    ResolutionCall,
)

SYSTEM = (
    "You steer a language model by turning up or down features of its sparse autoencoder. "
    "Each feature has a number and a short description of what it represents. You choose the "
    "features, and how strongly to nudge each one, so that the model's replies follow a goal "
    "while staying fluent and correct."
)

INSTRUCTIONS = """Goal: make the model {query} in every reply.

Candidate features:
{candidates}

Choose between 1 and {max_features} of these features. Give each a strength between {lo} and \
{hi}: a positive strength makes the feature more active, a negative one suppresses it. Too \
much steering makes the model incoherent, so prefer moderate strengths and few features.

Answer with only a JSON object in this form, nothing else:
{{"reasoning": "<one or two sentences>",
 "features": [{{"feature": <number>, "strength": <number>}}]}}"""

RETRY = (
    "That answer could not be used: {problem}. Answer again with only the JSON object, using "
    "feature numbers from the list and strengths between {lo} and {hi}."
)

# The same task answered in XML tags (the seed study's picker format; its exact wording is not
# public, so this is steerstats' own text with the study's answer format).
INSTRUCTIONS_XML = INSTRUCTIONS.split("Answer with only")[0] + "\n".join([
    "Answer with only these XML tags, nothing else, one <feature> per chosen feature:",
    "<reasoning>one or two sentences</reasoning>",
    "<features>",
    "<feature><number>feature number</number><strength>strength</strength></feature>",
    "</features>",
])

RETRY_XML = (
    "That answer could not be used: {problem}. Answer again with only the XML tags, using "
    "feature numbers from the list and strengths between {lo} and {hi}."
)
ANSWER_FORMATS = {"json": (INSTRUCTIONS, RETRY), "xml": (INSTRUCTIONS_XML, RETRY_XML)}

SEARCH_NAMESPACE = "goodfire.search"
PICK_NAMESPACE = "agentic.pick"


class FeaturePickError(RuntimeError):
    """The picker gave no valid pick within the allowed attempts (a recorded failure)."""


class _Choice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)
    feature: int
    strength: float


class _Pick(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reasoning: str = ""
    features: list[_Choice]


def _json_object(text: str) -> Any:
    """The JSON object in a reply: the whole text, a fenced block, or the outermost braces."""
    candidates = [text.strip()]
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fence:
        candidates.append(fence.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for c in candidates:
        try:
            return json.loads(c)
        except ValueError:
            continue
    raise ValueError("the reply contains no JSON object")


def _tag(name: str, text: str) -> str | None:
    """The text inside the last ``<name>...</name>`` in ``text`` (None when there is none)."""
    found = re.findall(rf"<{name}>(.*?)</{name}>", text, re.DOTALL | re.IGNORECASE)
    return found[-1].strip() if found else None


def _xml_object(text: str) -> dict[str, Any]:
    """The pick in an XML-tag reply, as the dict the JSON form gives (not yet validated).

    Tags are read with patterns, not an XML parser: replies are model text, where a stray
    "&" or "<" in the reasoning must not void an otherwise clear pick.
    """
    block = _tag("features", text)
    if block is None:
        raise ValueError("the reply contains no <features>...</features> block")
    features = []
    items = re.findall(r"<feature>(.*?)</feature>", block, re.DOTALL | re.IGNORECASE)
    for n, item in enumerate(items, 1):
        number, strength = _tag("number", item), _tag("strength", item)
        if number is None or strength is None:
            raise ValueError(f"<feature> {n} needs a <number> and a <strength>")
        features.append({"feature": number, "strength": strength})
    return {"reasoning": _tag("reasoning", text) or "", "features": features}


def parse_pick(
    text: str,
    candidates: Sequence[FeatureEdit],
    max_features: int,
    lo: float,
    hi: float,
    answer_format: str = "json",
) -> tuple[list[FeatureEdit], str]:
    """Validate a picker reply against the numbered ``candidates``; ValueError says what is wrong.

    ``answer_format`` is "json" or "xml" (the form the instructions asked for). Returns the
    chosen edits (candidate features with the picked strengths) and the reasoning.
    """
    raw = _xml_object(text) if answer_format == "xml" else _json_object(text)
    try:
        pick = _Pick.model_validate(raw)
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        form = "XML" if answer_format == "xml" else "JSON"
        raise ValueError(f"the {form} does not match the required form ({problems})") from None
    if not 1 <= len(pick.features) <= max_features:
        raise ValueError(f"choose between 1 and {max_features} features, got {len(pick.features)}")
    numbers = [c.feature for c in pick.features]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"each feature may be chosen once, got numbers {numbers}")
    edits = []
    for c in pick.features:
        if not 1 <= c.feature <= len(candidates):
            raise ValueError(f"feature {c.feature} is not in the list (1 to {len(candidates)})")
        if not math.isfinite(c.strength) or not lo <= c.strength <= hi:
            raise ValueError(
                f"strength {c.strength} of feature {c.feature} is outside [{lo}, {hi}]"
            )
        edits.append(candidates[c.feature - 1].model_copy(update={"value": float(c.strength)}))
    return edits, pick.reasoning


class Agentic(Method):
    uses_strength = True

    def __init__(
        self,
        picker: str,
        candidates: int,
        max_features: int,
        min_strength: float,
        max_strength: float,
        attempts: int,
        temperature: float,
        max_tokens: int,
        seed: int | None,
        answer_format: str = "json",
    ) -> None:
        if not picker:
            raise ConfigError("method 'agentic': 'picker' must name a configured chat model")
        for name, value, low in (
            ("candidates", candidates, 1),
            ("max_features", max_features, 1),
            ("attempts", attempts, 1),
            ("max_tokens", max_tokens, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"method 'agentic': {name} must be an integer >= {low}, got {value!r}"
                )
        if (
            not (math.isfinite(min_strength) and math.isfinite(max_strength))
            or min_strength >= max_strength
        ):
            raise ConfigError(
                "method 'agentic': need min_strength < max_strength, "
                f"got [{min_strength}, {max_strength}]"
            )
        if answer_format not in ANSWER_FORMATS:
            raise ConfigError(
                f"method 'agentic': answer_format must be one of {', '.join(ANSWER_FORMATS)}, "
                f"got {answer_format!r}"
            )
        self.answer_format = answer_format
        self.instructions, self.retry = ANSWER_FORMATS[answer_format]
        self.picker = picker
        self.candidates = candidates
        self.max_features = max_features
        self.lo, self.hi = float(min_strength), float(max_strength)
        self.attempts = attempts
        self.temperature = float(temperature)
        self.max_tokens = max_tokens
        self.seed = seed

    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        found = await self._search(query, ctx)
        if not found:
            raise FeaturePickError(
                f"feature search for query {query.id!r} found no features to pick from"
            )
        if ctx.chat_backend is None:
            raise ConfigError(
                "method 'agentic' needs a chat backend for its picker, and none is configured"
            )
        picker = ctx.chat_backend(self.picker)
        key = self._pick_key(query, found, picker, ctx)
        picked = await ctx.cache.get_or_compute(
            PICK_NAMESPACE, key, lambda: self._pick(query, found, picker)
        )
        edits = [FeatureEdit.model_validate(e) for e in picked["edits"]]
        return feature_intervention(
            edits,
            strength,
            "agentic",
            query,
            picker=self.picker,
            reasoning=picked["reasoning"],
            pick_attempts=picked["attempts"],
            candidates=[c.model_dump(exclude={"value"}) for c in found],
        )

    def estimate_resolution(
        self, query: Query, strength: float | None, ctx: MethodContext, cached: CachePeek
    ) -> list[ResolutionCall]:
        """One feature search, then the picker's reply (up to ``attempts`` when retried)."""
        backend_extra(ctx.backend, "search_features", "agentic")
        search_key = self._search_key(query, ctx)
        calls = [ResolutionCall("feature search", ctx.backend, SEARCH_NAMESPACE, search_key)]
        if ctx.chat_backend is None:
            return calls
        picker = ctx.chat_backend(self.picker)
        found, raw = cached(SEARCH_NAMESPACE, search_key)
        if found:
            candidates = _candidates(raw)
            key: dict[str, Any] = self._pick_key(query, candidates, picker, ctx)
        else:  # labels of a typical length until the search is made; no cache entry yet
            candidates = [FeatureEdit(id="?", index=i, label="x" * _TYPICAL_LABEL_CHARS, value=0.0)
                          for i in range(self.candidates)]
            key = {"after_search": search_key}
        calls.append(ResolutionCall("chat", picker, PICK_NAMESPACE, key,
                                    request=self._request(self._messages(query, candidates)),
                                    calls=1, max_calls=self.attempts))
        return calls

    def _search_key(self, query: Query, ctx: MethodContext) -> dict[str, Any]:
        return resolution_key(ctx.backend, query=query.text, k=self.candidates)

    def _pick_key(self, query: Query, found: list[FeatureEdit], picker: Backend,
                  ctx: MethodContext) -> dict[str, Any]:
        return resolution_key(
            ctx.backend,
            query=query.text,
            candidates=[c.model_dump() for c in found],
            picker=picker.identity(),
            prompt=[SYSTEM, self.instructions, self.retry],
            max_features=self.max_features,
            bounds=[self.lo, self.hi],
            attempts=self.attempts,
            sampling=[self.temperature, self.max_tokens, self.seed],
        )

    async def _search(self, query: Query, ctx: MethodContext) -> list[FeatureEdit]:
        call = backend_extra(ctx.backend, "search_features", "agentic")
        key = self._search_key(query, ctx)
        raw = await ctx.cache.get_or_compute(
            SEARCH_NAMESPACE, key, lambda: call(query.text, self.candidates)
        )
        return _candidates(raw)

    def _messages(self, query: Query, found: list[FeatureEdit]) -> list[Message]:
        listing = "\n".join(f"{i}. {c.label or '(no label)'}" for i, c in enumerate(found, 1))
        return [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": self.instructions.format(
                    query=query.text,
                    candidates=listing,
                    max_features=self.max_features,
                    lo=self.lo,
                    hi=self.hi,
                ),
            },
        ]

    def _request(self, messages: list[Message]) -> GenerationRequest:
        return GenerationRequest(messages=messages, temperature=self.temperature,
                                 max_tokens=self.max_tokens, seed=self.seed)

    async def _pick(
        self, query: Query, found: list[FeatureEdit], picker: Backend
    ) -> dict[str, Any]:
        messages = self._messages(query, found)
        problems = []
        for attempt in range(1, self.attempts + 1):
            reply = await picker.generate(self._request(messages))
            try:
                edits, reasoning = parse_pick(
                    reply.text, found, self.max_features, self.lo, self.hi, self.answer_format
                )
            except ValueError as exc:
                problems.append(str(exc))
                messages = [
                    *messages,
                    {"role": "assistant", "content": reply.text},
                    {
                        "role": "user",
                        "content": self.retry.format(problem=exc, lo=self.lo, hi=self.hi),
                    },
                ]
                continue
            return {
                "edits": [e.model_dump() for e in edits],
                "reasoning": reasoning,
                "attempts": attempt,
            }
        raise FeaturePickError(
            f"picker {self.picker!r} gave no valid feature pick for query {query.id!r} in "
            f"{self.attempts} attempt(s): " + " | ".join(problems)
        )


def _candidates(raw: Any) -> list[FeatureEdit]:
    """A feature search's result as candidate edits (value 0 until picked)."""
    return [FeatureEdit(value=0.0, **{k: c[k] for k in ("id", "index", "label")}) for c in raw]


# Feature labels run to about this many characters (for the dry run's picker prompt size).
_TYPICAL_LABEL_CHARS = 60


@method("agentic")
def agentic(
    picker: str,
    candidates: int = 20,
    max_features: int = 5,
    min_strength: float = -1.0,
    max_strength: float = 1.0,
    attempts: int = 3,
    temperature: float = 0.0,
    max_tokens: int = 600,
    seed: int | None = 0,
    answer_format: str = "json",
) -> Method:
    """Feature search, then the chat model ``picker`` chooses features and strengths (JSON or
    XML tags per ``answer_format``, validated, retried up to ``attempts`` times, never guessed),
    scaled by the sweep's strength."""
    return Agentic(
        picker,
        candidates,
        max_features,
        min_strength,
        max_strength,
        attempts,
        temperature,
        max_tokens,
        seed,
        answer_format,
    )
