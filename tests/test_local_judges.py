"""Local judges: digit-probability scoring, NaN with a reason, perplexity and capability loss."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch
from _tiny_lm import MemoryResolutionCache, tiny_model, tiny_tokenizer

from steerstats.backends._local_engine import LocalEngine
from steerstats.backends.local import LocalBackend
from steerstats.errors import ConfigError
from steerstats.judges import JudgeInput, Prompt, create_judge
from steerstats.judges.local import digit_score
from steerstats.methods import Intervention, MethodContext, Query, create_method

QUERY = Query("be-funny", "be funny")
PROMPT = Prompt("common-00", "Describe the sea.", "open")


def item(response: str, intervention: Intervention | None = None) -> JudgeInput:
    return JudgeInput(QUERY, PROMPT, response, "key", intervention or Intervention())


def fixed_distribution_backend(probs: dict[str, float], rest: float, tmp_path) -> LocalBackend:
    """A tiny model whose next-token distribution is fixed: zero output weights and a bias equal
    to the log-probabilities, so every position predicts exactly ``probs`` (the remaining mass
    ``rest`` spread evenly over the other tokens)."""
    model, tok = tiny_model(seed=4), tiny_tokenizer()
    vocab = model.config.vocab_size
    ids = {c: tok.convert_tokens_to_ids(c) for c in probs}
    p = torch.full((vocab,), rest / (vocab - len(probs)), dtype=torch.float64)
    for c, v in probs.items():
        p[ids[c]] = v
    head = torch.nn.Linear(model.config.hidden_size, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(p.log().float())
    model.lm_head = head
    return LocalBackend("fixed", {"cache_dir": str(tmp_path)}, engine=LocalEngine(model, tok))


def test_digit_score_expected_value_and_argmax():
    # (1*.1 + 2*.1 + 3*.2 + 4*.4 + 5*.1) / .9 = 3.0 / .9, worked by hand
    expected, argmax = digit_score({"1": 0.1, "2": 0.1, "3": 0.2, "4": 0.4, "5": 0.1})
    assert expected == pytest.approx(3.0 / 0.9, abs=1e-12)
    assert argmax == 4.0
    assert digit_score({"1": 0, "2": 0, "3": 0, "4": 0, "5": 1.0}) == (5.0, 5.0)


def test_digit_score_low_mass_is_a_reason_not_a_number():
    reason = digit_score({"1": 0.05, "2": 0.05, "3": 0.1, "4": 0.1, "5": 0.1})
    assert isinstance(reason, str) and "0.400 < 0.5" in reason
    assert isinstance(digit_score({d: 0.1 for d in "12345"}, min_mass=0.5), tuple)  # exactly 0.5
    with pytest.raises(ValueError, match="lack"):
        digit_score({"1": 1.0})


async def test_rubric_judge_reads_the_digit_distribution(tmp_path):
    probs = {"1": 0.1, "2": 0.1, "3": 0.2, "4": 0.4, "5": 0.1}
    backend = fixed_distribution_backend(probs, rest=0.1, tmp_path=tmp_path)
    judge = create_judge("local_behavior", repeats=2)
    scores = await judge.score(item("A wave walked into a bar."), 0, backend)
    assert [s.metric for s in scores] == ["behavior", "behavior_argmax"]
    assert scores[0].value == pytest.approx(3.0 / 0.9, rel=1e-5)
    assert scores[1].value == 4.0
    assert scores[0].reason is None


async def test_rubric_judge_nan_with_reason_when_no_digit_is_likely(tmp_path):
    backend = fixed_distribution_backend(
        {"a": 0.7, "1": 0.05, "5": 0.05}, rest=0.2, tmp_path=tmp_path
    )
    scores = await create_judge("local_coherence").score(item("Some reply."), 1, backend)
    assert [s.metric for s in scores] == ["coherence", "coherence_argmax"]
    assert all(math.isnan(s.value) for s in scores)
    assert "< 0.5" in scores[0].reason
    empty = await create_judge("local_coherence").score(item("   "), 0, backend)
    assert math.isnan(empty[0].value) and empty[0].reason == "empty response"


def test_rubric_repeats_use_different_wordings_and_are_bounded():
    judge = create_judge("local_behavior", repeats=3)
    texts = [judge.messages(item("reply"), r)[0]["content"] for r in range(3)]
    assert len(set(texts)) == 3 and all("be funny" in t and "reply" in t for t in texts)
    with pytest.raises(ConfigError, match="number of wordings"):
        create_judge("local_behavior", repeats=4)
    with pytest.raises(ConfigError, match="response"):
        create_judge("local_behavior", {"wordings": ["no placeholder"]}, repeats=1)
    other = create_judge("local_behavior", {"wordings": ["Funny? {response} Digit:"]}, repeats=1)
    assert judge.identity() != other.identity()  # a changed rubric is a new judge (cache keys)


def test_one_wording_per_rater():
    """``wording = i`` makes a judge of one built-in wording, so a panel of wordings can be
    analysed as raters (each with its own rater id) rather than as repeats."""
    both = create_judge("local_behavior", repeats=2)
    first = create_judge("local_behavior", {"wording": 0}, repeats=1)
    second = create_judge("local_behavior", {"wording": 1}, repeats=1)
    reply = item("reply")
    assert first.messages(reply, 0) == both.messages(reply, 0)
    assert second.messages(reply, 0) == both.messages(reply, 1)
    assert first.identity() != second.identity()
    with pytest.raises(ConfigError, match=r"wording must be 0\.\.2"):
        create_judge("local_behavior", {"wording": 3}, repeats=1)
    with pytest.raises(ConfigError, match="number of wordings"):
        create_judge("local_coherence", {"wording": 0}, repeats=2)


@pytest.fixture(scope="module")
def engine():
    return LocalEngine(tiny_model(seed=6), tiny_tokenizer())


async def test_coherence_ppl_is_the_perplexity_of_the_response(engine, tmp_path):
    backend = LocalBackend("tiny", {"cache_dir": str(tmp_path)}, engine=engine)
    [score, log_score] = await create_judge("coherence_ppl").score(
        item("The sea is wide."), 0, backend
    )
    prompt = engine.chat_ids([{"role": "user", "content": PROMPT.text}])
    ids = torch.tensor([prompt + engine.text_ids("The sea is wide.")])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    with torch.inference_mode():
        loss = engine.model(ids, labels=labels).loss  # transformers' mean token cross-entropy
    assert (score.metric, log_score.metric) == ("coherence_ppl", "coherence_nll")
    assert score.value == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert log_score.value == pytest.approx(float(loss), rel=1e-5)
    empty = await create_judge("coherence_ppl").score(item(""), 0, backend)
    assert all(math.isnan(s.value) and s.reason == "empty response" for s in empty)


class CountingBackend:
    """Forwards attribute access (like the collector's metered proxy) and counts token_nll calls."""

    def __init__(self, inner: LocalBackend) -> None:
        self._inner = inner
        self.nll_calls = 0

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    async def token_nll(self, *args, **kwargs):
        self.nll_calls += 1
        return await self._inner.token_nll(*args, **kwargs)


async def test_capability_nll_follows_the_intervention_and_is_computed_once(engine, tmp_path):
    backend = CountingBackend(LocalBackend("tiny", {"cache_dir": str(tmp_path)}, engine=engine))
    ctx = MethodContext(backend=backend, cache=MemoryResolutionCache())
    steered = await create_method("caa", {"layer": 1, "prompts": ["hi", "yo"]}).resolve(
        QUERY, 4.0, ctx
    )
    prompted = await create_method("prompt").resolve(QUERY, None, ctx)
    judge = create_judge("capability_nll", {"text": "Rivers carry water to the sea."})
    control = await asyncio.gather(*[judge.score(item(f"reply {i}"), 0, backend) for i in range(3)])
    assert backend.nll_calls == 1  # one intervention, one computation
    [steer] = await judge.score(item("reply", steered), 0, backend)
    [prompt] = await judge.score(item("reply", prompted), 0, backend)
    assert backend.nll_calls == 3
    [[c0], [c1], [c2]] = control
    assert c0.value == c1.value == c2.value
    expected = await backend._inner.token_nll(
        [{"role": "user", "content": judge.request}],
        "Rivers carry water to the sea.",
        steering=steered.steering,
    )
    assert steer.value == pytest.approx(expected.mean_nll, rel=1e-6)
    assert steer.value != c0.value and prompt.value != c0.value


def test_repeats_have_one_owner_the_judge_entry(tmp_path):
    """The default is registry metadata; the experiment's value reaches the factory at build
    time (and is checked there); params.repeats moves to the entry; judges are never mutated."""
    from steerstats.config import load_config
    from steerstats.judges import default_repeats

    assert default_repeats("local_coherence") == 2 and default_repeats("behavior") == 1
    create_judge("local_coherence", repeats=3)
    with pytest.raises(ConfigError, match="number of wordings"):
        create_judge("local_coherence", repeats=4)
    base = (tmp_path / "x.toml")
    text = ('[experiment]\nname = "x"\n[[models]]\nlabel = "m"\nbackend = "mock"\n'
            'model = "m"\n[[methods]]\nname = "control"\n[prompts.open]\nn_topic = 0\n'
            'n_common = 1\n[queries]\nlimit = 1\n[[judges]]\n'
            'name = "local_coherence"\nbackend = "mock"\nmodel = "j"\n')
    base.write_text(text + "params = { repeats = 3 }\n")
    [js] = load_config(base).judges
    assert js.repeats == 3 and "repeats" not in js.params
    base.write_text(text + "repeats = 4\n")
    with pytest.raises(ConfigError, match=r"judges\[0\]\.repeats.*number of wordings"):
        load_config(base)
