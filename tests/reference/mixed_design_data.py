"""Simulate tests/reference/mixed_design_data.csv: two models, control replies reused.

Run from the repository root: python tests/reference/mixed_design_data.py
"""
import numpy as np
import pandas as pd

rng = np.random.default_rng(13)
models = ["llama-70b", "llama-8b"]
methods = ["control", "prompt", "steer"]
mu = {"control": 2.0, "prompt": 3.0, "steer": 3.4}
Q = [f"query-{i:02d}" for i in range(8)]
u_q = dict(zip(Q, rng.normal(0, 0.5, 8), strict=True))
rows = []
common = [f"common-{k:02d}" for k in range(5)]
v = {p: rng.normal(0, 0.4) for p in common}
qm = {(d, q): rng.normal(0, 0.3) for d in models for q in Q}
qmm = {(d, q, m): rng.normal(0, 0.4) for d in models for q in Q for m in methods}
ctl_gen = {(d, p, s): (rng.normal(0, 0.8)) for d in models for p in common for s in range(2)}
for d_i, d in enumerate(models):
    for m in methods:
        for q in Q:
            topics = [f"{q}/topic-{k:02d}" for k in range(3)]
            for p in topics + common:
                vp = v.setdefault(p, rng.normal(0, 0.4))
                for s in range(2):
                    if m == "control" and p in common:
                        # one control reply per (model, prompt, sample), reused for every query
                        # and judged afresh for each (judge noise)
                        val = mu[m] + 0.3 * d_i + vp + ctl_gen[(d, p, s)] + rng.normal(0, 0.5)
                        gen = f"{d}|{m}|{p}|{s}"
                    else:
                        val = (mu[m] + 0.3 * d_i + u_q[q] + vp + qm[(d, q)] + qmm[(d, q, m)]
                               + rng.normal(0, 0.8) + rng.normal(0, 0.5))
                        gen = f"{d}|{m}|{q}|{p}|{s}"
                    rows.append((d, m, q, p, s, gen, round(float(val), 4)))
df = pd.DataFrame(
    rows, columns=["model", "method", "query_id", "prompt_id", "sample", "key", "value"])
drop = rng.random(len(df)) < 0.1
df = df[~drop]
df.to_csv("tests/reference/mixed_design_data.csv", index=False)
print(len(df), df["key"].nunique())
