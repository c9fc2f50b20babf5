"""The ``random`` placebo: a seeded direction with the norm and layer of the query's CAA vector."""

from __future__ import annotations

import pytest
import torch
from _tiny_lm import MemoryResolutionCache, tiny_model, tiny_tokenizer

from steerstats.backends._local_engine import LocalEngine
from steerstats.backends.base import GenerationRequest
from steerstats.backends.local import LocalBackend
from steerstats.backends.vectors import vector_store
from steerstats.errors import ConfigError
from steerstats.methods import MethodContext, Query, create_method

QUERY = Query("be-funny", "be funny")
OPTIONS = {"layer": 1, "prompts": ["hi", "how are you", "tell me more"]}


@pytest.fixture
def backend(tmp_path):
    vector_store.clear()
    engine = LocalEngine(tiny_model(seed=2), tiny_tokenizer(), max_batch_size=4)
    return LocalBackend("tiny", {"cache_dir": str(tmp_path)}, engine=engine)


async def test_random_direction_matches_caa_norm_and_layer_and_is_seeded(backend, tmp_path):
    ctx = MethodContext(backend=backend, cache=MemoryResolutionCache(),
                        cache_dir=str(tmp_path / "exp"))
    caa = await create_method("caa", OPTIONS).resolve(QUERY, 0.5, ctx)
    rnd = await create_method("random", {**OPTIONS, "seed": 3}).resolve(QUERY, 0.5, ctx)
    again = await create_method("random", {**OPTIONS, "seed": 3}).resolve(QUERY, 2.0, ctx)
    other = await create_method("random", {**OPTIONS, "seed": 4}).resolve(QUERY, 0.5, ctx)
    c = vector_store.get(caa.steering.spec["vector"])
    r = vector_store.get(rnd.steering.spec["vector"])
    assert rnd.steering.kind == "vector" and rnd.steering.spec["layer"] == 1 == r.layer
    assert float(r.vector.norm()) == pytest.approx(float(c.vector.norm()), rel=1e-5)
    cosine = torch.nn.functional.cosine_similarity(r.vector, c.vector, dim=0)
    assert abs(float(cosine)) < 0.5  # a random direction, not the CAA one
    assert again.steering.spec["vector"] == rnd.steering.spec["vector"]
    assert other.steering.spec["vector"] != rnd.steering.spec["vector"]
    assert (tmp_path / "exp" / "caa_vectors" / f"{r.digest}.safetensors").is_file()
    req = GenerationRequest([{"role": "user", "content": "Hello"}], max_tokens=8,
                            steering=rnd.steering)
    assert (await backend.generate(req)).text is not None
    zero = await create_method("random", OPTIONS).resolve(QUERY, 0.0, ctx)
    assert zero.steering is None and zero.strength == 0.0
    with pytest.raises(ConfigError, match="unknown parameter"):
        create_method("random", {"sede": 1})
