"""Shared plumbing of the feature-edit methods (autosteer, autosteer+prompt, agentic, features):
backend-extra lookup, resolution-cache keys, and the Intervention.

For these methods a sweep step's strength (``strengths = [0, 0.5, 1]`` in the method's
``[[methods]]`` table) is a scale: every resolved edit value is multiplied by it, and 0 resolves
to no steering at all, exactly like control. Without a sweep the scale is 1.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from steerstats.backends.base import Backend
from steerstats.backends.feature_edits import FeatureEdit, edits_steering, parse_edits
from steerstats.errors import ConfigError
from steerstats.methods.base import Intervention, MethodContext, Query


def backend_extra(backend: Backend, name: str, method: str) -> Callable[..., Awaitable[Any]]:
    """The backend's async extra ``name`` (e.g. ``autosteer``), or a ConfigError naming the fix."""
    fn = getattr(backend, name, None)
    if not callable(fn):
        raise ConfigError(
            f"method {method!r} needs a backend with {name!r} (the 'goodfire' backend); "
            f"model {backend.model!r} uses backend "
            f"{getattr(backend, 'name', type(backend).__name__)!r}"
        )
    return fn


def resolution_key(backend: Backend, **parts: Any) -> dict[str, Any]:
    """A resolution-cache key: the steered model's identity plus what the resolution depends on."""
    return {"backend": backend.identity(), **parts}


async def cached_edits(
    ctx: MethodContext,
    namespace: str,
    key: Mapping[str, Any],
    compute: Callable[[], Awaitable[Any]],
) -> list[FeatureEdit]:
    """Edits resolved once per key through the context's resolution cache, validated on read."""
    raw = await ctx.cache.get_or_compute(namespace, key, compute)
    return parse_edits(raw, f"cached {namespace} result")


def scale_of(strength: float | None) -> float:
    """The multiplier for a sweep step (no sweep means 1)."""
    if strength is None:
        return 1.0
    if (
        isinstance(strength, bool)
        or not isinstance(strength, int | float)
        or not math.isfinite(strength)
    ):
        raise ConfigError(f"a strength (edit scale) must be a finite number, got {strength!r}")
    return float(strength)


def feature_intervention(
    edits: Iterable[FeatureEdit],
    strength: float | None,
    source: str,
    query: Query,
    system_prompt: str | None = None,
    **detail: Any,
) -> Intervention:
    """The Intervention for ``edits`` scaled by ``strength``; the unscaled edits and where they
    came from go into ``detail`` so the exact intervention is on record with every generation.

    ``Intervention.strength`` stays None (the tables report the sweep's strength): the scaled
    edits in the steering already determine the answer, and at scale 0 the intervention is then
    identical to control's (or to the prompt method's), so it shares that result and its key.
    """
    edits = list(edits)
    scale = scale_of(strength)
    return Intervention(
        system_prompt=system_prompt,
        steering=edits_steering(edits, scale),
        detail={
            "source": source,
            "query": query.text,
            "scale": scale,
            "edits": [e.model_dump() for e in edits],
            **detail,
        },
    )
