"""Building a contrastive-activation-addition (CAA) vector on a local engine.

Contrastive pairs are the same user prompts answered under a system prompt asking for the
behaviour and under a neutral one (greedy, ``max_tokens`` each). Each sequence is read back in
its own context at decoder block ``layer``; its activation is the mean over the response tokens
(``position="response"``), or the last prompt token's (``position="last_prompt"``), where the
model is about to answer. The vector is the mean over prompts of (behaviour - neutral), scaled
to unit length and then to the typical activation norm at that layer (the median token norm
over the neutral sequences), so that a strength means the same thing across queries: strength 1
adds a perturbation as large as a typical residual-stream state.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from steerstats.backends._local_engine import GenRow, LocalEngine
from steerstats.backends.steering import SteeringVector, record_layer_outputs
from steerstats.backends.vectors import vector_store

CAA_VERSION = 1
Position = Literal["response", "last_prompt"]


@dataclass(frozen=True)
class CAASpec:
    """Everything that determines a CAA vector (with the model's identity, its digest)."""

    positive_system: str
    neutral_system: str
    prompts: tuple[str, ...]
    layer: int
    position: Position = "last_prompt"
    max_tokens: int = 32

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("a CAA vector needs at least one contrastive prompt")
        if self.position not in ("response", "last_prompt"):
            raise ValueError(f"position must be 'response' or 'last_prompt', got {self.position!r}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def digest(self, model_identity: Mapping[str, Any]) -> str:
        """SHA-256 (24 hex digits) of the canonical JSON of the spec and the model identity."""
        payload = {"caa_version": CAA_VERSION, "model": dict(model_identity), **asdict(self)}
        if self.position == "last_prompt":  # no responses are generated, so their length is moot
            payload["max_tokens"] = None
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def _readout(
    engine: LocalEngine, seqs: Sequence[tuple[list[int], list[int]]], layer: int, position: Position
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence, the mean activation over the read-out positions, and all token norms.

    ``seqs`` are (prompt ids, response ids). Token norms skip each sequence's first token,
    which in many models carries an outsized "attention sink" activation.
    """
    means: list[torch.Tensor] = []
    norms: list[torch.Tensor] = []
    for start in range(0, len(seqs), engine.max_batch_size):
        chunk = seqs[start : start + engine.max_batch_size]
        ids, mask, positions = engine.left_pad([p + r for p, r in chunk])
        with torch.inference_mode(), record_layer_outputs(engine.model, layer) as records:
            engine.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=False,
                logits_to_keep=1,
            )
        hidden = records[0].float()
        width = hidden.shape[1]
        for i, (prompt, response) in enumerate(chunk):
            total = len(prompt) + len(response)
            if position == "response" and response:
                span = hidden[i, width - len(response) :]
            else:
                span = hidden[i, width - len(response) - 1 : width - len(response)]
            means.append(span.mean(0))
            norms.append(hidden[i, width - total + 1 :].norm(dim=-1))
    return torch.stack(means), torch.cat(norms)


def build_caa_vector(
    engine: LocalEngine, spec: CAASpec, digest: str, cache_dir: str | Path | None = None
) -> SteeringVector:
    """Compute the vector for ``spec`` (runs on the engine's worker thread); put it in the
    vector store (on disk under ``cache_dir`` when given)."""
    known = vector_store.get(digest)
    if known is not None:
        return known
    if not 0 <= spec.layer < engine.n_layers:
        raise ValueError(
            f"CAA layer {spec.layer} is out of range: the model has layers 0..{engine.n_layers - 1}"
        )
    sides: dict[str, list[tuple[list[int], list[int]]]] = {}
    for side, system in (("positive", spec.positive_system), ("neutral", spec.neutral_system)):
        prompts = [
            engine.chat_ids([{"role": "system", "content": system}, {"role": "user", "content": p}])
            for p in spec.prompts
        ]
        responses: list[list[int]] = [[] for _ in prompts]
        if spec.position == "response":
            for start in range(0, len(prompts), engine.max_batch_size):
                rows = [
                    GenRow(p, spec.max_tokens)
                    for p in prompts[start : start + engine.max_batch_size]
                ]
                for k, out in enumerate(engine.generate_rows(rows)):
                    responses[start + k] = out.tokens
        sides[side] = list(zip(prompts, responses, strict=True))
    # An engine that runs its model elsewhere (nnsight) reads activations its own way.
    readout = getattr(engine, "readout", None) or functools.partial(_readout, engine)
    pos_means, _ = readout(sides["positive"], spec.layer, spec.position)
    neg_means, neg_norms = readout(sides["neutral"], spec.layer, spec.position)
    diff = (pos_means - neg_means).mean(0)
    raw_norm = float(diff.norm())
    if not raw_norm > 0:
        raise ValueError(
            "the behaviour and neutral prompts gave identical activations; the CAA vector would be "
            "zero. Use a different layer or more distinct system prompts."
        )
    typical = float(neg_norms.median())
    vector = (diff / raw_norm * typical).to(next(engine.model.parameters()).dtype)
    meta = {
        "typical_norm": typical,
        "raw_norm": raw_norm,
        "n_prompts": len(spec.prompts),
        "spec": asdict(spec),
    }
    result = SteeringVector(layer=spec.layer, vector=vector, digest=digest, meta=meta)
    vector_store.put(result, cache_dir)
    return result
