"""Seeded per-row sampling for generation through nnsight, the local engine's rule.

Self-contained (torch only) so that nnsight can ship it by value to NDIF, where steerstats is
not installed. The rule must stay the one in ``LocalEngine._choose``: each sampled row draws
one uniform number per step from its own generator and picks the token by inverse CDF of
``softmax(logits / temperature)`` in float64; tests compare the two backends token for token.
"""

from __future__ import annotations

import torch


class SeededChoice:
    """A transformers logits processor: each sampled row's token is chosen here and made the
    only finite logit, so the greedy step picks it; greedy rows (temperature 0) pass through."""

    def __init__(self, temperatures: list[float], seeds: list[int]) -> None:
        self.temperatures = temperatures
        self.gens = [
            torch.Generator().manual_seed(int(s)) if t > 0 else None
            for t, s in zip(temperatures, seeds, strict=True)
        ]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = scores.clone()
        for j, temperature in enumerate(self.temperatures):
            gen = self.gens[j]
            if temperature <= 0 or gen is None:
                continue
            probs = torch.softmax(scores[j].double() / temperature, dim=-1)
            cdf = probs.cumsum(0)
            u = torch.rand((), generator=gen, dtype=torch.float64)
            k = min(int(torch.searchsorted(cdf, u * cdf[-1], right=True)), cdf.numel() - 1)
            out[j] = -torch.inf
            out[j, k] = 0.0
        return out
