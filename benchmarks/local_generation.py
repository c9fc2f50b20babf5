"""Local generation speed: our batched engine vs transformers' own ``generate()``, side by side
in one process, at the same batch size, sampling and length, unsteered and steered.

Goals (issue 15): batched throughput >= 100 tokens/s (goal 150) on 2 cores; >= 1.0x
``transformers.generate()`` at the same batch; steering-hook overhead < 10%.

Run: ``python benchmarks/local_generation.py [--threads 1 2] [--batch 8 32] [--tokens 32]
[--reps 3]``. Every row of a batch generates exactly ``--tokens`` tokens (end-of-sequence is
ignored by both engines, so they do the same work), sampled at temperature 0.7 with no top-k /
top-p. Steered runs add the same CAA vector (strength 0.5, middle layer) to every row, through
the same hook for both engines. Each figure is the median over ``--reps`` repetitions of
tokens per wall-clock second; the order of the engines is rotated between repetitions so that
a neighbour's burst of load does not always hit the same one. The 1-minute load average is
recorded before and after: on a machine shared with other work the wall-clock figures also
measure the neighbours. Writes ``benchmarks/results/local_generation.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import write_result  # noqa: E402

from steerstats.backends._local_engine import GenRow, LocalEngine  # noqa: E402
from steerstats.backends.local import LocalBackend  # noqa: E402
from steerstats.backends.steering import BatchSteering, SteeringVector  # noqa: E402

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
TEMPERATURE = 0.7
RESULT = Path(__file__).parent / "results" / "local_generation.json"


def prompts_ids(engine: LocalEngine, batch: int) -> list[list[int]]:
    return [
        engine.chat_ids([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}])
        for i in range(batch)
    ]


def run_engine(
    engine: LocalEngine, prompts: list[list[int]], tokens: int, steer: tuple | None
) -> tuple[float, float]:
    """Tokens per (wall, CPU) second of one batch by our engine (end-of-sequence ignored)."""
    rows = [
        GenRow(p, tokens, temperature=TEMPERATURE, seed=i, steering=steer)
        for i, p in enumerate(prompts)
    ]
    stop_ids = engine.stop_ids
    engine.stop_ids = set()  # same work as generate(min_new_tokens=...) below
    try:
        start, cpu = time.perf_counter(), time.process_time()
        out = engine.generate_rows(rows)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        engine.stop_ids = stop_ids
    assert all(len(o.tokens) == tokens for o in out)
    return len(prompts) * tokens / seconds, len(prompts) * tokens / cpu


def run_hf(
    engine: LocalEngine, prompts: list[list[int]], tokens: int, steer: tuple | None
) -> tuple[float, float]:
    """Tokens per (wall, CPU) second of transformers' ``generate()`` on the same batch."""
    ids, mask, _ = engine.left_pad(prompts)
    torch.manual_seed(0)
    with torch.inference_mode(), BatchSteering.patch(engine.model, [steer] * len(prompts)):
        start, cpu = time.perf_counter(), time.process_time()
        out = engine.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=TEMPERATURE,
            top_k=0,
            top_p=1.0,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            pad_token_id=engine.pad_id,
        )
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert out.shape[1] - ids.shape[1] == tokens
    return len(prompts) * tokens / seconds, len(prompts) * tokens / cpu


async def setup(
    max_batch: int, dtype: str
) -> tuple[LocalBackend, LocalEngine, SteeringVector]:
    backend = LocalBackend("smollm2-135m-instruct", {"max_batch_size": max_batch, "dtype": dtype})
    engine = await backend.engine()
    info = await backend.build_caa_vector(
        positive_system="You are a helpful assistant. In every reply, be cheerful and upbeat.",
        neutral_system="You are a helpful assistant.",
        prompts=PROMPTS,
    )
    vector = backend.vectors.get(info["digest"])
    assert vector is not None
    return backend, engine, vector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per row")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per figure (median)")
    parser.add_argument("--strength", type=float, default=0.5, help="CAA strength when steered")
    parser.add_argument("--out", type=Path, default=RESULT, help="where to write the JSON")
    args = parser.parse_args()

    load_before = os.getloadavg()
    figures: list[dict] = []
    for dtype in args.dtype:
        backend, engine, vector = asyncio.run(setup(max(args.batch), dtype))
        steer = (vector, args.strength)
        runners: dict[str, Callable[[list[list[int]]], tuple[float, float]]] = {
            "engine": partial(run_engine, engine, tokens=args.tokens, steer=None),
            "engine_steered": partial(run_engine, engine, tokens=args.tokens, steer=steer),
            "hf_generate": partial(run_hf, engine, tokens=args.tokens, steer=None),
            "hf_generate_steered": partial(run_hf, engine, tokens=args.tokens, steer=steer),
        }
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batch:
                figures.append(measure(runners, dtype, threads, batch, engine, args.reps))
        asyncio.run(backend.aclose())
    best = max(figures, key=lambda r: r["wall"]["engine"])
    result = {
        "model": "smollm2-135m-instruct",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "new_tokens_per_row": args.tokens,
        "temperature": TEMPERATURE,
        "strength": args.strength,
        "reps": args.reps,
        "figures": figures,
        "goals": {"tokens_per_s_min": 100, "tokens_per_s_goal": 150, "vs_hf_min": 1.0,
                  "hook_overhead_max": 0.10},
        "best": {k: best[k] for k in ("dtype", "threads", "batch", "wall", "cpu")},
    }
    write_result(args.out, result)


def measure(
    runners: dict[str, Callable[[list[list[int]]], tuple[float, float]]],
    dtype: str,
    threads: int,
    batch: int,
    engine: LocalEngine,
    reps: int,
) -> dict:
    """Median tokens per wall and CPU second of every runner at one configuration."""
    prompts = prompts_ids(engine, batch)
    for run in runners.values():  # warm-up (first calls allocate)
        run(prompts[: min(batch, 2)])
    raw: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    names = list(runners)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            raw[name].append(runners[name](prompts))
    row: dict = {"dtype": dtype, "threads": threads, "batch": batch}
    for clock, k in (("wall", 0), ("cpu", 1)):
        med = {name: statistics.median(v[k] for v in values) for name, values in raw.items()}
        row[clock] = {
            **{name: round(v, 1) for name, v in med.items()},
            "engine_vs_hf": round(med["engine"] / med["hf_generate"], 3),
            "engine_vs_hf_steered": round(med["engine_steered"] / med["hf_generate_steered"], 3),
            "hook_overhead": round(med["engine"] / med["engine_steered"] - 1, 4),
        }
    row["load_1m"] = round(os.getloadavg()[0], 2)
    row["raw"] = {k: [[round(x, 1) for x in pair] for pair in v] for k, v in raw.items()}
    w, c = row["wall"], row["cpu"]
    print(
        f"{dtype:>8} threads {threads} batch {batch:>3}: engine {w['engine']:6.1f} tok/s "
        f"({c['engine']:6.1f}/cpu-s), steered {w['engine_steered']:6.1f}; generate() "
        f"{w['hf_generate']:6.1f} ({c['hf_generate']:6.1f}/cpu-s), steered "
        f"{w['hf_generate_steered']:6.1f}; engine/generate {w['engine_vs_hf']:.2f} "
        f"(cpu {c['engine_vs_hf']:.2f}); hook {w['hook_overhead']:+.1%} "
        f"(cpu {c['hook_overhead']:+.1%}); load {row['load_1m']}",
        flush=True,
    )
    return row


if __name__ == "__main__":
    main()
