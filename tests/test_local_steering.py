"""Steering hooks on tiny config-built Llama models: effect, exact no-ops, clean removal, and
agreement with an independent computation."""

from __future__ import annotations

import copy

import pytest
import torch
from _tiny_lm import tiny_model, tiny_tokenizer

from steerstats.backends._local_engine import GenRow, LocalEngine
from steerstats.backends.steering import (
    BatchSteering,
    SteeringVector,
    load_vector,
    record_layer_outputs,
)


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=1)


@pytest.fixture(scope="module")
def engine(model):
    return LocalEngine(model, tiny_tokenizer())


def _vector(model, layer: int = 1, seed: int = 5) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        layer=layer, vector=torch.randn(model.config.hidden_size, generator=g), digest="v"
    )


def _inputs(engine, texts=("Hello there", "Tell me a story about cats")):
    prompts = [engine.chat_ids([{"role": "user", "content": t}]) for t in texts]
    return engine.left_pad(prompts)


def _logits(model, ids, mask, pos):
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


def _hooks(model) -> set[tuple[str, int]]:
    """Every forward hook on the model (transformers adds its own output-capturing ones)."""
    return {(name, key) for name, m in model.named_modules() for key in m._forward_hooks}


def test_steering_changes_activations_from_its_layer_on(model, engine):
    ids, mask, pos = _inputs(engine)
    vec = _vector(model, layer=1)
    with torch.inference_mode():
        plain = model(
            input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True
        )
        with vec.apply(model, 2.0):
            steered = model(
                input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True
            )
    # hidden_states[k] is the output of block k-1: block 0 is untouched, block 1 gets the vector.
    assert torch.equal(plain.hidden_states[1], steered.hidden_states[1])
    delta = steered.hidden_states[2] - plain.hidden_states[2]
    torch.testing.assert_close(delta, (2.0 * vec.vector).expand_as(delta), rtol=0, atol=1e-5)
    assert not torch.allclose(plain.logits, steered.logits)


def test_steering_changes_generated_text(model, engine):
    prompt = engine.chat_ids([{"role": "user", "content": "Hello there"}])
    vec = _vector(model, layer=1)
    plain = engine.generate_rows([GenRow(prompt, 24)])[0].tokens
    steered = engine.generate_rows([GenRow(prompt, 24, steering=(vec, 8.0))])[0].tokens
    assert plain != steered


def test_steered_logits_match_a_bias_in_the_layer(model, engine):
    """Independent reference: adding c*v to block L's output is the same as giving block L's
    MLP output projection a bias c*v (the MLP output is the block's last residual addition)."""
    ids, mask, pos = _inputs(engine)
    vec = _vector(model, layer=2)
    coefficient = 1.5
    reference = copy.deepcopy(model)
    down = reference.model.layers[2].mlp.down_proj
    biased = torch.nn.Linear(down.in_features, down.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(down.weight)
        biased.bias.copy_(coefficient * vec.vector)
    reference.model.layers[2].mlp.down_proj = biased
    with vec.apply(model, coefficient):
        steered = _logits(model, ids, mask, pos)
    expected = _logits(reference, ids, mask, pos)
    real = mask.bool()  # pad positions carry no meaning
    torch.testing.assert_close(steered[real], expected[real], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(steered[real], _logits(model, ids, mask, pos)[real], atol=1e-3)


def test_strength_zero_is_bit_identical(model, engine):
    ids, mask, pos = _inputs(engine)
    before = _logits(model, ids, mask, pos)
    hooks = _hooks(model)
    with _vector(model).apply(model, 0.0):
        assert _hooks(model) == hooks
        zero = _logits(model, ids, mask, pos)
    with BatchSteering.patch(model, [None, (_vector(model), 0.0)]) as s:
        assert not s.active
        rows_zero = _logits(model, ids, mask, pos)
    assert torch.equal(before, zero)
    assert torch.equal(before, rows_zero)


def test_unsteered_rows_of_a_mixed_batch_are_bit_identical(model, engine):
    ids, mask, pos = _inputs(engine)
    plain = _logits(model, ids, mask, pos)
    with BatchSteering.patch(model, [(_vector(model), 3.0), None]):
        mixed = _logits(model, ids, mask, pos)
    assert torch.equal(plain[1], mixed[1])
    assert not torch.allclose(plain[0], mixed[0])


def test_hook_removed_after_block_that_raises(model, engine):
    ids, mask, pos = _inputs(engine)
    before = _logits(model, ids, mask, pos)
    hooks = _hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with _vector(model).apply(model, 4.0):
            assert len(_hooks(model)) == len(hooks) + 1
            raise RuntimeError("boom")
    assert _hooks(model) == hooks
    assert torch.equal(before, _logits(model, ids, mask, pos))


def test_hook_removed_when_generation_raises(model, engine):
    ids, mask, pos = _inputs(engine)
    before = _logits(model, ids, mask, pos)
    hooks = _hooks(model)
    bad = [model.config.vocab_size + 5]  # an id past the embedding table: the forward pass fails
    with pytest.raises(IndexError):
        engine.generate_rows([GenRow(bad, 4, steering=(_vector(model), 4.0))])
    assert _hooks(model) == hooks
    assert torch.equal(before, _logits(model, ids, mask, pos))


def test_batched_steered_generation_matches_single(model, engine):
    """A steered row's text does not depend on its batch-mates (steered or not)."""
    vec = _vector(model)
    p1 = engine.chat_ids([{"role": "user", "content": "Hi"}])
    p2 = engine.chat_ids([{"role": "user", "content": "A much longer prompt about the weather"}])
    alone = engine.generate_rows([GenRow(p1, 20, steering=(vec, 3.0))])[0].tokens
    batch = engine.generate_rows(
        [GenRow(p2, 5), GenRow(p1, 20, steering=(vec, 3.0)), GenRow(p2, 30)]
    )
    assert batch[1].tokens == alone
    assert batch[0].tokens == engine.generate_rows([GenRow(p2, 5)])[0].tokens


def test_record_layer_outputs_reads_the_residual_stream(model, engine):
    ids, mask, pos = _inputs(engine)
    with torch.inference_mode():  # transformers installs its capture hooks on first use
        model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    hooks = _hooks(model)
    with torch.inference_mode(), record_layer_outputs(model, 2) as records:
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    assert torch.equal(records[0], out.hidden_states[3])
    assert _hooks(model) == hooks


def test_vector_round_trips_through_safetensors(model, tmp_path):
    vec = SteeringVector(
        layer=2,
        vector=torch.randn(model.config.hidden_size),
        digest="abc",
        meta={"typical_norm": 3.5},
    )
    vec.save(tmp_path / "v.safetensors")
    back = load_vector(tmp_path / "v.safetensors")
    assert (back.layer, back.digest, dict(back.meta)) == (2, "abc", {"typical_norm": 3.5})
    assert torch.equal(back.vector, vec.vector)


def test_layer_out_of_range_is_a_clear_error(model):
    with pytest.raises(ValueError, match=r"layers 0\.\.3"):
        with _vector(model, layer=9).apply(model, 1.0):
            pass
