"""``caa`` and ``caa+prompt``: contrastive activation addition on the local backend.

For each steering query the backend builds a vector from contrastive pairs: the same neutral
training prompts answered under a system prompt asking for the behaviour (the ``prompt``
method's template) and under a neutral system prompt; the vector is the mean difference of the
residual-stream activations at ``layer`` at the last prompt token, where the model is about to
answer (default; two forward passes), or over the tokens of greedy responses
(``position="response"``; costs a generation per prompt and side), unit-normalised and scaled
to the typical activation norm at that layer, so a strength means the same across queries
(strength 1 adds a perturbation as large as a typical residual-stream state). Generation adds
``strength x vector`` at every position of that layer's output.

The vector is identified by the digest of everything that built it (model weights, layer,
prompts, templates); the digest and the strength form the intervention's ``Steering`` and so
enter the generation's cache key. Strength 0 resolves to no steering at all, i.e. exactly
control (``caa``) or exactly the prompt method (``caa+prompt``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from steerstats._registry import options_factory
from steerstats.backends.base import Steering
from steerstats.errors import ConfigError
from steerstats.methods._registry import method
from steerstats.methods.base import (
    CachePeek,
    Intervention,
    Method,
    MethodContext,
    Query,
    ResolutionCall,
)
from steerstats.methods.prompt import DEFAULT_TEMPLATE, render_prompt

NEUTRAL_SYSTEM_PROMPT = "You are a helpful assistant."

# Generic requests used only to build vectors; kept apart from the evaluation prompts so a
# vector is not fitted to the prompts it is judged on.
TRAINING_PROMPTS: tuple[str, ...] = (
    "Tell me about your weekend.",
    "How do I make a cup of tea?",
    "What should I know about owning a bicycle?",
    "Describe a typical morning at a train station.",
    "Can you explain how rain forms?",
    "Give me some advice for a job interview.",
    "What is a good way to learn a new language?",
    "Write a few sentences about autumn.",
)


@dataclass(frozen=True)
class CAAOptions:
    """Contrastive activation addition at ``layer`` (None: the middle decoder block), built from
    the behaviour prompt ``template`` vs ``neutral_prompt`` on ``prompts``. ``max_tokens`` is
    the length of the contrastive responses when ``position="response"``."""

    layer: int | None = None
    template: str = DEFAULT_TEMPLATE
    neutral_prompt: str = NEUTRAL_SYSTEM_PROMPT
    prompts: Sequence[str] = TRAINING_PROMPTS
    position: Literal["response", "last_prompt"] = "last_prompt"
    max_tokens: int = 32

    def __post_init__(self) -> None:
        if "{query}" not in self.template:
            raise ConfigError(f"caa: template must contain '{{query}}', got {self.template!r}")
        if self.position not in ("response", "last_prompt"):
            raise ConfigError(
                f"caa: position must be 'response' or 'last_prompt', got {self.position!r}"
            )
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise ConfigError("caa: prompts must be a non-empty list of non-empty strings")
        if self.layer is not None and self.layer < 0:
            raise ConfigError(
                f"caa: layer must be >= 0 (decoder blocks count from 0), got {self.layer}")
        if self.max_tokens < 1:
            raise ConfigError(f"caa: max_tokens must be >= 1, got {self.max_tokens}")
        object.__setattr__(self, "prompts", tuple(self.prompts))


def vector_backend(ctx: MethodContext, what: str) -> Any:
    """The steered model's backend, which must keep a vector store (the 'local' backend)."""
    backend: Any = ctx.backend  # the local backend (or the collector's proxy of it)
    if getattr(backend, "build_caa_vector", None) is None:
        raise ConfigError(
            f"method {what} needs a backend that steers with activation vectors (the 'local' "
            f"backend); {getattr(backend, 'name', type(backend).__name__)!r} cannot"
        )
    if ctx.cache_dir is not None:
        backend.add_vector_dir(ctx.cache_dir)
    return backend


async def memoised_vector(ctx: MethodContext, namespace: str, key: Any,
                          compute: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """A vector's info (``digest``, ``layer``, ...) memoised in the resolution cache, so dry
    runs, ``status`` and ``export`` resolve without the model; rebuilt if its file is gone."""
    info: dict[str, Any] = await ctx.cache.get_or_compute(namespace, key, compute)
    if not ctx.backend.has_vector(info["digest"]):  # type: ignore[attr-defined]
        info = await compute()
    return info


def require_strength(strength: float | None, what: str) -> float:
    """The sweep's strength as a float; a vector method without one is a config error."""
    if strength is None or not math.isfinite(float(strength)):
        raise ConfigError(
            f"method {what} needs a finite strength; give the method a list, "
            "e.g. strengths = [0.5, 1.0]"
        )
    return float(strength)


def vector_intervention(info: dict[str, Any], strength: float,
                        system: str | None = None) -> Intervention:
    """``strength x`` the vector of ``info`` (with ``system``); strength 0 is no steering at
    all, i.e. exactly the unsteered arm with the same system prompt."""
    if strength == 0.0:
        return Intervention(system_prompt=system, strength=0.0)
    spec = {"vector": info["digest"], "layer": int(info["layer"]), "coefficient": strength}
    detail: dict[str, Any] = {k: info[k] for k in ("typical_norm", "raw_norm") if k in info}
    return Intervention(system_prompt=system, steering=Steering("vector", spec),
                        strength=strength, detail=detail)


class CAAMethod(Method):
    """Adds a contrastive activation vector (optionally with the behaviour system prompt)."""

    uses_strength = True

    def __init__(self, options: CAAOptions, *, with_prompt: bool) -> None:
        self.options = options
        self.with_prompt = with_prompt

    def _build(self, query: Query) -> dict[str, Any]:
        o = self.options
        return {
            "positive_system": render_prompt(o.template, query),
            "neutral_system": o.neutral_prompt,
            "prompts": list(o.prompts),
            "layer": o.layer,
            "position": o.position,
            "max_tokens": o.max_tokens,
        }

    async def vector(self, query: Query, ctx: MethodContext) -> dict[str, Any]:
        """This query's CAA vector (digest, layer, norms) on the steered model's backend."""
        backend = vector_backend(ctx, "caa")
        kwargs = self._build(query)

        async def compute() -> dict[str, Any]:
            info: dict[str, Any] = await backend.build_caa_vector(**kwargs, cache_dir=ctx.cache_dir)
            return info

        return await memoised_vector(ctx, "caa_vector", {"build": kwargs,
                                                         "backend": backend.identity()}, compute)

    def vector_call(self, query: Query, ctx: MethodContext) -> ResolutionCall:
        """Building this query's vector (one call: forward passes on the local model)."""
        backend = vector_backend(ctx, "caa")
        return ResolutionCall("vector", backend, "caa_vector",
                              {"build": self._build(query), "backend": backend.identity()})

    def estimate_resolution(
        self, query: Query, strength: float | None, ctx: MethodContext, cached: CachePeek
    ) -> list[ResolutionCall]:
        if strength is None or strength == 0.0:
            return []  # no vector at strength 0 (a missing strength is a config error)
        return [self.vector_call(query, ctx)]

    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        s = require_strength(strength, "caa")
        system = render_prompt(self.options.template, query) if self.with_prompt else None
        info = await self.vector(query, ctx) if s != 0.0 else {}
        return vector_intervention(info, s, system)


caa = method("caa")(options_factory(CAAOptions, lambda o: CAAMethod(o, with_prompt=False)))
caa_prompt = method("caa+prompt")(
    options_factory(CAAOptions, lambda o: CAAMethod(o, with_prompt=True)))
"""``caa+prompt``: the ``caa`` vector plus the ``prompt`` method's system prompt (same
``template``)."""
