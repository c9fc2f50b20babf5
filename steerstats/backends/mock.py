"""An offline deterministic backend for tests and dry runs (like inspect_ai's MockLLM).

The reply is a pure function of the request, so caching and resume can be checked exactly.
A request that asks for a ``<score>`` tag (a rubric judge) gets a reasoning line and a score
1-5; a request that asks for an ``<answer>`` tag (MMLU) gets a letter; otherwise a short text that
names the steering, so steered and unsteered replies differ.
"""

from __future__ import annotations

import hashlib
import json

from steerstats.backends._registry import backend
from steerstats.backends.base import Backend, GenerationRequest, GenerationResult


@backend("mock")
class MockBackend(Backend):
    """Offline backend: deterministic replies derived from a hash of the request."""

    calls: int = 0

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        type(self).calls += 1
        digest = hashlib.sha256(
            json.dumps([self.model, request.canonical()], sort_keys=True).encode()
        ).hexdigest()
        h = int(digest[:8], 16)
        text_in = " ".join(m["content"] for m in request.messages)
        if "<score>" in text_in:
            text = f"The response was considered against the rubric. <score>{1 + h % 5}</score>"
        elif "<answer>" in text_in:
            text = f"<thinking>Considering the options.</thinking><answer>{'ABCD'[h % 4]}</answer>"
        else:
            steer = "" if request.steering is None else f" [{request.steering.kind}]"
            text = f"Mock reply {digest[:12]}{steer}."
        words = len(text.split())
        return GenerationResult(
            text=text,
            finish_reason="stop",
            prompt_tokens=len(text_in.split()),
            completion_tokens=words,
        )
