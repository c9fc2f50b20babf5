"""Local backend throughput: tokens/s for single sequences vs batches of 8, and the cost of the
CAA steering hook (steered vs unsteered), on the packaged SmolLM2-135M-Instruct.

Goals (issue 5): batch-8 throughput >= 3x single-sequence; steering-hook overhead < 10%.

Run: ``python benchmarks/local_generation.py [--threads N] [--tokens 48] [--reps 3]``
(the committed result used ``--threads 1``, as the demo preset does).
Prints a summary and writes ``benchmarks/results/local_generation.json``. Each figure is the
median over ``--reps`` repetitions, measured twice: per wall-clock second, and per CPU second
of this process (``time.process_time``, all threads). On a machine shared with other work the
wall-clock figures mostly measure the neighbours; the CPU-second figures are what the code
costs (with one torch thread they approximate a dedicated core). The load average is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from steerstats.backends.base import GenerationRequest, Steering
from steerstats.backends.local import LocalBackend
from steerstats.backends.steering import BatchSteering

PROMPTS = [
    "Write a story about a lighthouse keeper.",
    "Explain in detail how a bicycle works.",
    "Describe a walk through a forest in autumn.",
    "Tell me about the history of the printing press.",
    "Write a letter to a friend about your holiday.",
    "Explain how bread is made, step by step.",
    "Describe the planets of the solar system.",
    "Write a short essay about the sea.",
]
RESULT = Path(__file__).parent / "results" / "local_generation.json"


def request(prompt: str, max_tokens: int, steering: Steering | None = None) -> GenerationRequest:
    return GenerationRequest(
        [{"role": "user", "content": prompt}],
        temperature=0.0,
        max_tokens=max_tokens,
        steering=steering,
    )


async def tokens_per_s(
    backend: LocalBackend, reqs: list[GenerationRequest], concurrent: bool
) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) for generating ``reqs``."""
    wall, cpu = time.perf_counter(), time.process_time()
    if concurrent:
        results = await asyncio.gather(*[backend.generate(r) for r in reqs])
    else:
        results = [await backend.generate(r) for r in reqs]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = sum(r.completion_tokens or 0 for r in results)
    return tokens / wall, tokens / cpu


def decode_step_seconds(
    backend: LocalBackend, steering_rows: list | None, steps: int
) -> tuple[float, float]:
    """(wall, CPU) seconds per batch-8 decode step with a KV cache, hooks registered or not."""
    engine = backend._engine
    assert engine is not None
    prompts = [engine.chat_ids([{"role": "user", "content": p}]) for p in PROMPTS]
    ids, mask, positions = engine.left_pad(prompts)
    rows = steering_rows if steering_rows is not None else [None] * len(prompts)
    with torch.inference_mode(), BatchSteering.patch(engine.model, rows):
        cache = engine._new_cache()
        out = engine.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        nxt = out.logits[:, -1].argmax(-1)
        pos = positions[:, -1] + 1
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=1)
            out = engine.model(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=pos[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            nxt = out.logits[:, -1].argmax(-1)
            pos = pos + 1
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def hook_call_seconds(backend: LocalBackend, vector, calls: int = 2000) -> float:
    """Seconds for one call of the per-row steering hook on a batch-8 decode step's hidden
    state (the hook's own cost, free of the timing noise of whole decode steps)."""
    engine = backend._engine
    assert engine is not None
    steering = BatchSteering(engine.model, [(vector, 0.5)] * 4 + [None] * 4)
    hook = steering._hook(vector.layer)
    hidden = torch.randn(8, 1, engine.model.config.hidden_size)
    with torch.inference_mode():
        hook(None, None, hidden)
        start = time.perf_counter()
        for _ in range(calls):
            hook(None, None, hidden)
    return (time.perf_counter() - start) / calls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per request")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per figure (median)")
    parser.add_argument("--strength", type=float, default=0.5, help="CAA strength when steered")
    parser.add_argument("--out", type=Path, default=RESULT, help="where to write the JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    backend = LocalBackend("smollm2-135m-instruct", {"max_batch_size": 8})
    t0 = time.perf_counter()
    await backend.engine()
    load_s = time.perf_counter() - t0
    info = await backend.build_caa_vector(
        positive_system="You are a helpful assistant. In every reply, talk like a pirate.",
        neutral_system="You are a helpful assistant.",
        prompts=PROMPTS,
    )
    steer = Steering(
        "caa", {"vector": info["digest"], "layer": info["layer"], "coefficient": args.strength}
    )
    vector = backend.vectors.get(info["digest"])

    single, batch8, steered8, step_plain, step_hooked = [], [], [], [], []
    await tokens_per_s(backend, [request(PROMPTS[0], 8)], concurrent=False)  # warm-up
    for _ in range(args.reps):
        single.append(
            await tokens_per_s(backend, [request(p, args.tokens) for p in PROMPTS[:2]], False)
        )
        batch8.append(await tokens_per_s(backend, [request(p, args.tokens) for p in PROMPTS], True))
        steered8.append(
            await tokens_per_s(backend, [request(p, args.tokens, steer) for p in PROMPTS], True)
        )
        step_plain.append(decode_step_seconds(backend, None, 24))
        step_hooked.append(decode_step_seconds(backend, [(vector, args.strength)] * 8, 24))
    hook_s = hook_call_seconds(backend, vector)
    await backend.aclose()

    def med(values: list[tuple[float, float]], which: int) -> float:
        return statistics.median(v[which] for v in values)

    load_after = os.getloadavg()[0]
    result: dict = {
        "model": "smollm2-135m-instruct (float32)",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        "model_load_s": round(load_s, 2),
        "new_tokens_per_request": args.tokens,
        "reps": args.reps,
    }
    for clock, which in (("wall", 0), ("cpu", 1)):
        result[clock] = {
            "single_tokens_per_s": round(med(single, which), 2),
            "batch8_tokens_per_s": round(med(batch8, which), 2),
            "batch8_speedup": round(med(batch8, which) / med(single, which), 2),
            "batch8_steered_tokens_per_s": round(med(steered8, which), 2),
            "steered_vs_unsteered_end_to_end": round(med(steered8, which) / med(batch8, which), 3),
            "decode_step_s_unsteered": round(med(step_plain, which), 4),
            "decode_step_s_steered": round(med(step_hooked, which), 4),
            "hook_overhead_fraction": round(
                med(step_hooked, which) / med(step_plain, which) - 1, 4
            ),
        }
    result["hook_call_s"] = hook_s
    result["hook_cost_fraction_of_step"] = round(hook_s / med(step_plain, 0), 6)
    result["goals"] = {"batch8_speedup_min": 3.0, "hook_overhead_max": 0.10}
    result["meets_goals"] = {
        clock: {
            "batch8_speedup": result[clock]["batch8_speedup"] >= 3.0,
            "hook_overhead": result[clock]["hook_overhead_fraction"] < 0.10,
        }
        for clock in ("wall", "cpu")
    }
    result["raw"] = {
        "single": single,
        "batch8": batch8,
        "steered8": steered8,
        "step_plain": step_plain,
        "step_hooked": step_hooked,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"torch threads {result['torch_threads']}, load average {result['load_average_1m']}")
    for key in result["wall"]:
        print(f"{key:>34}: wall {result['wall'][key]:>9}   cpu {result['cpu'][key]:>9}")
    print(f"{'hook_call_s':>34}: {hook_s:.2e} ({result['hook_cost_fraction_of_step']:.4%} of a "
          "batch-8 decode step)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
