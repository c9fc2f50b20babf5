"""Simulate tests/reference/mixed_hetero_data.csv: two models, three methods whose
query-specific effects differ in spread (query x method SD 0.15, 0.4, 0.8), 8% missing.

Run from the repository root: python tests/reference/mixed_hetero_data.py
"""
import numpy as np
import pandas as pd

rng = np.random.default_rng(2026)
models = ["llama-70b", "llama-8b"]
mu = {"control": 2.0, "prompt": 2.8, "steer": 3.4}
sd_qm = {"control": 0.15, "prompt": 0.4, "steer": 0.8}
Q = [f"query-{i:02d}" for i in range(12)]
u_q = dict(zip(Q, rng.normal(0, 0.5, len(Q)), strict=True))
common = [f"common-{k:02d}" for k in range(4)]
v = {p: rng.normal(0, 0.3) for p in common}
qd = {(d, q): rng.normal(0, 0.25) for d in models for q in Q}
qdm = {(d, q, m): rng.normal(0, sd_qm[m]) for d in models for q in Q for m in mu}
rows = []
for d_i, d in enumerate(models):
    for m in mu:
        for q in Q:
            for p in [f"{q}/topic-{k:02d}" for k in range(3)] + common:
                vp = v.setdefault(p, rng.normal(0, 0.3))
                val = (mu[m] + 0.3 * d_i + u_q[q] + vp + qd[(d, q)] + qdm[(d, q, m)]
                       + rng.normal(0, 0.7))
                rows.append((d, m, q, p, 0, round(float(val), 4)))
df = pd.DataFrame(rows, columns=["model", "method", "query_id", "prompt_id", "sample", "value"])
df = df[rng.random(len(df)) >= 0.08]
df.to_csv("tests/reference/mixed_hetero_data.csv", index=False)
print(len(df))
