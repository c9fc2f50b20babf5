"""The nnsight backend's compute: the local engine's batching, with every forward run as an
nnsight trace (here, or on NDIF with ``remote``).

:class:`NNsightEngine` subclasses :class:`~steerstats.backends._local_engine.LocalEngine` for
its worker thread, batching, tokenisation and chat templates, and replaces the three places
that run the model: generation, scoring and the CAA read-out. Each batch is one trace with one
``invoke`` per row, so each row carries its own steering, added exactly where the local
backend's hook adds it: to decoder block ``layer``'s output, at every position, at every
generation step. Reductions (log-softmax, gathers, means, norms) run inside the trace, so a
remote job returns a few numbers per row rather than activations or full logits.

Greedy rows take the argmax as the local engine does; sampled rows draw with the same
per-row seeded inverse-CDF rule (:class:`_SeededChoice`), so the two backends agree token for
token wherever their logits do.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import nnsight
import torch

from steerstats.backends import _nnsight_sampling
from steerstats.backends._local_engine import (
    GenOutput,
    GenRow,
    LocalEngine,
    RowSteering,
    ScoreOutput,
    ScoreRow,
)


def _delta(steering: RowSteering, dtype: torch.dtype) -> tuple[int, torch.Tensor] | None:
    """``(layer, coefficient x vector)`` in the model's dtype (as the local hook computes it),
    or None for no steering."""
    if steering is None or float(steering[1]) == 0.0:
        return None
    vector, coefficient = steering
    return vector.layer, float(coefficient) * vector.vector.to(dtype=dtype)


class NNsightEngine(LocalEngine):
    """A model wrapped by nnsight (loaded here, or a weightless skeleton for NDIF)."""

    def __init__(
        self,
        lm: Any,
        *,
        fingerprint: str | None,
        max_batch_size: int,
        batch_wait_s: float,
        remote_backend: Any = None,
    ) -> None:
        self.lm = lm
        self.remote_backend = remote_backend
        super().__init__(
            lm._module,
            lm.tokenizer,
            fingerprint=fingerprint or "unhashed",
            max_batch_size=max_batch_size,
            batch_wait_s=batch_wait_s,
        )
        self.dtype = next(lm._module.parameters()).dtype

    def _run(self) -> dict[str, Any]:
        """Keyword arguments that send a trace where it runs (NDIF, a simulation, or here)."""
        if self.remote_backend is None:
            return {}
        return {"backend": self.remote_backend()}

    # -- generation ------------------------------------------------------------------------------

    def generate_rows(self, rows: Sequence[GenRow]) -> list[GenOutput]:
        start = time.perf_counter()
        generated, _ = self._generate(rows, keep_logits=False)
        seconds = time.perf_counter() - start
        outputs = [self._finish(row, ids) for row, ids in zip(rows, generated, strict=True)]
        total = sum(len(o[0]) for o in outputs)
        return [
            GenOutput(tokens, finish, len(row.prompt), len(rows), seconds, total)
            for row, (tokens, finish) in zip(rows, outputs, strict=True)
        ]

    def generation_logits(self, rows: Sequence[GenRow]) -> list[torch.Tensor]:
        """Each row's next-token logits at every generation step, ``(steps, vocab)`` (for
        checking this engine against another; rows run on after they stop)."""
        _, logits = self._generate(rows, keep_logits=True)
        return logits

    def _finish(self, row: GenRow, ids: list[int]) -> tuple[list[int], str]:
        """The local engine's ending: a stop token within the budget ends with "stop" (not
        kept), else the first ``max_tokens`` tokens end with "length"."""
        for k, token in enumerate(ids[: row.max_tokens]):
            if token in self.stop_ids:
                return ids[:k], "stop"
        return ids[: row.max_tokens], "length"

    def _generate(
        self, rows: Sequence[GenRow], keep_logits: bool
    ) -> tuple[list[list[int]], list[torch.Tensor]]:
        from transformers import GenerationConfig, LogitsProcessorList

        for row in rows:
            if len(row.prompt) == 0:
                raise ValueError("cannot generate from an empty prompt")
            if row.max_tokens < 1:
                raise ValueError(f"max_tokens must be >= 1, got {row.max_tokens}")
        lm = self.lm
        layers = lm.model.layers
        deltas = [_delta(r.steering, self.dtype) for r in rows]
        # The checkpoint's own generation settings (repetition penalties, ...) are not the
        # local engine's; only the budget, the stop tokens and the argmax apply.
        config = GenerationConfig(
            max_new_tokens=max(r.max_tokens for r in rows),
            do_sample=False,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.pad_id,
        )
        extra: dict[str, Any] = {}
        if any(r.temperature > 0 for r in rows):
            choice = _nnsight_sampling.SeededChoice(
                [float(r.temperature) for r in rows], [int(r.seed) for r in rows])
            extra["logits_processor"] = LogitsProcessorList([choice])
        prompts = [list(r.prompt) for r in rows]
        with warnings.catch_warnings():
            # An open `tracer.all()` loop ends when generation does; nnsight warns that the
            # step after the last was never reached, by design.
            warnings.filterwarnings("ignore", message=".*was never reached.*")
            # The traced blocks name only plain data, torch and nnsight: they are shipped
            # as source to NDIF, where steerstats is not installed.
            with torch.no_grad(), lm.generate(
                generation_config=config, **extra, **self._run()
            ) as tracer:
                logits: list[Any] = nnsight.save([])
                for k, prompt in enumerate(prompts):
                    steps: list[Any] = []
                    logits.append(steps)
                    with tracer.invoke({"input_ids": [prompt]}):
                        delta = deltas[k]
                        if delta is not None or keep_logits:
                            for _ in tracer.all():
                                if delta is not None:
                                    out = layers[delta[0]].output
                                    hidden = out[0] if isinstance(out, tuple) else out
                                    hidden[:] += delta[1].to(hidden.device)
                                if keep_logits:
                                    steps.append(lm.lm_head.output[0, -1].float().cpu())
                with tracer.invoke():
                    result = tracer.result.cpu().save()
        width = max(len(r.prompt) for r in rows)
        generated = [list(map(int, result[i, width:].tolist())) for i in range(len(rows))]
        return generated, [torch.stack(s) if s else torch.empty(0) for s in logits]

    # -- scoring -----------------------------------------------------------------------------

    def score_rows(self, rows: Sequence[ScoreRow]) -> list[ScoreOutput]:
        """Log-probabilities of continuations and candidate next tokens, reduced in the trace."""
        for row in rows:
            if len(row.prompt) == 0:
                raise ValueError("cannot score a continuation of an empty prompt")
        lm = self.lm
        layers = lm.model.layers
        deltas = [_delta(r.steering, self.dtype) for r in rows]
        plain = [
            (list(r.prompt), list(r.continuation),
             None if r.candidates is None else list(r.candidates))
            for r in rows
        ]
        with torch.no_grad(), lm.trace(**self._run()) as tracer:
            outs: list[Any] = nnsight.save([])
            for k, (prompt, cont, cands) in enumerate(plain):
                with tracer.invoke({"input_ids": [prompt + cont]}):
                    delta = deltas[k]
                    if delta is not None:
                        out = layers[delta[0]].output
                        hidden = out[0] if isinstance(out, tuple) else out
                        hidden[:] += delta[1].to(hidden.device)
                    # the last len(cont) + 1 positions predict the continuation and what follows
                    logp = lm.lm_head.output[0, -(len(cont) + 1) :].float().log_softmax(-1)
                    token_lp = None
                    if cont:
                        target = torch.tensor(cont, dtype=torch.long, device=logp.device)
                        token_lp = logp[:-1].gather(-1, target[:, None]).squeeze(-1).cpu()
                    cand_lp = None
                    if cands is not None:
                        index = torch.tensor(cands, dtype=torch.long, device=logp.device)
                        cand_lp = logp[-1, index].cpu()
                    outs.append((token_lp, cand_lp))
        return [
            ScoreOutput(
                [] if t is None else [float(x) for x in t.tolist()],
                None if c is None else [float(x) for x in c.tolist()],
            )
            for t, c in outs
        ]

    # -- CAA read-out --------------------------------------------------------------------------

    def readout(
        self, seqs: Sequence[tuple[list[int], list[int]]], layer: int, position: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The CAA read-out of ``_caa`` (per sequence, the mean activation at block ``layer``
        over the read-out positions, and all token norms but the first), through traces."""
        lm = self.lm
        block = lm.model.layers[layer]
        means: list[torch.Tensor] = []
        norms: list[torch.Tensor] = []
        for start in range(0, len(seqs), self.max_batch_size):
            chunk = seqs[start : start + self.max_batch_size]
            with torch.no_grad(), lm.trace(**self._run()) as tracer:
                outs: list[Any] = nnsight.save([])
                for prompt, response in chunk:
                    with tracer.invoke({"input_ids": [list(prompt) + list(response)]}):
                        out = block.output
                        hidden = (out[0] if isinstance(out, tuple) else out)[0].float()
                        width, n = hidden.shape[0], len(response)
                        if position == "response" and n:
                            span = hidden[width - n :]
                        else:
                            span = hidden[width - n - 1 : width - n]
                        total = len(prompt) + n
                        outs.append(
                            (span.mean(0).cpu(), hidden[width - total + 1 :].norm(dim=-1).cpu())
                        )
            for mean, norm in outs:
                means.append(mean)
                norms.append(norm)
        return torch.stack(means), torch.cat(norms)
