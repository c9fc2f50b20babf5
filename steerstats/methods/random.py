"""``random``: the placebo of vector steering, a random direction as large as the CAA vector.

For each query it takes that query's ``caa`` vector (same options, same layer) and draws a
direction from a standard normal with ``seed``, scaled to the CAA vector's norm; generation
adds ``strength x`` it where CAA would add its own. Set beside ``caa`` at the same strengths,
it separates what the direction buys from what any perturbation of that size costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steerstats._registry import options_factory
from steerstats.methods._registry import method
from steerstats.methods.base import (
    CachePeek,
    Intervention,
    Method,
    MethodContext,
    Query,
    ResolutionCall,
)
from steerstats.methods.caa import (
    CAAMethod,
    CAAOptions,
    memoised_vector,
    require_strength,
    vector_intervention,
)


@dataclass(frozen=True)
class RandomOptions(CAAOptions):
    """The ``caa`` options (which vector's norm and layer to match) and the direction's ``seed``
    (one direction per query: the query's id is mixed into it)."""

    seed: int = 0


class RandomDirection(Method):
    """Adds a seeded random direction with the norm and layer of the query's CAA vector."""

    uses_strength = True

    def __init__(self, options: RandomOptions) -> None:
        self.options = options
        self.caa = CAAMethod(options, with_prompt=False)

    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        s = require_strength(strength, "random")
        if s == 0.0:
            return vector_intervention({}, s)
        base = await self.caa.vector(query, ctx)
        backend: Any = ctx.backend
        key = {"base": base["digest"], "seed": self.options.seed, "query": query.id}

        async def compute() -> dict[str, Any]:
            seed = hash_seed(self.options.seed, query.id)
            digest = backend.vectors.random_like(base["digest"], seed, ctx.cache_dir)
            return {"digest": digest, "layer": base["layer"],
                    "typical_norm": base.get("typical_norm")}

        return vector_intervention(await memoised_vector(ctx, "random_vector", key, compute), s)

    def estimate_resolution(
        self, query: Query, strength: float | None, ctx: MethodContext, cached: CachePeek
    ) -> list[ResolutionCall]:
        """The CAA vector whose norm it matches (the direction itself is drawn locally)."""
        return self.caa.estimate_resolution(query, strength, ctx, cached)


def hash_seed(seed: int, query_id: str) -> int:
    """A 63-bit seed from the method's seed and the query id (stable across processes)."""
    import hashlib

    return int(hashlib.sha256(f"{seed}:{query_id}".encode()).hexdigest()[:15], 16)


random = method("random")(options_factory(RandomOptions, RandomDirection))
