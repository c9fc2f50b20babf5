"""Can SmolLM2-135M be steered on sentiment? A sweep of vector kind x layer x strength.

Two vector kinds per direction (positive: "be cheerful and upbeat", negative: "be gloomy and
pessimistic"):

- ``system``: today's CAA (the ``caa`` method): last-prompt-token activations under the
  behaviour system prompt minus under a neutral one, on the method's training prompts;
- ``texts``: contrastive example texts (the ActAdd / CAA practice): the mean activation over
  the tokens of replies that show the sentiment minus replies that show its opposite, each read
  as the assistant's reply to a neutral request.

Both are scaled to the typical activation norm at the layer (as ``_caa`` does), so a strength
means the same for both. Replies (temperature 0.7, ``--tokens`` tokens) to held-out prompts
are scored by VADER (signed by the direction) and by their mean token loss under the unsteered
model (``coherence_nll``). Prints a table and writes ``benchmarks/results/sentiment_steering.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import write_result  # noqa: E402

from steerstats.backends._local_engine import GenRow, LocalEngine, ScoreRow  # noqa: E402
from steerstats.backends.local import LocalBackend  # noqa: E402
from steerstats.backends.steering import SteeringVector, record_layer_outputs  # noqa: E402
from steerstats.judges.sentiment import compound  # noqa: E402
from steerstats.methods.caa import NEUTRAL_SYSTEM_PROMPT, TRAINING_PROMPTS  # noqa: E402

QUERIES = {"positive": "be cheerful and upbeat", "negative": "be gloomy and pessimistic"}
# Replies that show the sentiment, each with its opposite on the same topic.
PAIRS = [
    ("What a wonderful day! I feel so happy and grateful.",
     "What an awful day. I feel so sad and hopeless."),
    ("I love this place, everything here is bright and beautiful.",
     "I hate this place, everything here is dark and ugly."),
    ("Great news! Things are getting better and better.",
     "Terrible news. Things are getting worse and worse."),
    ("I'm delighted to help, this will be fun and easy!",
     "I'm tired of this, it will be painful and pointless."),
    ("The future looks bright and full of joy.",
     "The future looks bleak and full of misery."),
    ("Thank you so much, you made me smile today!",
     "Leave me alone, you made me miserable today."),
    ("This is the best meal I have ever had, simply delicious.",
     "This is the worst meal I have ever had, simply disgusting."),
    ("Good morning! I'm excited about all the lovely things ahead.",
     "Another morning. I dread all the dreary things ahead."),
]
REQUEST = "Say something."
EVAL_PROMPTS = [
    "Tell me about your favourite season.",
    "How was your week?",
    "Describe the city you live in.",
    "What do you think about Mondays?",
    "Write two sentences about the ocean.",
    "What is it like to learn to cook?",
    "Tell me about a train journey.",
    "What do you think of rainy weather?",
]


def mean_activation(engine: LocalEngine, system: str | None, user: str, reply: str | None,
                    layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean activation at ``layer`` over the reply's tokens (or at the last prompt token),
    and the token norms (skipping the first token)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}]
    prompt = engine.chat_ids(messages)
    tail = engine.text_ids(reply) if reply else []
    ids = torch.tensor([prompt + tail])
    with torch.inference_mode(), record_layer_outputs(engine.model, layer) as rec:
        engine.model(input_ids=ids, use_cache=False, logits_to_keep=1)
    hidden = rec[0][0].float()
    span = hidden[len(prompt):] if tail else hidden[len(prompt) - 1:len(prompt)]
    return span.mean(0), hidden[1:].norm(dim=-1)


def unit_scaled(diff: torch.Tensor, norms: list[torch.Tensor], layer: int, name: str,
                dtype: torch.dtype) -> SteeringVector:
    typical = float(torch.cat(norms).median())
    return SteeringVector(layer, (diff / diff.norm() * typical).to(dtype), digest=name)


def build_vectors(engine: LocalEngine, layer: int) -> dict[tuple[str, str], SteeringVector]:
    dtype = next(engine.model.parameters()).dtype
    out = {}
    for direction, query in QUERIES.items():
        system = f"You are a helpful assistant. In every reply, {query}."
        pos, neg, norms = [], [], []
        for p in TRAINING_PROMPTS:
            a, _ = mean_activation(engine, system, p, None, layer)
            b, n = mean_activation(engine, NEUTRAL_SYSTEM_PROMPT, p, None, layer)
            pos.append(a)
            neg.append(b)
            norms.append(n)
        out[("system", direction)] = unit_scaled(
            torch.stack(pos).mean(0) - torch.stack(neg).mean(0), norms, layer,
            f"system-{direction}-{layer}", dtype)
        pos, neg, norms = [], [], []
        for happy, sad in PAIRS:
            want, other = (happy, sad) if direction == "positive" else (sad, happy)
            a, n = mean_activation(engine, None, REQUEST, want, layer)
            b, m = mean_activation(engine, None, REQUEST, other, layer)
            pos.append(a)
            neg.append(b)
            norms += [n, m]
        out[("texts", direction)] = unit_scaled(
            torch.stack(pos).mean(0) - torch.stack(neg).mean(0), norms, layer,
            f"texts-{direction}-{layer}", dtype)
    return out


def evaluate(engine: LocalEngine, direction: str, steer: tuple | None, tokens: int,
             seed: int) -> dict:
    prompts = [engine.chat_ids([{"role": "user", "content": p}]) for p in EVAL_PROMPTS]
    rows = [GenRow(p, tokens, temperature=0.7, seed=seed + i, steering=steer)
            for i, p in enumerate(prompts)]
    outs = engine.generate_rows(rows)
    texts = [engine.decode(o.tokens) for o in outs]
    sign = 1.0 if direction == "positive" else -1.0
    sentiment = [sign * compound(t) for t in texts]
    scored = engine.score_rows([ScoreRow(p, o.tokens) for p, o in zip(prompts, outs,
                                                                     strict=True) if o.tokens])
    nll = [-sum(s.token_logprobs) / len(s.token_logprobs) for s in scored]
    return {"sentiment": statistics.mean(sentiment), "coherence_nll": statistics.mean(nll),
            "examples": texts[:2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 10, 15])
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.1, 0.2, 0.35, 0.5])
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "sentiment_steering.json")
    args = parser.parse_args()
    backend = LocalBackend(
        "smollm2-135m-instruct", {"max_batch_size": 16, "dtype": args.dtype, "threads": 1}
    )
    engine = asyncio.run(backend.engine())
    start = time.perf_counter()
    rows = []
    for direction in QUERIES:
        base = evaluate(engine, direction, None, args.tokens, seed=0)
        rows.append({"direction": direction, "kind": "control", "layer": None, "strength": 0.0,
                     **base})
    for layer in args.layers:
        vectors = build_vectors(engine, layer)
        for (kind, direction), vector in vectors.items():
            for strength in args.strengths:
                res = evaluate(engine, direction, (vector, strength), args.tokens, seed=0)
                rows.append({"direction": direction, "kind": kind, "layer": layer,
                             "strength": strength, **res})
                print(f"{direction:>8} {kind:>6} L{layer:<2} s={strength:<4} sentiment "
                      f"{res['sentiment']:+.3f} nll {res['coherence_nll']:.2f}  "
                      f"{res['examples'][0][:70]!r}", flush=True)
    asyncio.run(backend.aclose())
    for r in rows[:2]:
        print(f"control {r['direction']}: sentiment {r['sentiment']:+.3f} nll "
              f"{r['coherence_nll']:.2f}")
    write_result(args.out, {"dtype": args.dtype, "tokens": args.tokens,
                            "n_prompts": len(EVAL_PROMPTS), "seconds":
                            round(time.perf_counter() - start, 1), "rows": rows})
    print(json.dumps([(r["direction"], r["kind"], r["layer"], r["strength"],
                       round(r["sentiment"], 3), round(r["coherence_nll"], 2)) for r in rows]))


if __name__ == "__main__":
    main()
