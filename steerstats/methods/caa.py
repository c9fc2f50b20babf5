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
from collections.abc import Sequence
from typing import Any, Literal

from steerstats.backends.base import Steering
from steerstats.errors import ConfigError
from steerstats.methods._registry import method
from steerstats.methods.base import Intervention, Method, MethodContext, Query
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


class CAAMethod(Method):
    """Adds a contrastive activation vector (optionally with the behaviour system prompt)."""

    uses_strength = True

    def __init__(
        self,
        *,
        with_prompt: bool,
        layer: int | None,
        template: str,
        neutral_prompt: str,
        prompts: Sequence[str],
        position: Literal["response", "last_prompt"],
        max_tokens: int,
    ) -> None:
        if "{query}" not in template:
            raise ConfigError(f"caa: template must contain '{{query}}', got {template!r}")
        if position not in ("response", "last_prompt"):
            raise ConfigError(
                f"caa: position must be 'response' or 'last_prompt', got {position!r}"
            )
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ConfigError("caa: prompts must be a non-empty list of non-empty strings")
        if layer is not None and layer < 0:
            raise ConfigError(f"caa: layer must be >= 0 (decoder blocks count from 0), got {layer}")
        if max_tokens < 1:
            raise ConfigError(f"caa: max_tokens must be >= 1, got {max_tokens}")
        self.with_prompt = with_prompt
        self.layer = layer
        self.template = template
        self.neutral_prompt = neutral_prompt
        self.prompts = tuple(prompts)
        self.position = position
        self.max_tokens = max_tokens

    async def vector(self, query: Query, ctx: MethodContext) -> dict[str, Any]:
        """This query's vector (digest, layer, norms) on the steered model's backend.

        The result is memoised in the resolution cache, so dry runs, ``status`` and ``export``
        resolve without touching the model; the vector file itself lives in the experiment's
        cache directory (``caa_vectors/``) and is rebuilt if it has gone missing.
        """
        backend: Any = ctx.backend  # the local backend (or the collector's proxy of it)
        build = getattr(backend, "build_caa_vector", None)
        if build is None:
            raise ConfigError(
                f"method caa needs a backend that builds activation vectors (the 'local' backend); "
                f"{getattr(backend, 'name', type(backend).__name__)!r} cannot"
            )
        kwargs: dict[str, Any] = {
            "positive_system": render_prompt(self.template, query),
            "neutral_system": self.neutral_prompt,
            "prompts": list(self.prompts),
            "layer": self.layer,
            "position": self.position,
            "max_tokens": self.max_tokens,
        }

        async def compute() -> dict[str, Any]:
            info: dict[str, Any] = await build(**kwargs, cache_dir=ctx.cache_dir)
            return info

        if ctx.cache_dir is not None:
            backend.add_vector_dir(ctx.cache_dir)
        key = {"build": kwargs, "backend": backend.identity()}
        info: dict[str, Any] = await ctx.cache.get_or_compute("caa_vector", key, compute)
        if not backend.has_caa_vector(info["digest"]):
            info = await compute()
        return info

    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        if strength is None or not math.isfinite(float(strength)):
            raise ConfigError(
                "method caa needs a finite strength; give the method a list, "
                "e.g. strengths = [0.5, 1.0]"
            )
        strength = float(strength)
        system = render_prompt(self.template, query) if self.with_prompt else None
        if strength == 0.0:
            return Intervention(system_prompt=system, strength=0.0)
        info = await self.vector(query, ctx)
        spec = {"vector": info["digest"], "layer": int(info["layer"]), "coefficient": strength}
        detail: dict[str, Any] = {k: info[k] for k in ("typical_norm", "raw_norm") if k in info}
        return Intervention(
            system_prompt=system, steering=Steering("caa", spec), strength=strength, detail=detail
        )


@method("caa")
def caa(
    layer: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    neutral_prompt: str = NEUTRAL_SYSTEM_PROMPT,
    prompts: Sequence[str] = TRAINING_PROMPTS,
    position: Literal["response", "last_prompt"] = "last_prompt",
    max_tokens: int = 32,
) -> Method:
    """Contrastive activation addition at ``layer`` (None: the middle decoder block), built from
    the behaviour prompt ``template`` vs ``neutral_prompt`` on ``prompts``. ``max_tokens`` is
    the length of the contrastive responses when ``position="response"``."""
    return CAAMethod(
        with_prompt=False,
        layer=layer,
        template=template,
        neutral_prompt=neutral_prompt,
        prompts=prompts,
        position=position,
        max_tokens=max_tokens,
    )


@method("caa+prompt")
def caa_prompt(
    layer: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    neutral_prompt: str = NEUTRAL_SYSTEM_PROMPT,
    prompts: Sequence[str] = TRAINING_PROMPTS,
    position: Literal["response", "last_prompt"] = "last_prompt",
    max_tokens: int = 32,
) -> Method:
    """The ``caa`` vector plus the ``prompt`` method's system prompt (same ``template``)."""
    return CAAMethod(
        with_prompt=True,
        layer=layer,
        template=template,
        neutral_prompt=neutral_prompt,
        prompts=prompts,
        position=position,
        max_tokens=max_tokens,
    )
