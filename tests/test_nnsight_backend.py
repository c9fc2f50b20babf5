"""The nnsight backend: options and the NDIF key without a model; then, on the packaged
SmolLM2 (CPU), the same interventions through ``local`` and ``nnsight`` give the same tokens,
logits, vectors and judge log-probabilities, and the request nnsight would send to NDIF."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("nnsight")

from steerstats.backends import GenerationRequest, Steering, create_backend  # noqa: E402
from steerstats.backends.local import LocalBackend  # noqa: E402
from steerstats.backends.nnsight_backend import NNsightBackend  # noqa: E402
from steerstats.backends.vectors import vector_store  # noqa: E402
from steerstats.errors import ConfigError, PrerequisiteError  # noqa: E402

CACHE = Path(
    os.environ.get("STEERSTATS_CACHE_DIR") or Path(__file__).resolve().parents[1] / "cache"
)
MODEL = "smollm2-135m-instruct"
QUESTIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Tell me a joke."}],
]
CAA = {
    "positive_system": "Talk like a pirate in every reply.",
    "neutral_system": "You are a helpful assistant.",
    "prompts": ["How do I make tea?", "Describe a train station.", "Write about autumn."],
}

# -- without a model -----------------------------------------------------------------------------


def test_registered_with_the_local_options():
    with pytest.raises(ConfigError, match="unknown option.*'api_key'"):
        create_backend("nnsight", MODEL, {"api_key": "x"})
    with pytest.raises(ConfigError, match="remote must be"):
        NNsightBackend(MODEL, {"remote": "yes"})


def test_remote_needs_the_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    with pytest.raises(PrerequisiteError, match="NDIF_API_KEY"):
        NNsightBackend("meta-llama/Llama-3.1-70B", {"remote": True})


def test_remote_key_is_never_part_of_the_backend(monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "secret-key-123")
    b = NNsightBackend("meta-llama/Llama-3.1-70B", {"remote": True})
    assert "secret-key-123" not in json.dumps(b.identity()) + json.dumps(b.options)
    assert b.identity() == {"backend": "nnsight", "model": "meta-llama/Llama-3.1-70B",
                            "options": {}, "weights": None}
    # batches sized for the remote queue: bigger, and waiting longer to fill
    assert (b.max_batch_size, b.batch_wait_s) == (32, 0.5)


def test_remote_refuses_local_files(monkeypatch, tmp_path):
    monkeypatch.setenv("NDIF_API_KEY", "k")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="Hugging Face id"):
        NNsightBackend(str(tmp_path), {"remote": True})


# -- on the packaged model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    """The local and nnsight backends on the same packaged model, the vector both use, and
    the nnsight backend's vector built separately (to compare)."""
    import torch

    torch.set_num_threads(1)
    loop = asyncio.new_event_loop()
    local = LocalBackend(MODEL, {"cache_dir": str(CACHE)})
    nn = NNsightBackend(MODEL, {"cache_dir": str(CACHE)})
    info = loop.run_until_complete(local.build_caa_vector(**CAA, cache_dir=None))
    built_by_local = vector_store.get(info["digest"])
    vector_store.forget(info["digest"])
    path = vector_store.path(local.vector_dir, info["digest"])
    path.unlink(missing_ok=True)
    nn_info = loop.run_until_complete(nn.build_caa_vector(**CAA, cache_dir=None))
    built_by_nnsight = vector_store.get(nn_info["digest"])
    yield loop, local, nn, info, nn_info, built_by_local, built_by_nnsight
    loop.run_until_complete(local.aclose())
    loop.run_until_complete(nn.aclose())
    loop.close()


def _steering(info, coefficient):
    if coefficient == 0.0:
        return None
    spec = {"vector": info["digest"], "layer": info["layer"], "coefficient": coefficient}
    return Steering("vector", spec)


@pytest.mark.slow
def test_same_model_same_keys_and_vectors(pair):
    loop, local, nn, info, nn_info, by_local, by_nnsight = pair
    ident_local, ident_nn = local.identity(), nn.identity()
    assert ident_nn == {**ident_local, "backend": "nnsight"}
    assert nn_info == info  # same digest, layer and norms: same resolved interventions
    assert by_local.layer == by_nnsight.layer
    assert float((by_local.vector - by_nnsight.vector).abs().max()) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("coefficient", [0.0, 0.5, 1.0])
def test_same_greedy_tokens_and_logits(pair, coefficient):
    """Unsteered and at two strengths: identical greedy tokens, logits within 1e-4 (the
    local side teacher-forced, the nnsight side read at each generation step)."""
    import torch

    from steerstats.backends._local_engine import GenRow
    from steerstats.backends.steering import BatchSteering

    loop, local, nn, info, *_ = pair
    steering = _steering(info, coefficient)
    requests = [GenerationRequest(m, max_tokens=12, steering=steering) for m in QUESTIONS]

    async def both():
        a = await asyncio.gather(*(local.generate(r) for r in requests))
        b = await asyncio.gather(*(nn.generate(r) for r in requests))
        return a, b

    via_local, via_nn = loop.run_until_complete(both())
    for x, y in zip(via_local, via_nn, strict=True):
        assert (x.text, x.finish_reason, x.completion_tokens) == (
            y.text, y.finish_reason, y.completion_tokens)

    engine_l = loop.run_until_complete(local.engine())
    engine_n = loop.run_until_complete(nn.engine())
    row = None if steering is None else (vector_store.get(info["digest"]), coefficient)
    rows = [GenRow(engine_n.chat_ids(m), 12, steering=row) for m in QUESTIONS]
    step_logits = engine_n.generation_logits(rows)
    outputs = engine_n.generate_rows(rows)
    for r, out, got in zip(rows, outputs, step_logits, strict=True):
        ids = torch.tensor([list(r.prompt) + out.tokens])
        with torch.inference_mode(), BatchSteering.patch(engine_l.model, [row]):
            want = engine_l.model(input_ids=ids).logits[0, len(r.prompt) - 1 :]
        n = min(len(want), len(got))
        assert n >= len(out.tokens)
        assert float((want[:n] - got[:n]).abs().max()) < 1e-4


@pytest.mark.slow
def test_same_judge_log_probabilities_and_sampling(pair):
    loop, local, nn, info, *_ = pair
    steering = _steering(info, 0.5)

    async def run(b):
        probs = await b.next_token_probs(QUESTIONS[0], ["1", "2", "3"], prefix="Score: ")
        loss = await b.token_nll(QUESTIONS[0], "Paris is the capital.", steering=steering)
        sampled = await b.generate(
            GenerationRequest(QUESTIONS[1], max_tokens=10, temperature=1.0, seed=7,
                              steering=steering))
        return probs, loss, sampled.text

    (p1, l1, s1), (p2, l2, s2) = loop.run_until_complete(run(local)), loop.run_until_complete(
        run(nn))
    assert all(abs(p1[k] - p2[k]) < 1e-4 for k in p1)
    assert l1.n_tokens == l2.n_tokens and abs(l1.total_nll - l2.total_nll) < 1e-3
    assert s1 == s2


@pytest.mark.slow
def test_remote_request_built_and_run_as_ndif_would(pair, monkeypatch):
    """The remote path without NDIF: the request nnsight builds (key in a header only) and
    nnsight's own simulation of the server (serialise, deserialise without local modules,
    run) give the same tokens as running here."""
    from nnsight.intervention.backends.local import LocalSimulationBackend
    from nnsight.intervention.backends.remote import RemoteBackend
    from nnsight.schema.request import RequestModel

    from steerstats.backends._local_engine import GenRow, ScoreRow
    from steerstats.backends._nnsight_engine import NNsightEngine

    loop, local, nn, info, *_ = pair
    engine = loop.run_until_complete(nn.engine())
    row = (vector_store.get(info["digest"]), 0.5)
    rows = [GenRow(engine.chat_ids(m), 8, steering=row) for m in QUESTIONS]
    rows.append(GenRow(engine.chat_ids(QUESTIONS[1]), 8, temperature=1.0, seed=5, steering=row))
    scores = [ScoreRow(engine.chat_ids(QUESTIONS[0]), engine.text_ids("Paris."), steering=row,
                       candidates=engine.single_token_ids("4"))]
    seqs = [(engine.chat_ids(QUESTIONS[0]), engine.text_ids("Paris."))]

    dry_run = NNsightBackend(MODEL, {"cache_dir": str(CACHE), "remote": "local"})
    simulated = NNsightEngine(engine.lm, fingerprint=engine.fingerprint, max_batch_size=4,
                              batch_wait_s=0.0, remote_backend=dry_run._remote_backend(engine.lm))
    assert isinstance(simulated.remote_backend(), LocalSimulationBackend)
    for method, args in (("generate_rows", (rows,)), ("score_rows", (scores,)),
                         ("readout", (seqs, 15, "response"))):
        here, there = getattr(engine, method)(*args), getattr(simulated, method)(*args)
        if method == "generate_rows":  # batch timings differ
            here, there = ([(o.tokens, o.finish_reason) for o in x] for x in (here, there))
        assert repr(here) == repr(there), method

    monkeypatch.setenv("NDIF_API_KEY", "secret-key-123")
    sent = {}

    class Captured(Exception):
        pass

    def capture(self, request, blob):
        sent.update(key=self.api_key, envelope=request.metadata(), blob=blob)
        raise Captured

    class Socket:  # NDIF's status websocket, which answers first with a session id
        def recv(self):
            return json.dumps({"session_id": "session-1"})

        def close(self):
            pass

    def connect(url, header=None):
        sent.update(socket=url, socket_header=header)
        return Socket()

    import websocket

    monkeypatch.setattr(websocket, "create_connection", connect)
    monkeypatch.setattr(RemoteBackend, "_post", capture)
    nn_remote = NNsightBackend(MODEL, {"cache_dir": str(CACHE)})
    nn_remote.remote = True  # NDIF keys models by hub id; a local directory has none
    hub_id = SimpleNamespace(to_model_key=lambda: "model-key-of-a-hub-id",
                             _remoteable_get_env=dict)
    remote = NNsightEngine(engine.lm, fingerprint=engine.fingerprint, max_batch_size=4,
                           batch_wait_s=0.0, remote_backend=nn_remote._remote_backend(hub_id))
    with pytest.raises(Captured):
        remote.generate_rows(rows)  # greedy, steered, and one sampled row
    assert sent["key"] == "secret-key-123"
    assert sent["socket_header"] == {"ndif-api-key": "secret-key-123"}
    assert sent["socket"].endswith("/subscribe")
    assert b"secret-key-123" not in sent["blob"] and "secret" not in sent["envelope"]
    envelope = json.loads(sent["envelope"])
    payload = sent["blob"]
    if envelope["compress"]:
        import zstandard

        payload = zstandard.ZstdDecompressor().decompress(payload)
    # steerstats is not installed on NDIF: the payload names none of its modules but the
    # sampler, which is shipped by value
    assert set(re.findall(rb"steerstats\.[\w.]+", payload)) == {
        b"steerstats.backends._nnsight_sampling"}
    import cloudpickle

    assert "steerstats.backends._nnsight_sampling" in cloudpickle.list_registry_pickle_by_value()
    assert (envelope["model_key"], envelope["session_id"]) == ("model-key-of-a-hub-id",
                                                                "session-1")
    tracer = RequestModel.deserialize(sent["blob"], engine.lm._remoteable_persistent_objects(),
                                      compress=envelope["compress"])
    assert {"invoke", "all", "output"} <= set(tracer.info.code.co_names)  # the traced block
